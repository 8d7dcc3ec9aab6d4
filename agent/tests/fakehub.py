"""A stand-in for the hub's agent channel: an aiohttp application on loopback, in a thread of its own.

It follows the protocol in :mod:`grocerysync.core.wire` as the hub does: every body is validated with the
wire models (422 with ``{"error": ...}`` otherwise), an unknown or revoked credential gets 401, polls are held
until there is something to hand out or their ``wait`` runs out, reports are idempotent (rejections by
sequence number, log records by uid, a run's result once, then answered as a duplicate), and a report for a
run that is no longer the agent's gets 409. It records everything it receives so tests can check what arrived
and how often. ``stop()`` takes it off the network (the port refuses connections) and ``start()`` brings it
back on the same port.

Runs are added with :meth:`FakeHub.add_run`; each is handed out once, to the first poll with capacity.

(The real hub is exercised against the real agent in the end-to-end tests; the agent never imports the hub.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from grocerysync.core.jobs import JobSpec
from grocerysync.core.wire import (
    AGENT_API_PREFIX,
    AgentConfig,
    Command,
    CommandResult,
    Heartbeat,
    LeaseAnswer,
    LogBatch,
    PollAnswer,
    Receipt,
    RejectionBatch,
    RunAck,
    RunAssignment,
    RunProgress,
    RunResult,
)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

CREDENTIAL = "gsa_fake-hub-credential"


@dataclass
class FakeRun:
    """A run as the fake hub keeps it."""

    assignment: RunAssignment
    status: str = "queued"  # queued, dispatched, running, finished, expired
    cancel: bool = False
    acks: int = 0
    progress: list[RunProgress] = field(default_factory=list)
    rejections: dict[int, dict[str, Any]] = field(default_factory=dict)
    rejection_posts: int = 0
    result: RunResult | None = None
    result_posts: int = 0

    @property
    def run_id(self) -> int:
        return self.assignment.run_id


@dataclass
class FakeCommand:
    command: Command
    delivered: int = 0
    result: CommandResult | None = None
    result_posts: int = 0


class FakeHub:
    """The fake hub; use it as a context manager or call :meth:`start` / :meth:`close`."""

    def __init__(self, *, config: AgentConfig | None = None, lease_seconds: float = 60.0) -> None:
        self.credentials = {CREDENTIAL: 1}
        self.revoked = False
        self.config = config or AgentConfig(poll_wait=2.0, progress_interval=0.2)
        self.lease_seconds = lease_seconds
        self.runs: dict[int, FakeRun] = {}
        self.commands: dict[int, FakeCommand] = {}
        self.polls: list[Heartbeat] = []
        self.logs: dict[str, dict[str, Any]] = {}
        self.log_posts = 0
        self.log_uid_posts: dict[str, int] = {}
        #: Answer the next requests to a route (e.g. "result", "logs", "poll") with these statuses, in order.
        self.faults: dict[str, list[int]] = {}
        #: Extra keys put into every poll answer (a newer hub's fields), and raw runs/commands to hand out.
        self.raw_runs: list[dict[str, Any]] = []
        self.raw_commands: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []  # (route, Authorization header)
        self.port = 0
        self._lock = threading.RLock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-hub", daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self._next_command = 1
        self._down = False

    # -- lifetime (called from the test's thread) ----------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                return await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout=30)

    def start(self) -> FakeHub:
        """Listen (again, on the same port once it had one)."""
        self._call(self._start)
        return self

    def stop(self) -> None:
        """Go off the network: the port refuses connections until :meth:`start`."""
        self._call(self._stop)

    def close(self) -> None:
        self._call(self._stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _start(self) -> None:
        app = web.Application(client_max_size=1_000_000, middlewares=[_refusals])  # the hub's body limit
        prefix = AGENT_API_PREFIX
        app.router.add_post(f"{prefix}/poll", self._poll)
        app.router.add_post(f"{prefix}/runs/{{run_id}}/ack", self._ack)
        app.router.add_post(f"{prefix}/runs/{{run_id}}/progress", self._progress)
        app.router.add_post(f"{prefix}/runs/{{run_id}}/rejections", self._rejections)
        app.router.add_post(f"{prefix}/runs/{{run_id}}/result", self._result)
        app.router.add_post(f"{prefix}/commands/{{command_id}}/result", self._command_result)
        app.router.add_post(f"{prefix}/logs", self._logs)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        self._down = False
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        self._down = True
        self._wake()  # held polls answer now, as a hub going down would drop them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what tests do (from the test's thread) ----------------------------------------------------

    def add_run(self, spec: JobSpec | dict[str, Any], *, run_id: int, attempt: int = 1, full: bool = False) -> FakeRun:
        """Queue a run for the next poll with capacity."""
        job = spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)
        assignment = RunAssignment(
            run_id=run_id,
            attempt=attempt,
            job_id=run_id,
            full=full,
            lease_expires_at=datetime.now(UTC) + timedelta(seconds=self.lease_seconds),
            lease_seconds=self.lease_seconds,
            spec=job,
        )
        run = FakeRun(assignment)
        with self._lock:
            self.runs[run_id] = run
        self._notify()
        return run

    def add_command(self, kind: str, run_id: int | None = None) -> int:
        """Queue a command for the agent; its id."""
        with self._lock:
            command_id = self._next_command
            self._next_command += 1
            self.commands[command_id] = FakeCommand(Command(id=command_id, type=kind, run_id=run_id))  # type: ignore[arg-type]
        self._notify()
        return command_id

    def redeliver(self, command_id: int) -> None:
        """Hand the command out again with the next poll, as the hub does when its answer is late."""
        with self._lock:
            self.commands[command_id].delivered = 0
        self._notify()

    def cancel(self, run_id: int) -> None:
        """A technician cancels the run: the next progress answer says so."""
        with self._lock:
            self.runs[run_id].cancel = True

    def expire(self, run_id: int) -> None:
        """The run's lease ran out on the hub: reports for it are refused with 409 from now on."""
        with self._lock:
            self.runs[run_id].status = "expired"

    def fail(self, route: str, *statuses: int) -> None:
        """Answer the next requests to ``route`` with ``statuses`` (one each)."""
        with self._lock:
            self.faults.setdefault(route, []).extend(statuses)

    def _notify(self) -> None:
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def wait_for(self, what: Callable[[], T], timeout: float = 20.0, message: str = "") -> T:
        """Poll ``what()`` until it is truthy; its value (AssertionError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {message or what}")
            time.sleep(0.02)

    def messages(self, *, contains: str = "", level: str | None = None) -> list[dict[str, Any]]:
        """Stored log records whose message contains ``contains`` (and of ``level``), oldest first."""
        with self._lock:
            records = list(self.logs.values())
        return [
            r
            for r in sorted(records, key=lambda r: r["at"])
            if contains in r["message"] and (level is None or r["level"] == level)
        ]

    # -- the routes (in the hub's thread) ----------------------------------------------------------------

    async def _authorize(self, request: web.Request, route: str) -> None:
        """Refuse an unknown or revoked credential (401), or answer with the next fault injected for ``route``."""
        auth = request.headers.get("Authorization", "")
        with self._lock:
            self.requests.append((route, auth))
            faults = self.faults.get(route)
            fault = faults.pop(0) if faults else None
        scheme, _, credential = auth.partition(" ")
        if scheme != "Bearer" or credential not in self.credentials or self.revoked:
            raise _Refused(401, "agent credential not accepted: the agent was revoked; enroll it again")
        if fault is not None:
            raise _Refused(fault, f"injected fault {fault}")

    async def _receive(self, request: web.Request, route: str, model: type[M]) -> M:
        """The request's body as ``model``, once the credential is accepted (422 if it is no ``model``)."""
        await self._authorize(request, route)
        try:
            return model.model_validate_json(await request.read())
        except ValidationError as exc:
            raise _Refused(422, f"invalid request: {exc.errors(include_input=False, include_url=False)}") from None

    async def _poll(self, request: web.Request) -> web.StreamResponse:
        heartbeat = await self._receive(request, "poll", Heartbeat)
        with self._lock:
            self.polls.append(heartbeat)
        deadline = time.monotonic() + heartbeat.wait
        while True:
            changed = self._changed
            answer = self._hand_out(heartbeat.capacity)
            if answer is not None or time.monotonic() >= deadline or self._down:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=max(0.0, deadline - time.monotonic()))
        body = answer or PollAnswer(config=self.config, server_time=datetime.now(UTC)).wire()
        return web.json_response(body)

    def _hand_out(self, capacity: int) -> dict[str, Any] | None:
        with self._lock:
            commands = [c for c in self.commands.values() if not c.delivered]
            for c in commands:
                c.delivered += 1
            runs = []
            for run in self.runs.values():
                if len(runs) >= capacity:
                    break
                if run.status == "queued":
                    run.status = "dispatched"
                    runs.append(run.assignment)
            raw_runs, self.raw_runs = (self.raw_runs, []) if capacity else ([], self.raw_runs)
            raw_commands, self.raw_commands = self.raw_commands, []
        if not (commands or runs or raw_runs or raw_commands):
            return None
        answer = PollAnswer(
            runs=runs, commands=[c.command for c in commands], config=self.config, server_time=datetime.now(UTC)
        ).wire()
        answer["runs"] += raw_runs
        answer["commands"] += raw_commands
        return answer

    def _run(self, request: web.Request, *states: str, attempt: int) -> FakeRun:
        """The run the request is about, if it is in one of ``states`` with this attempt (404, 409 otherwise)."""
        run = self.runs.get(int(request.match_info["run_id"]))
        if run is None:
            raise _Refused(404, "no such run")
        if run.status not in states or run.assignment.attempt != attempt:
            raise _Refused(409, f"run {run.run_id} is no longer assigned to this agent ({run.status})")
        return run

    async def _ack(self, request: web.Request) -> web.Response:
        body = await self._receive(request, "ack", RunAck)
        with self._lock:
            run = self._run(request, "dispatched", "running", attempt=body.attempt)
            run.status = "running"
            run.acks += 1
            cancel = run.cancel
        return _lease(self.lease_seconds, cancel)

    async def _progress(self, request: web.Request) -> web.Response:
        body = await self._receive(request, "progress", RunProgress)
        with self._lock:
            run = self._run(request, "running", attempt=body.attempt)
            run.progress.append(body)
            cancel = run.cancel
        return _lease(self.lease_seconds, cancel)

    async def _rejections(self, request: web.Request) -> web.Response:
        body = await self._receive(request, "rejections", RejectionBatch)
        with self._lock:
            run = self._run(request, "running", "finished", attempt=body.attempt)
            run.rejection_posts += 1
            receipt = Receipt()
            for n, rejection in enumerate(body.rejections):
                seq = body.first_seq + n
                if seq in run.rejections:
                    receipt.duplicates += 1
                else:
                    run.rejections[seq] = rejection.model_dump()
                    receipt.recorded += 1
        return web.json_response(receipt.model_dump())

    async def _result(self, request: web.Request) -> web.Response:
        body = await self._receive(request, "result", RunResult)
        with self._lock:
            run = self._run(request, "running", "finished", attempt=body.attempt)
            run.result_posts += 1
            if run.status == "finished":
                return web.json_response(Receipt(duplicates=1).model_dump())
            run.status = "finished"
            run.result = body
        return web.json_response(Receipt(recorded=1).model_dump())

    async def _command_result(self, request: web.Request) -> web.Response:
        body = await self._receive(request, "command_result", CommandResult)
        with self._lock:
            command = self.commands.get(int(request.match_info["command_id"]))
            if command is None:
                raise _Refused(404, "no such command")
            command.result_posts += 1
            duplicate = command.result is not None
            command.result = command.result or body
        return web.json_response(Receipt(recorded=0 if duplicate else 1, duplicates=int(duplicate)).model_dump())

    async def _logs(self, request: web.Request) -> web.Response:
        body = await self._receive(request, "logs", LogBatch)
        receipt = Receipt()
        with self._lock:
            self.log_posts += 1
            for record in body.records:
                uid = str(record.uid)
                self.log_uid_posts[uid] = self.log_uid_posts.get(uid, 0) + 1
                if uid in self.logs:
                    receipt.duplicates += 1
                else:
                    self.logs[uid] = record.model_dump(mode="json")
                    receipt.recorded += 1
        return web.json_response(receipt.model_dump())


class _Refused(Exception):
    """A route refuses the request: answered with ``status`` and the hub's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@web.middleware
async def _refusals(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _Refused as refused:
        return web.json_response({"error": refused.message, "fields": []}, status=refused.status)
    return response


def _lease(seconds: float, cancel: bool) -> web.Response:
    answer = LeaseAnswer(lease_expires_at=datetime.now(UTC) + timedelta(seconds=seconds), cancel=cancel)
    return web.json_response(answer.model_dump(mode="json"))
