"""The delta store on its own: locking, dry-run isolation, incremental cursors, hashing."""

from __future__ import annotations

import functools
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import ListSource, RecordingDestination, make_job

from grocerysync.agent.fingerprint import job_fingerprint, record_hashes
from grocerysync.agent.paths import job_slug
from grocerysync.agent.state import ROWS_PER_STATEMENT, StateError, StateStore
from grocerysync.core.results import RawRecord


def test_a_second_run_of_the_same_job_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with (
        StateStore(path, job_name="nightly"),
        pytest.raises(StateError, match="another export of job 'nightly' is running"),
    ):
        StateStore(path, job_name="nightly")
    # Released when the first run ends.
    StateStore(path, job_name="nightly").close()


def test_uncommitted_runs_leave_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore(path) as store:
        store.stage([("a", "1" * 16)], present=True)
    with StateStore(path) as store:
        assert store.lookup(["a"]) == {}
        store.stage([("a", "1" * 16)], present=True)
        store.commit_run(fingerprint="f", cursor=None, refresh=False)
    with StateStore(path, read_only=True) as store:
        assert store.lookup(["a", "b"]) == {"a": "1" * 16}
        assert store.get_meta("fingerprint") == "f"
        with pytest.raises(StateError):
            store.commit_run(fingerprint="g", cursor=None, refresh=False)


@pytest.mark.parametrize("refresh", [False, True])
def test_a_first_run_stores_what_a_later_run_would(tmp_path: Path, refresh: bool) -> None:
    # A store with no item takes the run's rows directly; one that holds an item stages and merges them.
    # Either way the same rows come out, and only once committed.
    def run(store: StateStore) -> None:
        assert store.mark_seen(1, ["a", "b", "c"], ["row 2", "row 3", "row 4"]) == {}
        store.stage([("a", "1" * 16), ("b", "2" * 16)], present=True)
        store.stage([("c", "~" + "3" * 16)], present=False)  # filtered out
        store.stage([("a", "4" * 16)], present=True)  # a later write of one key wins

    first, later = tmp_path / "first.sqlite", tmp_path / "later.sqlite"
    with StateStore(later) as store:
        store.stage([("z", "9" * 16)], present=True)
        store.commit_run(fingerprint="f", cursor=None, refresh=False)
    for path in (first, later):
        with StateStore(path) as store:
            run(store)  # and not committed
        with StateStore(path) as store:
            assert store.lookup(["a", "b", "c"]) == {}
            run(store)
            # What the destination had before the run and this run did not see: nothing, or item z.
            assert store.count_removals() == (0 if path == first else 1)
            store.commit_run(fingerprint="g", cursor="42", refresh=refresh)
    with StateStore(first) as a, StateStore(later) as b:
        expected = {"a": "4" * 16, "b": "2" * 16, "c": "~" + "3" * 16}
        assert a.lookup(["a", "b", "c"]) == expected == b.lookup(["a", "b", "c"])
        assert (a.count_known(), b.count_known()) == (2, 3)
        assert a.get_meta("cursor") == "42" == b.get_meta("cursor")
        # A refresh invalidates what the store held before the run, not what the run wrote.
        assert b.lookup(["z"]) == {"z": "" if refresh else "9" * 16}


def test_dry_run_without_a_store_creates_none(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore(path, read_only=True) as store:
        assert store.count_known() == 0
    assert not path.exists()


def record_hash(data: dict[str, object]) -> str:
    return record_hashes({"key": RawRecord("row 2", data)})["key"]


def test_record_hash_ignores_key_order_but_not_values() -> None:
    assert record_hash({"a": "1", "b": 2}) == record_hash({"b": 2, "a": "1"})
    assert record_hash({"a": "1"}) != record_hash({"a": 1})
    assert len(record_hash({"price": __import__("decimal").Decimal("1.50")})) == 16


def test_a_records_hash_does_not_depend_on_its_batch() -> None:
    records = {
        "k1": RawRecord("row 2", {"item_id": "k1", "price": Decimal("1.50"), "size": {"value": "12", "unit": "oz"}}),
        "k2": RawRecord("row 3", {"name": "Lait entier \u00e9cr\u00e9m\u00e9", "item_id": "k2"}),
    }
    assert record_hashes(records) == {key: record_hash(r.data) for key, r in records.items()}


def test_a_connectors_digest_stands_in_for_the_hash_of_the_data() -> None:
    data = {"item_id": "k1", "price": "1.50"}
    records = {"k1": RawRecord("row 2", data, "c0ffee"), "k2": RawRecord("row 3", data)}
    assert record_hashes(records) == {"k1": "c0ffee", "k2": record_hash(data)}


def test_batches_larger_than_one_statement_are_written_whole(tmp_path: Path) -> None:
    count = 2 * ROWS_PER_STATEMENT + 3
    keys = [f"k{n}" for n in range(count)]
    with StateStore(tmp_path / "state.sqlite") as store:
        assert store.mark_seen(1, keys, [f"row {n}" for n, _ in enumerate(keys, 2)]) == {}
        # A key of the first statement's rows, seen again among the last statement's rows.
        again = [f"new{n}" for n in range(ROWS_PER_STATEMENT + 1)] + ["k3"]
        refs = ["x"] * (ROWS_PER_STATEMENT + 1) + [f"row {count + 9}"]
        assert store.mark_seen(count + 1, again, refs) == {"k3": "row 5"}
        store.stage([(k, f"h{k}") for k in keys], True)
        store.stage([], True)  # a batch the destination refused whole
        assert store.mark_seen(count + 3 + ROWS_PER_STATEMENT, [], []) == {}
        store.commit_run(fingerprint="f", cursor=None, refresh=False)
    with StateStore(tmp_path / "state.sqlite") as store:
        assert store.count_known() == count
        assert store.lookup([keys[0], keys[-1], "nope"]) == {keys[0]: f"h{keys[0]}", keys[-1]: f"h{keys[-1]}"}


def test_keys_and_refs_of_any_text_survive_the_store(tmp_path: Path) -> None:
    # Rows go to SQLite as JSON: quotes, backslashes, non-ASCII and digit-only keys must come back as they went.
    keys = ["0042", 'a"b', "back\\slash", "\u00e9t\u00e9 \U0001f34e", "1e3", " spaced "]
    with StateStore(tmp_path / "state.sqlite") as store:
        assert store.mark_seen(1, keys, [f"row {n}" for n, _ in enumerate(keys, 2)]) == {}
        assert store.mark_seen(7, ["new", 'a"b'], ["row 8", "row 9"]) == {'a"b': "row 3"}
        store.stage([(k, f"{n:016x}") for n, k in enumerate(keys)], present=True)
        store.commit_run(fingerprint="f", cursor=None, refresh=False)
    with StateStore(tmp_path / "state.sqlite") as store:
        assert store.lookup([*keys, "missing"]) == {k: f"{n:016x}" for n, k in enumerate(keys)}


def test_fingerprint_covers_what_shapes_output_and_not_secrets() -> None:
    base = job_fingerprint(make_job())
    assert base == job_fingerprint(make_job())
    other_secret = make_job(destination={"plugin": "recorder", "config": {"shop": "demo"}, "secrets": {"token": "x"}})
    assert job_fingerprint(other_secret) == base
    assert job_fingerprint(make_job(source={"plugin": "list", "config": {"path": "other.csv"}})) == base
    assert job_fingerprint(make_job(destination={"plugin": "recorder", "config": {"shop": "other"}})) != base
    assert job_fingerprint(make_job(filters=[{"field": "active", "op": "eq", "value": True}])) != base


def test_job_slugs_are_safe_and_distinct() -> None:
    assert job_slug("store 1 -> web").startswith("store_1_-_web-")
    assert job_slug("a/b") != job_slug("a:b")
    assert "/" not in job_slug("../../etc")


async def test_incremental_reads_resume_from_the_cursor_and_skip_removals(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    source.incremental = True
    await export()
    assert source.requests[-1].cursor is None
    source.rows = source.rows[:5]  # an incremental read returns only what changed
    summary = await export()
    assert source.requests[-1].cursor == "50"
    assert (summary.removed, summary.removals_skipped) == (0, None)
    assert len(dest.items) == 50
    await export(full=True)
    assert source.requests[-1].cursor is None


async def test_a_store_failing_mid_run_fails_the_run_with_a_reason(export, monkeypatch: pytest.MonkeyPatch) -> None:
    # Store writes run on a thread of their own: a failure there still ends the run, cleanly and explained.
    await export()
    real = sqlite3.Connection.execute

    def full_disk(self: sqlite3.Connection, sql: str, *args: object) -> sqlite3.Cursor:
        if "temp.pending" in sql:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, sql, *args)

    class Connection(sqlite3.Connection):
        execute = full_disk  # type: ignore[assignment]

    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=Connection))
    summary = await export(full=True)
    assert summary.status == "failed"
    assert summary.error is not None
    assert "delta store" in summary.error
    assert "database or disk is full" in summary.error
    assert "next run sends these items again" in summary.error


async def test_a_store_failing_on_both_batch_calls_fails_the_run_with_its_message(
    export, monkeypatch: pytest.MonkeyPatch
) -> None:
    await export()  # a delta run then asks the store twice per batch: which keys were seen, what they held

    def broken(self: StateStore, *args: object) -> None:
        raise StateError("the delta store is broken")

    monkeypatch.setattr(StateStore, "mark_seen", broken)
    monkeypatch.setattr(StateStore, "lookup", broken)
    summary = await export()
    assert (summary.status, summary.error) == ("failed", "the delta store is broken")
