"""``grocerysync-agent run`` when things go wrong: the hub goes away and comes back, the agent restarts, the hub
refuses reports or the credential, the spool fills up."""

from __future__ import annotations

import io
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RecordingDestination
from fakehub import FakeHub
from runner_support import AgentThread, slow_job, spool_contents, test_plugins

# The hub and state fixtures (imported under their own names, used as parameters).
from runner_support import enrolled_state as enrolled_state
from runner_support import fake_hub as fake_hub

from grocerysync.agent.cli import main
from grocerysync.agent.service import EXIT_REVOKED, control
from grocerysync.agent.spool import Spool
from grocerysync.core.manager import PluginManager


@pytest.fixture
def signals() -> Iterator[None]:
    """``main(["run"])`` installs signal handlers and may leave a stop request: put both back."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    control.reset()
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    control.reset()


def dropped(state: Path) -> int:
    with Spool(state / "spool.sqlite") as spool:
        return sum(d.count for d in spool.dropped())


def once(hub: FakeHub, text: str, level: str | None = None) -> dict:
    """The one stored log record containing ``text`` (fails if there are none or several)."""
    found = hub.messages(contains=text, level=level)
    assert len(found) == 1, (text, [r["message"] for r in found])
    return found[0]


def test_a_hub_outage_mid_run_loses_nothing_and_is_one_warning(hub: FakeHub, state: Path) -> None:
    dest = RecordingDestination()
    run = hub.add_run(slow_job(rows=300, delay=0.02), run_id=11)
    agent = AgentThread(state, test_plugins(dest)).start()
    try:
        hub.wait_for(lambda: run.progress, message="the first progress report")
        hub.stop()
        # The export goes on without the hub and commits; its result and logs wait in the spool.
        hub.wait_for(lambda: len(dest.items) == 300, message="the export to finish")
        hub.wait_for(lambda: spool_contents(state).get("result"), message="the result in the spool")
        hub.start()
        result = hub.wait_for(lambda: run.result, message="run 11's result")
        hub.wait_for(lambda: hub.messages(contains="reachable again"), message="the hub's return in the log")
    finally:
        assert agent.stop() == 0
    assert result.status == "succeeded"
    assert result.sent == 300
    assert run.result_posts == 1
    # One warning when the hub went away and one line when it came back, however many attempts failed.
    warning = once(hub, "cannot reach the hub", "warning")
    back = once(hub, "is reachable again", "info")
    assert warning["at"] < back["at"]
    # The run's log lines, written while the hub was away, arrived once each.
    once(hub, "run 11 started")
    once(hub, "run 11 succeeded: read 300")
    once(hub, "run 11 succeeded: result and 0 rejection(s) queued")
    assert max(hub.log_uid_posts.values()) == 1  # nothing confirmed was ever sent again
    assert spool_contents(state) == {}


def test_a_restarted_agent_ships_what_the_spool_held(hub: FakeHub, state: Path) -> None:
    dest = RecordingDestination()
    run = hub.add_run(slow_job(rows=100, delay=0.02), run_id=12)
    first = AgentThread(state, test_plugins(dest), stop_grace=0.2).start()
    hub.wait_for(lambda: run.acks, message="the acknowledgement")
    hub.stop()
    hub.wait_for(lambda: spool_contents(state).get("result"), message="the result in the spool")
    assert first.stop() == 0  # the hub is still down: the result stays in the spool
    waiting = spool_contents(state)
    assert waiting["result"] == 1
    assert waiting["log"] >= 3
    assert run.result is None

    hub.start()
    second = AgentThread(state, test_plugins(dest), idle_exit=0.3).start()
    assert second.join() == 0  # --once-idle: exits once everything is shipped
    assert run.result is not None
    assert run.result.status == "succeeded"
    assert run.result_posts == 1
    once(hub, "run 12 started")  # logged by the first agent, shipped by the second
    assert once(hub, "run 12 succeeded: read 100")["run_id"] == 12
    assert spool_contents(state) == {}


def test_reports_the_hub_will_never_take_are_dropped_with_a_line_and_do_not_block(hub: FakeHub, state: Path) -> None:
    dest = RecordingDestination()
    hub.fail("result", 409)  # the first result: the run is no longer this agent's
    hub.fail("command_result", 422)  # the first command result: refused as invalid
    first = hub.add_run(slow_job(rows=20, delay=0.0, name="first"), run_id=21)
    command = hub.add_command("diagnostics")
    agent = AgentThread(state, test_plugins(dest)).start()
    try:
        hub.wait_for(lambda: hub.messages(contains="the hub no longer expects"), message="the drop warning")
        second = hub.add_run(slow_job(rows=20, delay=0.0, name="second"), run_id=22)
        hub.wait_for(lambda: second.result, message="run 22's result")
        hub.wait_for(lambda: hub.messages(contains="can never be accepted"), message="the refusal line")
    finally:
        assert agent.stop() == 0
    assert first.result is None
    assert hub.commands[command].result is None
    [gone] = hub.messages(contains="the hub no longer expects")
    assert gone["level"] == "warning"
    assert "the result of run 21" in gone["message"]
    assert "HTTP 409" in gone["message"]
    refused = once(hub, "can never be accepted", "error")
    assert f"the result of command {command} (diagnostics)" in refused["message"]
    assert spool_contents(state) == {}


def test_server_errors_and_rate_limits_are_retried_and_oversized_log_batches_split(hub: FakeHub, state: Path) -> None:
    hub.fail("logs", 503, 429, 413, 404)
    hub.fail("result", 500, 502)
    run = hub.add_run(slow_job(rows=20, delay=0.0), run_id=31)
    agent = AgentThread(state, test_plugins(RecordingDestination())).start()
    try:
        hub.wait_for(lambda: run.result, message="run 31's result")
        hub.wait_for(lambda: hub.messages(contains="run 31 succeeded: result"), message="the run's logs")
    finally:
        assert agent.stop() == 0
    assert run.result_posts == 1
    once(hub, "run 31 started")
    held = once(hub, "does not take log records (HTTP 404", "error")  # held, not dropped: the records came later
    assert "they stay in the spool" in held["message"]
    # Every injected fault was met, and what it refused was sent again.
    assert not hub.faults["logs"]
    assert not hub.faults["result"]
    assert spool_contents(state) == {}


def test_a_revoked_agent_stops_with_exit_status_3_and_says_to_enroll_again(
    hub: FakeHub, state: Path, signals: None
) -> None:
    hub.revoked = True
    err = io.StringIO()
    code = main(["run", "--state-dir", str(state)], plugins=PluginManager(autoload=False), stderr=err)
    assert code == EXIT_REVOKED == 3
    last = err.getvalue().strip().splitlines()[-1]
    assert last.startswith("grocerysync-agent: error: the hub at http://127.0.0.1:")
    assert "the agent was revoked; enroll it again" in last  # the hub's own message
    assert "grocerysync-agent enroll --hub http://127.0.0.1:" in last
    assert "--force" in last
    assert "Traceback" not in err.getvalue()
    assert "gsa_" not in err.getvalue()  # the credential is never shown


def test_a_credential_revoked_mid_run_stops_the_run_and_the_agent(hub: FakeHub, state: Path) -> None:
    dest = RecordingDestination()
    run = hub.add_run(slow_job(rows=1000, delay=0.05), run_id=41)
    agent = AgentThread(state, test_plugins(dest)).start()
    hub.wait_for(lambda: run.progress, message="progress")
    hub.revoked = True
    assert agent.join() == EXIT_REVOKED
    assert agent.runner.revoked is not None
    assert dest.items == {}  # the export stopped after its batch and committed nothing
    with Spool(state / "spool.sqlite") as spool:  # its result is kept (it cannot be delivered to this hub)
        [result] = spool.batch("result")
    assert result.payload["body"]["status"] == "cancelled"
    assert "refused this agent's credential" in result.payload["body"]["error"]


def test_not_enrolled_is_one_line_and_exit_status_2(tmp_path: Path, signals: None) -> None:
    err = io.StringIO()
    code = main(["run", "--state-dir", str(tmp_path / "nowhere")], plugins=PluginManager(autoload=False), stderr=err)
    assert code == 2
    assert err.getvalue().splitlines() == [
        f"grocerysync-agent: error: this agent is not enrolled ({tmp_path / 'nowhere' / 'agent.json'} does not "
        "exist); run 'grocerysync-agent enroll --hub URL --token T'"
    ]


def test_a_stop_request_ends_the_cli_run_with_status_0(hub: FakeHub, state: Path, signals: None) -> None:
    err = io.StringIO()
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(main(["run", "--state-dir", str(state)], plugins=PluginManager(), stderr=err))
    )
    thread.start()  # not the main thread: like the Windows service host, no signal handlers are installed
    hub.wait_for(lambda: hub.polls, message="the first poll")
    control.request_stop()  # what SIGTERM, Ctrl+C and a Windows service stop do
    thread.join(20)
    assert codes == [0]
    lines = err.getvalue().splitlines()
    assert any(" INFO grocerysync.agent.runner.loop: agent 1 started: hub http://127.0.0.1:" in x for x in lines)
    assert lines[-1].endswith("INFO grocerysync.agent.runner.loop: agent stopped")


def test_a_full_spool_drops_logs_and_tells_the_hub(hub: FakeHub, state: Path) -> None:
    hub.stop()
    agent = AgentThread(state, test_plugins(RecordingDestination()), spool_max_records=20).start()
    try:
        hub.wait_for(lambda: spool_contents(state).get("log"), message="the agent's first log records spooled")
        chatty = logging.getLogger("grocerysync.tests.chatty")
        for n in range(60):
            chatty.info("line %d", n)
        hub.wait_for(lambda: dropped(state), message="drops")
        hub.start()
        notice = hub.wait_for(lambda: hub.messages(contains="spool full: dropped"), message="the drop notice")
        degraded = hub.wait_for(
            lambda: [p for p in hub.polls if p.health.status == "degraded"], message="a degraded heartbeat"
        )
    finally:
        assert agent.stop() == 0
    assert notice[0]["level"] == "warning"
    assert "log records" in notice[0]["message"]
    assert "dropped" in degraded[0].health.message
    assert hub.messages(contains="line 59")  # the newest lines are kept, the oldest went
    assert not hub.messages(contains="line 0")
