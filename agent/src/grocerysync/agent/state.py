"""The delta store: one SQLite file per job holding a content hash for every item the destination has.

A run reads the stored hashes a batch at a time, so memory stays flat however large the catalogue. What the
run learns is staged in temporary tables (``seen``, ``pending``, ``removed``) and merged into the store in one
transaction only after the destination's ``commit()`` succeeded; a failed run discards them, so everything it
did not finish is simply sent again next time.

Each batch is written with one statement of many rows (``VALUES (?, ?, ?), (?, ?, ?), ...``, up to
:data:`ROWS_PER_STATEMENT` rows), its values bound by the sqlite3 module in C: half the cost of handing SQLite
one JSON array to take apart. Lookups go by one JSON array (``json_each``).

A store that holds no item yet (a job's first run, the one that reads the whole catalogue) skips the
staging: there is nothing to merge with, so the rows go straight into ``items``, still uncommitted until the
destination has committed; a failed first run leaves the store as empty as it found it.

The whole run holds the store's write lock, which keeps two runs of one job from interleaving.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from grocerysync.core.errors import GrocerySyncError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    hash TEXT NOT NULL,  -- FILTERED + hash when present = 0; '' when stale (see commit_run)
    -- 1: the destination has this item; 0: known but filtered out (so an unchanged one is skipped cheaply)
    present INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
"""

_RUN_TABLES = """
CREATE TEMP TABLE seen (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, ref TEXT NOT NULL,
                        kept INTEGER NOT NULL DEFAULT 1) WITHOUT ROWID;
CREATE TEMP TABLE pending (key TEXT PRIMARY KEY, hash TEXT NOT NULL, present INTEGER NOT NULL) WITHOUT ROWID;
CREATE TEMP TABLE removed (key TEXT PRIMARY KEY) WITHOUT ROWID;
"""

_REMOVALS = (
    "FROM items i WHERE i.present = 1 AND NOT EXISTS (SELECT 1 FROM temp.seen s WHERE s.key = i.key AND s.kept = 1)"
)


#: Rows written by one statement at most: each takes two or three bound values, well under the 32,766 that
#: SQLite allows a statement (its default limit since 3.32, and the one Python's own builds use).
ROWS_PER_STATEMENT = 500

#: Stored in front of the hash of an item known to be filtered out, so that one comparison of the stored
#: hash tells "unchanged and online" from "unchanged and filtered out".
FILTERED = "~"


class StateError(GrocerySyncError):
    """The delta store cannot be opened or updated."""


def _json(values: Sequence[Any]) -> str:
    # Text, not bytes: SQLite reads a BLOB argument as its binary JSON format.
    return orjson.dumps(values).decode()


@functools.lru_cache(maxsize=64)
def _insert(head: str, row: str, count: int) -> str:
    """``head`` followed by ``VALUES row, row, ...`` for ``count`` rows; cached, as the sqlite3 module caches
    the statement compiled from each text."""
    return f"{head} VALUES {', '.join([row] * count)}"


def _chunks(values: list[Any], width: int) -> Iterator[tuple[int, list[Any]]]:
    """``values`` (``width`` per row) in pieces of at most :data:`ROWS_PER_STATEMENT` rows: (rows, values)."""
    step = ROWS_PER_STATEMENT * width
    if len(values) <= step:
        if values:
            yield len(values) // width, values
        return
    for start in range(0, len(values), step):
        piece = values[start : start + step]
        yield len(piece) // width, piece


def _flat(rows: Iterable[Iterable[Any]]) -> list[Any]:
    return list(itertools.chain.from_iterable(rows))


class StateStore:
    """One job's delta store for the length of one run.

    It may be used from any thread, one call at a time.

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
        # A store that holds no item yet (a job's first run) has nothing to merge with: the run writes its rows
        # straight into it, in the run's one transaction, which a failed run rolls back all the same.
        self._direct = not read_only and self._db.execute("SELECT 1 FROM items LIMIT 1").fetchone() is None

    def _connect(self) -> sqlite3.Connection:
        if self.read_only and self.path.exists():
            db = sqlite3.connect(
                f"{self.path.as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=5, check_same_thread=False
            )
        elif self.read_only:
            # "" is a private temporary database.
            db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        else:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=2, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL is durable across application crashes; losing the last commit to a power cut
            # only means those items are sent again, which destinations handle (writes are upserts).
            db.execute("PRAGMA synchronous=NORMAL")
        # KiB, for the store and for the run's temporary tables: memory stays flat whatever the catalogue
        # size. Lookups and inserts go a batch at a time by primary key, mostly in key order, so 256 KiB is as
        # fast as 1 MiB on a 200,000-item catalogue and keeps 1.5 MB off the agent's peak.
        db.execute("PRAGMA cache_size=-256")
        db.execute("PRAGMA temp_store=FILE")
        db.execute("PRAGMA temp.cache_size=-256")
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

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StateError(
                f"the delta store {self.path} of job {self._job!r} failed during the run: {exc}; nothing was "
                "committed, so the next run sends these items again (check free disk space and that the state "
                "directory is writable)"
            ) from None

    def lookup(self, keys: Sequence[str]) -> dict[str, str]:
        """Stored hashes for those of ``keys`` the store knows (built by the cursor, no Python loop)."""
        sql = "SELECT key, hash FROM items WHERE key IN (SELECT value FROM json_each(?))"
        with self._working():
            return dict(self._db.execute(sql, (_json(keys),)))

    def mark_seen(self, first_seq: int, keys: Sequence[str], refs: Sequence[str]) -> dict[str, str]:
        """Record ``keys`` (each with the ref of its record) as read in this run, numbered from ``first_seq``;
        return ``{key: earlier ref}`` for keys read before.

        The common case (no duplicates) costs one statement: only when fewer rows went in than were
        given is the table asked which keys were already there.
        """
        if not keys:
            return {}
        values = _flat(zip(keys, itertools.count(first_seq), refs, strict=False))
        with self._working():
            before = self._db.total_changes
            for count, piece in _chunks(values, 3):
                self._db.execute(_insert("INSERT OR IGNORE INTO temp.seen (key, seq, ref)", "(?, ?, ?)", count), piece)
            if self._db.total_changes - before == len(keys):
                return {}
            seq_of = {key: seq for seq, key in enumerate(keys, first_seq)}
            sql = "SELECT key, seq, ref FROM temp.seen WHERE key IN (SELECT value FROM json_each(?))"
            rows_now = self._db.execute(sql, (_json(list(seq_of)),))
            return {key: ref for key, seq, ref in rows_now if seq != seq_of[key]}

    def mark_dropped(self, keys: Sequence[str]) -> None:
        """Items filtered out this run: the destination should no longer have them."""
        with self._working():
            self._db.execute(
                "UPDATE temp.seen SET kept = 0 WHERE key IN (SELECT value FROM json_each(?))", (_json(keys),)
            )

    def stage(self, rows: Iterable[tuple[str, str]], present: bool) -> None:
        """Stage ``(key, hash)`` rows of items the destination now has (``present``) or that are filtered
        out; :meth:`commit_run` merges them into the store (a store that held no item takes them at once,
        uncommitted until then)."""
        head = f"INSERT OR REPLACE INTO {'items' if self._direct else 'temp.pending'} (key, hash, present)"
        row = "(?, ?, 1)" if present else "(?, ?, 0)"
        with self._working():
            for count, piece in _chunks(_flat(rows), 2):
                self._db.execute(_insert(head, row, count), piece)

    # -- removals ------------------------------------------------------------------

    def count_removals(self) -> int:
        """Items the destination has that this run did not see (or now filters out)."""
        if self._direct:
            return 0  # the store held no item before this run: the destination has only what it was sent now
        return int(self._db.execute(f"SELECT count(*) {_REMOVALS}").fetchone()[0])

    def iter_removals(self, batch_size: int) -> Iterator[list[str]]:
        """The keys to remove, a batch at a time."""
        cursor = self._db.execute(f"SELECT i.key {_REMOVALS} ORDER BY i.key")
        while rows := cursor.fetchmany(batch_size):
            yield [row[0] for row in rows]

    def stage_removed(self, keys: Sequence[str]) -> None:
        """Keys the destination deleted in this run."""
        with self._working():
            self._db.execute("INSERT OR IGNORE INTO temp.removed (key) SELECT value FROM json_each(?)", (_json(keys),))

    # -- end of run ----------------------------------------------------------------

    def commit_run(self, *, fingerprint: str, cursor: str | None, refresh: bool) -> None:
        """Merge what this run staged into the store and commit, after the destination committed.

        ``refresh`` (a full run, or a changed fingerprint) first invalidates every stored hash, so items
        the destination did not accept in this run are sent again next time rather than trusted.
        """
        self.merge_run(fingerprint=fingerprint, cursor=cursor, refresh=refresh)
        self.finish_run()

    def merge_run(self, *, fingerprint: str, cursor: str | None, refresh: bool) -> None:
        """The work of :meth:`commit_run` without its final commit, so that it can be done before the
        destination commits: nothing is stored unless :meth:`finish_run` follows (closing rolls back)."""
        if self.read_only:
            raise StateError("a dry run does not update the delta store")
        db = self._db
        try:
            if not self._direct:  # else the store was empty: its rows are this run's, nothing to invalidate or remove
                if refresh:
                    db.execute("UPDATE items SET hash = ''")
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
        except sqlite3.Error as exc:
            self._rollback()
            raise self._not_updated(exc) from None

    def finish_run(self) -> None:
        """Commit what :meth:`merge_run` merged."""
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._not_updated(exc) from None

    def _not_updated(self, exc: sqlite3.Error) -> StateError:
        return StateError(
            f"the destination accepted the run but the delta store {self.path} could not be updated: {exc}; "
            "the next run sends these items again (check free disk space)"
        )

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
