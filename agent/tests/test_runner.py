"""``grocerysync-agent run`` against the fake hub: a run from assignment to result, progress, cancellation,
secrets kept off the disk."""

from __future__ import annotations

from pathlib import Path

from conftest import RecordingDestination
from fakehub import FakeHub
from runner_support import (
    CANARY,
    AgentThread,
    LeakyDestination,
    csv_to_folder_job,
    files_under,
    slow_job,
    spool_contents,
    test_plugins,
    write_export,
)

# The hub and state fixtures (imported under their own names, used as parameters).
from runner_support import enrolled_state as enrolled_state
from runner_support import fake_hub as fake_hub

from grocerysync.core.manager import PluginManager
from grocerysync.core.wire import MAX_BATCH


def test_a_real_run_is_acknowledged_and_its_rejections_and_result_arrive_once(
    tmp_path: Path, hub: FakeHub, state: Path
) -> None:
    export = write_export(tmp_path / "items.csv", good=1300, bad=1200)
    out = tmp_path / "feeds"
    out.mkdir()
    run = hub.add_run(csv_to_folder_job(export, out), run_id=7)
    agent = AgentThread(state, PluginManager()).start()
    try:
        result = hub.wait_for(lambda: run.result, message="run 7's result")
        hub.wait_for(lambda: hub.messages(contains="run 7 partially_failed"), message="the run's log lines")
    finally:
        assert agent.stop() == 0

    assert run.acks == 1
    assert (result.status, result.read, result.sent, result.rejected) == ("partially_failed", 2500, 1300, 1200)
    assert result.rejections_total == 1200
    # Every rejection once, numbered 0..n-1, in batches the hub accepts, all before the result.
    assert sorted(run.rejections) == list(range(1200))
    assert run.rejection_posts == -(-1200 // MAX_BATCH)
    assert run.result_posts == 1
    assert {r["stage"] for r in run.rejections.values()} == {"validate"}
    assert all("name" in r["reason"] for r in run.rejections.values())
    assert run.rejections[0]["ref"] == "row 3"  # the CSV's first bad row (the header is row 1)
    # The export really happened: the folder destination wrote the feed.
    [feed] = out.glob("*.jsonl")
    assert len(feed.read_text(encoding="utf-8").splitlines()) == 1300
    # The pipeline's own log lines reached the hub, tagged with the run.
    [started] = hub.messages(contains="run 7 started")
    assert started["run_id"] == 7
    assert started["logger"] == "grocerysync.agent.pipeline"
    # Heartbeats: who the agent is, its plugins, and capacity 0 while the run was going.
    first = hub.polls[0]
    assert first.capacity == 1
    assert {"csv", "folder"} <= {p.name for p in first.plugins}
    assert any(p.capacity == 0 and p.health.running == [7] for p in hub.polls)
    assert spool_contents(state) == {}


def test_progress_is_reported_while_the_export_runs(hub: FakeHub, state: Path) -> None:
    dest = RecordingDestination()
    run = hub.add_run(slow_job(rows=200, delay=0.03), run_id=3)
    agent = AgentThread(state, test_plugins(dest)).start()
    try:
        result = hub.wait_for(lambda: run.result, message="run 3's result")
    finally:
        assert agent.stop() == 0
    assert result.status == "succeeded"
    assert len(dest.items) == 200
    # A 0.6 s export with progress every 0.2 s (the fake hub's config): several reports, counts only growing.
    reads = [p.read for p in run.progress]
    assert len(reads) >= 3
    assert reads == sorted(reads)
    assert all(p.attempt == 1 for p in run.progress)
    assert {p.phase for p in run.progress} <= {"starting", "reading", "committing", "done"}


def test_a_technician_cancels_through_the_progress_answer(hub: FakeHub, state: Path) -> None:
    dest = RecordingDestination()
    run = hub.add_run(slow_job(rows=1000, delay=0.05), run_id=4)
    agent = AgentThread(state, test_plugins(dest)).start()
    try:
        hub.wait_for(lambda: run.progress and run.progress[-1].read > 0, message="progress")
        hub.cancel(4)
        result = hub.wait_for(lambda: run.result, message="run 4's result")
    finally:
        assert agent.stop() == 0
    assert result.status == "cancelled"
    assert result.error.startswith("cancelled by a technician at the hub")
    assert "nothing was committed" in result.error
    assert 0 < result.read < 1000
    assert dest.items == {}  # the destination committed nothing
    # The agent takes work again once the cancelled run is over.
    assert hub.polls[-1].capacity == 1


def test_a_cancel_command_stops_the_run(hub: FakeHub, state: Path) -> None:
    dest = RecordingDestination()
    run = hub.add_run(slow_job(rows=1000, delay=0.05), run_id=5)
    agent = AgentThread(state, test_plugins(dest)).start()
    try:
        hub.wait_for(lambda: run.progress, message="progress")
        command = hub.add_command("cancel", run_id=5)
        result = hub.wait_for(lambda: run.result, message="run 5's result")
        answer = hub.wait_for(lambda: hub.commands[command].result, message="the command's result")
    finally:
        assert agent.stop() == 0
    assert result.status == "cancelled"
    assert f"(command {command})" in result.error
    assert answer.ok
    assert "stops after its current batch" in answer.message
    assert dest.items == {}


def test_a_stop_request_cancels_the_run_and_reports_it(hub: FakeHub, state: Path) -> None:
    dest = RecordingDestination()
    run = hub.add_run(slow_job(rows=1000, delay=0.05), run_id=6)
    agent = AgentThread(state, test_plugins(dest)).start()
    hub.wait_for(lambda: run.progress, message="progress")
    assert agent.stop() == 0  # returns once the run stopped and its result was shipped (hub reachable)
    assert run.result is not None
    assert run.result.status == "cancelled"
    assert run.result.error.startswith("the agent was stopped")
    assert spool_contents(state) == {}


def test_destination_secrets_never_reach_the_disk_or_the_hub(hub: FakeHub, state: Path) -> None:
    dest = LeakyDestination()
    ok = hub.add_run(slow_job(rows=30, delay=0.01, token=CANARY), run_id=1)
    agent = AgentThread(state, test_plugins(dest)).start()
    try:
        hub.wait_for(lambda: ok.result, message="run 1's result")
        dest.fail_with_secret = True
        failed = hub.add_run(slow_job(rows=30, token=CANARY), run_id=2)
        hub.wait_for(lambda: failed.result, message="run 2's result")
        hub.wait_for(lambda: len(hub.messages(contains="with token")) == 2, message="the leaky plugin's log lines")
    finally:
        assert agent.stop() == 0
    # The secret was really in play: the destination got it, and it logged and raised with it.
    assert dest.secrets_seen == [CANARY]
    assert ok.result is not None
    assert ok.result.status == "succeeded"
    assert failed.result is not None
    assert failed.result.status == "failed"
    assert "login refused for token '***'" in failed.result.error
    assert [r["message"] for r in hub.messages(contains="with token")] == ["connecting to shop demo with token ***"] * 2
    # Nothing the hub received carries it.
    received = repr([hub.logs, [r.result for r in hub.runs.values()], [r.rejections for r in hub.runs.values()]])
    assert CANARY not in received
    # And no file under the state directory holds it: spool (and its WAL), delta stores, run files, enrollment.
    files = files_under(state)
    assert any(p.name == "spool.sqlite" for p in files)
    assert any(p.name == "state.sqlite" for p in files)
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), path
