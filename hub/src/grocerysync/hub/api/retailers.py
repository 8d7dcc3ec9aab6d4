"""Routes for retailers and their stores."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from grocerysync.hub.api.context import authenticate, scope
from grocerysync.hub.domain import retailers as domain
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

bp = Blueprint("retailers", __name__, url_prefix="/api")
bp.before_request(authenticate)


@bp.get("/retailers")
@validate_querystring(PageArgs)
@validate_response(RetailerPage)
async def list_retailers(query_args: PageArgs) -> RetailerPage:
    """The retailers you may see."""
    return await domain.list_retailers(scope(), query_args)


@bp.post("/retailers")
@validate_request(RetailerIn)
@validate_response(RetailerOut, 201)
async def create_retailer(data: RetailerIn) -> tuple[RetailerOut, int]:
    """Add a retailer (admins, and technicians for all retailers)."""
    return await domain.create_retailer(scope(), data), 201


@bp.get("/retailers/<int:retailer_id>")
@validate_response(RetailerOut)
async def get_retailer(retailer_id: int) -> RetailerOut:
    """One retailer."""
    return await domain.get_retailer(scope(), retailer_id)


@bp.patch("/retailers/<int:retailer_id>")
@validate_request(RetailerPatch)
@validate_response(RetailerOut)
async def update_retailer(retailer_id: int, data: RetailerPatch) -> RetailerOut:
    """Change a retailer."""
    return await domain.update_retailer(scope(), retailer_id, data)


@bp.delete("/retailers/<int:retailer_id>")
async def delete_retailer(retailer_id: int) -> tuple[str, int]:
    """Delete a retailer and everything it owns (admins only)."""
    await domain.delete_retailer(scope(), retailer_id)
    return "", 204


@bp.get("/stores")
@validate_querystring(StoreFilter)
@validate_response(StorePage)
async def list_stores(query_args: StoreFilter) -> StorePage:
    """The stores you may see; ``retailer_id`` narrows to one retailer."""
    return await domain.list_stores(scope(), query_args)


@bp.post("/retailers/<int:retailer_id>/stores")
@validate_request(StoreIn)
@validate_response(StoreOut, 201)
async def create_store(retailer_id: int, data: StoreIn) -> tuple[StoreOut, int]:
    """Add a store to a retailer."""
    return await domain.create_store(scope(), retailer_id, data), 201


@bp.get("/stores/<int:store_id>")
@validate_response(StoreOut)
async def get_store(store_id: int) -> StoreOut:
    """One store."""
    return await domain.get_store(scope(), store_id)


@bp.patch("/stores/<int:store_id>")
@validate_request(StorePatch)
@validate_response(StoreOut)
async def update_store(store_id: int, data: StorePatch) -> StoreOut:
    """Change a store."""
    return await domain.update_store(scope(), store_id, data)


@bp.delete("/stores/<int:store_id>")
async def delete_store(store_id: int) -> tuple[str, int]:
    """Delete a store with its connections, destinations and jobs."""
    await domain.delete_store(scope(), store_id)
    return "", 204
