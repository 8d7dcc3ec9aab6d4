"""Fixtures: every database test runs on SQLite and on the real PostgreSQL server at 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import base64
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel, Field, SecretStr
from quart.typing import TestAppProtocol
from quart.typing import TestClientProtocol as Client
from tortoise import context as tortoise_context

from grocerysync.core.hookspecs import hookimpl
from grocerysync.core.manager import PluginManager
from grocerysync.core.records import Destination, PosConnector
from grocerysync.core.results import CheckResult
from grocerysync.hub.app import create_app
from grocerysync.hub.db import migrate
from grocerysync.hub.domain import users
from grocerysync.hub.models import Role
from grocerysync.hub.settings import Settings

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(autouse=True)
def _one_failed_shutdown_fails_one_test() -> Iterator[None]:
    """A test whose app did not shut down in time leaves tortoise's global context set, and every later app's
    start-up would then fail on it: clear it, so that only the test that failed reports a failure."""
    yield
    tortoise_context._global_context = None


TEST_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()
TABLES = [
    "enrollment_token",
    "agent",
    "log_entry",
    "run_rejection",
    "run",
    "audit_entry",
    "export_job",
    "destination",
    "pos_connection",
    "store",
    "api_token",
    "user_session",
    "login_throttle",
    "user_retailer",
    "hub_user",
    "retailer",
]


# --- plugins the tests configure -----------------------------------------------------------------------------


class DemoPosConfig(BaseModel):
    path: str = Field(min_length=1)
    delimiter: str = Field(default=",", min_length=1, max_length=1)


class DemoDestConfig(BaseModel):
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)


class DemoDestSecrets(BaseModel):
    password: SecretStr
    api_key: SecretStr | None = None


async def _check(*_: Any) -> CheckResult:
    return CheckResult.success()


class DemoPlugin:
    @hookimpl
    def grocerysync_pos_connectors(self) -> list[PosConnector]:
        return [PosConnector(name="demo-pos", description="d", config_model=DemoPosConfig, check=_check, read=None)]  # type: ignore[arg-type]

    @hookimpl
    def grocerysync_destinations(self) -> list[Destination]:
        return [
            Destination(
                name="demo-dest",
                description="d",
                config_model=DemoDestConfig,
                secrets_model=DemoDestSecrets,
                check=_check,
                open=None,  # type: ignore[arg-type]
            )
        ]


def demo_plugins() -> PluginManager:
    pm = PluginManager(autoload=False)
    pm.register(DemoPlugin(), name="demo", distribution="grocerysync-demo", version="1.0")
    return pm


# --- databases -----------------------------------------------------------------------------------------------


def _run(coro: Any) -> Any:
    # Session set-up can be asked for from inside a test's running event loop: run it on its own thread.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this test session, migrated once, dropped after."""
    name = f"gs_hub_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        _run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed for the hub tests: {exc}")
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    _run(migrate(Settings(database_url=url, secret_key=TEST_KEY)))
    yield url
    _run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose SQLite database was migrated once for the session: each test gets a copy, since
    migrating takes seconds and most tests need an empty database."""
    directory = tmp_path_factory.mktemp("sqlite-template")
    _run(migrate(Settings(data_dir=directory, secret_key=TEST_KEY)))
    return directory


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for an empty, migrated database of the test's backend."""
    if backend == "sqlite":
        shutil.copytree(request.getfixturevalue("sqlite_template"), tmp_path, dirs_exist_ok=True)
        return Settings(data_dir=tmp_path, secret_key=TEST_KEY)
    url: str = request.getfixturevalue("pg_database")
    await _truncate(url)
    return Settings(data_dir=tmp_path, database_url=url, secret_key=TEST_KEY)


@pytest.fixture
async def test_app(settings: Settings) -> AsyncIterator[TestAppProtocol]:
    """The hub app with its serving hooks run (database open), and the demo plugins."""
    app = create_app(settings, plugins=demo_plugins())
    async with app.test_app() as running:
        yield running


@pytest.fixture
def client(test_app: TestAppProtocol) -> Client:
    return test_app.test_client()


@dataclass
class Caller:
    """A user with an API token: ``headers`` authenticates requests."""

    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_caller(
    email: str, role: Role, *, retailers: list[int] | None = None, all_retailers: bool = False
) -> Caller:
    """Create a user and a token directly in the database (the app must be running)."""
    await users.create_user(email, role, "correct horse battery", all_retailers=all_retailers, retailer_ids=retailers)
    return Caller(email, await users.create_token(email))


@pytest.fixture
async def admin(test_app: TestAppProtocol) -> Caller:
    return await make_caller("admin@example.com", Role.ADMIN)
