"""Reading the POS: ``check`` (can the table be read?) and ``read`` (items in batches, from a cursor).

CHANGE: this is where your POS-specific code goes. Keep the shape:

- ``check`` never raises; it returns ``CheckResult.failure("what is wrong and what to do")``.
- ``read`` is an async generator of ``RawBatch``, at most ``request.batch_size`` records each, keyed by item
  field names. It does not validate values (the pipeline does, for every connector alike): it passes what the
  POS holds and leaves out empty values, so a missing required value is reported with the field's name.
- A source that cannot be read at all raises ``SourceError`` with one line a technician can act on.
- Never start an event loop. Blocking calls (sqlite3 here, a vendor SDK, a file share) run in a worker thread
  through ``asyncio.to_thread`` so the agent stays responsive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from grocerysync.core.codes import GtinStyle, normalize_gtin
from grocerysync.core.errors import SourceError
from grocerysync.core.records import ReadRequest
from grocerysync.core.results import CheckResult, RawBatch, RawRecord, Rejection
from grocerysync_pos_template.config import SqliteTableConfig

log = logging.getLogger(__name__)


def _quote(name: str) -> str:
    # Names are validated by the config model (no quotes in them); quoting keeps spaces and keywords working.
    return f'"{name}"'


def _connect(config: SqliteTableConfig) -> sqlite3.Connection:
    path = Path(config.path)
    if not path.is_file():
        raise SourceError(f"POS database not found: {config.path} — check the path in the store's POS connection")
    try:
        # Read-only: the connector must never change the POS's data, nor create an empty database by mistake.
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise SourceError(f"cannot open the POS database {config.path}: {exc} — check it is readable") from None
    return conn


def _table_columns(conn: sqlite3.Connection, config: SqliteTableConfig) -> list[str]:
    try:
        rows = conn.execute(f"PRAGMA table_info({_quote(config.table)})").fetchall()
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"cannot read the POS database {config.path}: {exc} — is it a SQLite database?") from None
    if not rows:
        raise SourceError(f"the POS database {config.path} has no table {config.table!r} — check the table setting")
    return [r[1] for r in rows]


def _check_columns(config: SqliteTableConfig, present: Sequence[str]) -> None:
    known = {c.lower() for c in present}
    wanted = dict(config.columns)
    if config.modified_column:
        wanted["(modified_column)"] = config.modified_column
    for item_field, column in wanted.items():
        if column.lower() not in known:
            raise SourceError(
                f"table {config.table!r} in {config.path} has no column {column!r} (mapped to {item_field}); "
                f"its columns are: {', '.join(present)}"
            )


def _open(config: SqliteTableConfig) -> sqlite3.Connection:
    conn = _connect(config)
    try:
        _check_columns(config, _table_columns(conn, config))
    except BaseException:
        conn.close()
        raise
    return conn


def _inspect(config: SqliteTableConfig) -> str:
    conn = _open(config)
    conn.close()
    stat = Path(config.path).stat()
    modified = datetime.fromtimestamp(stat.st_mtime).strftime("%Y-%m-%d %H:%M")
    incremental = f", incremental by {config.modified_column}" if config.modified_column else ""
    return (
        f"{Path(config.path).name}: table {config.table!r} has every mapped column{incremental}; "
        f"file {stat.st_size:,} bytes, modified {modified}"
    )


async def check(config: SqliteTableConfig) -> CheckResult:
    """Can the database be opened and does the table hold every mapped column?"""
    try:
        return CheckResult.success(await asyncio.to_thread(_inspect, config))
    except SourceError as exc:
        return CheckResult.failure(str(exc))
    except (OSError, sqlite3.Error) as exc:
        return CheckResult.failure(f"cannot read the POS database {config.path}: {exc}")


def _decode_cursor(cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    try:
        modified, key = json.loads(cursor)
        return str(modified), str(key)
    except (ValueError, TypeError):
        # A cursor from another connector version or config: reading everything is safe (the pipeline's
        # delta check drops what did not change), skipping rows is not.
        log.warning("ignoring unreadable cursor %r; reading the whole table", cursor)
        return None


def _query(config: SqliteTableConfig, cursor: tuple[str, str] | None) -> tuple[str, tuple[str, ...]]:
    columns = ", ".join(_quote(c) for c in config.columns.values())
    key = _quote(config.columns["item_id"])
    table = _quote(config.table)
    if not config.modified_column:
        return f"SELECT {columns}, '', {key} FROM {table} ORDER BY {key}", ()  # noqa: S608 (names are validated)
    # Rows are read in (modified, key) order and the cursor is the last pair read, so a run that stops
    # part-way resumes exactly after the last row it passed on.
    modified = f"COALESCE({_quote(config.modified_column)}, '')"
    sql = f"SELECT {columns}, {modified}, {key} FROM {table}"  # noqa: S608 (names are validated, values bound)
    params: tuple[str, ...] = ()
    if cursor is not None:
        sql += f" WHERE ({modified}, {key}) > (?, ?)"
        params = cursor
    return sql + f" ORDER BY {modified}, {key}", params


def _to_record(row: Sequence[Any], config: SqliteTableConfig) -> RawRecord | Rejection:
    ref = f"table {config.table}, {config.columns['item_id']} {row[-1]}"
    data: dict[str, Any] = {}
    for (item_field, _column), value in zip(config.columns.items(), row, strict=False):
        if value is None:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        if item_field == "gtin":
            value = str(value)
            if config.gtin_style is not GtinStyle.STRICT:
                try:
                    value = normalize_gtin(value, config.gtin_style)
                except ValueError as exc:
                    return Rejection(ref, f"gtin: {exc}", "read", str(row[-1]))
        elif item_field == "plu" and isinstance(value, int):
            value = f"{value:04d}"  # a numeric column drops the leading zero of PLU 0123
        elif item_field == "item_id":
            value = str(value)
        head, _, sub = item_field.partition(".")
        if sub:
            data.setdefault(head, {})[sub] = value
        else:
            data[item_field] = value
    return RawRecord(ref, data)


async def read(config: SqliteTableConfig, request: ReadRequest) -> AsyncIterator[RawBatch]:
    """Items of the table in batches; from ``request.cursor`` on when a modified column is configured."""
    conn = await asyncio.to_thread(_open, config)
    try:
        sql, params = _query(config, _decode_cursor(request.cursor) if config.modified_column else None)
        try:
            rows_cursor = await asyncio.to_thread(conn.execute, sql, params)
        except sqlite3.Error as exc:
            raise SourceError(f"cannot read table {config.table!r} in {config.path}: {exc}") from None
        while True:
            try:
                rows = await asyncio.to_thread(rows_cursor.fetchmany, request.batch_size)
            except sqlite3.Error as exc:
                raise SourceError(f"reading table {config.table!r} in {config.path} failed: {exc}") from None
            if not rows:
                break
            batch = RawBatch()
            for row in rows:
                outcome = _to_record(row, config)
                if isinstance(outcome, Rejection):
                    batch.rejected.append(outcome)
                else:
                    batch.records.append(outcome)
            if config.modified_column:
                batch.cursor = json.dumps([rows[-1][-2], str(rows[-1][-1])])
            yield batch
    finally:
        conn.close()
