"""The scheduler: due cron schedules become queued runs, exactly once however many hub processes are serving.

Every serving hub process ticks every ``scheduler_interval_seconds`` (:func:`schedule_periodically`). A tick
claims the jobs whose ``next_run_at`` has come (``enabled``, with a schedule) and, for each:

- moves ``next_run_at`` to the schedule's next time after *now* (cron read in the store's time zone), so the
  occurrences missed while no hub was running make one run, not one per missed occurrence;
- queues a run (trigger ``schedule``) unless the job still has a run queued, dispatched or running: then the
  occurrence is skipped and a warning is written to the store's log, so an offline store does not pile up runs;
- after the commit, wakes the store's agents' polls (:data:`grocerysync.hub.domain.wake.WAKEUPS`).

Exactly once: on PostgreSQL the due jobs are locked with ``SELECT ... FOR UPDATE SKIP LOCKED`` in one
transaction, so two processes never take the same job; on SQLite (one process) each job is claimed by a
conditional update of its ``next_run_at``. Both paths also move ``next_run_at`` with that conditional update,
so an occurrence fires once even if the two ever met.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, Self, TypeVar
from zoneinfo import ZoneInfo

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import BaseORMException
from tortoise.queryset import QuerySet

from grocerysync.hub.db import transaction
from grocerysync.hub.domain.common import store_log
from grocerysync.hub.domain.jobs import next_run
from grocerysync.hub.domain.wake import WAKEUPS, Wakeups
from grocerysync.hub.models import ExportJob, Run, RunStatus, Store
from grocerysync.hub.scope import SYSTEM, Scope

log = logging.getLogger(__name__)
R = TypeVar("R")

#: A job with a run in one of these states gets no new scheduled run (and no retry): that run comes first.
PENDING_STATUSES: tuple[RunStatus, ...] = (RunStatus.QUEUED, RunStatus.DISPATCHED, RunStatus.RUNNING)
#: Jobs claimed per transaction.
DEFAULT_BATCH = 100
#: The logger name of the hub's own log entries about schedules and leases (what technicians filter on).
HUB_LOGGER = "grocerysync.hub.scheduler"

_SYSTEM = Scope(SYSTEM)


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one tick did: the runs it queued and the jobs whose occurrence it skipped (a run was pending)."""

    runs: tuple[int, ...] = ()
    skipped: tuple[int, ...] = ()

    def __add__(self, other: TickReport) -> TickReport:
        return TickReport(self.runs + other.runs, self.skipped + other.skipped)


# --- helpers shared with the lease sweeper (grocerysync.hub.domain.leases) ------------------------------------------


def connection_name() -> str:
    """The tortoise connection the hub's tables are on."""
    name = ExportJob._meta.default_connection
    if name is None:  # pragma: no cover - tortoise is initialised before anything schedules
        raise RuntimeError("the database is not open")
    return name


def on_postgres() -> bool:
    """Whether the hub's database is PostgreSQL (row locks with SKIP LOCKED) rather than SQLite."""
    return str(ExportJob._meta.db.capabilities.dialect) == "postgres"


async def pending_run(job_id: int, db: BaseDBAsyncClient | None = None) -> Run | None:
    """The job's oldest run that is queued, dispatched or running, if any."""
    qs = _SYSTEM.query(Run).filter(job_id=job_id, status__in=PENDING_STATUSES).order_by("id")
    return await (qs.using_db(db) if db is not None else qs).first()


async def hub_log(
    db: BaseDBAsyncClient, level: str, message: str, *, retailer_id: int, store_id: int, run_id: int | None = None
) -> None:
    """Write one of the scheduler's log lines to a store's log."""
    await store_log(level, message, logger=HUB_LOGGER, retailer_id=retailer_id, store_id=store_id, run_id=run_id, db=db)


def local_time(moment: datetime, time_zone: str) -> str:
    """``moment`` as a technician at the store reads it, e.g. ``2024-05-01 06:00 America/Chicago``."""
    try:
        return f"{moment.astimezone(ZoneInfo(time_zone)):%Y-%m-%d %H:%M} {time_zone}"
    except (ValueError, KeyError):
        return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


async def isolated(what: str, work: Callable[[BaseDBAsyncClient], Awaitable[R]]) -> R | None:
    """``work`` in a transaction of its own (a savepoint inside an open one), or None, logged, if it failed.

    One row the hub cannot handle must not stop the schedules (or lease expiry) of every other tenant.
    """
    try:
        async with transaction(connection_name()) as tx:
            return await work(tx)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s failed; it is tried again at the next tick", what)
        return None


class Tally(Protocol):
    """What a batch of work reports: reports add up."""

    def __add__(self, other: Self, /) -> Self: ...


T = TypeVar("T", bound=Tally)
#: The rows worked through in batches: due jobs, runs whose lease expired.
Row = TypeVar("Row", ExportJob, Run)
#: Handles a batch of rows (in the given transaction on PostgreSQL, None on SQLite): what it did, how many
#: rows it handled, and the stores whose agents to wake.
Handler = Callable[[list[Row], BaseDBAsyncClient | None], Awaitable[tuple[T, int, set[int]]]]


async def work_through(
    select: Callable[[], QuerySet[Row]], handle: Handler[Row, T], *, total: T, batch: int, wakeups: Wakeups
) -> T:
    """Handle every row ``select()`` finds (at most ``batch`` at a time) exactly once across hub processes.

    On PostgreSQL a batch is locked with ``FOR UPDATE SKIP LOCKED`` (rows another process holds are skipped) and
    handled in one transaction; on SQLite (one process) ``handle`` gets no transaction and handles each row in
    its own (:func:`each_isolated`). After each commit the stores ``handle`` names are woken, so a woken poll
    finds what was queued. Goes on while a batch was full and something in it was handled; returns ``total``
    plus every batch's report.
    """
    while True:
        if on_postgres():
            async with transaction(connection_name()) as tx:
                rows = list(await select().select_for_update(skip_locked=True).using_db(tx))
                report, done, stores = await handle(rows, tx)
        else:
            rows = list(await select())
            report, done, stores = await handle(rows, None)
        total += report
        for store_id in sorted(stores):
            await wakeups.notify_store(store_id)
        if len(rows) < batch or done == 0:
            return total


async def each_isolated(
    rows: list[Row],
    act: Callable[[Row, BaseDBAsyncClient], Awaitable[T]],
    *,
    what: Callable[[Row], str],
    wake: Callable[[T], bool],
    empty: T,
) -> tuple[T, int, set[int]]:
    """Call ``act`` on each row in a transaction of its own (:func:`isolated`: a row that fails is logged, skipped).

    Returns the reports added up, how many rows succeeded, and the stores of the rows whose report ``wake``
    accepts (something was queued there: their agents are woken).
    """
    report, done, stores = empty, 0, set()
    for row in rows:
        result = await isolated(what(row), functools.partial(act, row))
        if result is None:
            continue
        done += 1
        report += result
        if wake(result):
            stores.add(row.store_id)
    return report, done, stores


# --- firing due schedules -------------------------------------------------------------------------------------------


async def run_due_jobs(
    now: datetime | None = None, *, batch: int = DEFAULT_BATCH, wakeups: Wakeups = WAKEUPS
) -> TickReport:
    """Queue a run of every job whose schedule is due at ``now`` (default: the current time); see the module."""
    now = now or datetime.now(UTC)

    async def fire(jobs: list[ExportJob], db: BaseDBAsyncClient | None) -> tuple[TickReport, int, set[int]]:
        zones = await _time_zones((job.store_id for job in jobs), db)
        return await each_isolated(
            jobs,
            lambda job, tx: _fire(job, zones.get(job.store_id, "UTC"), now, tx),
            what=lambda job: f"firing the schedule of export job {job.id} ({job.name})",
            wake=lambda fired: bool(fired.runs),
            empty=TickReport(),
        )

    return await work_through(lambda: _due(now, batch), fire, total=TickReport(), batch=batch, wakeups=wakeups)


def _due(now: datetime, batch: int) -> QuerySet[ExportJob]:
    return (
        _SYSTEM.query(ExportJob)
        .filter(enabled=True, next_run_at__lte=now)
        .exclude(schedule="")
        .order_by("next_run_at", "id")
        .limit(batch)
    )


async def _time_zones(store_ids: Iterable[int], db: BaseDBAsyncClient | None = None) -> dict[int, str]:
    qs = _SYSTEM.query(Store).filter(id__in=sorted(set(store_ids)))
    rows = await (qs.using_db(db) if db is not None else qs).values_list("id", "time_zone")
    return {int(store_id): str(zone) for store_id, zone in rows}


async def _fire(job: ExportJob, time_zone: str, now: datetime, tx: BaseDBAsyncClient) -> TickReport:
    """Fire one due occurrence of ``job``: move its next time, then queue a run or record the skip."""
    due = job.next_run_at
    assert due is not None  # the query asked for due jobs
    problem = ""
    try:
        upcoming = next_run(job.schedule, time_zone, after=now)
    except (ValueError, KeyError) as exc:
        # Saved schedules were valid when saved; a time zone database without the store's zone is not.
        upcoming, problem = None, f"{type(exc).__name__}: {exc}"
    claimed = (
        await _SYSTEM.query(ExportJob).filter(id=job.id, next_run_at=due).using_db(tx).update(next_run_at=upcoming)
    )
    if not claimed:
        # Another tick fired this occurrence between our read and this update.
        return TickReport()
    if problem:
        message = (
            f"export job {job.id} ({job.name}): cannot work out when schedule {job.schedule!r} fires next in time "
            f"zone {time_zone!r} ({problem}); the schedule is paused: fix the job's schedule or the store's time "
            "zone and save it"
        )
        log.error("%s", message)
        await hub_log(tx, "error", message, retailer_id=job.retailer_id, store_id=job.store_id)
    pending = await pending_run(job.id, tx)
    if pending is not None:
        then = f"; it fires next at {local_time(upcoming, time_zone)}" if upcoming else ""
        message = (
            f"export job {job.id} ({job.name}): skipped the run scheduled for {local_time(due, time_zone)} because "
            f"run {pending.id} is still {pending.status.value} (is the store's agent online?){then}"
        )
        log.info("%s", message)
        await hub_log(tx, "warning", message, retailer_id=job.retailer_id, store_id=job.store_id, run_id=pending.id)
        return TickReport(skipped=(job.id,))
    run = await Run.create(
        retailer_id=job.retailer_id,
        store_id=job.store_id,
        job_id=job.id,
        job_name=job.name,
        trigger="schedule",
        triggered_by="schedule",
        using_db=tx,
    )
    log.info("export job %s (%s): queued run %s scheduled for %s", job.id, job.name, run.id, due.isoformat())
    return TickReport(runs=(run.id,))


# --- the loop ----------------------------------------------------------------------------------------------------


async def schedule_periodically(
    interval: float, *, sweep: Callable[[], Awaitable[object]] | None = None, wakeups: Wakeups = WAKEUPS
) -> None:
    """Fire due schedules (and call ``sweep``, the lease sweeper) now and every ``interval`` s until cancelled.

    A tick that fails (the database is unreachable) is logged once, with what to expect, and tried again every
    interval; the recovery is logged too.
    """
    failing = False
    while True:
        try:
            await run_due_jobs(wakeups=wakeups)
            if sweep is not None:
                await sweep()
        except asyncio.CancelledError:
            raise
        except (OSError, BaseORMException) as exc:
            if not failing:
                log.error(
                    "the scheduler cannot reach the database (%s): no scheduled runs are queued and no expired "
                    "lease is failed until it can; trying again every %g s",
                    exc,
                    interval,
                )
            failing = True
        except Exception:
            if not failing:
                log.exception("the scheduler failed; it tries again every %g s", interval)
            failing = True
        else:
            if failing:
                log.info("the scheduler works again")
            failing = False
        await asyncio.sleep(interval)
