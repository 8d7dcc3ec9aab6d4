"""PostgreSQL row-level security: a second wall that holds even for a query that forgot the scope."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import test_isolation as isolation
from conftest import PG_ADMIN_DSN, TEST_KEY, _run, _truncate, demo_plugins, make_caller
from quart import Blueprint
from quart.typing import TestAppProtocol as RunningApp
from tortoise import Tortoise

from grocerysync.hub import rls
from grocerysync.hub.api.context import authenticate
from grocerysync.hub.app import create_app
from grocerysync.hub.models import Role, Store
from grocerysync.hub.scope import SYSTEM, Principal
from grocerysync.hub.settings import Settings

pytestmark = pytest.mark.postgres


def _dsn(url: str, user: str | None = None) -> str:
    dsn = url.replace("postgres://", "postgresql://", 1)
    return dsn.replace("postgresql://postgres@", f"postgresql://{user}@", 1) if user else dsn


def _init(url: str, role: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GROCERYSYNC_DATABASE_URL": url, "GROCERYSYNC_SECRET_KEY": TEST_KEY}
    if role is not None:
        env["GROCERYSYNC_DATABASE_APP_ROLE"] = role
    return subprocess.run(
        [sys.executable, "-m", "grocerysync.hub.cli", "init"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="session")
def app_role(pg_database: str) -> Iterator[str]:
    """A login role that neither owns the tables nor bypasses RLS, granted access by ``init``."""
    role = f"gs_app_{uuid.uuid4().hex[:10]}"

    async def admin(dsn: str, sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(admin(PG_ADMIN_DSN, f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS"))
    done = _init(pg_database, role)
    assert done.returncode == 0, done.stderr
    assert f"serve as {role}" in done.stdout
    yield role
    _run(admin(_dsn(pg_database), f"DROP OWNED BY {role}"))
    _run(admin(PG_ADMIN_DSN, f"DROP ROLE {role}"))


@pytest.fixture
async def owner_url(pg_database: str) -> str:
    await _truncate(pg_database)
    return pg_database


@pytest.fixture
async def as_app_role(owner_url: str, app_role: str, tmp_path: Path) -> AsyncIterator[RunningApp]:
    """The hub serving as the app role, with a deliberately careless route that skips the scope."""
    url = owner_url.replace("postgres://postgres@", f"postgres://{app_role}@", 1)
    app = create_app(Settings(data_dir=tmp_path, database_url=url, secret_key=TEST_KEY), plugins=demo_plugins())
    careless = Blueprint("careless", __name__)
    careless.before_request(authenticate)

    @careless.get("/careless/stores")
    async def every_store() -> dict[str, Any]:
        # What the grep test forbids in the hub: a query that forgot Scope.
        return {"names": sorted(s.name for s in await Store.all())}

    app.register_blueprint(careless)
    async with app.test_app() as running:
        yield running


async def test_init_is_idempotent_and_refuses_roles_that_bypass(owner_url: str, app_role: str) -> None:
    again = _init(owner_url, app_role)
    assert again.returncode == 0, again.stderr
    for role, says in (("postgres", "superuser or has BYPASSRLS"), ("no_such_role_x", "does not exist")):
        refused = _init(owner_url, role)
        assert refused.returncode == 2
        assert says in refused.stderr
        assert "Traceback" not in refused.stderr
    conn = await asyncpg.connect(_dsn(owner_url))
    try:
        rows = await conn.fetch(
            "SELECT c.relname, c.relrowsecurity, count(p.polname) AS n FROM pg_class c "
            "LEFT JOIN pg_policy p ON p.polrelid = c.oid WHERE c.relname = ANY($1) GROUP BY 1, 2",
            list(rls.tenant_tables()),
        )
    finally:
        await conn.close()
    assert {r["relname"] for r in rows} == set(rls.tenant_tables())
    assert all(r["relrowsecurity"] and r["n"] == 1 for r in rows)


async def test_app_role_sees_only_the_tenants_its_transaction_names(
    as_app_role: RunningApp, owner_url: str, app_role: str
) -> None:
    client = as_app_role.test_client()
    admin = await make_caller("admin@example.com", Role.ADMIN)
    a = await isolation._tenant(client, admin, "Retailer A")
    b = await isolation._tenant(client, admin, "Retailer B")

    conn = await asyncpg.connect(_dsn(owner_url, app_role))
    try:
        # No setting at all (any client of the role but the hub): no tenant rows.
        for table in rls.tenant_tables():
            assert await conn.fetchval(f'SELECT count(*) FROM "{table}"') == 0, table  # noqa: S608
        async with conn.transaction():
            await conn.execute(f"SET LOCAL {rls.SETTING_IDS} = '{a.retailer}'")
            assert await conn.fetchval("SELECT array_agg(DISTINCT retailer_id) FROM store") == [a.retailer]
            assert await conn.fetchval("SELECT array_agg(id) FROM retailer") == [a.retailer]
            assert await conn.fetchval("SELECT count(*) FROM destination WHERE retailer_id = $1", b.retailer) == 0
            # Writes to B's rows touch nothing, and a row for B cannot be made.
            assert await conn.execute("UPDATE store SET name = 'x' WHERE retailer_id = $1", b.retailer) == "UPDATE 0"
            assert await conn.execute("DELETE FROM destination WHERE retailer_id = $1", b.retailer) == "DELETE 0"
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await conn.execute(
                    "INSERT INTO store (retailer_id, name, time_zone, pos_type, created_at, updated_at)"
                    " VALUES ($1, 'sneaky', 'UTC', '', now(), now())",
                    b.retailer,
                )
        async with conn.transaction():
            # Moving A's row to B is refused too.
            await conn.execute(f"SET LOCAL {rls.SETTING_IDS} = '{a.retailer}'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await conn.execute("UPDATE store SET retailer_id = $1 WHERE id = $2", b.retailer, a.store)
        async with conn.transaction():
            await conn.execute(f"SET LOCAL {rls.SETTING_ALL} = 'on'")
            assert await conn.fetchval("SELECT count(*) FROM retailer") == 2
        # The role can neither switch the wall off nor rewrite the migration history.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE store DISABLE ROW LEVEL SECURITY")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM tortoise_migrations")
    finally:
        await conn.close()


async def test_the_wall_holds_for_a_request_that_forgot_the_scope(as_app_role: RunningApp) -> None:
    client = as_app_role.test_client()
    admin = await make_caller("admin@example.com", Role.ADMIN)
    a = await isolation._tenant(client, admin, "Retailer A")
    await isolation._tenant(client, admin, "Retailer B")
    tech_a = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[a.retailer])
    both = await (await client.get("/careless/stores", headers=admin.headers)).get_json()
    assert both == {"names": ["S", "S"]}
    mine = await (await client.get("/careless/stores", headers=tech_a.headers)).get_json()
    assert mine == {"names": ["S"]}
    # Rows of no retailer (the audit entry of a technician's new API token) are not walled off.
    made = await client.post("/api/tokens", headers=tech_a.headers, json={"name": "mine"})
    assert made.status_code == 201, await made.get_data()
    # And directly: the same unscoped query, inside a transaction narrowed to A.
    principal = Principal(user_id=1, email="t", role=Role.TECHNICIAN, retailer_ids=frozenset({a.retailer}))
    async with rls.tenant_transaction(principal, "postgres"):
        assert [s.retailer_id for s in await Store.all()] == [a.retailer]
    async with rls.tenant_transaction(SYSTEM, "postgres"):
        assert len(await Store.all()) == 2
    nobody = Principal(user_id=2, email="n", role=Role.VIEWER, retailer_ids=frozenset())
    async with rls.tenant_transaction(nobody, "postgres"):
        assert await Store.all() == []


async def test_every_api_path_works_as_the_app_role(as_app_role: RunningApp) -> None:
    # The whole cross-tenant matrix, with the hub serving under row-level security.
    client = as_app_role.test_client()
    await isolation.test_cross_tenant_matrix(client, await make_caller("admin@example.com", Role.ADMIN))


async def test_start_up_says_whether_rls_is_a_wall(
    as_app_role: RunningApp, owner_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert await rls.wall_status(Tortoise.get_connection("postgres")) is None
    caplog.set_level(logging.INFO, logger="grocerysync.hub.rls")
    await rls.log_wall_status("postgres")
    assert "guards every tenant-owned table" in caplog.text


async def test_owner_connection_is_reported_as_no_wall(owner_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, database_url=owner_url, secret_key=TEST_KEY), plugins=demo_plugins())
    async with app.test_app():
        reason = await rls.wall_status(Tortoise.get_connection("postgres"))
    assert reason is not None
    assert "bypasses row-level security" in reason
