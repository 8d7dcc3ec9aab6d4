"""Helpers shared by the domain functions: pagination, audit records, integrity errors."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.queryset import QuerySet

from grocerysync.hub.errors import Conflict
from grocerysync.hub.models import AuditEntry, LogEntry
from grocerysync.hub.schemas import PageArgs
from grocerysync.hub.schemas_jobs import LEVELS
from grocerysync.hub.scope import Scope

T = TypeVar("T")
P = TypeVar("P", bound=BaseModel)


async def paginate(qs: QuerySet[Any], args: PageArgs, page_model: type[P], *, order: tuple[str, ...] = ("id",)) -> P:
    """One page of ``qs`` in ``order`` (id order by default), as ``page_model`` (``items``, ``total``, ...)."""
    total = await qs.count()
    rows = await qs.order_by(*order).offset(args.offset).limit(args.limit)
    return page_model.model_validate({"items": rows, "total": total, "limit": args.limit, "offset": args.offset})


async def unique(awaitable: Awaitable[T], message: str) -> T:
    """Await a write; a unique-constraint clash becomes a 409 with ``message``."""
    try:
        return await awaitable
    except IntegrityError:
        raise Conflict(message) from None


def snapshot(view: type[BaseModel], obj: Model) -> dict[str, Any]:
    """What an audit entry records of an object: its public view, which never holds secrets."""
    return view.model_validate(obj).model_dump(mode="json", exclude={"created_at", "updated_at"})


async def audit(
    scope: Scope,
    action: str,
    obj: Model,
    *,
    retailer_id: int | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Record who changed what. ``before``/``after`` come from :func:`snapshot` (secrets never in them)."""
    await AuditEntry.create(
        retailer_id=retailer_id,
        user_id=scope.principal.user_id,
        actor=scope.principal.email,
        action=action,
        object_type=type(obj).__name__,
        object_id=str(obj.pk),
        before=before,
        after=after,
    )


async def store_log(
    level: str,
    message: str,
    *,
    logger: str,
    retailer_id: int,
    store_id: int | None,
    run_id: int | None = None,
    agent_id: int | None = None,
    db: BaseDBAsyncClient | None = None,
) -> None:
    """Write one of the hub's own log lines to a store's log, where technicians see the agent's lines."""
    await LogEntry.create(
        retailer_id=retailer_id,
        store_id=store_id,
        agent_id=agent_id,
        run_id=run_id,
        at=datetime.now(UTC),
        level=level,
        levelno=LEVELS[level],
        logger=logger,
        message=message,
        using_db=db,
    )
