"""POS connections and destinations of a store, validated against their plugin's models before saving.

Destination secrets are encrypted with the hub's :class:`SecretBox` and are never returned: responses name
only the secret fields that are set.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretStr

from grocerysync.core.config import parse_config
from grocerysync.core.errors import ConfigError, PluginError
from grocerysync.core.manager import PluginManager
from grocerysync.hub.crypto import SecretBox
from grocerysync.hub.domain.common import audit, paginate, snapshot
from grocerysync.hub.errors import Invalid
from grocerysync.hub.models import DestinationConfig, PosConnection, Store
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
from grocerysync.hub.scope import Scope


def _validate(model: type[BaseModel], data: dict[str, Any], where: str, plugin: str) -> None:
    try:
        parse_config(model, data, where=where)
    except ConfigError as exc:
        raise Invalid(f"{plugin}: {exc}", exc.errors) from None


def _pos_model(plugins: PluginManager, name: str) -> type[BaseModel]:
    try:
        return plugins.pos_connector(name).config_model
    except PluginError as exc:
        raise Invalid(
            str(exc), [{"field": "plugin", "message": f"no POS connector named {name!r} is installed"}]
        ) from None


def _destination_models(plugins: PluginManager, name: str) -> tuple[type[BaseModel], type[BaseModel]]:
    try:
        record = plugins.destination(name)
    except PluginError as exc:
        raise Invalid(
            str(exc), [{"field": "plugin", "message": f"no destination named {name!r} is installed"}]
        ) from None
    return record.config_model, record.secrets_model


def _filtered(scope: Scope, model: type[Any], args: StoreObjectsFilter) -> Any:
    qs = scope.query(model)
    if args.retailer_id is not None:
        qs = qs.filter(retailer_id=args.retailer_id)
    if args.store_id is not None:
        qs = qs.filter(store_id=args.store_id)
    return qs


# --- POS connections ---------------------------------------------------------------------------------------


async def list_connections(scope: Scope, args: StoreObjectsFilter) -> ConnectionPage:
    """The POS connections the principal may see."""
    return await paginate(_filtered(scope, PosConnection, args), args, ConnectionPage)


async def get_connection(scope: Scope, connection_id: int) -> ConnectionOut:
    """One POS connection."""
    return ConnectionOut.model_validate(await scope.get(PosConnection, connection_id))


async def create_connection(scope: Scope, plugins: PluginManager, store_id: int, data: ConnectionIn) -> ConnectionOut:
    """A new POS connection; its config must satisfy the plugin's config model."""
    store = await scope.get(Store, store_id)
    scope.require_write()
    _validate(_pos_model(plugins, data.plugin), data.config, "config", data.plugin)
    conn = await PosConnection.create(
        retailer_id=store.retailer_id, store=store, name=data.name, plugin=data.plugin, config=data.config
    )
    await audit(scope, "create", conn, retailer_id=conn.retailer_id, after=snapshot(ConnectionOut, conn))
    return ConnectionOut.model_validate(conn)


async def update_connection(
    scope: Scope, plugins: PluginManager, connection_id: int, data: ConnectionPatch
) -> ConnectionOut:
    """Rename a POS connection or replace its config."""
    conn = await scope.get(PosConnection, connection_id)
    scope.require_write()
    before = snapshot(ConnectionOut, conn)
    if data.config is not None:
        _validate(_pos_model(plugins, conn.plugin), data.config, "config", conn.plugin)
        conn.config = data.config
    if data.name is not None:
        conn.name = data.name
    await conn.save()
    await audit(scope, "update", conn, retailer_id=conn.retailer_id, before=before, after=snapshot(ConnectionOut, conn))
    return ConnectionOut.model_validate(conn)


async def delete_connection(scope: Scope, connection_id: int) -> None:
    """Delete a POS connection (and the export jobs reading from it)."""
    conn = await scope.get(PosConnection, connection_id)
    scope.require_write()
    before = snapshot(ConnectionOut, conn)
    await conn.delete()
    await audit(scope, "delete", conn, retailer_id=conn.retailer_id, before=before)


# --- destinations --------------------------------------------------------------------------------------------


def _plain(secrets: dict[str, SecretStr]) -> dict[str, str]:
    return {k: v.get_secret_value() for k, v in secrets.items()}


async def list_destinations(scope: Scope, args: StoreObjectsFilter) -> DestinationPage:
    """The destinations the principal may see."""
    return await paginate(_filtered(scope, DestinationConfig, args), args, DestinationPage)


async def get_destination(scope: Scope, destination_id: int) -> DestinationOut:
    """One destination, without its secrets."""
    return DestinationOut.model_validate(await scope.get(DestinationConfig, destination_id))


async def create_destination(
    scope: Scope, plugins: PluginManager, box: SecretBox, store_id: int, data: DestinationIn
) -> DestinationOut:
    """A new destination; config and secrets must satisfy the plugin's models. Secrets are stored encrypted."""
    store = await scope.get(Store, store_id)
    scope.require_write()
    config_model, secrets_model = _destination_models(plugins, data.plugin)
    _validate(config_model, data.config, "config", data.plugin)
    secrets = _plain(data.secrets)
    _validate(secrets_model, secrets, "secrets", data.plugin)
    dest = await DestinationConfig.create(
        retailer_id=store.retailer_id,
        store=store,
        name=data.name,
        plugin=data.plugin,
        config=data.config,
        secrets_blob=box.encrypt(secrets, retailer_id=store.retailer_id),
        secret_fields=sorted(k for k, v in secrets.items() if v),
    )
    await audit(scope, "create", dest, retailer_id=dest.retailer_id, after=snapshot(DestinationOut, dest))
    return DestinationOut.model_validate(dest)


async def update_destination(
    scope: Scope, plugins: PluginManager, box: SecretBox, destination_id: int, data: DestinationPatch
) -> DestinationOut:
    """Rename, replace the config, or set secrets (those not given are kept)."""
    dest = await scope.get(DestinationConfig, destination_id)
    scope.require_write()
    before = snapshot(DestinationOut, dest)
    config_model, secrets_model = _destination_models(plugins, dest.plugin)
    if data.config is not None:
        _validate(config_model, data.config, "config", dest.plugin)
        dest.config = data.config
    if data.secrets is not None:
        secrets = box.decrypt(dest.secrets_blob, retailer_id=dest.retailer_id) | _plain(data.secrets)
        _validate(secrets_model, secrets, "secrets", dest.plugin)
        dest.secrets_blob = box.encrypt(secrets, retailer_id=dest.retailer_id)
        dest.secret_fields = sorted(k for k, v in secrets.items() if v)
    if data.name is not None:
        dest.name = data.name
    await dest.save()
    after = snapshot(DestinationOut, dest)
    await audit(scope, "update", dest, retailer_id=dest.retailer_id, before=before, after=after)
    return DestinationOut.model_validate(dest)


async def delete_destination(scope: Scope, destination_id: int) -> None:
    """Delete a destination (and the export jobs writing to it)."""
    dest = await scope.get(DestinationConfig, destination_id)
    scope.require_write()
    before = snapshot(DestinationOut, dest)
    await dest.delete()
    await audit(scope, "delete", dest, retailer_id=dest.retailer_id, before=before)
