"""The scheduler and lease expiry: due schedules fire once (also across processes), runs coalesce, leases expire
into failures and retries by the job's policy, and not before the hub has served for one lease length."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from conftest import demo_plugins
from quart.typing import TestAppProtocol as RunningApp
from tortoise import Tortoise

from grocerysync.hub.app import create_app
from grocerysync.hub.db import transaction
from grocerysync.hub.domain import scheduler
from grocerysync.hub.domain.leases import ExpiryReport, LeaseSweeper, expire_leases, startup_grace
from grocerysync.hub.domain.scheduler import run_due_jobs
from grocerysync.hub.domain.wake import Wakeups
from grocerysync.hub.models import (
    Agent,
    DestinationConfig,
    ExportJob,
    LogEntry,
    PosConnection,
    Retailer,
    Run,
    RunStatus,
    Store,
)
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.settings import Settings

SYS = Scope(SYSTEM)
# 06:30 in Chicago (CST, UTC-6): "0 6 * * *" there fired half an hour ago and fires next at 12:00 UTC tomorrow.
NOW = datetime(2024, 1, 15, 12, 30, tzinfo=UTC)
TOMORROW_6AM_CHICAGO = datetime(2024, 1, 16, 12, 0, tzinfo=UTC)


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[RunningApp]:
    """The hub with its database open but its own scheduler off, so only the test ticks."""
    quiet = settings.model_copy(update={"scheduler_interval_seconds": 0})
    async with create_app(quiet, plugins=demo_plugins()).test_app() as app:
        yield app


async def _job(name: str = "nightly", *, tz: str = "America/Chicago", **fields: object) -> ExportJob:
    retailer = await Retailer.create(name=f"R {name}")
    store = await Store.create(retailer=retailer, name="Main St", time_zone=tz)
    source = await PosConnection.create(retailer=retailer, store=store, name="pos", plugin="demo-pos", config={})
    dest = await DestinationConfig.create(retailer=retailer, store=store, name="d", plugin="demo-dest", config={})
    values: dict[str, object] = {"schedule": "0 6 * * *", "next_run_at": NOW - timedelta(minutes=30), **fields}
    return await ExportJob.create(
        retailer=retailer, store=store, name=name, source_id=source.id, destination_id=dest.id, **values
    )


async def _runs(job: ExportJob) -> list[Run]:
    return list(await SYS.query(Run).filter(job_id=job.id).order_by("id"))


async def _reload(job: ExportJob) -> ExportJob:
    return await SYS.get(ExportJob, job.id)


# --- schedules -----------------------------------------------------------------------------------------------------


async def test_a_due_job_gets_one_run_and_its_next_time_moves(running: RunningApp) -> None:
    job = await _job()
    wakeups = Wakeups()
    with wakeups.waiter(agent_id=99, store_id=job.store_id) as woken:
        report = await run_due_jobs(NOW, wakeups=wakeups)
        assert woken.is_set()
    runs = await _runs(job)
    assert report.runs == (runs[0].id,)
    assert [(r.status, r.trigger, r.triggered_by, r.attempt, r.job_name) for r in runs] == [
        (RunStatus.QUEUED, "schedule", "schedule", 1, "nightly")
    ]
    assert (await _reload(job)).next_run_at == TOMORROW_6AM_CHICAGO
    # Nothing is due any more.
    assert await run_due_jobs(NOW + timedelta(minutes=1)) == scheduler.TickReport()
    assert len(await _runs(job)) == 1


async def test_occurrences_missed_while_no_hub_ran_make_one_run(running: RunningApp) -> None:
    job = await _job(next_run_at=NOW - timedelta(days=3))
    report = await run_due_jobs(NOW)
    assert len(report.runs) == 1
    assert len(await _runs(job)) == 1
    assert (await _reload(job)).next_run_at == TOMORROW_6AM_CHICAGO


async def test_only_enabled_scheduled_and_due_jobs_fire(running: RunningApp) -> None:
    due = await _job("due")
    disabled = await _job("disabled", enabled=False)
    manual = await _job("manual", schedule="")
    later = await _job("later", next_run_at=NOW + timedelta(seconds=1))
    assert len((await run_due_jobs(NOW)).runs) == 1
    assert [len(await _runs(j)) for j in (due, disabled, manual, later)] == [1, 0, 0, 0]


async def test_two_concurrent_ticks_queue_each_run_once(running: RunningApp) -> None:
    jobs = [await _job(f"job {n}") for n in range(6)]
    first, second = await asyncio.gather(run_due_jobs(NOW), run_due_jobs(NOW))
    made = [r.id for j in jobs for r in await _runs(j)]
    assert sorted(first.runs + second.runs) == sorted(made)
    assert [len(await _runs(j)) for j in jobs] == [1] * 6


async def test_a_tick_that_read_a_job_before_another_fired_it_does_nothing(running: RunningApp) -> None:
    # What SQLite relies on (and PostgreSQL too, behind its row locks): the claim is a conditional update of the
    # occurrence's time, so a tick holding a stale copy of the job cannot fire the same occurrence again.
    job = await _job()
    stale = await _reload(job)
    assert len((await run_due_jobs(NOW)).runs) == 1
    async with transaction(scheduler.connection_name()) as tx:
        assert await scheduler._fire(stale, "America/Chicago", NOW, tx) == scheduler.TickReport()
    assert len(await _runs(job)) == 1


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.DISPATCHED, RunStatus.RUNNING])
async def test_a_pending_run_makes_the_schedule_skip_and_say_so(running: RunningApp, status: RunStatus) -> None:
    job = await _job()
    pending = await Run.create(
        retailer_id=job.retailer_id, store_id=job.store_id, job_id=job.id, job_name=job.name, status=status
    )
    report = await run_due_jobs(NOW)
    assert report == scheduler.TickReport(skipped=(job.id,))
    assert [r.id for r in await _runs(job)] == [pending.id]
    # The occurrence is used up all the same: an offline store does not pile up runs, or fire on every tick.
    assert (await _reload(job)).next_run_at == TOMORROW_6AM_CHICAGO
    entry = await SYS.query(LogEntry).get(store_id=job.store_id)
    assert entry.level == "warning"
    assert entry.run_id == pending.id
    assert f"run {pending.id} is still {status.value}" in entry.message
    assert "2024-01-15 06:00 America/Chicago" in entry.message
    # Once that run is over, the next occurrence queues a run again.
    await SYS.query(Run).filter(id=pending.id).update(status=RunStatus.SUCCEEDED)
    assert len((await run_due_jobs(TOMORROW_6AM_CHICAGO)).runs) == 1


async def test_a_store_time_zone_the_hub_does_not_know_pauses_the_schedule_and_says_why(
    running: RunningApp,
) -> None:
    job = await _job(tz="Mars/Olympus_Mons")
    assert len((await run_due_jobs(NOW)).runs) == 1
    assert (await _reload(job)).next_run_at is None
    entry = await SYS.query(LogEntry).get(store_id=job.store_id, level="error")
    assert "Mars/Olympus_Mons" in entry.message
    assert "fix the job's schedule or the store's time zone" in entry.message


_POISON = {
    # The database refuses runs of one job: a stand-in for any row the hub cannot handle.
    "sqlite": [
        "CREATE TRIGGER poison BEFORE INSERT ON run WHEN NEW.job_name = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    ],
    "postgres": [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN IF NEW.job_name = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON run FOR EACH ROW EXECUTE FUNCTION poison()",
    ],
}
_CURE = {"sqlite": ["DROP TRIGGER poison"], "postgres": ["DROP TRIGGER poison ON run", "DROP FUNCTION poison()"]}


async def test_a_job_that_cannot_be_fired_does_not_stop_the_others(
    running: RunningApp, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = [await _job("before"), await _job("poison"), await _job("after")]
    db = Tortoise.get_connection(scheduler.connection_name())
    for sql in _POISON[backend]:
        await db.execute_script(sql)
    try:
        report = await run_due_jobs(NOW)
    finally:
        for sql in _CURE[backend]:
            await db.execute_script(sql)
    assert [len(await _runs(j)) for j in good] == [1, 0, 1]
    assert len(report.runs) == 2
    assert f"firing the schedule of export job {good[1].id} (poison) failed" in caplog.text
    # Its occurrence was not used up: the next tick fires it.
    assert (await _reload(good[1])).next_run_at == NOW - timedelta(minutes=30)
    assert len((await run_due_jobs(NOW)).runs) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
async def test_postgres_skips_a_job_another_process_holds(running: RunningApp, pg_database: str) -> None:
    job = await _job()
    other = await asyncpg.connect(pg_database.replace("postgres://", "postgresql://", 1))
    try:
        async with other.transaction():
            # Another hub process is firing this job right now.
            await other.execute("SELECT id FROM export_job WHERE id = $1 FOR UPDATE", job.id)
            started = time.monotonic()
            report = await asyncio.wait_for(run_due_jobs(NOW), timeout=10)
            assert report == scheduler.TickReport(), "a tick must skip a locked job, not wait for it"
            assert time.monotonic() - started < 5
            await other.execute("UPDATE export_job SET next_run_at = $1 WHERE id = $2", TOMORROW_6AM_CHICAGO, job.id)
        assert await run_due_jobs(NOW) == scheduler.TickReport()
    finally:
        await other.close()
    assert await _runs(job) == []


async def test_the_serving_hub_fires_schedules_by_itself(settings: Settings) -> None:
    busy = settings.model_copy(update={"scheduler_interval_seconds": 0.05})
    async with create_app(busy, plugins=demo_plugins()).test_app():
        job = await _job(next_run_at=datetime.now(UTC) - timedelta(seconds=1))
        for _ in range(200):
            if await _runs(job):
                break
            await asyncio.sleep(0.05)
        runs = await _runs(job)
    assert [r.trigger for r in runs] == ["schedule"]


# --- leases --------------------------------------------------------------------------------------------------------


async def _leased(job: ExportJob, *, status: RunStatus = RunStatus.RUNNING, **fields: object) -> Run:
    agent = await Agent.create(
        retailer_id=job.retailer_id,
        store_id=job.store_id,
        name="till-01",
        credential_hash=f"h{time.monotonic_ns()}",
        credential_prefix="gsa_x",
    )
    values: dict[str, object] = {"lease_expires_at": NOW - timedelta(seconds=1), "agent_id": agent.id, **fields}
    return await Run.create(
        retailer_id=job.retailer_id, store_id=job.store_id, job_id=job.id, job_name=job.name, status=status, **values
    )


@pytest.mark.parametrize("status", [RunStatus.DISPATCHED, RunStatus.RUNNING])
async def test_an_expired_lease_fails_the_run_and_queues_a_retry(running: RunningApp, status: RunStatus) -> None:
    job = await _job(schedule="", next_run_at=None, max_retries=2, retry_delay_seconds=300)
    run = await _leased(job, status=status, full=True)
    alive = await _leased(await _job("other", schedule=""), lease_expires_at=NOW + timedelta(seconds=30))
    wakeups = Wakeups()
    with wakeups.waiter(agent_id=99, store_id=job.store_id) as woken:
        report = await expire_leases(NOW, wakeups=wakeups)
        assert woken.is_set()
    failed, retry = await SYS.get(Run, run.id), await SYS.query(Run).get(trigger="retry")
    assert report.expired == (run.id,)
    assert report.retries == (retry.id,)
    assert failed.status == RunStatus.FAILED
    assert failed.finished_at == NOW
    assert failed.error.startswith("the agent stopped reporting: lease expired at 2024-01-15 12:29:59 UTC")
    assert f"(agent {run.agent_id}, till-01)" in failed.error
    assert f"retry queued as run {retry.id} (attempt 2 of 3), not before 2024-01-15 12:35:00 UTC" in failed.error
    assert (retry.status, retry.attempt, retry.full, retry.job_id) == (RunStatus.QUEUED, 2, True, job.id)
    assert retry.not_before == NOW + timedelta(seconds=300)
    assert retry.triggered_by == f"retry of run {run.id}"
    assert (await SYS.get(Run, alive.id)).status == RunStatus.RUNNING
    entry = await SYS.query(LogEntry).get(run_id=run.id)
    assert entry.level == "error"
    assert failed.error in entry.message


async def test_no_retry_once_the_attempts_are_used_up(running: RunningApp) -> None:
    job = await _job(schedule="", next_run_at=None, max_retries=2)
    last = await _leased(job, attempt=3)
    none_left = await _job("no retries", schedule="", next_run_at=None, max_retries=0)
    only = await _leased(none_left)
    waiting = await _job("waiting", schedule="", next_run_at=None, max_retries=5)
    blocked = await _leased(waiting)
    # Someone triggered the job again meanwhile: that run does the work, the expired one is not retried.
    queued = await Run.create(
        retailer_id=waiting.retailer_id, store_id=waiting.store_id, job_id=waiting.id, job_name=waiting.name
    )
    report = await expire_leases(NOW)
    assert sorted(report.expired) == sorted([last.id, only.id, blocked.id])
    assert report.retries == ()
    assert f"no retry: run {queued.id} of the job is already queued" in (await SYS.get(Run, blocked.id)).error
    assert "no retry: that was attempt 3 of 3" in (await SYS.get(Run, last.id)).error
    assert "no retry (the job has none)" in (await SYS.get(Run, only.id)).error
    assert await SYS.query(Run).filter(trigger="retry").count() == 0


async def test_a_run_asked_to_cancel_is_cancelled_not_retried(running: RunningApp) -> None:
    job = await _job(schedule="", next_run_at=None, max_retries=3)
    run = await _leased(job, cancel_requested_at=NOW - timedelta(minutes=2))
    assert (await expire_leases(NOW)).retries == ()
    cancelled = await SYS.get(Run, run.id)
    assert cancelled.status == RunStatus.CANCELLED
    assert cancelled.error.startswith("cancelled: the agent did not confirm the cancel")


async def test_two_concurrent_sweeps_expire_each_run_once(running: RunningApp) -> None:
    jobs = [await _job(f"job {n}", schedule="", next_run_at=None, max_retries=1) for n in range(4)]
    for job in jobs:
        await _leased(job)
    first, second = await asyncio.gather(expire_leases(NOW), expire_leases(NOW))
    assert len(first.expired + second.expired) == 4
    assert len(first.retries + second.retries) == 4
    assert [await SYS.query(Run).filter(job_id=j.id, trigger="retry").count() for j in jobs] == [1] * 4


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
async def test_postgres_sweeps_skip_a_run_another_process_holds(running: RunningApp, pg_database: str) -> None:
    job = await _job(schedule="", next_run_at=None, max_retries=1)
    run = await _leased(job)
    other = await asyncpg.connect(pg_database.replace("postgres://", "postgresql://", 1))
    try:
        async with other.transaction():
            # The agent's progress report is extending the lease in another hub process.
            await other.execute("SELECT id FROM run WHERE id = $1 FOR UPDATE", run.id)
            assert await asyncio.wait_for(expire_leases(NOW), timeout=10) == ExpiryReport()
            await other.execute(
                "UPDATE run SET lease_expires_at = $1 WHERE id = $2", NOW + timedelta(minutes=2), run.id
            )
    finally:
        await other.close()
    assert await expire_leases(NOW) == ExpiryReport()
    assert (await SYS.get(Run, run.id)).status == RunStatus.RUNNING


async def test_no_lease_expires_until_the_hub_has_served_one_lease_length(running: RunningApp) -> None:
    # The hub was down: no agent could extend its lease. Give them one lease length (and a margin) to come back.
    assert startup_grace(60, 120) == 180
    job = await _job(schedule="", next_run_at=None)
    run = await _leased(job)
    clock = [1000.0]
    sweeper = LeaseSweeper(startup_grace(60, 120), clock=lambda: clock[0])
    clock[0] += 179
    assert not sweeper.ready
    assert (await sweeper.sweep(NOW)).expired == ()
    assert (await SYS.get(Run, run.id)).status == RunStatus.RUNNING
    clock[0] += 1
    assert sweeper.ready
    assert (await sweeper.sweep(NOW)).expired == (run.id,)
    assert (await SYS.get(Run, run.id)).status == RunStatus.FAILED
