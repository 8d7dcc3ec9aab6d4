"""Retailers (tenants) and their stores."""

from __future__ import annotations

from grocerysync.hub.domain.common import audit, paginate, snapshot, unique
from grocerysync.hub.domain.jobs import reschedule_store_jobs
from grocerysync.hub.errors import Forbidden
from grocerysync.hub.models import Retailer, Store
from grocerysync.hub.schemas import (
    PageArgs,
    RetailerIn,
    RetailerOut,
    RetailerPage,
    RetailerPatch,
    StoreFilter,
    StoreIn,
    StoreOut,
    StorePage,
    StorePatch,
)
from grocerysync.hub.scope import Scope


async def list_retailers(scope: Scope, args: PageArgs) -> RetailerPage:
    """The retailers the principal may see."""
    return await paginate(scope.query(Retailer), args, RetailerPage)


async def get_retailer(scope: Scope, retailer_id: int) -> RetailerOut:
    """One retailer."""
    return RetailerOut.model_validate(await scope.get(Retailer, retailer_id))


async def create_retailer(scope: Scope, data: RetailerIn) -> RetailerOut:
    """A new tenant: admins, and technicians who look after all retailers."""
    scope.require_write()
    if not scope.sees_all:
        raise Forbidden(
            f"{scope.principal.email} is assigned to particular retailers and cannot add new ones; ask an admin"
        )
    retailer = await unique(Retailer.create(**data.model_dump()), f"a retailer named {data.name!r} already exists")
    await audit(scope, "create", retailer, retailer_id=retailer.id, after=snapshot(RetailerOut, retailer))
    return RetailerOut.model_validate(retailer)


async def update_retailer(scope: Scope, retailer_id: int, data: RetailerPatch) -> RetailerOut:
    """Change a retailer's name, contact, notes or retention."""
    retailer = await scope.get(Retailer, retailer_id)
    scope.require_write()
    before = snapshot(RetailerOut, retailer)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if changes:
        retailer.update_from_dict(changes)
        await unique(retailer.save(), f"a retailer named {data.name!r} already exists")
        await audit(
            scope, "update", retailer, retailer_id=retailer.id, before=before, after=snapshot(RetailerOut, retailer)
        )
    return RetailerOut.model_validate(retailer)


async def delete_retailer(scope: Scope, retailer_id: int) -> None:
    """Delete a retailer and everything it owns (admins only)."""
    retailer = await scope.get(Retailer, retailer_id)
    scope.require_admin()
    before = snapshot(RetailerOut, retailer)
    await retailer.delete()
    # Not tied to the deleted tenant, so the record outlives it.
    await audit(scope, "delete", retailer, retailer_id=None, before=before)


async def list_stores(scope: Scope, args: StoreFilter) -> StorePage:
    """The stores the principal may see, optionally of one retailer."""
    qs = scope.query(Store)
    if args.retailer_id is not None:
        qs = qs.filter(retailer_id=args.retailer_id)
    return await paginate(qs, args, StorePage)


async def get_store(scope: Scope, store_id: int) -> StoreOut:
    """One store."""
    return StoreOut.model_validate(await scope.get(Store, store_id))


async def create_store(scope: Scope, retailer_id: int, data: StoreIn) -> StoreOut:
    """A new store of a retailer."""
    retailer = await scope.get(Retailer, retailer_id)
    scope.require_write()
    store = await unique(
        Store.create(retailer=retailer, **data.model_dump()),
        f"retailer {retailer.name!r} already has a store named {data.name!r}",
    )
    await audit(scope, "create", store, retailer_id=retailer.id, after=snapshot(StoreOut, store))
    return StoreOut.model_validate(store)


async def update_store(scope: Scope, store_id: int, data: StorePatch) -> StoreOut:
    """Change a store's name, time zone or POS type."""
    store = await scope.get(Store, store_id)
    scope.require_write()
    before = snapshot(StoreOut, store)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if changes:
        store.update_from_dict(changes)
        await unique(store.save(), f"this retailer already has a store named {data.name!r}")
        if "time_zone" in changes:
            # Schedules are read in the store's time zone: the jobs' next firing times move with it.
            await reschedule_store_jobs(scope, store)
        await audit(
            scope, "update", store, retailer_id=store.retailer_id, before=before, after=snapshot(StoreOut, store)
        )
    return StoreOut.model_validate(store)


async def delete_store(scope: Scope, store_id: int) -> None:
    """Delete a store with its connections, destinations and jobs."""
    store = await scope.get(Store, store_id)
    scope.require_write()
    before = snapshot(StoreOut, store)
    await store.delete()
    await audit(scope, "delete", store, retailer_id=store.retailer_id, before=before)
