"""PostgreSQL row-level security: a second wall behind :class:`grocerysync.hub.scope.Scope`.

Every tenant-owned table (:data:`grocerysync.hub.models.TENANT_MODELS`) gets one policy: a row is visible,
and may be written, only when the transaction's setting ``grocerysync.retailer_ids`` (a comma-separated list)
names its retailer, or when ``grocerysync.all_retailers`` is ``on``. A connection that set neither sees no
tenant rows at all.

How the hub uses it:

- ``grocerysync-hub init`` (run as the role that owns the tables) enables the policies after the migrations,
  idempotently, and with ``GROCERYSYNC_DATABASE_APP_ROLE`` grants that role the rights to read and write rows.
  The owner is not subject to the policies (they are not FORCEd), which migrations, backups and restores need.
- The hub serves as the app role, which neither owns the tables nor bypasses RLS. Its own connections start
  with ``grocerysync.all_retailers = on`` (:data:`SYSTEM_SERVER_SETTINGS`): the command line, the scheduler and
  other work done for every tenant. Every API request made by a signed-in user or token runs in one
  transaction narrowed to that principal's retailers with ``SET LOCAL`` (:func:`tenant_transaction`), so a
  handler that forgot the scope still cannot read or write another tenant's rows.

SQLite has no row-level security: there the scoping layer is the only wall.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient

from grocerysync.core.errors import ConfigError
from grocerysync.hub.db import transaction
from grocerysync.hub.models import TENANT_MODELS, Retailer
from grocerysync.hub.scope import Principal

log = logging.getLogger(__name__)

SETTING_ALL = "grocerysync.all_retailers"
SETTING_IDS = "grocerysync.retailer_ids"
POLICY = "grocerysync_tenant"
#: Session defaults of the hub's own connections: the system acts for every retailer until a request narrows it.
SYSTEM_SERVER_SETTINGS = {SETTING_ALL: "on"}


def is_postgres(db_url: str) -> bool:
    """Whether a tortoise database URL is PostgreSQL."""
    return db_url.startswith(("postgres://", "postgresql://", "asyncpg://", "psycopg://"))


def tenant_tables() -> dict[str, str]:
    """Each tenant-owned table and its tenant column."""
    return {m._meta.db_table: ("id" if m is Retailer else "retailer_id") for m in TENANT_MODELS}


def _hub_wide_rows() -> set[str]:
    # Tables whose tenant column may be NULL: such rows belong to no retailer (an audit entry about a user or a
    # token), so the tenant wall does not hide them. Anyone may write them, e.g. a technician making a token.
    return {m._meta.db_table for m in TENANT_MODELS if m is not Retailer and m._meta.fields_map["retailer_id"].null}


def _visible(column: str, hub_wide: bool) -> str:
    rule = (
        f"current_setting('{SETTING_ALL}', true) = 'on' OR \"{column}\" = ANY ("
        f"string_to_array(NULLIF(current_setting('{SETTING_IDS}', true), ''), ',')::integer[])"
    )
    return f'{rule} OR "{column}" IS NULL' if hub_wide else rule


def policy_statements() -> list[str]:
    """The SQL that (re)creates every policy; each table's statements are safe to run again."""
    out: list[str] = []
    hub_wide = _hub_wide_rows()
    for table, column in tenant_tables().items():
        rule = _visible(column, table in hub_wide)
        out += [
            f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
            f'DROP POLICY IF EXISTS {POLICY} ON "{table}"',
            f'CREATE POLICY {POLICY} ON "{table}" USING ({rule}) WITH CHECK ({rule})',
        ]
    return out


async def apply_policies(conn: BaseDBAsyncClient, app_role: str | None) -> None:
    """Enable the policies on every tenant-owned table, and grant ``app_role`` row access (one transaction).

    Raises ConfigError when the app role is missing, or could bypass the policies (superuser, BYPASSRLS, owner).
    """
    if app_role is not None:
        await _check_app_role(conn, app_role)
    statements = policy_statements()
    if app_role is not None:
        role = f'"{app_role}"'
        statements += [
            f"GRANT USAGE ON SCHEMA public TO {role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}",
            # The migration history is the owner's business.
            f"REVOKE INSERT, UPDATE, DELETE ON tortoise_migrations FROM {role}",
        ]
    async with transaction(conn.connection_name) as tx:
        for sql in statements:
            await tx.execute_script(sql)


async def _check_app_role(conn: BaseDBAsyncClient, role: str) -> None:
    _, rows = await conn.execute_query("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", [role])
    if not rows:
        raise ConfigError(
            f"GROCERYSYNC_DATABASE_APP_ROLE names {role!r}, which does not exist; "
            f"create it first: CREATE ROLE {role} LOGIN PASSWORD '...'"
        )
    if rows[0]["rolsuper"] or rows[0]["rolbypassrls"]:
        raise ConfigError(
            f"the app role {role!r} is a superuser or has BYPASSRLS, so row-level security would not apply to it; "
            f"serve as an ordinary role (ALTER ROLE {role} NOSUPERUSER NOBYPASSRLS)"
        )
    _, owned = await conn.execute_query(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner = $1 AND tablename = ANY($2)",
        [role, list(tenant_tables())],
    )
    if owned:
        raise ConfigError(
            f"the app role {role!r} owns the tables {', '.join(r['tablename'] for r in owned)}, and owners are not "
            "subject to row-level security; run 'init' as the owner role and serve as another role"
        )


async def wall_status(conn: BaseDBAsyncClient) -> str | None:
    """Why RLS is not a wall for the connected role (superuser, BYPASSRLS, owner, no policies), or None if it is."""
    _, rows = await conn.execute_query(
        "SELECT current_user AS who, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    who = rows[0]["who"]
    if rows[0]["rolsuper"] or rows[0]["rolbypassrls"]:
        return f"the hub connects as {who}, which bypasses row-level security (superuser or BYPASSRLS)"
    _, owned = await conn.execute_query(
        "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user "
        "AND tablename = ANY($1)",
        [list(tenant_tables())],
    )
    if owned[0]["n"]:
        return f"the hub connects as {who}, which owns the tables (owners are not subject to row-level security)"
    _, enabled = await conn.execute_query(
        "SELECT count(*) AS n FROM pg_class WHERE relname = ANY($1) AND relrowsecurity", [list(tenant_tables())]
    )
    if enabled[0]["n"] < len(tenant_tables()):
        return "row-level security is not enabled on every tenant-owned table; run 'grocerysync-hub init'"
    return None


@asynccontextmanager
async def tenant_transaction(principal: Principal, connection_name: str) -> AsyncIterator[BaseDBAsyncClient]:
    """A transaction in which PostgreSQL shows the rows of ``principal``'s retailers only.

    Every tortoise query in the ``async with`` block (same task) runs in this transaction.
    """
    ids = principal.retailer_ids
    everything = "on" if ids is None else "off"
    listed = ",".join(str(i) for i in sorted(ids or ()))
    async with transaction(connection_name) as tx:
        await tx.execute_query(
            "SELECT set_config($1, $2, true), set_config($3, $4, true)", [SETTING_ALL, everything, SETTING_IDS, listed]
        )
        yield tx


async def log_wall_status(connection_name: str) -> None:
    """At start-up: say whether row-level security guards this hub's connections."""
    reason = await wall_status(Tortoise.get_connection(connection_name))
    if reason:
        log.warning("row-level security is not a second wall here: %s", reason)
    else:
        log.info("row-level security guards every tenant-owned table for this hub's role")
