"""The demo behind ``nox -s demo``, run as a technician would (``--once``: it stops after the hub's first run).

It starts its own hub and agent processes and waits for the job's first scheduled run, so this test waits for
the next minute to begin: up to a minute and a half in all.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from grocerysync.core.samples import catalogue_rows

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "contrib" / "demo" / "demo.py"
ITEMS = 300
#: What the demo does to the POS export before the hub's run: two items dropped, three broken rows added.
DROPPED = {"100001", "100002"}
BROKEN_ROWS = 3


def test_demo_once_runs_the_hub_loop_and_stops(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(DEMO), "--out", str(out), "--items", str(ITEMS), "--once", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr

    # What the hub recorded, read from its SQLite database after the demo stopped it.
    with sqlite3.connect(out / "hub" / "hub.sqlite3") as db:
        runs = db.execute(
            "SELECT id, status, trigger, attempt, items_read, items_written, items_rejected, items_filtered FROM run"
        ).fetchall()
        [(run_id, status, trigger, attempt, read, written, rejected, filtered)] = runs
        agent_lines = db.execute(
            "SELECT message FROM log_entry WHERE run_id = ? AND uid IS NOT NULL", (run_id,)
        ).fetchall()
        agents = db.execute("SELECT id, revoked_at FROM agent").fetchall()
    kept = [row for row in catalogue_rows(ITEMS) if row["ITEM_NO"] not in DROPPED]
    inactive = sum(row["ACTIVE"] == "N" for row in kept)
    assert (status, trigger, attempt) == ("partially_failed", "schedule", 1)
    assert (read, rejected, filtered) == (len(kept) + BROKEN_ROWS, BROKEN_ROWS, inactive)
    assert written == len(kept) - inactive
    assert any(f"run {run_id} started" in message for (message,) in agent_lines), agent_lines
    assert [revoked for _, revoked in agents] == [None]

    # The feed the hub's run wrote, and what the demo printed about it.
    [feed] = (out / "hub-feeds").glob("*.csv")
    assert len(feed.read_text(encoding="utf-8").splitlines()) == written + 1  # and the header
    assert f"run {run_id} (schedule, attempt 1) partially_failed" in done.stdout
    assert "rejected row" in done.stdout
    token = (out / "hub" / "admin-token.txt").read_text().strip()
    assert "Bearer $GS_TOKEN" in done.stdout
    assert token in done.stdout

    # --once stopped the hub it started: nothing listens on its port any more.
    port = int(done.stdout.split("== 4. A hub at http://127.0.0.1:", 1)[1].split(" ", 1)[0])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
