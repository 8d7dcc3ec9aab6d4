"""``grocerysync-agent run``: the agent's life with its hub.

:class:`AgentRunner` runs four tasks on one event loop until it is asked to stop:

- the poll loop: long-polls ``POST /agent/v1/poll`` with a heartbeat, applies the hub's configuration, starts
  the runs it is handed (one at a time: capacity 1 while idle, 0 while a run is going) and carries out
  commands (:mod:`.commands`);
- the log flusher: moves the agent's log records from memory to the spool about once a second
  (:mod:`.logship`);
- the shipper: sends the spool to the hub (:mod:`.shipper`);
- the watcher: notices a stop request (:mod:`grocerysync.agent.service.control`) or, with ``idle_exit``, that
  there has been nothing to do for that long.

Each run is a :class:`~.worker.RunWorker` task; its export runs in a thread of its own.

Exit status: 0 after a stop request (or ``idle_exit``); :data:`EXIT_REVOKED` (3) when the hub refuses the
agent's credential, which service managers must not answer with a restart. Problems before the loop starts
(not enrolled, an unusable hub address) raise :class:`~grocerysync.core.errors.GrocerySyncError`, which the
command line turns into one line and exit status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from grocerysync.agent import paths
from grocerysync.agent.credentials import load_credentials
from grocerysync.agent.enroll import describe_machine
from grocerysync.agent.runner import commands, diagnostics, logship, polling, reports
from grocerysync.agent.runner.hubclient import Backoff, HubClient, HubUnavailable, Revoked
from grocerysync.agent.runner.logship import (
    LOCAL_ONLY,
    LogCollector,
    one_line,
)
from grocerysync.agent.runner.redact import Redactor
from grocerysync.agent.runner.shipper import Deferred, Shipper
from grocerysync.agent.runner.worker import STOPPING, RunHandle, RunWorker
from grocerysync.agent.service import EXIT_REVOKED, control
from grocerysync.agent.spool import Spool, SpoolError
from grocerysync.core.manager import PluginInfo, PluginManager
from grocerysync.core.wire import AgentConfig, Command, Heartbeat

log = logging.getLogger(__name__)

EXIT_OK = 0
#: A clock this far off the hub's (seconds) is worth a warning: leases and log times depend on it.
SKEW_WARNING = 300.0
#: Seconds added to the poll's hold time before the agent gives up on an answer.
POLL_MARGIN = 30.0


#: How many handled command ids the runner remembers (to ignore a command delivered again).
MAX_REMEMBERED_COMMANDS = 1000


@dataclass
class RunnerOptions:
    """Timings of the runner (tests shorten them)."""

    backoff_first: float = 1.0
    backoff_cap: float = 60.0
    #: Exit (status 0) after this many seconds with no run, nothing in the spool and nothing to log.
    idle_exit: float | None = None
    log_flush_interval: float = 1.0
    #: Seconds a stopping agent keeps shipping what is in the spool before it exits.
    stop_grace: float = 10.0
    #: Seconds a stopping agent waits for the run in progress to stop after its current batch.
    run_stop_timeout: float = 45.0
    spool_max_bytes: int | None = None
    spool_max_records: int | None = None


class AgentRunner:
    """The agent's connection to its hub; ``await run()`` until a stop, then the exit status."""

    def __init__(
        self,
        state_dir: Path,
        *,
        plugins: Callable[[], PluginManager] = PluginManager,
        options: RunnerOptions | None = None,
        console: logging.Handler | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.options = options or RunnerOptions()
        self._plugins_factory = plugins
        self._console = console
        self._stop_flag = threading.Event()
        self.config = AgentConfig()
        self.redactor = Redactor()
        self.current: RunHandle | None = None
        self.clock_skew: float | None = None
        self._skew_warned = False
        self._started = time.monotonic()
        self._revoked: Revoked | None = None
        self._poll_problem = ""
        # Commands already carried out by this process: the hub delivers a command again when its answer is late
        # (the answer may still be in the spool), and it must not run twice.
        self._handled_commands: dict[int, None] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._worker: asyncio.Task[None] | None = None
        self._health = polling.HealthTracker()

    # -- public ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the runner to stop (thread-safe); ``run()`` returns once the current step is done."""
        self._stop_flag.set()

    def load_plugins(self) -> list[PluginInfo]:
        """(Re)load the plugins and the machine description sent with heartbeats (blocking)."""
        plugins = self._plugins_factory()
        infos = plugins.infos()
        self._identity = describe_machine(plugins)
        self.plugins = plugins
        if hasattr(self, "collector"):
            self.collector.loggers.set_modules(logship.plugin_modules())
        return infos

    def agent_state(self) -> diagnostics.AgentState:
        """What the runner knows about itself, for a diagnostics report."""
        return diagnostics.AgentState(
            state_dir=self.state_dir,
            hub_url=self.client.base,
            agent_id=self.client.agent_id,
            config=self.config,
            running=[self.current.run_id] if self.current is not None else [],
            uptime_s=time.monotonic() - self._started,
            clock_skew_s=self.clock_skew,
            hub_reachable=self.client.connectivity.reachable,
            recent_log=self.collector.recent_lines(diagnostics.LOG_LINES),
        )

    async def run(self) -> int:
        """Run until stopped; the exit status. Raises GrocerySyncError for problems before the loop starts."""
        creds = load_credentials(self.state_dir)
        self.client = HubClient(creds, self.state_dir)
        paths.ensure_private_dir(self.state_dir)
        limits: dict[str, int] = {}
        if self.options.spool_max_bytes is not None:
            limits["max_bytes"] = self.options.spool_max_bytes
        if self.options.spool_max_records is not None:
            limits["max_records"] = self.options.spool_max_records
        self.spool = Spool(self.state_dir / "spool.sqlite", **limits)
        self.shipper = Shipper(self.spool, self.client, on_dropped=self._health.reported)
        self._stopping = asyncio.Event()
        self._repoll = asyncio.Event()
        self._ship_wake = asyncio.Event()
        self._flush_wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.collector = LogCollector(
            self.redactor, plugin_modules=logship.plugin_modules(), on_batch=lambda: _threadsafe(loop, self._flush_wake)
        )
        restore = logship.install(self.collector, self._console, self.redactor)
        logship.apply_level(self.collector, self._console, self.config.log_level)
        try:
            infos = await asyncio.to_thread(self.load_plugins)
            log.info(
                "agent %d started: hub %s, state directory %s, %d plugin(s)%s",
                creds.agent_id,
                self.client.base,
                self.state_dir,
                len(infos),
                f", {len(self.plugins.failures)} failed to load" if self.plugins.failures else "",
            )
            for coro in (self._poll_loop, self._ship_loop, self._flush_loop, self._watch):
                self._tasks.append(asyncio.create_task(self._guard(coro), name=coro.__name__))
            await self._stopping.wait()
            await self._shutdown()
        finally:
            restore()
            await self.client.close()
            self.spool.close()
        return EXIT_REVOKED if self._revoked is not None else EXIT_OK

    @property
    def revoked(self) -> Revoked | None:
        """Why the runner stopped when the hub refused its credential."""
        return self._revoked

    # -- tasks ---------------------------------------------------------------------------------

    async def _guard(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a task body; Revoked stops the agent; an unexpected error is logged and the body restarted."""
        while not self._stopping.is_set():
            try:
                await body()
                return
            except Revoked as exc:
                self._fatal(exc)
                return
            except Exception as exc:
                what = body.__name__.strip("_").replace("_", " ")
                log.exception("the agent's %s failed unexpectedly (%s); restarting it in 5 s", what, one_line(exc))
                await self._sleep(5.0)

    def _fatal(self, exc: Revoked) -> None:
        if self._revoked is None:
            self._revoked = exc
            log.error("%s", exc)
        self._stopping.set()

    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Sleep up to ``seconds``; a stop (or ``wake``) ends it early."""
        events = [self._stopping] + ([wake] if wake is not None else [])
        waiters = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _backoff(self) -> Backoff:
        return Backoff(self.options.backoff_first, self.options.backoff_cap)

    async def _watch(self) -> None:
        idle_since: float | None = None
        while not self._stopping.is_set():
            if control.stop_requested() or self._stop_flag.is_set():
                log.info("stop requested: finishing the current step")
                self._stopping.set()
                return
            if self.options.idle_exit is not None:
                idle = self.current is None and self.collector.waiting() == 0
                if idle:
                    idle = (await asyncio.to_thread(self.spool.stats)).total_records == 0
                now = time.monotonic()
                idle_since = (idle_since or now) if idle else None
                if idle_since is not None and now - idle_since >= self.options.idle_exit:
                    log.info("nothing to do for %.1f s: stopping (--once-idle)", self.options.idle_exit)
                    self._stopping.set()
                    return
            await asyncio.sleep(0.1)

    # -- polling -------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        backoff = self._backoff()
        while not self._stopping.is_set():
            self._repoll.clear()
            poll = asyncio.create_task(self._poll_once())
            others = [asyncio.create_task(self._repoll.wait()), asyncio.create_task(self._stopping.wait())]
            try:
                await asyncio.wait([poll, *others], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in others:
                    task.cancel()
                # A run ended (poll again, now with capacity) or the agent is stopping: the poll is cancelled.
                # The shutdown may also cancel this loop just as the poll ended with an error; its outcome is
                # fetched here all the same (a revoked credential still stops the agent with status 3).
                failure = await _settle(poll)
                if isinstance(failure, Revoked):
                    self._fatal(failure)
            if poll.cancelled() or isinstance(failure, Revoked):
                continue
            if isinstance(failure, (HubUnavailable, _PollRefused)):
                await self._sleep(backoff.next(getattr(failure, "retry_after", None)))
                continue
            polled = poll.result()  # anything else is raised: _guard logs it and starts the loop again
            backoff.reset()
            await self._handle(polled)
            if polled.answer.poll_after > 0:
                await self._sleep(min(polled.answer.poll_after, 600.0), self._repoll)

    async def _heartbeat(self) -> dict[str, Any]:
        stats = await asyncio.to_thread(self.spool.stats)
        running = [self.current.run_id] if self.current is not None else []
        health = self._health.health(stats, self.plugins.failures, running)
        capacity = 0 if self.current is not None or self._stopping.is_set() else 1
        heartbeat = Heartbeat(**self._identity, health=health, capacity=capacity, wait=self.config.poll_wait)
        return heartbeat.model_dump(mode="json")

    async def _poll_once(self) -> polling.Polled:
        body = await self._heartbeat()
        answer = await self.client.post("poll", body, time_limit=self.config.poll_wait + POLL_MARGIN)
        if not answer.ok:
            raise _PollRefused(
                self._poll_trouble(
                    f"the hub at {self.client.base} refused the poll (HTTP {answer.status}: "
                    f"{answer.message or 'no explanation'}); retrying; check that the agent and the hub are "
                    "compatible versions"
                )
            )
        try:
            polled = polling.read_answer(answer.body, received=time.monotonic())
        except ValidationError as exc:
            raise _PollRefused(
                self._poll_trouble(
                    f"the hub at {self.client.base} answered the poll with something else ({polling.describe(exc)})"
                )
            ) from None
        self._poll_problem = ""
        return polled

    def _poll_trouble(self, message: str) -> str:
        if message != self._poll_problem:  # once per distinct problem, not per attempt
            self._poll_problem = message
            log.error("%s", message)
        return message

    async def _handle(self, polled: polling.Polled) -> None:
        answer = polled.answer
        if answer.config != self.config:
            self.config = answer.config
            logship.apply_level(self.collector, self._console, self.config.log_level)
        self.clock_skew = (answer.server_time - datetime.now(UTC)).total_seconds()
        if abs(self.clock_skew) > SKEW_WARNING and not self._skew_warned:
            self._skew_warned = True
            log.warning(
                "this machine's clock is %.0f s %s the hub's; set the time (NTP) so run leases and log times are right",
                abs(self.clock_skew),
                "behind" if self.clock_skew > 0 else "ahead of",
            )
        for command in polled.commands:
            await self._command(command)
        for raw in polled.unknown_commands:
            await self._unknown_command(raw)
        for raw, exc in polled.unreadable_runs:
            await self._unreadable_run(raw, exc)
        for assignment in polled.runs:
            lease = (assignment.lease_expires_at - answer.server_time).total_seconds()
            self._start(RunHandle(assignment, ack_deadline=polled.received + max(lease, 0.0)))

    # -- runs --------------------------------------------------------------------------------

    def _start(self, handle: RunHandle) -> None:
        if self.current is not None or self._stopping.is_set():
            log.warning(
                "the hub handed out run %d while this agent is busy; leaving it: its lease runs out and the hub "
                "hands it out again",
                handle.run_id,
            )
            return
        self.current = handle
        worker = RunWorker(
            handle,
            client=self.client,
            spool=self.spool,
            plugins=self.plugins,
            state_dir=self.state_dir,
            redactor=self.redactor,
            progress_interval=lambda: self.config.progress_interval,
            backoff=self._backoff,
            on_spooled=self._ship_wake.set,
        )
        self._worker = asyncio.create_task(self._run_worker(worker))

    async def _run_worker(self, worker: RunWorker) -> None:
        try:
            await worker.run()
        except Revoked as exc:
            self._fatal(exc)
        except Exception as exc:
            log.exception("run %d failed in the agent (%s)", worker.handle.run_id, one_line(exc))
        finally:
            self.current = None
            self._repoll.set()

    async def _unreadable_run(self, raw: dict[str, Any], exc: ValidationError) -> None:
        found = polling.unreadable_run(raw, exc)
        if found is None:
            log.error("the hub handed out a run this agent cannot read, without a run id; ignored")
            return
        run_id, attempt, error = found
        log.error("%s", error)
        try:
            ack = await self.client.post(f"runs/{run_id}/ack", {"attempt": attempt}, time_limit=30.0)
        except HubUnavailable:
            return  # its lease runs out and it is handed out again
        if ack.ok:
            payload, key = reports.failed_result(run_id, attempt, error)
            await self._spool_report(payload, key)

    # -- commands ----------------------------------------------------------------------------

    async def _command(self, command: Command) -> None:
        if command.id in self._handled_commands:
            log.debug("command %d (%s) delivered again; its answer is on its way", command.id, command.type)
            return
        self._handled_commands[command.id] = None
        while len(self._handled_commands) > MAX_REMEMBERED_COMMANDS:
            del self._handled_commands[next(iter(self._handled_commands))]
        try:
            ok, message, data = await commands.handle(self, command)
        except Exception as exc:
            log.exception("command %d (%s) failed in the agent", command.id, command.type)
            ok, message, data = False, f"the agent failed to carry it out: {one_line(exc)}", {}
        log.info("command %d (%s): %s", command.id, command.type, message)
        payload, key = reports.command_result(command.id, command.type, ok=ok, message=message, data=data)
        await self._spool_report(payload, key)

    async def _unknown_command(self, raw: dict[str, Any]) -> None:
        found = polling.unknown_command(raw)
        if found is None:
            return
        command_id, kind, message = found
        log.warning("command %d: %s", command_id, message)
        payload, key = reports.command_result(command_id, kind, ok=False, message=message)
        await self._spool_report(payload, key)

    async def _spool_report(self, payload: dict[str, Any], key: str) -> None:
        try:
            await asyncio.to_thread(self.spool.append, "result", payload, key=key)
        except SpoolError as exc:
            log.error("could not keep %s for the hub: %s", payload.get("what"), exc)
            return
        self._ship_wake.set()

    # -- logs and shipping -------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.options.log_flush_interval, self._flush_wake)
            self._flush_wake.clear()
            await self.flush_logs()

    async def flush_logs(self) -> None:
        """Move the buffered log records to the spool (one transaction)."""
        overflowed, self.collector.overflowed = self.collector.overflowed, 0
        if overflowed:
            log.warning("dropped %d log records that could not be kept in the spool", overflowed)
        records = self.collector.take()
        if not records:
            return
        try:
            await asyncio.to_thread(self.spool.append_many, "log", records)
        except SpoolError as exc:
            self.collector.put_back(records)
            log.error("cannot keep log records in the spool: %s", exc, extra={LOCAL_ONLY: True})
            return
        self._ship_wake.set()

    async def _ship_loop(self) -> None:
        backoff = self._backoff()
        while not self._stopping.is_set():
            self._ship_wake.clear()
            try:
                shipped = await self.shipper.ship_once()
            except (HubUnavailable, Deferred) as exc:
                await self._sleep(backoff.next(getattr(exc, "retry_after", None)))
                continue
            backoff.reset()
            if not shipped:
                await self._sleep(5.0, self._ship_wake)

    # -- stopping ------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        current, worker = self.current, self._worker
        if current is not None and worker is not None and not worker.done():
            reason = "the hub refused this agent's credential" if self._revoked else STOPPING
            current.request_cancel(reason)
            log.info("run %d: stopping after its current batch", current.run_id)
            done, _ = await asyncio.wait([worker], timeout=self.options.run_stop_timeout)
            if not done:
                log.warning(
                    "run %d did not stop within %.0f s; exiting without its result: the hub fails the attempt when "
                    "its lease runs out",
                    current.run_id,
                    self.options.run_stop_timeout,
                )
        # Every task is cancelled but the log flusher: cancelling it while it writes to the spool would lose the
        # records it took (the write goes on in its thread while the spool closes). It ends by itself on stop.
        for task in self._tasks:
            if task.get_name() != self._flush_loop.__name__:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush_logs()
        if self._revoked is None:
            # What is left stays in the spool for the next start.
            with contextlib.suppress(TimeoutError, HubUnavailable, Deferred, Revoked):
                await asyncio.wait_for(self.shipper.drain(), self.options.stop_grace)
        await self.flush_logs()
        waiting = (await asyncio.to_thread(self.spool.stats)).records
        left = ", ".join(f"{n} {kind}" for kind, n in sorted(waiting.items()))
        # For the console only: spooling this line would leave one record behind at every clean stop.
        detail = f"; waiting in the spool for the hub: {left}" if left else ""
        log.info("agent stopped%s", detail, extra={LOCAL_ONLY: True})


class _PollRefused(Exception):
    """The hub answered the poll with an error or something that is no poll answer (already logged)."""


async def _settle(task: asyncio.Task[Any]) -> BaseException | None:
    """Let ``task`` end (cancelled unless it has ended) and fetch its exception: None if it returned or was cancelled.

    Fetching it tells asyncio the exception was seen: a task that ends with an exception nobody fetches is printed
    as "Task exception was never retrieved", with a traceback, when it is garbage-collected (at the latest, as the
    agent exits).
    """
    if not task.done():
        task.cancel()
        await asyncio.wait([task])
    return None if task.cancelled() else task.exception()


def _threadsafe(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the agent has stopped
        loop.call_soon_threadsafe(event.set)
