"""What agents report about the runs they were handed: acknowledgement, progress, rejections and the result.

Every report names the run's attempt, and is accepted only from the agent the run was dispatched to, for that
attempt (:func:`_require`): anything else answers 409 "no longer assigned to this agent", which tells the agent
to drop the report. A run of another store or retailer answers 404, as if it did not exist
(:func:`grocerysync.hub.domain.dispatch.agent_run`). Each state change is a conditional ``UPDATE`` that repeats
those conditions, so a report racing the lease sweeper or a technician's cancel cannot undo what they did.

Reports are idempotent, because the agent re-sends what it is not sure arrived: an ack or progress report
sent twice just extends the lease again, rejections carry their sequence number in the run (stored once), and
a result for a run this agent already finished is answered as a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from tortoise.queryset import QuerySet

from grocerysync.core.wire import LeaseAnswer, Receipt, RejectionBatch, RunAck, RunCounts, RunProgress, RunResult
from grocerysync.hub.db import transaction
from grocerysync.hub.domain.dispatch import ACTIVE, SYS, agent_run, hub_log
from grocerysync.hub.domain.leases import queue_retry
from grocerysync.hub.domain.scheduler import connection_name
from grocerysync.hub.domain.wake import WAKEUPS
from grocerysync.hub.errors import Conflict
from grocerysync.hub.models import FINISHED_STATUSES, Agent, Run, RunRejection, RunStatus
from grocerysync.hub.settings import Settings

#: Longest ``ref`` and ``item_id`` kept of a rejection (the columns' sizes); longer ones are cut, not refused.
_REF_CHARS = 500
_ITEM_ID_CHARS = 200
#: Marks a result recorded from the agent's report (the lease sweeper and cancels leave other details).
SOURCE_AGENT = "agent"
_LEVEL = {"succeeded": "info", "partially_failed": "warning", "cancelled": "warning", "failed": "error"}


def _now() -> datetime:
    return datetime.now(UTC)


def _require(run: Run, agent: Agent, attempt: int, statuses: Iterable[RunStatus]) -> None:
    """409 unless the run is this agent's, on this attempt, in one of ``statuses``."""
    if run.agent_id != agent.id:
        why = "it was handed to another agent" if run.agent_id is not None else "it was not handed to this agent"
    elif run.attempt != attempt:
        why = f"this report is for attempt {attempt}, the run is on attempt {run.attempt}"
    elif run.status not in tuple(statuses):
        why = f"it is {run.status}" + (f": {run.error}" if run.error else "")
    else:
        return
    raise Conflict(f"run {run.id} is no longer assigned to this agent ({why}); drop this report")


def _owned(run: Run, agent: Agent, attempt: int) -> QuerySet[Run]:
    """The conditional update's filter: this run, still this agent's, on this attempt, still going."""
    return SYS.query(Run).filter(id=run.id, agent_id=agent.id, attempt=attempt, status__in=list(ACTIVE))


def _counts(counts: RunCounts) -> dict[str, int]:
    return {
        "items_read": counts.read,
        "items_written": counts.sent,
        "items_removed": counts.removed,
        "items_rejected": counts.rejected,
        "items_unchanged": counts.unchanged,
        "items_filtered": counts.filtered,
        "items_failed": counts.failed,
    }


async def _changed(agent: Agent, run: Run, attempt: int, updated: int) -> Run:
    """After a conditional update: the run if it matched, else the 409 that says what changed meanwhile."""
    if not updated:
        fresh = await agent_run(agent, run.id)
        _require(fresh, agent, attempt, ())
    return run


async def ack(agent: Agent, run_id: int, data: RunAck, settings: Settings) -> LeaseAnswer:
    """The agent starts the run: it is running, and its lease is extended. Acking twice answers the same way."""
    run = await agent_run(agent, run_id)
    _require(run, agent, data.attempt, ACTIVE)
    now = _now()
    lease = now + timedelta(seconds=settings.run_lease_seconds)
    updated = await _owned(run, agent, data.attempt).update(
        status=RunStatus.RUNNING, started_at=run.started_at or now, lease_expires_at=lease
    )
    await _changed(agent, run, data.attempt, updated)
    return LeaseAnswer(lease_expires_at=lease, cancel=run.cancel_requested_at is not None)


async def progress(agent: Agent, run_id: int, data: RunProgress, settings: Settings) -> LeaseAnswer:
    """Counts so far and the phase; extends the lease. ``cancel`` is true once a technician cancelled the run."""
    run = await agent_run(agent, run_id)
    _require(run, agent, data.attempt, ACTIVE)
    now = _now()
    lease = now + timedelta(seconds=settings.run_lease_seconds)
    updated = await _owned(run, agent, data.attempt).update(
        # A progress report before the ack (the ack was lost) starts the run just the same.
        status=RunStatus.RUNNING,
        started_at=run.started_at or now,
        lease_expires_at=lease,
        phase=data.phase,
        progress_at=now,
        **_counts(data),
    )
    await _changed(agent, run, data.attempt, updated)
    return LeaseAnswer(lease_expires_at=lease, cancel=run.cancel_requested_at is not None)


async def add_rejections(agent: Agent, run_id: int, batch: RejectionBatch, settings: Settings) -> Receipt:
    """Store rejections ``first_seq``, ``first_seq + 1``, ... of the run once each, up to the hub's limit per run.

    Accepted while the run goes and after it finished (the agent's spool may deliver them late), from the run's
    agent and attempt. Rejections numbered past ``GROCERYSYNC_RUN_REJECTIONS_KEPT`` are counted as recorded but
    not stored (the result's ``rejections_total`` says how many there were); duplicates can only be told for
    stored ones.
    """
    run = await agent_run(agent, run_id)
    _require(run, agent, batch.attempt, (*ACTIVE, *FINISHED_STATUSES))
    if not batch.rejections:
        return Receipt()
    first = batch.first_seq
    kept_below = settings.run_rejections_kept
    last_kept = min(first + len(batch.rejections), kept_below) - 1
    existing: set[int] = set()
    if last_kept >= first:
        seqs = (
            SYS.query(RunRejection)
            .filter(retailer_id=run.retailer_id, run_id=run.id, seq__gte=first, seq__lte=last_kept)
            .values_list("seq", flat=True)
        )
        existing = {int(s) for s in await seqs}  # type: ignore[call-overload]  # values_list(flat=True) is typed as tuples
    rows = [
        RunRejection(
            retailer_id=run.retailer_id,
            run_id=run.id,
            seq=seq,
            ref=r.ref[:_REF_CHARS],
            item_id=r.item_id[:_ITEM_ID_CHARS] if r.item_id is not None else None,
            stage=r.stage,
            reason=r.reason,
        )
        for seq, r in enumerate(batch.rejections, first)
        if seq <= last_kept and seq not in existing
    ]
    if rows:
        # A copy of this batch stored concurrently (a retry racing the original) is ignored by the unique
        # (run, seq) constraint.
        await SYS.query(RunRejection).bulk_create(rows, ignore_conflicts=True)
    beyond = max(0, first + len(batch.rejections) - max(kept_below, first))
    return Receipt(recorded=len(rows) + beyond, duplicates=len(existing))


def _recorded(run: Run, agent: Agent, attempt: int) -> bool:
    """Whether this agent already reported this attempt's result."""
    return (
        run.agent_id == agent.id
        and run.attempt == attempt
        and run.status in FINISHED_STATUSES
        and (run.details or {}).get("source") == SOURCE_AGENT
    )


async def record_result(agent: Agent, run_id: int, result: RunResult) -> Receipt:
    """How the run ended: its final status, counts, error and details; the lease is cleared.

    The same result again answers ``duplicates: 1`` and changes nothing. A run that is no longer this agent's
    (its lease ran out and the hub failed it, a technician's cancel of a queued run, a newer attempt) answers 409.
    """
    run = await agent_run(agent, run_id)
    if _recorded(run, agent, result.attempt):
        return Receipt(duplicates=1)
    _require(run, agent, result.attempt, ACTIVE)
    now = _now()
    kept = await SYS.query(RunRejection).filter(retailer_id=run.retailer_id, run_id=run.id).count()
    details = {
        "source": SOURCE_AGENT,
        "warnings": result.warnings,
        "commit": result.commit,
        "duration_s": result.duration_s,
        "rejections_total": result.rejections_total,
        "rejections_kept": kept,
    }
    updated = await _owned(run, agent, result.attempt).update(
        status=RunStatus(result.status),
        error=result.error,
        details=details,
        phase="done",
        started_at=run.started_at or now,
        finished_at=now,
        lease_expires_at=None,
        **_counts(result),
    )
    if not updated:
        fresh = await agent_run(agent, run.id)
        if _recorded(fresh, agent, result.attempt):
            return Receipt(duplicates=1)
        _require(fresh, agent, result.attempt, ())
    await hub_log(run, _LEVEL[result.status], _summary(run, result), agent_id=agent.id)
    if result.status == "failed":
        await _retry_failed(run, result, now)
    return Receipt(recorded=1)


async def _retry_failed(run: Run, result: RunResult, now: datetime) -> None:
    """A run the agent reports failed (its POS file missing, its platform down) is retried by the job's policy,
    as one whose agent stopped reporting is; a queued retry is named in its error."""
    async with transaction(connection_name()) as tx:
        retry, note = await queue_retry(run, now, tx)
        if retry is not None:
            error = f"{result.error}; {note}" if result.error else note
            await SYS.query(Run).filter(id=run.id).using_db(tx).update(error=error)
    if retry is not None:
        await hub_log(retry, "info", f"run {run.id} failed: {note}")
        await WAKEUPS.notify_store(run.store_id)


def _summary(run: Run, result: RunResult) -> str:
    text = (
        f"run {run.id} ({run.job_name}) {result.status.replace('_', ' ')} in {result.duration_s:.1f} s: "
        f"read {result.read}, sent {result.sent}, unchanged {result.unchanged}, removed {result.removed}, "
        f"rejected {result.rejected}, failed {result.failed}, filtered {result.filtered}"
    )
    if result.error:
        text += f"; {result.error}"
    return text
