"""Backup and restore: every table of the hub as portable JSON Lines, between SQLite and PostgreSQL alike.

The format (version 1), one JSON document per line:

1. a header: ``{"format": "grocerysync-hub-backup", "version": 1, "created_at", "hub_version",
   "migrations": [...], "key_ids": [...], "tables": [...]}``, tables in an order that satisfies every foreign key;
2. one line per row: ``{"table": "store", "row": {"id": 1, "retailer_id": 1, "name": ..., ...}}``, values as
   the models read them (datetimes in ISO 8601 with their offset, enums by value, bytes in base64);
3. a trailer: ``{"end": {"store": 12, ...}}``, the row count of every table, so a cut-off file is refused.

Models are discovered from tortoise's registry, so tables added later are backed up with no change here;
only :data:`SKIPPED` (short-lived sign-in state) is left out. Encrypted secrets are copied as they are stored:
still encrypted, and readable only with the same key ring (``key_ids`` says which keys were used).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from tortoise import Tortoise, fields
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.models import Model

from grocerysync.core.errors import GrocerySyncError
from grocerysync.hub import __version__
from grocerysync.hub.crypto import blob_key_id
from grocerysync.hub.db import APP, transaction
from grocerysync.hub.rotation import BLOB_FIELD

FORMAT = "grocerysync-hub-backup"
VERSION = 1
#: Sessions and failed sign-in counts: worthless after a restore, and a session row is a credential.
SKIPPED = frozenset({"user_session", "login_throttle"})
BATCH = 500


class BackupError(GrocerySyncError):
    """A backup file cannot be restored (not a backup, cut off, or from an incompatible hub)."""


@dataclass
class RestoreReport:
    """What a restore wrote, and which key ids the restored secrets need."""

    rows: dict[str, int] = field(default_factory=dict)
    key_ids: list[str] = field(default_factory=list)


def models_in_order() -> list[type[Model]]:
    """Every backed-up model of the hub, each after the models its foreign keys point to."""
    apps = Tortoise.apps
    if apps is None:
        raise RuntimeError("the database is not open")
    models = sorted(
        (m for m in apps.get_models_iterable() if m._meta.app == APP and m._meta.db_table not in SKIPPED),
        key=lambda m: m._meta.db_table,
    )
    ordered: list[type[Model]] = []
    placed: set[type[Model]] = set()

    def place(model: type[Model], path: tuple[type[Model], ...]) -> None:
        if model in placed:
            return
        if model in path:
            raise RuntimeError(f"foreign keys form a cycle through {model.__name__}; backups cannot order them")
        for fk in model._meta.fk_fields | model._meta.o2o_fields:
            target = model._meta.fields_map[fk].related_model  # type: ignore[attr-defined]
            if target is not model and target in models:
                place(target, (*path, model))
        placed.add(model)
        ordered.append(model)

    for model in models:
        place(model, ())
    return ordered


def _columns(model: type[Model]) -> list[str]:
    # Python field names with a database column (foreign keys as their "<name>_id" source field).
    return list(model._meta.fields_db_projection)


def _to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _from_json(field_obj: fields.Field[Any], value: Any) -> Any:
    if value is None:
        return None
    if isinstance(field_obj, fields.JSONField):
        return value  # already the decoded JSON: do not parse a JSON string value twice
    if isinstance(field_obj, fields.BinaryField):
        return base64.b64decode(value)
    if isinstance(field_obj, fields.DatetimeField):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(field_obj, fields.TimeDeltaField):
        return timedelta(seconds=value)
    return field_obj.to_python_value(value)


async def _applied_migrations(conn: BaseDBAsyncClient) -> list[str]:
    _, rows = await conn.execute_query("SELECT name FROM tortoise_migrations")
    return sorted(str(r["name"]) for r in rows)


def _connection(model: type[Model]) -> BaseDBAsyncClient:
    return Tortoise.get_connection(model._meta.default_connection or "")


async def _rows(model: type[Model]) -> Any:
    """The rows of ``model`` in primary-key order, a batch at a time (bounded memory for large tables)."""
    columns, pk = _columns(model), model._meta.pk_attr
    last: Any = None
    while True:
        qs = model.all().order_by(pk).limit(BATCH)
        if last is not None:
            qs = qs.filter(**{f"{pk}__gt": last})
        batch = await qs.values(*columns)
        if not batch:
            return
        last = batch[-1][pk]
        yield batch


async def write_backup(out: IO[str]) -> dict[str, int]:
    """Write every backed-up table to ``out``; returns the row count of each table."""
    models = models_in_order()
    conn = _connection(models[0])
    header = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "hub_version": __version__,
        "migrations": await _applied_migrations(conn),
        "key_ids": await _key_ids(models),
        "tables": [m._meta.db_table for m in models],
    }
    out.write(json.dumps(header) + "\n")
    counts: dict[str, int] = {}
    for model in models:
        table = model._meta.db_table
        counts[table] = 0
        async for batch in _rows(model):
            for row in batch:
                line = {"table": table, "row": {k: _to_json(v) for k, v in row.items()}}
                out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
            counts[table] += len(batch)
    out.write(json.dumps({"end": counts}) + "\n")
    return counts


async def _key_ids(models: list[type[Model]]) -> list[str]:
    found: set[str] = set()
    for model in models:
        if BLOB_FIELD not in model._meta.fields_db_projection:
            continue
        for row in await model.all().values(BLOB_FIELD):
            kid = blob_key_id(row[BLOB_FIELD] or "")
            if kid:
                found.add(kid)
    return sorted(found)


def _lines(source: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in enumerate(source, 1):
        if not text.strip():
            continue
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BackupError(f"line {number} is not JSON ({exc.msg}); is the file complete and unchanged?") from None
        if not isinstance(doc, dict):
            raise BackupError(f"line {number} is not a JSON object; this is not a grocerysync-hub backup")
        yield number, doc


async def database_is_empty() -> bool:
    """Whether no backed-up table holds a row."""
    for model in models_in_order():
        if await model.all().exists():
            return False
    return True


async def restore_backup(source: IO[str], *, force: bool = False) -> RestoreReport:
    """Load a backup into this (migrated) database, all or nothing.

    Refuses a database that holds data unless ``force``, which replaces all of it. Raises BackupError naming the
    line and what is wrong.
    """
    models = models_in_order()
    by_table = {m._meta.db_table: m for m in models}
    conn = _connection(models[0])
    lines = _lines(source)
    number, header = next(lines, (0, {}))
    if header.get("format") != FORMAT:
        raise BackupError("this file is not a grocerysync-hub backup (its first line has no 'format' of one)")
    if header.get("version") != VERSION:
        raise BackupError(
            f"the backup has format version {header.get('version')}, this hub reads version {VERSION}; "
            "restore it with the hub version that wrote it"
        )
    ours = await _applied_migrations(conn)
    theirs = sorted(header.get("migrations") or [])
    if not set(theirs) <= set(ours):
        missing = ", ".join(sorted(set(theirs) - set(ours)))
        raise BackupError(
            f"the backup comes from a newer hub (migrations {missing} are not applied here); upgrade this hub "
            "and run 'grocerysync-hub init' first"
        )
    unknown = [t for t in header.get("tables", []) if t not in by_table]
    if unknown:
        raise BackupError(f"the backup has tables this hub does not know: {', '.join(unknown)}")
    if not force and not await database_is_empty():
        raise BackupError(
            "the database already holds data; restore into an empty database, or pass --force to replace everything"
        )
    report = RestoreReport(key_ids=list(header.get("key_ids") or []))
    async with transaction(conn.connection_name) as tx:
        for model in reversed(models):
            # execute_query, not execute_script: on SQLite a script commits the transaction first.
            await tx.execute_query(f'DELETE FROM "{model._meta.db_table}"')  # noqa: S608 (names from the models)
        pending: dict[str, list[list[Any]]] = {}
        end: dict[str, int] | None = None
        for number, doc in lines:
            if end is not None:
                raise BackupError(f"line {number} follows the end of the backup; the file was changed")
            if "end" in doc:
                end = doc["end"]
                continue
            table, row = str(doc.get("table")), doc.get("row")
            row_model = by_table.get(table)
            if row_model is None or not isinstance(row, dict):
                raise BackupError(f"line {number}: not a row of a known table")
            batch = pending.setdefault(table, [])
            batch.append(_values(row_model, row, number))
            report.rows[table] = report.rows.get(table, 0) + 1
            if len(batch) >= BATCH:
                await _insert(tx, row_model, pending.pop(table))
        if end is None:
            raise BackupError("the backup ends early (no end line): the file is cut off; use a complete copy")
        for table, rows in pending.items():
            await _insert(tx, by_table[table], rows)
        counted = {t: n for t, n in report.rows.items() if n}
        expected = {t: n for t, n in end.items() if n}
        if counted != expected:
            raise BackupError(f"the backup's rows do not add up to its end line ({counted} != {expected})")
        await _reset_sequences(tx, models)
    return report


def _values(model: type[Model], row: dict[str, Any], number: int) -> list[Any]:
    columns = _columns(model)
    extra = set(row) - set(columns)
    if extra:
        raise BackupError(f"line {number}: {model._meta.db_table} has no column {', '.join(sorted(extra))}")
    out = []
    for name in columns:
        field_obj = model._meta.fields_map[name]
        if name in row:
            value = _from_json(field_obj, row[name])
        else:
            # A column added after the backup was made: its default, as for a new row.
            value = field_obj.default() if callable(field_obj.default) else field_obj.default
        # The model class, not an instance: auto_now fields keep the backed-up times.
        out.append(field_obj.to_db_value(value, model))
    return out


async def _insert(conn: BaseDBAsyncClient, model: type[Model], rows: list[list[Any]]) -> None:
    executor = conn.executor_class(model=model, db=conn)
    try:
        await conn.execute_many(executor.insert_query_all, rows)
    except (IntegrityError, OperationalError) as exc:
        raise BackupError(
            f"the rows of table {model._meta.db_table} do not fit ({exc}); the file was changed or comes from a "
            "damaged database"
        ) from None


async def _reset_sequences(conn: BaseDBAsyncClient, models: list[type[Model]]) -> None:
    # PostgreSQL's serial counters do not move for rows inserted with their ids: move them past the largest.
    if conn.capabilities.dialect != "postgres":
        return
    for model in models:
        pk = model._meta.fields_map[model._meta.pk_attr]
        if not pk.generated:
            continue
        table, column = model._meta.db_table, model._meta.db_pk_column
        await conn.execute_query(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'), "  # noqa: S608 (names from the models)
            f'COALESCE(MAX("{column}"), 1), MAX("{column}") IS NOT NULL) FROM "{table}"'
        )


async def backup_file(path: Path) -> dict[str, int]:
    """Write a backup to ``path``; it appears under that name only once complete."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as out:
            counts = await write_backup(out)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return counts


async def restore_file(path: Path, *, force: bool = False) -> RestoreReport:
    """Restore the backup in ``path`` (see :func:`restore_backup`)."""
    try:
        source = path.open(encoding="utf-8")
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    with source:
        try:
            return await restore_backup(source, force=force)
        except UnicodeDecodeError:
            raise BackupError(f"{path} is not UTF-8 text; this is not a grocerysync-hub backup") from None
