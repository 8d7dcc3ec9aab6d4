"""Retention: logs and finished runs older than each retailer's setting are purged, in batches, on a timer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from conftest import demo_plugins
from test_cli import _env, _run

from grocerysync.core.results import Rejection
from grocerysync.hub.app import create_app
from grocerysync.hub.domain.retention import purge
from grocerysync.hub.domain.runs import add_logs, add_rejections
from grocerysync.hub.models import LogEntry, Retailer, Run, RunRejection, RunStatus, Store
from grocerysync.hub.schemas_jobs import LogIn
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.settings import Settings

NOW = datetime(2024, 6, 1, tzinfo=UTC)


async def _seed() -> dict[str, Retailer]:
    """Two retailers (7 and 30 days' retention) with logs and runs 1, 10 and 40 days old."""
    system = Scope(SYSTEM)
    out = {}
    for name, days in (("short", 7), ("long", 30)):
        retailer = await Retailer.create(name=name, log_retention_days=days)
        store = await Store.create(retailer=retailer, name="S")
        for age in (1, 10, 40):
            at = NOW - timedelta(days=age)
            await add_logs(system, retailer.id, [LogIn(at=at, message=f"{name} {age}d #{n}") for n in range(3)])
            for status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                run = await Run.create(retailer=retailer, store=store, job_name=f"{age}", status=status, finished_at=at)
                await add_rejections(system, run.id, [Rejection("row 1", "bad", "validate")])
        # Still running after 40 days (a lost agent): not finished, so kept for people to look at.
        await Run.create(retailer=retailer, store=store, job_name="stuck", status=RunStatus.RUNNING)
        out[name] = retailer
    return out


async def _left(retailer: Retailer) -> tuple[set[str], set[str]]:
    """Which ages of log entries ("1d", ...) and which runs (by job name) the retailer still has."""
    system = Scope(SYSTEM)
    logs = {str(e.message).split(" ")[1] for e in await system.query(LogEntry).filter(retailer_id=retailer.id)}
    runs = {str(r.job_name) for r in await system.query(Run).filter(retailer_id=retailer.id)}
    return logs, runs


async def test_purge_follows_each_retailers_retention(test_app: object) -> None:
    tenants = await _seed()
    report = await purge(now=NOW, batch_size=2)  # small batches: several rounds per table
    # short (7 days): 10 and 40 days old go, long (30 days): 40 days old go.
    assert (report.logs, report.runs, report.rejections) == (9, 6, 6)
    assert await _left(tenants["short"]) == ({"1d"}, {"1", "stuck"})
    assert await _left(tenants["long"]) == ({"1d", "10d"}, {"1", "10", "stuck"})
    assert await Scope(SYSTEM).query(RunRejection).count() == 6
    assert (await purge(now=NOW)).logs == 0  # nothing left to purge


async def test_purge_command(settings: Settings, test_app: object) -> None:
    retailer = await Retailer.create(name="R", log_retention_days=1)
    old = datetime.now(UTC) - timedelta(days=3)
    await add_logs(
        Scope(SYSTEM), retailer.id, [LogIn(at=old, message="old"), LogIn(at=datetime.now(UTC), message="new")]
    )
    result = _run(_env(settings), "purge")
    assert result.returncode == 0, result.stderr
    assert "deleted 1 log entries, 0 runs" in result.stdout
    assert await Scope(SYSTEM).query(LogEntry).values_list("message", flat=True) == ["new"]
    bad = _run(_env(settings), "purge", "--batch-size", "0")
    assert bad.returncode == 2
    assert "--batch-size" in bad.stderr


async def test_serving_hub_purges_periodically_and_stops_cleanly(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"purge_interval_seconds": 0.05}), plugins=demo_plugins())
    async with app.test_app():
        assert [t for t in asyncio.all_tasks() if "purge_periodically" in repr(t.get_coro())] != []
        retailer = await Retailer.create(name="R", log_retention_days=1)
        old = datetime.now(UTC) - timedelta(days=3)
        await add_logs(Scope(SYSTEM), retailer.id, [LogIn(at=old, message="old")])
        for _ in range(400):  # a generous wait for the timer, not a timing assertion
            if not await Scope(SYSTEM).query(LogEntry).exists():
                break
            await asyncio.sleep(0.05)
        assert not await Scope(SYSTEM).query(LogEntry).exists()
    # Shutting down cancelled the task: nothing of it is left running.
    leftover = [t for t in asyncio.all_tasks() if "purge_periodically" in repr(t.get_coro())]
    assert leftover == []


async def test_purge_timer_is_off_with_zero_interval(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"purge_interval_seconds": 0}), plugins=demo_plugins())
    async with app.test_app():
        assert [t for t in asyncio.all_tasks() if "purge_periodically" in repr(t.get_coro())] == []
