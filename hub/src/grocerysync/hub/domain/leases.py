"""Lease expiry: a run whose agent stopped reporting fails, and its job's retry policy queues the next attempt.

A dispatched run must be acknowledged, and a running one must report progress, before its
``lease_expires_at`` (:mod:`grocerysync.hub.domain.dispatch` sets and extends it). When the lease runs out,
the agent died, was switched off, or lost the hub for longer than the lease. The sweeper then:

- fails the run (``the agent stopped reporting: lease expired at ...``) with ``finished_at``, or cancels it if
  a technician had asked to cancel it;
- by the job's retry policy (``max_retries``, ``retry_delay_seconds``) queues a new run: attempt + 1, trigger
  ``retry``, the same ``full``, not before now + the delay; no retry when the job was deleted or disabled, its
  attempts are used up, or another run of it is pending;
- writes the outcome to the store's log and wakes the store's agents.

On PostgreSQL the expired runs are locked with ``FOR UPDATE SKIP LOCKED``, so several hub processes sweep
without doing anything twice; every change is also a conditional update on the run's status and lease, so a
progress report that extended the lease first wins.

A hub that was stopped could not extend any lease, so after every start the sweeper waits one lease length
plus a margin for the agents to reconnect (:func:`startup_grace`) before it expires anything
(:class:`LeaseSweeper`). A run whose agent is back by then has had its lease extended by its next report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.queryset import QuerySet

from grocerysync.hub.domain.scheduler import each_isolated, hub_log, pending_run, work_through
from grocerysync.hub.domain.wake import WAKEUPS, Wakeups
from grocerysync.hub.models import Agent, ExportJob, Run, RunStatus
from grocerysync.hub.scope import SYSTEM, Scope

log = logging.getLogger(__name__)

#: Runs expired per transaction.
DEFAULT_BATCH = 100
#: Seconds added to the longest lease after a start: how long a stopped agent channel may take to come back.
RECONNECT_MARGIN = 60.0
#: The states in which a run holds a lease.
LEASED: tuple[RunStatus, ...] = (RunStatus.DISPATCHED, RunStatus.RUNNING)

_SYSTEM = Scope(SYSTEM)


def startup_grace(*lease_seconds: float) -> float:
    """How long after a start the sweeper waits: the longest of the given leases plus :data:`RECONNECT_MARGIN`."""
    return max(lease_seconds, default=0.0) + RECONNECT_MARGIN


@dataclass(frozen=True, slots=True)
class ExpiryReport:
    """What a sweep did: the runs it failed (or cancelled), and the retry runs it queued."""

    expired: tuple[int, ...] = ()
    retries: tuple[int, ...] = ()

    def __add__(self, other: ExpiryReport) -> ExpiryReport:
        return ExpiryReport(self.expired + other.expired, self.retries + other.retries)


class LeaseSweeper:
    """Expires leases, but only once this process has served for ``grace_seconds`` (see :func:`startup_grace`)."""

    def __init__(
        self, grace_seconds: float, *, wakeups: Wakeups = WAKEUPS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.grace_seconds = grace_seconds
        self._wakeups = wakeups
        self._clock = clock
        self._started = clock()
        self._announced = False

    @property
    def ready(self) -> bool:
        """Whether the grace after the start is over."""
        return self._clock() - self._started >= self.grace_seconds

    async def sweep(self, now: datetime | None = None) -> ExpiryReport:
        """Expire the runs whose lease ran out (nothing during the grace after the start)."""
        if not self.ready:
            return ExpiryReport()
        if not self._announced:
            log.info("lease expiry is on: runs whose agent stopped reporting fail and are retried by their job")
            self._announced = True
        return await expire_leases(now, wakeups=self._wakeups)


async def expire_leases(
    now: datetime | None = None, *, batch: int = DEFAULT_BATCH, wakeups: Wakeups = WAKEUPS
) -> ExpiryReport:
    """Fail (or cancel) every run whose lease ran out before ``now`` and queue retries; see the module."""
    now = now or datetime.now(UTC)

    async def expire(runs: list[Run], db: BaseDBAsyncClient | None) -> tuple[ExpiryReport, int, set[int]]:
        return await each_isolated(
            runs,
            lambda run, tx: _expire(run, now, tx),
            what=lambda run: f"expiring the lease of run {run.id}",
            wake=lambda expired: bool(expired.retries),
            empty=ExpiryReport(),
        )

    return await work_through(lambda: _expired(now, batch), expire, total=ExpiryReport(), batch=batch, wakeups=wakeups)


def _expired(now: datetime, batch: int) -> QuerySet[Run]:
    return (
        _SYSTEM.query(Run)
        .filter(status__in=LEASED, lease_expires_at__lt=now)
        .order_by("lease_expires_at", "id")
        .limit(batch)
    )


async def _agent_label(agent_id: int | None, db: BaseDBAsyncClient) -> str:
    if agent_id is None:
        return "no agent"
    agent = await _SYSTEM.query(Agent).using_db(db).get_or_none(id=agent_id)
    return f"agent {agent_id}, {agent.name}" if agent is not None else f"agent {agent_id}, since deleted"


async def _expire(run: Run, now: datetime, db: BaseDBAsyncClient) -> ExpiryReport:
    """Fail or cancel one run whose lease ran out, and queue its retry; nothing if it changed meanwhile."""
    lease = run.lease_expires_at
    assert lease is not None  # the query asked for expired leases
    cancelled = run.cancel_requested_at is not None
    status = RunStatus.CANCELLED if cancelled else RunStatus.FAILED
    changed = (
        await _SYSTEM.query(Run)
        .filter(id=run.id, status=run.status, lease_expires_at=lease)
        .using_db(db)
        .update(status=status, finished_at=now)
    )
    if not changed:
        # The agent reported (and extended the lease) or finished between our read and this update.
        return ExpiryReport()
    when = f"{lease.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    who = await _agent_label(run.agent_id, db)
    retry = None
    if cancelled:
        error = f"cancelled: the agent did not confirm the cancel before the run's lease expired at {when} ({who})"
    else:
        retry, next_step = await queue_retry(run, now, db)
        error = f"the agent stopped reporting: lease expired at {when} ({who}); {next_step}"
    await _SYSTEM.query(Run).filter(id=run.id).using_db(db).update(error=error)
    log.warning("run %s of export job %s (%s): %s", run.id, run.job_id, run.job_name, error)
    await hub_log(
        db,
        "error",
        f"run {run.id} of export job {run.job_name}: {error}",
        retailer_id=run.retailer_id,
        store_id=run.store_id,
        run_id=run.id,
    )
    return ExpiryReport(expired=(run.id,), retries=(retry.id,) if retry is not None else ())


async def queue_retry(run: Run, now: datetime, db: BaseDBAsyncClient) -> tuple[Run | None, str]:
    """Queue the next attempt of a failed ``run`` by its job's retry policy (call it once the run has failed).

    Returns the new run (or None) and a sentence for the failed run's error saying what happens next. No retry
    when the job was deleted or disabled, its attempts are used up (``attempt`` > ``max_retries``), or another
    run of the job is already queued, dispatched or running.
    """
    job = await _SYSTEM.query(ExportJob).using_db(db).get_or_none(id=run.job_id) if run.job_id is not None else None
    if job is None:
        return None, "no retry: its export job was deleted"
    if not job.enabled:
        return None, f"no retry: export job {job.id} ({job.name}) is disabled"
    attempts = 1 + job.max_retries
    if run.attempt >= attempts:
        if job.max_retries == 0:
            return None, "no retry (the job has none): check the store's agent, then run the job again"
        return (
            None,
            f"no retry: that was attempt {run.attempt} of {attempts}; check the store's agent, then run the job",
        )
    pending = await pending_run(job.id, db)
    if pending is not None:
        return None, f"no retry: run {pending.id} of the job is already {pending.status.value}"
    not_before = now + timedelta(seconds=job.retry_delay_seconds)
    retry = await Run.create(
        retailer_id=run.retailer_id,
        store_id=run.store_id,
        job_id=job.id,
        job_name=job.name,
        trigger="retry",
        triggered_by=f"retry of run {run.id}",
        attempt=run.attempt + 1,
        full=run.full,
        not_before=not_before,
        using_db=db,
    )
    return retry, (
        f"retry queued as run {retry.id} (attempt {retry.attempt} of {attempts}), "
        f"not before {not_before:%Y-%m-%d %H:%M:%S} UTC"
    )
