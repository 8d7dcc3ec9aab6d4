"""Commands a technician sends an agent through the hub (diagnostics, reload, cancel), and what the agent does
with work it cannot understand."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import RecordingDestination
from fakehub import FakeCommand, FakeHub, FakeRun
from runner_support import AgentThread, enroll, slow_job, test_plugins

# The hub and state fixtures (imported under their own names, used as parameters).
from runner_support import enrolled_state as enrolled_state
from runner_support import fake_hub as fake_hub

from grocerysync.core.manager import PluginManager
from grocerysync.core.wire import Command


def test_diagnostics_describe_the_agent_for_a_technician(hub: FakeHub, state: Path) -> None:
    agent = AgentThread(state, PluginManager()).start()
    try:
        hub.wait_for(lambda: hub.polls, message="the first poll")
        command = hub.add_command("diagnostics")
        result = hub.wait_for(lambda: hub.commands[command].result, message="the diagnostics")
    finally:
        assert agent.stop() == 0
    assert result.ok
    assert result.message.startswith("diagnostics of agent 1 (")
    data = result.data
    assert data["agent_id"] == 1
    assert data["hub_url"] == hub.url
    assert data["hub_reachable"] is True
    assert data["python"].split()[1].count(".") == 2
    assert data["os"]
    assert data["state_dir"] == str(state)
    assert data["disk"]["free_bytes"] > 0
    assert {"csv", "folder"} <= {p["name"] for p in data["plugins"]}
    assert data["plugin_failures"] == []
    assert data["spool"]["max_records"] > 0
    assert data["running"] == []
    assert abs(data["clock_skew_s"]) < 5  # the fake hub runs on this machine's clock
    assert any("agent 1 started: hub" in line for line in data["recent_log"])
    assert data["config"]["progress_interval"] == hub.config.progress_interval
    assert "gsa_" not in repr(data)  # never the credential
    assert hub.commands[command].result_posts == 1
    assert hub.commands[command].delivered == 1


def test_a_command_delivered_again_is_carried_out_once(hub: FakeHub, state: Path) -> None:
    agent = AgentThread(state, PluginManager()).start()
    try:
        hub.wait_for(lambda: hub.polls, message="the first poll")
        command = hub.add_command("diagnostics")
        hub.wait_for(lambda: hub.commands[command].result_posts == 1, message="the diagnostics")
        hub.redeliver(command)
        hub.wait_for(lambda: hub.commands[command].delivered == 1, message="the second delivery")
        # Two more polls: the agent has handled the poll answer that carried the command again.
        seen = len(hub.polls)
        hub.wait_for(lambda: len(hub.polls) >= seen + 2, message="two more polls")
    finally:
        assert agent.stop() == 0
    assert hub.commands[command].result_posts == 1


def test_reload_reads_the_enrollment_and_the_plugins_again(hub: FakeHub, state: Path) -> None:
    loads: list[PluginManager] = []

    def plugins() -> PluginManager:
        loads.append(test_plugins(RecordingDestination()))
        return loads[-1]

    with FakeHub() as moved:  # the same hub at a new address, as after a move
        agent = AgentThread(state, plugins).start()
        try:
            hub.wait_for(lambda: hub.polls, message="the first poll")
            enroll(state, moved)
            command = hub.add_command("reload")
            moved.commands[command] = FakeCommand(hub.commands[command].command, delivered=1)
            result = moved.wait_for(lambda: moved.commands[command].result, message="the reload's result")
            moved.wait_for(lambda: moved.polls, message="a poll at the new address")
        finally:
            assert agent.stop() == 0
    assert result.ok
    assert result.message == f"reloaded the enrollment (hub {moved.url}) and the plugins: 2 loaded"
    assert result.data["plugins"] == [
        {"kind": "pos", "name": "slow", "distribution": "runner-test-plugins", "version": "1.0"},
        {"kind": "destination", "name": "recorder", "distribution": "runner-test-plugins", "version": "1.0"},
    ]
    assert len(loads) == 2  # at start, and again for the reload
    assert agent.runner.plugins is loads[-1]


def test_reload_reports_a_broken_enrollment_and_keeps_going(hub: FakeHub, state: Path) -> None:
    agent = AgentThread(state, test_plugins(RecordingDestination())).start()
    try:
        hub.wait_for(lambda: hub.polls, message="the first poll")
        original = (state / "agent.json").read_text()
        (state / "agent.json").write_text('{"hub_url": "https://h"}')
        command = hub.add_command("reload")
        result = hub.wait_for(lambda: hub.commands[command].result, message="the reload's result")
        (state / "agent.json").write_text(original)
        polls = len(hub.polls)
        hub.wait_for(lambda: len(hub.polls) > polls, message="the agent polling on")
    finally:
        assert agent.stop() == 0
    assert not result.ok
    assert result.message.startswith("the enrollment could not be read again:")
    assert "damaged" in result.message


def test_a_command_this_agent_does_not_know_is_answered_not_fatal(hub: FakeHub, state: Path) -> None:
    hub.raw_commands.append({"id": 99, "type": "self-update", "run_id": None})
    # The fake hub stores results only for commands it knows: register the new kind's id.
    hub.commands[99] = FakeCommand(Command(id=99, type="reload"), delivered=1)
    agent = AgentThread(state, test_plugins(RecordingDestination())).start()
    try:
        result = hub.wait_for(lambda: hub.commands[99].result, message="the answer to the unknown command")
        cancel = hub.add_command("cancel", run_id=123)
        refused = hub.wait_for(lambda: hub.commands[cancel].result, message="the answer to the cancel")
    finally:
        assert agent.stop() == 0
    assert not result.ok
    assert "does not know the command 'self-update'; upgrade the agent" in result.message
    assert not refused.ok
    assert refused.message == "run 123 is not running on this agent (no run is running)"


def test_a_run_this_agent_cannot_read_is_reported_failed_with_the_reason(hub: FakeHub, state: Path) -> None:
    good = hub.add_run(slow_job(rows=10, delay=0.0), run_id=50)
    raw = good.assignment.wire()
    raw["run_id"] = 51
    raw["spec"]["options"]["send_everything_twice"] = True  # a newer hub's job option this agent lacks
    unreadable = FakeRun(good.assignment.model_copy(update={"run_id": 51}), status="dispatched")
    hub.runs[51] = unreadable
    hub.raw_runs.append(raw)
    agent = AgentThread(state, test_plugins(RecordingDestination())).start()
    try:
        result = hub.wait_for(lambda: unreadable.result, message="run 51's result")
        hub.wait_for(lambda: good.result, message="run 50's result")
    finally:
        assert agent.stop() == 0
    assert unreadable.acks == 1
    assert result.status == "failed"
    assert "cannot read run 51's job" in result.error
    assert "spec.options.send_everything_twice" in result.error
    assert result.error.endswith("upgrade the agent")
    assert good.result is not None
    assert good.result.status == "succeeded"


def test_an_assignment_not_acknowledged_in_time_is_left_to_the_hub(hub: FakeHub, state: Path) -> None:
    hub.fail("ack", 503, 503, 503, 503, 503, 503, 503, 503, 503, 503)
    run = hub.add_run(slow_job(rows=10, delay=0.0), run_id=60)
    # A lease of one second: the agent gives up on acknowledging it instead of running a run the hub took back.
    run.assignment = run.assignment.model_copy(
        update={"lease_expires_at": datetime.now(UTC) + timedelta(seconds=1), "lease_seconds": 1.0}
    )
    agent = AgentThread(state, test_plugins(RecordingDestination())).start()
    try:
        hub.wait_for(lambda: hub.messages(contains="could not acknowledge run 60"), message="the give-up line")
        time.sleep(0.2)
    finally:
        assert agent.stop() == 0
    assert run.acks == 0
    assert run.result is None
    [line] = hub.messages(contains="could not acknowledge run 60")
    assert line["level"] == "warning"
    assert "the hub hands it out again" in line["message"]


def test_a_stop_while_acknowledging_leaves_the_run_to_the_hub(hub: FakeHub, state: Path) -> None:
    hub.fail("ack", *[503] * 1000)
    run = hub.add_run(slow_job(rows=10, delay=0.0), run_id=61)  # a lease of a minute
    agent = AgentThread(state, test_plugins(RecordingDestination()), backoff_first=1.0, backoff_cap=5.0).start()
    hub.wait_for(lambda: len(hub.faults["ack"]) < 1000, message="the first acknowledgement attempt")
    started = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - started < 5  # not held up by the ack's backoff or the lease
    assert run.acks == 0
    assert run.result is None
