"""Runs of export jobs, their per-item rejections, and log entries: recording them and reading them back."""

from __future__ import annotations

from collections.abc import Iterable

from grocerysync.core.results import Rejection
from grocerysync.hub.domain.common import paginate
from grocerysync.hub.errors import Invalid
from grocerysync.hub.models import LogEntry, Run, RunRejection, Store
from grocerysync.hub.schemas import PageArgs
from grocerysync.hub.schemas_jobs import (
    LEVELS,
    LogFilter,
    LogIn,
    LogPage,
    RejectionPage,
    RunFilter,
    RunOut,
    RunPage,
)
from grocerysync.hub.scope import Scope

#: Longest ``ref`` and ``item_id`` kept of a rejection (the columns' sizes); longer ones are cut, not refused.
_REF_CHARS = 500
_ITEM_ID_CHARS = 200


async def list_runs(scope: Scope, args: RunFilter) -> RunPage:
    """The runs the principal may see, newest first."""
    qs = scope.query(Run)
    if args.retailer_id is not None:
        qs = qs.filter(retailer_id=args.retailer_id)
    if args.store_id is not None:
        qs = qs.filter(store_id=args.store_id)
    if args.job_id is not None:
        qs = qs.filter(job_id=args.job_id)
    if args.status is not None:
        qs = qs.filter(status=args.status)
    if args.since is not None:
        qs = qs.filter(queued_at__gte=args.since)
    if args.until is not None:
        qs = qs.filter(queued_at__lt=args.until)
    return await paginate(qs, args, RunPage, order=("-id",))


async def get_run(scope: Scope, run_id: int) -> RunOut:
    """One run with its counts."""
    return RunOut.model_validate(await scope.get(Run, run_id))


async def list_rejections(scope: Scope, run_id: int, args: PageArgs) -> RejectionPage:
    """A run's rejected items, in the order they were recorded."""
    run = await scope.get(Run, run_id)
    return await paginate(scope.query(RunRejection).filter(run_id=run.id), args, RejectionPage)


async def add_rejections(scope: Scope, run_id: int, rejections: Iterable[Rejection]) -> int:
    """Record a batch of a run's rejected items (one insert) and count them on the run; returns how many."""
    run = await scope.get(Run, run_id)
    rows = [
        RunRejection(
            retailer_id=run.retailer_id,
            run_id=run.id,
            ref=r.ref[:_REF_CHARS],
            item_id=r.item_id[:_ITEM_ID_CHARS] if r.item_id is not None else None,
            stage=r.stage,
            reason=r.reason,
        )
        for r in rejections
    ]
    if rows:
        await RunRejection.bulk_create(rows)
        run.items_rejected += len(rows)
        await run.save(update_fields=["items_rejected"])
    return len(rows)


async def add_logs(scope: Scope, retailer_id: int, entries: Iterable[LogIn]) -> int:
    """Store a batch of a retailer's log entries in one insert; returns how many.

    Each entry's store and run must be the retailer's (422 naming the entry otherwise), so one tenant's
    agent cannot file lines under another tenant's store or run.
    """
    batch = list(entries)
    for model, name in ((Store, "store_id"), (Run, "run_id")):
        wanted = {getattr(e, name) for e in batch} - {None}
        if not wanted:
            continue
        found = scope.query(model).filter(retailer_id=retailer_id, id__in=list(wanted)).values_list("id", flat=True)
        own = {int(i) for i in await found}  # type: ignore[call-overload]  # values_list(flat=True) is typed as tuples
        for number, entry in enumerate(batch):
            value = getattr(entry, name)
            if value is not None and value not in own:
                message = f"log entry {number}: retailer {retailer_id} has no {name.removesuffix('_id')} {value}"
                raise Invalid(message, [{"field": f"{number}.{name}", "message": message}])
    rows = [
        LogEntry(
            retailer_id=retailer_id,
            store_id=e.store_id,
            agent_id=e.agent_id,
            run_id=e.run_id,
            at=e.at,
            level=e.level,
            levelno=LEVELS[e.level],
            logger=e.logger,
            message=e.message,
            extra=e.fields,
        )
        for e in batch
    ]
    if rows:
        await LogEntry.bulk_create(rows)
    return len(rows)


async def list_logs(scope: Scope, args: LogFilter) -> LogPage:
    """The log entries the principal may see, newest first, filtered.

    ``q`` is a case-insensitive substring of the message; ``%`` and ``_`` in it are plain characters.
    """
    qs = scope.query(LogEntry)
    for name in ("retailer_id", "store_id", "agent_id", "run_id", "level"):
        value = getattr(args, name)
        if value is not None:
            qs = qs.filter(**{name: value})
    if args.min_level is not None:
        qs = qs.filter(levelno__gte=LEVELS[args.min_level])
    if args.since is not None:
        qs = qs.filter(at__gte=args.since)
    if args.until is not None:
        qs = qs.filter(at__lt=args.until)
    if args.q is not None:
        qs = qs.filter(message__icontains=args.q)
    return await paginate(qs, args, LogPage, order=("-at", "-id"))
