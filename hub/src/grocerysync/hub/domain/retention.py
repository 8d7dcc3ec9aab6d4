"""Retention: delete log entries and finished runs older than each retailer's ``log_retention_days``.

Deletes go in batches of ids, each its own short statement, so a purge of millions of rows never holds one
long transaction or lock. Several hub processes may purge at once: deleting rows that are already gone does
no harm.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.models import Model
from tortoise.queryset import QuerySet

from grocerysync.hub.models import FINISHED_STATUSES, LogEntry, Retailer, Run, RunRejection
from grocerysync.hub.scope import SYSTEM, Scope

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1000


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """How many rows a purge deleted."""

    logs: int = 0
    runs: int = 0
    rejections: int = 0

    def __add__(self, other: PurgeReport) -> PurgeReport:
        return PurgeReport(self.logs + other.logs, self.runs + other.runs, self.rejections + other.rejections)

    def __str__(self) -> str:
        return f"{self.logs} log entries, {self.runs} runs and {self.rejections} rejections"


async def _delete_in_batches(scope: Scope, model: type[Model], qs: QuerySet[Any], batch_size: int) -> int:
    deleted = 0
    while True:
        ids = list(await qs.order_by("id").limit(batch_size).values_list("id", flat=True))
        if not ids:
            return deleted
        deleted += await scope.query(model).filter(id__in=ids).delete()


async def purge_retailer(
    retailer_id: int, days: int, *, now: datetime | None = None, batch_size: int = DEFAULT_BATCH
) -> PurgeReport:
    """Delete one retailer's log entries and finished runs older than ``days`` before ``now``."""
    scope = Scope(SYSTEM)
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    logs = await _delete_in_batches(
        scope, LogEntry, scope.query(LogEntry).filter(retailer_id=retailer_id, at__lt=cutoff), batch_size
    )
    old_runs = scope.query(Run).filter(retailer_id=retailer_id, status__in=FINISHED_STATUSES, finished_at__lt=cutoff)
    # The rejections first, in batches of their own, so deleting a run never cascades into a huge statement.
    rejections = await _delete_in_batches(
        scope,
        RunRejection,
        scope.query(RunRejection).filter(
            retailer_id=retailer_id, run__status__in=FINISHED_STATUSES, run__finished_at__lt=cutoff
        ),
        batch_size,
    )
    runs = await _delete_in_batches(scope, Run, old_runs, batch_size)
    return PurgeReport(logs, runs, rejections)


async def purge(*, now: datetime | None = None, batch_size: int = DEFAULT_BATCH) -> PurgeReport:
    """Purge every retailer by its own retention setting; returns what was deleted."""
    total = PurgeReport()
    rows = await Scope(SYSTEM).query(Retailer).order_by("id").values_list("id", "log_retention_days")
    for retailer_id, days in rows:
        total += await purge_retailer(int(retailer_id), int(days), now=now, batch_size=batch_size)
    return total


async def purge_periodically(interval: float) -> None:
    """Purge every ``interval`` seconds until cancelled; a failed purge is logged and tried again next time.

    The first purge is one interval after start, so a hub that restarts does not purge on every start.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            report = await purge()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention purge failed; it will be tried again in %s s", interval)
        else:
            log.info("retention purge deleted %s", report)
