"""Routes for POS connections and destinations."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from grocerysync.hub.api.context import authenticate, hub, scope
from grocerysync.hub.domain import connections as domain
from grocerysync.hub.schemas import (
    ConnectionIn,
    ConnectionOut,
    ConnectionPage,
    ConnectionPatch,
    DestinationIn,
    DestinationOut,
    DestinationPage,
    DestinationPatch,
    StoreObjectsFilter,
)

bp = Blueprint("connections", __name__, url_prefix="/api")
bp.before_request(authenticate)


@bp.get("/connections")
@validate_querystring(StoreObjectsFilter)
@validate_response(ConnectionPage)
async def list_connections(query_args: StoreObjectsFilter) -> ConnectionPage:
    """The POS connections you may see."""
    return await domain.list_connections(scope(), query_args)


@bp.post("/stores/<int:store_id>/connections")
@validate_request(ConnectionIn)
@validate_response(ConnectionOut, 201)
async def create_connection(store_id: int, data: ConnectionIn) -> tuple[ConnectionOut, int]:
    """Add a POS connection to a store; the config is checked against the plugin's config model."""
    return await domain.create_connection(scope(), hub().plugins, store_id, data), 201


@bp.get("/connections/<int:connection_id>")
@validate_response(ConnectionOut)
async def get_connection(connection_id: int) -> ConnectionOut:
    """One POS connection."""
    return await domain.get_connection(scope(), connection_id)


@bp.patch("/connections/<int:connection_id>")
@validate_request(ConnectionPatch)
@validate_response(ConnectionOut)
async def update_connection(connection_id: int, data: ConnectionPatch) -> ConnectionOut:
    """Rename a POS connection or replace its config."""
    return await domain.update_connection(scope(), hub().plugins, connection_id, data)


@bp.delete("/connections/<int:connection_id>")
async def delete_connection(connection_id: int) -> tuple[str, int]:
    """Delete a POS connection."""
    await domain.delete_connection(scope(), connection_id)
    return "", 204


@bp.get("/destinations")
@validate_querystring(StoreObjectsFilter)
@validate_response(DestinationPage)
async def list_destinations(query_args: StoreObjectsFilter) -> DestinationPage:
    """The destinations you may see (secrets are never shown, only which are set)."""
    return await domain.list_destinations(scope(), query_args)


@bp.post("/stores/<int:store_id>/destinations")
@validate_request(DestinationIn)
@validate_response(DestinationOut, 201)
async def create_destination(store_id: int, data: DestinationIn) -> tuple[DestinationOut, int]:
    """Add a destination to a store; config and secrets are checked against the plugin's models."""
    state = hub()
    return await domain.create_destination(scope(), state.plugins, state.box, store_id, data), 201


@bp.get("/destinations/<int:destination_id>")
@validate_response(DestinationOut)
async def get_destination(destination_id: int) -> DestinationOut:
    """One destination."""
    return await domain.get_destination(scope(), destination_id)


@bp.patch("/destinations/<int:destination_id>")
@validate_request(DestinationPatch)
@validate_response(DestinationOut)
async def update_destination(destination_id: int, data: DestinationPatch) -> DestinationOut:
    """Change a destination; secrets given replace those of the same name."""
    state = hub()
    return await domain.update_destination(scope(), state.plugins, state.box, destination_id, data)


@bp.delete("/destinations/<int:destination_id>")
async def delete_destination(destination_id: int) -> tuple[str, int]:
    """Delete a destination."""
    await domain.delete_destination(scope(), destination_id)
    return "", 204
