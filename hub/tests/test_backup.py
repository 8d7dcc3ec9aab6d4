"""Backup and restore: SQLite to PostgreSQL and back reads back identical; bad files and full databases are refused."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import PG_ADMIN_DSN, TEST_KEY, demo_plugins
from tortoise import Tortoise

from grocerysync.hub import sessions
from grocerysync.hub.backup import (
    SKIPPED,
    BackupError,
    backup_file,
    models_in_order,
    restore_backup,
    restore_file,
    write_backup,
)
from grocerysync.hub.crypto import SecretBox
from grocerysync.hub.db import APP, migrate, tortoise_config
from grocerysync.hub.domain import connections, retailers, users
from grocerysync.hub.errors import Unauthorized
from grocerysync.hub.models import DestinationConfig, LogEntry, Role, Run, User
from grocerysync.hub.schemas import ConnectionIn, DestinationIn, RetailerIn, RetailerPatch, StoreIn
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.settings import Settings

CANARY = "canary-backup-0b5e-do-not-leak"


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[None]:
    await Tortoise.init(config=tortoise_config(settings.db_url()))
    try:
        yield
    finally:
        await Tortoise.close_connections()


@pytest.fixture
async def fresh_pg(tmp_path: Path) -> AsyncIterator[Settings]:
    """An empty PostgreSQL database of this test's own, migrated."""
    name = f"gs_hub_backup_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    settings = Settings(
        data_dir=tmp_path, database_url=f"postgres://postgres@127.0.0.1:5432/{name}", secret_key=TEST_KEY
    )
    await migrate(settings)
    yield settings
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _sqlite(path: Path) -> Settings:
    return Settings(data_dir=path, secret_key=TEST_KEY)


async def _populate(settings: Settings) -> None:
    """A little of everything: tenants, users with assignments and tokens, config with secrets, runs, logs."""
    scope, plugins = Scope(SYSTEM), demo_plugins()
    box = SecretBox(settings.encryption_key())
    for n in (1, 2):
        r = await retailers.create_retailer(scope, RetailerIn(name=f"Retailer {n}", notes="é ünïcode ✓"))
        await retailers.update_retailer(scope, r.id, RetailerPatch(contact="ops@example.com"))
        s = await retailers.create_store(scope, r.id, StoreIn(name="Main St", time_zone="America/Chicago"))
        conn = await connections.create_connection(
            scope, plugins, s.id, ConnectionIn(name="pos", plugin="demo-pos", config={"path": "/x.csv", "n": None})
        )
        await connections.create_destination(
            scope,
            plugins,
            box,
            s.id,
            DestinationIn.model_validate(
                {"name": "d", "plugin": "demo-dest", "config": {"host": "h"}, "secrets": {"password": CANARY}}
            ),
        )
        run = await Run.create(retailer_id=r.id, store_id=s.id, job_name="nightly", items_read=3)
        await LogEntry.create(
            retailer_id=r.id, store_id=s.id, run=run, at=datetime.now(UTC), level="info", levelno=20, message="m"
        )
        assert conn.id
    await users.create_user("tech@example.com", Role.TECHNICIAN, "long enough pw", retailer_ids=[1])
    await users.create_user("admin@example.com", Role.ADMIN, "long enough pw")
    await users.create_token("tech@example.com", "nightly")
    await sessions.login(settings, "admin@example.com", "long enough pw")
    with pytest.raises(Unauthorized):
        await sessions.login(settings, "nobody@example.com", "wrong password", address="10.1.1.1")


async def _dump(settings: Settings) -> list[Any]:
    """A backup of the database, without its header's time: equal dumps mean equal databases."""
    out = io.StringIO()
    async with opened(settings):
        await write_backup(out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    del lines[0]["created_at"]
    return lines


@pytest.mark.postgres
async def test_sqlite_to_postgres_and_back_reads_back_identical(tmp_path: Path, fresh_pg: Settings) -> None:
    source = _sqlite(tmp_path / "source")
    await migrate(source)
    async with opened(source):
        await _populate(source)
        await backup_file(tmp_path / "one.jsonl")
    original = await _dump(source)
    text = (tmp_path / "one.jsonl").read_text(encoding="utf-8")
    assert CANARY not in text  # secrets stay encrypted in the file
    tables = original[0]["tables"]
    rows = [line for line in original if "table" in line]
    # Every table of the hub is in the backup, found without a list of them, except short-lived sign-in state.
    async with opened(source):
        every = {m._meta.db_table for m in Tortoise.apps.get_models_iterable() if m._meta.app == APP}  # type: ignore[union-attr]
        assert set(tables) == every - SKIPPED
        assert [m._meta.db_table for m in models_in_order()] == tables
    assert {line["table"] for line in rows} >= {"retailer", "store", "destination", "hub_user", "api_token", "run"}
    assert {"user_retailer", "log_entry", "audit_entry", "pos_connection"} <= {line["table"] for line in rows}

    async with opened(fresh_pg):
        report = await restore_file(tmp_path / "one.jsonl")
        assert report.rows["retailer"] == 2
        assert report.key_ids == [SecretBox(fresh_pg.encryption_key()).key_id]
    assert await _dump(fresh_pg) == original

    # And back: PostgreSQL to a new SQLite file.
    async with opened(fresh_pg):
        await backup_file(tmp_path / "two.jsonl")
    target = _sqlite(tmp_path / "target")
    await migrate(target)
    async with opened(target):
        await restore_file(tmp_path / "two.jsonl")
    assert await _dump(target) == original

    # The restored PostgreSQL database works: new rows get fresh ids, secrets decrypt, tokens still sign in.
    async with opened(fresh_pg):
        made = await retailers.create_retailer(Scope(SYSTEM), RetailerIn(name="Retailer 3"))
        assert made.id == 3
        row = await DestinationConfig.get(id=1)
        assert SecretBox(fresh_pg.encryption_key()).decrypt(row.secrets_blob, retailer_id=row.retailer_id) == {
            "password": CANARY
        }
        assert (await User.get(email="tech@example.com")).password_hash.startswith("$argon2id$")


async def test_restore_refuses_a_database_with_data_unless_forced(tmp_path: Path) -> None:
    source = _sqlite(tmp_path / "a")
    await migrate(source)
    async with opened(source):
        await _populate(source)
        await backup_file(tmp_path / "a.jsonl")
    before = await _dump(source)
    async with opened(source):
        with pytest.raises(BackupError, match="--force"):
            await restore_file(tmp_path / "a.jsonl")
        await retailers.create_retailer(Scope(SYSTEM), RetailerIn(name="Added after the backup"))
        await restore_file(tmp_path / "a.jsonl", force=True)
    assert await _dump(source) == before


def _user_row(lines: list[str]) -> int:
    # Tables come in foreign-key order, which new tables may change: find the first user row by its table.
    return next(i for i, line in enumerate(lines) if '"table": "hub_user"' in line)


def _misspell_email(lines: list[str]) -> list[str]:
    i = _user_row(lines)
    return [*lines[:i], lines[i].replace('"email"', '"emial"'), *lines[i + 1 :]]


@pytest.mark.parametrize(
    ("mangle", "says"),
    [
        (lambda lines: lines[:-3], "cut off"),
        (lambda lines: ["{}", *lines[1:]], "not a grocerysync-hub backup"),
        (lambda lines: [lines[0].replace('"version": 1', '"version": 9'), *lines[1:]], "version 9"),
        (lambda lines: [*lines[:2], "{not json", *lines[2:]], "line 3 is not JSON"),
        (lambda lines: [*lines[:2], '{"table": "nope", "row": {}}', *lines[2:]], "line 3: not a row"),
        (lambda lines: [*lines[:-2], lines[-1]], "do not add up"),
        (lambda lines: [*lines[:-1], lines[_user_row(lines)], lines[-1]], "rows of table hub_user do not fit"),
        (_misspell_email, r"line \d+: hub_user has no column emial"),
        (
            lambda lines: [lines[0].replace('"0001_initial"', '"0001_initial", "9999_future"'), *lines[1:]],
            "newer hub",
        ),
    ],
)
async def test_bad_backups_are_refused_and_change_nothing(tmp_path: Path, mangle: Any, says: str) -> None:
    source = _sqlite(tmp_path / "a")
    await migrate(source)
    async with opened(source):
        await _populate(source)
        await backup_file(tmp_path / "a.jsonl")
    lines = (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    before = await _dump(source)
    async with opened(source):
        with pytest.raises(BackupError, match=says):
            await restore_backup(io.StringIO("\n".join(mangle(lines)) + "\n"), force=True)
    assert await _dump(source) == before


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    key = settings.secret_key.get_secret_value() if settings.secret_key else TEST_KEY
    env = {**os.environ, "GROCERYSYNC_DATA_DIR": str(settings.data_dir), "GROCERYSYNC_SECRET_KEY": key}
    if settings.database_url is not None:
        env["GROCERYSYNC_DATABASE_URL"] = settings.db_url()
    return subprocess.run(
        [sys.executable, "-m", "grocerysync.hub.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


async def test_backup_and_restore_commands(tmp_path: Path) -> None:
    source = _sqlite(tmp_path / "a")
    await migrate(source)
    async with opened(source):
        await _populate(source)
    done = _cli(source, "backup", str(tmp_path / "b.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "rows of" in done.stdout
    assert not (tmp_path / "b.jsonl.partial").exists()
    # A fresh data directory: restore creates the schema and loads the backup.
    target = _sqlite(tmp_path / "b")
    loaded = _cli(target, "restore", str(tmp_path / "b.jsonl"))
    assert loaded.returncode == 0, loaded.stderr
    assert await _dump(target) == await _dump(source)
    again = _cli(target, "restore", str(tmp_path / "b.jsonl"))
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert "Traceback" not in again.stderr
    assert _cli(target, "restore", "--force", str(tmp_path / "b.jsonl")).returncode == 0
    missing = _cli(target, "restore", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert "is not a file" in missing.stderr
    # Restored under a different key ring: the hub says which key the secrets need.
    other = Settings(data_dir=tmp_path / "c", secret_key="ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ=")
    proc = _cli(other, "restore", str(tmp_path / "b.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert SecretBox(source.encryption_key()).key_id in proc.stderr
