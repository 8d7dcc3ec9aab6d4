"""One run the hub assigned: acknowledge it, run the export, report progress, spool the outcome.

The export pipeline is CPU-heavy, so it runs in a thread of its own with its own event loop, and the
agent's loop stays free for polls, progress reports and shipping. The thread starts with a copy of the
worker's context, so :data:`~.logship.current_run` tags the pipeline's log records with the run.

A run is stopped after the batch it is working on (:func:`~grocerysync.agent.pipeline.run_export`'s
``cancel`` event) when a technician cancels it (a progress answer or a ``cancel`` command), when the hub
says the run is no longer this agent's, or when the agent is asked to stop. It is then reported as
``cancelled``: nothing was committed and the next run sends the same items again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from grocerysync.agent.pipeline import run_export
from grocerysync.agent.runner import reports
from grocerysync.agent.runner.hubclient import Backoff, HubClient, HubUnavailable, Revoked
from grocerysync.agent.runner.logship import current_run, one_line
from grocerysync.agent.runner.redact import Redactor
from grocerysync.agent.spool import Spool
from grocerysync.agent.summary import Progress, RunSummary
from grocerysync.core.manager import PluginManager
from grocerysync.core.wire import LeaseAnswer, RunAck, RunAssignment, RunProgress

log = logging.getLogger(__name__)

#: Seconds an acknowledgement or progress report may take.
REQUEST_TIMEOUT = 30.0

_COUNTS = ("read", "sent", "unchanged", "rejected", "filtered", "failed", "removed")
STOPPING = "the agent was stopped (service stop, shutdown or Ctrl+C) during the run"
BY_TECHNICIAN = "cancelled by a technician at the hub"


@dataclass
class RunHandle:
    """A run in progress, as the rest of the agent sees it."""

    assignment: RunAssignment
    #: Local monotonic time by which the run must be acknowledged (the hub's lease, in this machine's clock).
    ack_deadline: float
    #: Set to stop the export (checked by the pipeline's thread between batches) ...
    cancel: threading.Event = field(default_factory=threading.Event)
    #: ... and the same for the agent's event loop (request_cancel is only called there).
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    #: The hub said the run is no longer this agent's: its result is not reported.
    abandoned: bool = False
    latest: Progress | None = None
    started: bool = False

    @property
    def run_id(self) -> int:
        """The hub's id of the run."""
        return self.assignment.run_id

    def request_cancel(self, reason: str) -> None:
        """Stop the run after its current batch (the first reason given is kept)."""
        if not self.cancel.is_set():
            self.reason = reason
            self.cancel.set()
            self.cancelled.set()


class RunWorker:
    """Carries one :class:`RunHandle` from acknowledgement to its spooled result (:meth:`run`)."""

    def __init__(
        self,
        handle: RunHandle,
        *,
        client: HubClient,
        spool: Spool,
        plugins: PluginManager,
        state_dir: Path,
        redactor: Redactor,
        progress_interval: Callable[[], float],
        backoff: Callable[[], Backoff],
        on_spooled: Callable[[], None],
    ) -> None:
        self.handle = handle
        self.client = client
        self.spool = spool
        self.plugins = plugins
        self.state_dir = state_dir
        self.redactor = redactor
        self.progress_interval = progress_interval
        self.backoff = backoff
        self.on_spooled = on_spooled
        self.revoked: Revoked | None = None

    async def run(self) -> None:
        """Acknowledge, run and report; raises only :class:`~.hubclient.Revoked` (after the export stopped)."""
        handle = self.handle
        current_run.set(handle.run_id)
        assignment = handle.assignment
        log.info(
            "run %d (attempt %d, %s) of job %r received",
            handle.run_id,
            assignment.attempt,
            assignment.trigger,
            assignment.spec.name,
        )
        lease = await self._acknowledge()
        if lease is None:
            return
        if lease.cancel:
            handle.request_cancel(BY_TECHNICIAN)
        secrets = list(assignment.spec.destination.secret_values().values())
        self.redactor.add(secrets)
        try:
            summary = await self._export() if not handle.cancel.is_set() else self._not_started()
            if handle.abandoned:
                what = "run %d ended as %s; not reported: the hub gave it to another attempt"
                log.warning(what, handle.run_id, summary.status)
                return
            if summary.status == "cancelled" and handle.reason:
                summary.error = f"{handle.reason}: {summary.error}" if summary.error else handle.reason
            await self._spool(summary)
        finally:
            self.redactor.remove(secrets)
        if self.revoked is not None:
            raise self.revoked

    # -- acknowledgement ------------------------------------------------------------------------

    async def _acknowledge(self) -> LeaseAnswer | None:
        handle = self.handle
        backoff = self.backoff()
        body = RunAck(attempt=handle.assignment.attempt).model_dump(mode="json")
        while True:
            try:
                answer = await self.client.post(f"runs/{handle.run_id}/ack", body, time_limit=REQUEST_TIMEOUT)
            except HubUnavailable as exc:
                delay = backoff.next(exc.retry_after)
                if time.monotonic() + delay > handle.ack_deadline:
                    log.warning(
                        "could not acknowledge run %d before its lease ran out (%s); the hub hands it out again",
                        handle.run_id,
                        exc,
                    )
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(handle.cancelled.wait(), delay)
                if handle.cancel.is_set():  # the agent is stopping: leave the run to the hub (its lease runs out)
                    what = "run %d was not acknowledged before the agent stopped; the hub hands it out again"
                    log.info(what, handle.run_id)
                    return None
                continue
            if answer.ok:
                try:
                    return LeaseAnswer.model_validate(answer.body)
                except ValidationError:
                    return LeaseAnswer(lease_expires_at=datetime.now(UTC))
            if answer.status in (404, 409, 410):
                log.warning(
                    "run %d is no longer assigned to this agent (HTTP %d: %s); not running it",
                    handle.run_id,
                    answer.status,
                    answer.message or "no explanation",
                )
            else:
                log.error(
                    "the hub refused to hand over run %d (HTTP %d: %s); not running it; check that the agent and "
                    "the hub are compatible versions",
                    handle.run_id,
                    answer.status,
                    answer.message or "no explanation",
                )
            return None

    # -- the export, in its own thread ---------------------------------------------------------------

    async def _export(self) -> RunSummary:
        handle = self.handle
        assignment = handle.assignment
        # A later attempt of a run gets a run directory of its own.
        local_id = str(handle.run_id) if assignment.attempt == 1 else f"{handle.run_id}-{assignment.attempt}"

        def progress(snapshot: Progress) -> None:  # called in the pipeline's thread after every batch
            handle.latest = snapshot

        def export() -> RunSummary:
            return asyncio.run(
                run_export(
                    assignment.spec,
                    plugins=self.plugins,
                    state_dir=self.state_dir,
                    run_id=local_id,
                    full=assignment.full,
                    progress=progress,
                    cancel=handle.cancel,
                )
            )

        handle.started = True
        done = in_thread(export, name=f"run-{handle.run_id}")
        try:
            await self._report_progress(done)
        except Revoked as exc:
            # Nothing more will reach the hub: stop the export cleanly, then let the agent stop.
            self.revoked = exc
            handle.request_cancel("the hub refused this agent's credential")
        try:
            return await done
        except Exception as exc:  # run_export catches the expected ones; this is a defect
            log.exception("run %d crashed", handle.run_id)
            summary = self._not_started()
            summary.status = "failed"
            summary.error = f"internal error in the agent: {one_line(exc)}"
            return summary

    def _not_started(self) -> RunSummary:
        assignment = self.handle.assignment
        return RunSummary(
            job=assignment.spec.name,
            run_id=str(self.handle.run_id),
            mode="full" if assignment.full else "delta",
            dry_run=False,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            status="cancelled",
            error="",
        )

    async def _report_progress(self, done: asyncio.Future[RunSummary]) -> None:
        handle = self.handle
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), timeout=self.progress_interval())
                return
            snapshot = handle.latest
            counts: dict[str, Any] = {}
            phase = "starting"
            if snapshot is not None:
                phase = snapshot.phase
                counts = {k: getattr(snapshot, k) for k in _COUNTS}
            body = RunProgress(attempt=handle.assignment.attempt, phase=phase, **counts).model_dump(mode="json")
            try:
                answer = await self.client.post(f"runs/{handle.run_id}/progress", body, time_limit=REQUEST_TIMEOUT)
            except HubUnavailable:
                continue  # Connectivity has said so once; the run goes on, its lease may run out meanwhile
            if answer.ok:
                with contextlib.suppress(ValidationError):
                    if LeaseAnswer.model_validate(answer.body).cancel and not handle.cancel.is_set():
                        log.warning("run %d: %s; stopping after the current batch", handle.run_id, BY_TECHNICIAN)
                        handle.request_cancel(BY_TECHNICIAN)
            elif answer.status in (404, 409, 410) and not handle.abandoned:
                handle.abandoned = True
                log.warning(
                    "the hub says run %d is no longer this agent's (HTTP %d: %s); stopping it after the current batch",
                    handle.run_id,
                    answer.status,
                    answer.message or "no explanation",
                )
                handle.request_cancel("the hub gave the run to another attempt")

    # -- the outcome ---------------------------------------------------------------------------

    async def _spool(self, summary: RunSummary) -> None:
        handle = self.handle
        try:
            total = await asyncio.to_thread(
                reports.spool_run_report, self.spool, handle.run_id, handle.assignment.attempt, summary, self.redactor
            )
        except Exception as exc:
            log.error(
                "could not keep run %d's result for the hub (%s); the hub will fail the run when its lease runs "
                "out; check the free disk space of the state directory",
                handle.run_id,
                one_line(exc),
            )
            return
        log.info("run %d %s: result and %d rejection(s) queued for the hub", handle.run_id, summary.status, total)
        self.on_spooled()


def in_thread(fn: Callable[[], RunSummary], *, name: str) -> asyncio.Future[RunSummary]:
    """Run ``fn`` in a new daemon thread (with a copy of the current context); a future for its result.

    A daemon thread rather than the loop's executor: when the agent must exit while an export is still in a
    long batch, the process is not held up waiting for it (the run's lease then runs out on the hub).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[RunSummary] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: RunSummary | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def target() -> None:
        result: RunSummary | None = None
        error: BaseException | None = None
        try:
            result = context.run(fn)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the agent's loop is already closed: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future
