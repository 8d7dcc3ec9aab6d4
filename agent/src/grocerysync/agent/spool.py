"""The local spool: run results, progress reports and log records wait here until the hub confirms them.

Everything the agent reports goes to this SQLite file first and is deleted only when the hub has
confirmed receipt (:meth:`Spool.confirm`), so a hub outage or an agent restart loses nothing.

Durability: WAL with ``synchronous=FULL``. The spool exists to keep a promise ("nothing lost"), and
with ``NORMAL`` a power cut may roll back the last commits, which here would silently lose a finished
run's result. ``FULL`` costs one fsync per transaction; log records are appended in batches
(:meth:`Spool.append_many`), so that is one fsync per batch, not per line.

Several processes may open one spool (the service and a technician's command, say): writes take the
lock up front (``BEGIN IMMEDIATE``) and wait up to ``busy_timeout`` seconds for it. Entry ids come
from ``AUTOINCREMENT`` so an id is never reused: a confirmation that arrives after a restart can only
ever delete the entries it names.

The spool is bounded (``max_records``, ``max_bytes`` of payload). When it is over the bound it drops the
oldest *log* records first, then the oldest progress reports (each is superseded by the next), and never
a result. Every drop is counted per kind with the time span of what was lost; :meth:`Spool.dropped`
hands that to the shipper so the next shipment says, for example, "spool full: dropped 120 log records
created between ... and ...".
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import orjson

from grocerysync.agent import paths
from grocerysync.core.errors import GrocerySyncError

Kind = Literal["result", "progress", "log"]
KINDS: tuple[Kind, ...] = get_args(Kind)
#: Dropped when the spool is full, in this order; results are never dropped.
_DROP_ORDER: tuple[Kind, ...] = ("log", "progress")

#: Defaults: generous for a store PC's disk, small next to a week of hub outage at a busy store.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_RECORDS = 2_000_000

#: SQLite limits the number of ``?`` in one statement; stay well under every build's limit.
_CHUNK = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_key ON entries (kind, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_kind ON entries (kind, id);
-- Running totals kept by triggers, so checking the bound never scans the spool.
CREATE TABLE IF NOT EXISTS totals (kind TEXT PRIMARY KEY, records INTEGER NOT NULL, bytes INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS entries_ins AFTER INSERT ON entries BEGIN
    INSERT INTO totals (kind, records, bytes) VALUES (new.kind, 1, new.size)
    ON CONFLICT (kind) DO UPDATE SET records = records + 1, bytes = bytes + new.size;
END;
CREATE TRIGGER IF NOT EXISTS entries_del AFTER DELETE ON entries BEGIN
    UPDATE totals SET records = records - 1, bytes = bytes - old.size WHERE kind = old.kind;
END;
-- One row per trim: what was dropped, and the creation times of the oldest and newest dropped entry.
CREATE TABLE IF NOT EXISTS drops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL
);
"""


class SpoolError(GrocerySyncError):
    """The spool cannot be opened or written, or was given something it cannot store."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One spooled report: ``id`` is what :meth:`Spool.confirm` takes once the hub has it."""

    id: int
    kind: Kind
    key: str | None
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Dropped:
    """What the spool had to drop of one kind since the hub was last told (see :meth:`Spool.clear_dropped`)."""

    kind: Kind
    count: int
    bytes: int
    first_at: datetime
    last_at: datetime
    #: The last drop row this notice covers; clearing it leaves later drops in place.
    upto: int

    def message(self) -> str:
        """A line for the log shipment, e.g. ``spool full: dropped 120 log records created between ...``."""
        noun = "record" if self.count == 1 else "records"
        return (
            f"spool full: dropped {self.count} {self.kind} {noun} ({self.bytes} bytes) created between "
            f"{self.first_at.isoformat(timespec='seconds')} and {self.last_at.isoformat(timespec='seconds')}; "
            "raise the spool limits or restore the connection to the hub sooner to keep them"
        )


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """How full the spool is: records and payload bytes per kind, the bounds, and pending drop counts."""

    records: dict[str, int]
    bytes: dict[str, int]
    max_records: int
    max_bytes: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def total_records(self) -> int:
        """Records of every kind."""
        return sum(self.records.values())

    @property
    def total_bytes(self) -> int:
        """Payload bytes of every kind."""
        return sum(self.bytes.values())

    @property
    def over_bound(self) -> bool:
        """True only when results alone exceed the bound (they are never dropped)."""
        return self.total_records > self.max_records or self.total_bytes > self.max_bytes


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise SpoolError(f"unknown spool entry kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


def _chunks(values: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class Spool:
    """The agent's durable outbox (one SQLite file); safe to share between threads and processes.

    ``busy_timeout`` is how long a write waits for another process holding the spool's lock.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_records: int = DEFAULT_MAX_RECORDS,
        busy_timeout: float = 30.0,
    ) -> None:
        if max_bytes <= 0 or max_records <= 0:
            raise SpoolError(f"spool limits must be positive (max_bytes={max_bytes}, max_records={max_records})")
        self.path = path
        self.max_bytes = max_bytes
        self.max_records = max_records
        # The agent calls the spool from its event loop and from worker threads: one connection, one lock.
        self._lock = threading.Lock()
        try:
            paths.ensure_private_dir(path.parent)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(
                f"cannot open the spool {path}: {exc}; check that the state directory is writable and the disk "
                "is not full"
            ) from None
        # Switching a new file to WAL needs it to itself, and SQLite answers "locked" at once, without waiting,
        # while another connection (a diagnostics command, a second process starting) has it open: try again.
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self._prepare()
                break
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) and time.monotonic() < deadline:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    time.sleep(0.05)
                    continue
                self._db.close()
                if "locked" in str(exc):
                    raise SpoolError(
                        f"the spool {path} stayed locked by another process for {busy_timeout:g} s; check that "
                        "only one agent uses this state directory"
                    ) from None
                raise self._unreadable(exc) from None
            except sqlite3.DatabaseError as exc:
                self._db.close()
                raise self._unreadable(exc) from None
        # Log records may hold store details: owner only (chmod only sets read-only on Windows; harmless).
        with contextlib.suppress(OSError):
            path.chmod(0o600)

    def _prepare(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            # One transaction, so a second process opening a new spool waits instead of half-seeing it.
            self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")

    def _unreadable(self, exc: sqlite3.Error) -> SpoolError:
        return SpoolError(
            f"the spool {self.path} is unreadable ({exc}); stop the agent, move the file aside and start it "
            "again (reports still in it cannot be recovered automatically)"
        )

    # -- transactions -------------------------------------------------------------

    class _Tx:
        def __init__(self, spool: Spool) -> None:
            self.spool = spool

        def __enter__(self) -> sqlite3.Connection:
            self.spool._lock.acquire()
            try:
                self.spool._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.spool._lock.release()
                raise
            return self.spool._db

        def __exit__(self, exc_type: object, *rest: object) -> None:
            db = self.spool._db
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
            finally:
                self.spool._lock.release()

    def _write(self) -> Spool._Tx:
        return Spool._Tx(self)

    def _fail(self, action: str, exc: sqlite3.Error) -> SpoolError:
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            return SpoolError(
                f"could not {action}: the spool {self.path} stayed locked by another process; "
                "check that only one agent service uses this state directory"
            )
        return SpoolError(f"could not {action} in the spool {self.path}: {exc}; check free disk space")

    # -- writing ------------------------------------------------------------------

    def append(self, kind: str, payload: dict[str, Any], *, key: str | None = None) -> int:
        """Spool one report and return its id.

        ``key`` makes the append idempotent: a report with a key already waiting in the spool is not
        stored again, and the id of the waiting one is returned.
        """
        ids = self.append_many(kind, [payload], keys=[key])
        return ids[0]

    def append_many(
        self, kind: str, payloads: Sequence[dict[str, Any]], *, keys: Sequence[str | None] | None = None
    ) -> list[int]:
        """Spool many reports of one kind in one transaction (one fsync); return their ids in order."""
        checked = _check_kind(kind)
        if keys is not None and len(keys) != len(payloads):
            raise SpoolError(f"append_many got {len(payloads)} payloads but {len(keys)} keys")
        rows = [self._row(checked, p, keys[n] if keys is not None else None) for n, p in enumerate(payloads)]
        ids: list[int] = []
        try:
            with self._write() as db:
                for row in rows:
                    cursor = db.execute(
                        "INSERT INTO entries (kind, key, payload, size, created_at) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT DO NOTHING RETURNING id",
                        row,
                    )
                    found = cursor.fetchone()
                    if found is None:  # the same key is already waiting
                        found = db.execute(
                            "SELECT id FROM entries WHERE kind = ? AND key = ?", (kind, row[1])
                        ).fetchone()
                    ids.append(int(found[0]))
                self._trim(db)
        except sqlite3.Error as exc:
            raise self._fail(f"spool {len(rows)} {kind} record(s)", exc) from None
        return ids

    def _row(self, kind: Kind, payload: dict[str, Any], key: str | None) -> tuple[str, str | None, bytes, int, float]:
        try:
            data = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            where = f" (key {key!r})" if key is not None else ""
            raise SpoolError(f"a {kind} report{where} cannot be spooled: {exc}; payloads must be JSON data") from None
        return (kind, key, data, len(data), time.time())

    def _trim(self, db: sqlite3.Connection) -> None:
        """Drop the oldest logs, then progress reports, until the spool is within its bounds."""
        records, size = db.execute("SELECT coalesce(sum(records), 0), coalesce(sum(bytes), 0) FROM totals").fetchone()
        for kind in _DROP_ORDER:
            if records <= self.max_records and size <= self.max_bytes:
                return
            excess_records, excess_bytes = records - self.max_records, size - self.max_bytes
            count = freed = 0
            first_at = last_at = 0.0
            cutoff: int | None = None
            cursor = db.execute("SELECT id, size, created_at FROM entries WHERE kind = ? ORDER BY id", (kind,))
            for entry_id, entry_size, created_at in cursor:
                if count >= excess_records and freed >= excess_bytes:
                    break
                if cutoff is None:
                    first_at = created_at
                cutoff, last_at = entry_id, created_at
                count += 1
                freed += entry_size
            cursor.close()
            if cutoff is None:
                continue
            db.execute("DELETE FROM entries WHERE kind = ? AND id <= ?", (kind, cutoff))
            db.execute(
                "INSERT INTO drops (kind, count, bytes, first_at, last_at) VALUES (?, ?, ?, ?, ?)",
                (kind, count, freed, first_at, last_at),
            )
            records, size = records - count, size - freed

    # -- reading and confirming ---------------------------------------------------------

    def batch(self, kind: str | None = None, limit: int = 500) -> list[Entry]:
        """Up to ``limit`` waiting entries (of ``kind``, or of every kind when None), oldest first."""
        sql = "SELECT id, kind, key, payload, created_at FROM entries"
        args: tuple[Any, ...] = (limit,)
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (_check_kind(kind), limit)
        with self._lock:
            try:
                rows = self._db.execute(sql + " ORDER BY id LIMIT ?", args).fetchall()
            except sqlite3.Error as exc:
                raise self._fail("read", exc) from None
        return [Entry(int(i), k, key, orjson.loads(p), _ts(c)) for i, k, key, p, c in rows]

    def confirm(self, ids: Iterable[int]) -> int:
        """Delete the entries the hub has confirmed; return how many were deleted (unknown ids are ignored)."""
        wanted = sorted(set(ids))
        deleted = 0
        try:
            with self._write() as db:
                for chunk in _chunks(wanted):
                    sql = f"DELETE FROM entries WHERE id IN ({','.join('?' * len(chunk))})"  # noqa: S608
                    deleted += db.execute(sql, chunk).rowcount
        except sqlite3.Error as exc:
            raise self._fail(f"delete {len(wanted)} confirmed record(s)", exc) from None
        return deleted

    def dropped(self) -> list[Dropped]:
        """What was dropped for lack of room and not yet reported, one notice per kind."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, sum(count), sum(bytes), min(first_at), max(last_at), max(id) FROM drops "
                "GROUP BY kind ORDER BY kind"
            ).fetchall()
        return [Dropped(k, int(n), int(b), _ts(f), _ts(la), int(u)) for k, n, b, f, la, u in rows]

    def clear_dropped(self, notices: Iterable[Dropped]) -> None:
        """Forget drops once the hub has been told of them (later drops stay until reported too)."""
        try:
            with self._write() as db:
                for notice in notices:
                    db.execute("DELETE FROM drops WHERE kind = ? AND id <= ?", (notice.kind, notice.upto))
        except sqlite3.Error as exc:
            raise self._fail("clear drop notices", exc) from None

    def stats(self) -> SpoolStats:
        """Records and bytes waiting per kind, the bounds, and drops not yet reported."""
        with self._lock:
            totals = self._db.execute("SELECT kind, records, bytes FROM totals").fetchall()
            drops = self._db.execute("SELECT kind, sum(count) FROM drops GROUP BY kind").fetchall()
        return SpoolStats(
            records={k: int(r) for k, r, _ in totals if r},
            bytes={k: int(b) for k, r, b in totals if r},
            max_records=self.max_records,
            max_bytes=self.max_bytes,
            dropped={k: int(n) for k, n in drops},
        )

    # -- lifetime -----------------------------------------------------------------

    def close(self) -> None:
        """Close the spool (what was appended is already on disk)."""
        with self._lock:
            # Keeps the -wal file from growing across restarts; harmless if another process holds it.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
