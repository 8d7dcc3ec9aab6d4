"""The database: tortoise configuration and the one migration history for SQLite and PostgreSQL.

Migrations use tortoise-orm's built-in migration system (``tortoise.migrations``, tortoise-orm >= 1.0), not
aerich. Its migration files are Python operations (``CreateModel``, ``AddField``, ...) that each backend's
schema editor turns into that database's SQL when they are applied, so one history in
``grocerysync/hub/migrations`` serves SQLite and PostgreSQL alike. aerich, which tortoise's documentation now
calls the legacy alternative, stores the SQL of the database it generated against in each migration file,
which would mean one history per database.

To change a model: edit :mod:`grocerysync.hub.models`, then from ``hub/src`` run
``tortoise -c grocerysync.hub.db.MIGRATION_CONFIG makemigrations --name WHAT``, and commit the new file.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import TransactionalDBClient, TransactionContext, TransactionContextPooled
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.backends.sqlite.client import SqliteTransactionContext
from tortoise.connection import get_connections
from tortoise.context import TortoiseContext
from tortoise.transactions import in_transaction

from grocerysync.hub.settings import Settings

APP = "models"
MODELS_MODULE = "grocerysync.hub.models"
MIGRATIONS_MODULE = "grocerysync.hub.migrations"


async def _keep_session(connection: Any) -> None:
    """asyncpg's ``reset`` hook of the pool: nothing beyond asyncpg's own rollback of an open transaction."""


def tortoise_config(db_url: str, pool_size: int = 5) -> dict[str, Any]:
    """The tortoise configuration for a database URL; ``pool_size``: the most pooled PostgreSQL connections."""
    # The connection is named after the database kind: tortoise caches prepared SQL per connection name for
    # the whole process, so one name shared by SQLite and PostgreSQL (tests, copying between databases)
    # would send one dialect's SQL to the other.
    name = db_url.split(":", 1)[0]
    connection: str | dict[str, Any] = db_url
    if name == "postgres":
        # Row-level security (grocerysync.hub.rls): the hub's own connections act for every retailer until an
        # API request narrows its transaction to the caller's retailers.
        from grocerysync.hub.rls import SYSTEM_SERVER_SETTINGS

        connection = expand_db_url(db_url)
        connection["credentials"]["server_settings"] = dict(SYSTEM_SERVER_SETTINGS)
        # A "?maxsize=N" in the URL wins.
        connection["credentials"].setdefault("maxsize", pool_size)
    return {
        "connections": {name: connection},
        "apps": {APP: {"models": [MODELS_MODULE], "default_connection": name, "migrations": MIGRATIONS_MODULE}},
        "use_tz": True,
        "timezone": "UTC",
    }


#: For tortoise's own CLI (``makemigrations``): a throwaway SQLite database, only the models matter.
MIGRATION_CONFIG = tortoise_config("sqlite://:memory:")


async def connect(settings: Settings) -> TortoiseContext:
    """Open the database for a serving process.

    The context is global (``_enable_global_fallback``) because Quart answers each request in its own task,
    not in the ``before_serving`` task that opened it.
    """
    config = tortoise_config(settings.db_url(), settings.database_pool_size)
    for connection in config["connections"].values():
        if isinstance(connection, dict) and connection.get("engine") == "tortoise.backends.asyncpg":
            # asyncpg resets a connection given back to its pool (RESET ALL, UNLISTEN *, ...): one more round trip
            # per query. The hub keeps no session state on pooled connections (tenant_transaction's settings
            # last for its transaction only; LISTEN has a connection of its own), and asyncpg itself still rolls
            # back a transaction left open, before this hook.
            connection["credentials"]["reset"] = _keep_session
    return await Tortoise.init(config=config, _enable_global_fallback=True)


async def disconnect(context: TortoiseContext) -> None:
    """Close what :func:`connect` opened."""
    await context.close_connections()


class transaction:
    """``async with transaction(connection_name) as tx:`` one transaction; the hub's only way to open one.

    tortoise's ``in_transaction``, minus its leak: a task cancelled while tortoise opens the transaction (a
    request whose client went away, a timer stopped at shutdown) left the pooled PostgreSQL connection taken
    forever, or on SQLite the lock every later transaction waits for held forever. Cancelled there, this gives
    both back before the cancellation goes on. Every tortoise query in the block (same task) runs in the
    transaction; leaving the block commits it, or rolls it back on an exception.
    """

    __slots__ = ("_context",)

    def __init__(self, connection_name: str | None = None) -> None:
        self._context: TransactionContext = in_transaction(connection_name)

    async def __aenter__(self) -> TransactionalDBClient:
        try:
            return await self._context.__aenter__()
        except BaseException:
            await _undo_opening(self._context)
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._context.__aexit__(exc_type, exc, tb)


async def _undo_opening(context: TransactionContext) -> None:
    """Give back what a transaction that failed to open had taken (see :class:`transaction`)."""
    # tortoise's contexts record their progress in these attributes; hub/tests/test_db_transaction.py fails if a
    # tortoise release changes them.
    token = getattr(context, "token", None)  # set once the connection was taken
    if isinstance(context, TransactionContextPooled):
        connection = context.client._connection
        pool = context.client._parent._pool
        if connection is not None and pool is not None:
            # asyncpg waits out a query cancelled half-way and rolls back an open transaction on release.
            await asyncio.shield(pool.release(connection))
    elif isinstance(context, SqliteTransactionContext) and token is not None:
        try:
            # BEGIN may have run in aiosqlite's thread although its caller was cancelled.
            await asyncio.shield(context.connection._connection.rollback())
        finally:
            context._trxlock.release()
    if token is not None:
        get_connections().reset(token)


async def migrate(settings: Settings) -> None:
    """Create the database's tables or bring them up to date; safe to run on every upgrade."""
    from tortoise.migrations.api import migrate as run_migrations

    url = settings.db_url()
    if url.startswith("sqlite://") and ":memory:" not in url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        await run_migrations(config=tortoise_config(url))
    finally:
        await Tortoise.close_connections()
