"""The local spool: nothing lost across restarts, idempotent keys, exact confirmation, bounded by dropping logs."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from grocerysync.agent.spool import Spool, SpoolError


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "spool.sqlite"


def test_a_restart_loses_nothing(path: Path) -> None:
    spool = Spool(path)
    result_id = spool.append("result", {"run": "r1", "status": "succeeded"}, key="r1:final")
    spool.append_many("log", [{"run": "r1", "msg": f"line {n}"} for n in range(100)])
    spool.append("progress", {"run": "r1", "read": 40}, key="r1:progress:1")
    spool.close()

    with Spool(path) as reopened:
        entries = reopened.batch(limit=1000)
        assert [e.kind for e in entries] == ["result"] + ["log"] * 100 + ["progress"]
        assert entries[0].id == result_id
        assert entries[0].payload == {"run": "r1", "status": "succeeded"}
        assert entries[0].key == "r1:final"
        assert [e.payload["msg"] for e in entries[1:101]] == [f"line {n}" for n in range(100)]
        assert entries[0].created_at <= entries[-1].created_at


def test_confirm_deletes_exactly_the_confirmed_entries(path: Path) -> None:
    with Spool(path) as spool:
        ids = spool.append_many("log", [{"n": n} for n in range(10)])
        assert spool.confirm([ids[1], ids[3], ids[3], 999_999]) == 2
        assert [e.payload["n"] for e in spool.batch("log", 100)] == [0, 2, 4, 5, 6, 7, 8, 9]
        # Ids are never reused: a late confirmation of deleted ids cannot delete newer entries.
        new = spool.append("log", {"n": 10})
        assert new not in ids
        assert spool.confirm(ids[:2]) == 1
        assert [e.payload["n"] for e in spool.batch("log", 100)] == [2, 4, 5, 6, 7, 8, 9, 10]


def test_batches_are_oldest_first_per_kind_and_limited(path: Path) -> None:
    with Spool(path) as spool:
        spool.append("result", {"n": 0})
        spool.append_many("log", [{"n": n} for n in range(1, 6)])
        spool.append("result", {"n": 6})
        assert [e.payload["n"] for e in spool.batch("log", 3)] == [1, 2, 3]
        assert [e.payload["n"] for e in spool.batch("result", 10)] == [0, 6]
        assert [e.payload["n"] for e in spool.batch(None, 2)] == [0, 1]


def test_a_report_spooled_twice_is_stored_once(path: Path) -> None:
    with Spool(path) as spool:
        first = spool.append("result", {"run": "r1", "status": "failed"}, key="r1")
        again = spool.append("result", {"run": "r1", "status": "failed"}, key="r1")
        assert first == again
        # Keys are per kind, and reports without a key are never merged.
        spool.append("progress", {"run": "r1"}, key="r1")
        spool.append_many("log", [{"m": "x"}, {"m": "x"}])
        assert spool.stats().records == {"result": 1, "progress": 1, "log": 2}
    with Spool(path) as spool:  # also after a restart
        assert spool.append("result", {"run": "r1", "status": "failed"}, key="r1") == first
        assert spool.stats().records["result"] == 1


def test_when_full_the_oldest_logs_go_and_results_stay(path: Path) -> None:
    with Spool(path, max_records=10) as spool:
        results = [spool.append("result", {"run": f"r{n}"}, key=f"r{n}") for n in range(4)]
        spool.append_many("log", [{"n": n} for n in range(20)])
        stats = spool.stats()
        assert stats.records == {"result": 4, "log": 6}
        assert stats.dropped == {"log": 14}
        assert [e.id for e in spool.batch("result", 100)] == results
        assert [e.payload["n"] for e in spool.batch("log", 100)] == list(range(14, 20))

        # Results are never dropped, even past the bound; the spool says it is over.
        for n in range(4, 15):
            spool.append("result", {"run": f"r{n}"}, key=f"r{n}")
        stats = spool.stats()
        assert stats.records == {"result": 15}
        assert stats.dropped == {"log": 20}
        assert stats.over_bound


def test_progress_reports_go_after_logs_when_logs_are_not_enough(path: Path) -> None:
    with Spool(path, max_records=3) as spool:
        spool.append("progress", {"read": 1})
        spool.append("log", {"m": "a"})
        spool.append("progress", {"read": 2})
        spool.append("result", {"ok": True})
        spool.append("result", {"ok": True})
        assert spool.stats().records == {"progress": 1, "result": 2}
        assert [e.payload for e in spool.batch("progress")] == [{"read": 2}]
        assert spool.stats().dropped == {"log": 1, "progress": 1}


def test_the_byte_bound_drops_by_payload_size(path: Path) -> None:
    with Spool(path, max_bytes=1000) as spool:
        spool.append_many("log", [{"m": "x" * 90} for _ in range(30)])
        stats = spool.stats()
        assert stats.total_bytes <= 1000
        assert stats.records["log"] + stats.dropped["log"] == 30
        assert stats.records["log"] >= 9  # ~100 bytes each: only what had to go went


def test_drops_are_reported_until_the_hub_has_been_told(path: Path) -> None:
    with Spool(path, max_records=2) as spool:
        spool.append_many("log", [{"n": n} for n in range(5)])
        [notice] = spool.dropped()
        assert (notice.kind, notice.count) == ("log", 3)
        assert notice.first_at <= notice.last_at
        assert notice.message().startswith("spool full: dropped 3 log records")
        spool.append_many("log", [{"n": n} for n in range(5, 7)])  # two more dropped after the notice was read
        spool.clear_dropped([notice])
        [later] = spool.dropped()
        assert later.count == 2
    with Spool(path, max_records=2) as spool:  # notices survive a restart
        assert [d.count for d in spool.dropped()] == [2]
        spool.clear_dropped(spool.dropped())
        assert spool.dropped() == []


def test_bad_input_is_refused_with_a_clear_error(path: Path) -> None:
    with Spool(path) as spool:
        with pytest.raises(SpoolError, match="unknown spool entry kind 'metrics'"):
            spool.append("metrics", {})
        with pytest.raises(SpoolError, match="a result report \\(key 'r1'\\) cannot be spooled"):
            spool.append("result", {"when": object()}, key="r1")
        assert spool.stats().total_records == 0
    with pytest.raises(SpoolError, match="limits must be positive"):
        Spool(path, max_records=0)


def test_an_unreadable_spool_file_is_reported_not_a_traceback(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError, match=r"is unreadable .*move the file aside"):
        Spool(path)


def test_durability_settings(path: Path) -> None:
    Spool(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    spool = Spool(path)
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    spool.close()


def _writer(path: str, worker: int, rounds: int) -> None:
    with Spool(Path(path), busy_timeout=60) as spool:
        for n in range(rounds):
            spool.append("result", {"worker": worker, "n": n}, key=f"{worker}:{n}")
            spool.append_many("log", [{"worker": worker, "n": n, "line": i} for i in range(5)])
            # Every worker reports the same shared result: the spool must keep exactly one per key.
            spool.append("result", {"shared": n}, key=f"shared:{n}")


def test_concurrent_writer_processes_neither_corrupt_nor_lose(path: Path) -> None:
    Spool(path).close()
    ctx = multiprocessing.get_context("spawn")
    workers, rounds = 3, 30
    procs = [ctx.Process(target=_writer, args=(str(path), w, rounds)) for w in range(workers)]
    for p in procs:
        p.start()
    # Meanwhile this process ships and confirms log records, as the agent's shipper would.
    shipped: list[tuple[int, int, int]] = []
    with Spool(path, busy_timeout=60) as spool:
        while True:
            running = any(p.is_alive() for p in procs)
            entries = spool.batch("log", 50)
            shipped += [(e.payload["worker"], e.payload["n"], e.payload["line"]) for e in entries]
            spool.confirm(e.id for e in entries)
            if not running and not entries:
                break
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        results = [e.payload for e in spool.batch("result", 10_000)]
        assert spool._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert spool.stats().records == {"result": len(results)}
    own = sorted((r["worker"], r["n"]) for r in results if "worker" in r)
    assert own == [(w, n) for w in range(workers) for n in range(rounds)]
    assert sorted(r["shared"] for r in results if "shared" in r) == list(range(rounds))
    assert sorted(shipped) == [(w, n, i) for w in range(workers) for n in range(rounds) for i in range(5)]
    for w in range(workers):  # each writer's records arrive in the order it wrote them
        mine = [(n, i) for ww, n, i in shipped if ww == w]
        assert mine == sorted(mine)


def _held(path: Path) -> sqlite3.Connection:
    # Another connection in the middle of writing the file in rollback-journal mode: switching to WAL is
    # refused at once ("database is locked"), whatever the busy timeout.
    path.parent.mkdir(parents=True, exist_ok=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE IF NOT EXISTS other_work (x)")
    return other


def test_a_spool_another_connection_holds_is_waited_for(path: Path) -> None:
    other = _held(path)
    release = threading.Timer(0.3, lambda: (other.execute("COMMIT"), other.close()))
    release.start()
    try:
        with Spool(path, busy_timeout=10) as spool:
            spool.append("log", {"uid": "a", "message": "x"})
            assert spool.stats().total_records == 1
    finally:
        release.join()


def test_a_spool_that_stays_locked_says_so(path: Path) -> None:
    other = _held(path)
    try:
        with pytest.raises(SpoolError, match=r"stayed locked by another process for 0\.5 s"):
            Spool(path, busy_timeout=0.5)
    finally:
        other.execute("ROLLBACK")
        other.close()
