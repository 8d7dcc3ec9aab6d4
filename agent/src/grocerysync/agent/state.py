"""The delta store: one SQLite file per job holding a content hash for every item the destination has.

A run reads the stored hashes a batch at a time (``WHERE key IN (...)``), so memory stays flat however
large the catalogue. What the run learns is staged in temporary tables (``seen``, ``pending``,
``removed``) and merged into the store in one transaction only after the destination's ``commit()``
succeeded; a failed run discards them, so everything it did not finish is simply sent again next time.

The whole run holds the store's write lock, which keeps two runs of one job from interleaving.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from grocerysync.core.errors import GrocerySyncError

#: SQLite limits the number of ``?`` in one statement; stay well under every build's limit.
_CHUNK = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    hash BLOB NOT NULL,  -- FILTERED + hash when present = 0
    -- 1: the destination has this item; 0: known but filtered out (so an unchanged one is skipped cheaply)
    present INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
"""

_RUN_TABLES = """
CREATE TEMP TABLE seen (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, ref TEXT NOT NULL,
                        kept INTEGER NOT NULL DEFAULT 1) WITHOUT ROWID;
CREATE TEMP TABLE pending (key TEXT PRIMARY KEY, hash BLOB NOT NULL, present INTEGER NOT NULL) WITHOUT ROWID;
CREATE TEMP TABLE removed (key TEXT PRIMARY KEY) WITHOUT ROWID;
"""

_REMOVALS = (
    "FROM items i WHERE i.present = 1 AND NOT EXISTS (SELECT 1 FROM temp.seen s WHERE s.key = i.key AND s.kept = 1)"
)


#: Stored in front of the hash of an item known to be filtered out, so that one comparison of the stored
#: hash tells "unchanged and online" from "unchanged and filtered out".
FILTERED = b"\x00"


class StateError(GrocerySyncError):
    """The delta store cannot be opened or updated."""


def _chunks(keys: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield keys[start : start + _CHUNK]


def _in_list(n: int) -> str:
    return ",".join("?" * n)


class StateStore:
    """One job's delta store for the length of one run.

    ``read_only`` (dry runs) opens the store without writing to it; when it does not exist yet an empty
    private database stands in for it.
    """

    def __init__(self, path: Path, *, read_only: bool = False, job_name: str = "") -> None:
        self.path = path
        self.read_only = read_only
        self._job = job_name or path.parent.name
        try:
            self._db = self._connect()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StateError(
                    f"another export of job {self._job!r} is running (its delta store {path} is locked); "
                    "wait for it to finish and try again"
                ) from None
            raise StateError(
                f"cannot open the delta store {path} for job {self._job!r}: {exc}; check that the state "
                "directory is writable and the disk is not full"
            ) from None
        except sqlite3.Error as exc:
            raise StateError(
                f"cannot open the delta store {path} for job {self._job!r}: {exc}; check that the state "
                "directory is writable and the disk is not full"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        if self.read_only and self.path.exists():
            db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=5)
        elif self.read_only:
            db = sqlite3.connect("", isolation_level=None)  # "" is a private temporary database
        else:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=2)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL is durable across application crashes; losing the last commit to a power cut
            # only means those items are sent again, which destinations handle (writes are upserts).
            db.execute("PRAGMA synchronous=NORMAL")
        # KiB, for the store and for the run's temporary tables: memory stays flat whatever the catalogue
        # size (lookups go a batch at a time by primary key, so a small cache costs little speed).
        db.execute("PRAGMA cache_size=-1024")
        db.execute("PRAGMA temp_store=FILE")
        db.execute("PRAGMA temp.cache_size=-1024")
        if not self.read_only or not self.path.exists():
            db.executescript(_SCHEMA)
        # executescript commits any open transaction, so the run tables come before BEGIN.
        db.executescript(_RUN_TABLES)
        if not self.read_only:
            db.execute("BEGIN IMMEDIATE")
        else:
            db.execute("BEGIN")  # one consistent snapshot for the whole dry run
        return db

    # -- metadata ----------------------------------------------------------------

    def get_meta(self, name: str) -> str | None:
        """A stored setting (``fingerprint``, ``cursor``), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0]) if row[0] is not None else None

    def count_known(self) -> int:
        """How many items the destination has, as far as the store knows."""
        return int(self._db.execute("SELECT count(*) FROM items WHERE present = 1").fetchone()[0])

    # -- per batch -----------------------------------------------------------------

    def lookup(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Stored hashes for those of ``keys`` the store knows (built by the cursor, no Python loop)."""
        found: dict[str, bytes] = {}
        for chunk in _chunks(keys):
            sql = f"SELECT key, hash FROM items WHERE key IN ({_in_list(len(chunk))})"  # noqa: S608
            found.update(self._db.execute(sql, chunk))
        return found

    def mark_seen(self, rows: Sequence[tuple[str, int, str]]) -> dict[str, str]:
        """Record ``(key, seq, ref)`` as read in this run; return ``{key: earlier ref}`` for keys read before.

        The common case (no duplicates) costs one ``executemany``: only when fewer rows went in than were
        given is the table asked which keys were already there.
        """
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO temp.seen (key, seq, ref) VALUES (?, ?, ?)", rows)
        if self._db.total_changes - before == len(rows):
            return {}
        seq_of = {key: seq for key, seq, _ in rows}
        earlier: dict[str, str] = {}
        keys = list(seq_of)
        for chunk in _chunks(keys):
            sql = f"SELECT key, seq, ref FROM temp.seen WHERE key IN ({_in_list(len(chunk))})"  # noqa: S608
            for key, seq, ref in self._db.execute(sql, chunk):
                if seq != seq_of[key]:
                    earlier[key] = ref
        return earlier

    def mark_dropped(self, keys: Sequence[str]) -> None:
        """Items filtered out this run: the destination should no longer have them."""
        self._db.executemany("UPDATE temp.seen SET kept = 0 WHERE key = ?", [(k,) for k in keys])

    def stage(self, rows: Sequence[tuple[str, bytes, int]]) -> None:
        """Stage ``(key, hash, present)`` rows, merged into the store by :meth:`commit_run`."""
        self._db.executemany("INSERT OR REPLACE INTO temp.pending (key, hash, present) VALUES (?, ?, ?)", rows)

    # -- removals ------------------------------------------------------------------

    def count_removals(self) -> int:
        """Items the destination has that this run did not see (or now filters out)."""
        return int(self._db.execute(f"SELECT count(*) {_REMOVALS}").fetchone()[0])

    def iter_removals(self, batch_size: int) -> Iterator[list[str]]:
        """The keys to remove, a batch at a time."""
        cursor = self._db.execute(f"SELECT i.key {_REMOVALS} ORDER BY i.key")
        while rows := cursor.fetchmany(batch_size):
            yield [row[0] for row in rows]

    def stage_removed(self, keys: Sequence[str]) -> None:
        """Keys the destination deleted in this run."""
        self._db.executemany("INSERT OR IGNORE INTO temp.removed (key) VALUES (?)", [(k,) for k in keys])

    # -- end of run ----------------------------------------------------------------

    def commit_run(self, *, fingerprint: str, cursor: str | None, refresh: bool) -> None:
        """Merge what this run staged into the store, after the destination committed.

        ``refresh`` (a full run, or a changed fingerprint) first invalidates every stored hash, so items
        the destination did not accept in this run are sent again next time rather than trusted.
        """
        if self.read_only:
            raise StateError("a dry run does not update the delta store")
        db = self._db
        try:
            if refresh:
                db.execute("UPDATE items SET hash = x''")
            db.execute("DELETE FROM items WHERE key IN (SELECT key FROM temp.removed)")
            # A filtered item the destination still has (its removal was refused or failed) keeps its
            # row, so it is considered again next run.
            db.execute(
                "INSERT OR REPLACE INTO items (key, hash, present) SELECT p.key, p.hash, p.present "
                "FROM temp.pending p WHERE p.present = 1 OR NOT EXISTS "
                "(SELECT 1 FROM items i WHERE i.key = p.key AND i.present = 1)"
            )
            meta: list[tuple[str, Any]] = [("fingerprint", fingerprint), ("cursor", cursor)]
            db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", meta)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StateError(
                f"the destination accepted the run but the delta store {self.path} could not be updated: {exc}; "
                "the next run sends these items again (check free disk space)"
            ) from None

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        """Discard anything not committed and close the store."""
        try:
            self._rollback()
        finally:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
