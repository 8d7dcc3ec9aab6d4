"""End to end: the hub served by hypercorn and real ``grocerysync-agent run`` processes, the whole loop.

A technician's setup goes through the hub's own command line and API (a retailer, a store, a POS connection,
a destination, a job, an enrollment token); the store side is ``grocerysync-agent enroll`` then
``grocerysync-agent run``, each in its own process. The hub's timings (lease, progress interval, poll wait)
are shortened through its settings so each test takes seconds, not minutes.

Holding a run in the middle, deterministically: the store's POS export is a named pipe (see
:class:`PosExportPipe`) that the test writes, so the run is still reading when the test stops the hub, kills
the agent or cancels the run, whatever the machine's speed. POSIX only (``os.mkfifo``), like the real sshd.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SSHD_SKIP, sftp_destination
from loop_support import (
    AGENT,
    BAD_UPC,
    FAST,
    HEAD,
    HUB_LOGGER,
    Hub,
    PosExportPipe,
    Store,
    create_store,
    feed_rows,
    pos_export,
    running_hub,
    wait_all_shipped_once,
    wait_for,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One hub with the FAST timings for the tests that need nothing else (each sets up its own retailer)."""
    with running_hub(tmp_path_factory.mktemp("hub"), str(request.param)) as hub:
        yield hub


HubFactory = Callable[..., Hub]


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[HubFactory]:
    """A hub of the test's own: ``make_hub(backend, **settings)`` (see :func:`running_hub`)."""
    with contextlib.ExitStack() as stack:
        made: list[Hub] = []

        def make(backend: str, **settings: str) -> Hub:
            data_dir = tmp_path / f"hub{len(made)}"
            data_dir.mkdir()
            made.append(stack.enter_context(running_hub(data_dir, backend, **settings)))
            return made[-1]

        yield make


StoreFactory = Callable[..., Store]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[StoreFactory]:
    """``make_store(hub, source_path, **options)``: see :func:`loop_support.create_store`; agents stopped after."""
    stores: list[Store] = []

    def make(hub: Hub, source_path: Path, **options: Any) -> Store:
        stores.append(create_store(hub, tmp_path / f"store{len(stores)}", source_path, **options))
        return stores[-1]

    yield make
    for store in stores:
        store.stop_agents()


@pytest.fixture
def small_store(shared_hub: Hub, make_store: StoreFactory, tmp_path: Path) -> Store:
    """A store on the shared hub whose POS export holds ten items, its agent running."""
    export = tmp_path / "pos-export.csv"
    export.write_bytes(pos_export(10)[0])
    store = make_store(shared_hub, export)
    store.start_agent()
    return store


@pytest.fixture
def pipes() -> Iterator[list[PosExportPipe]]:
    """The test's POS export pipes, closed at the end (after its agents have stopped)."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("a POS export pipe needs os.mkfifo (POSIX)")
    made: list[PosExportPipe] = []
    yield made
    for pipe in made:
        pipe.close()


# --- the tests --------------------------------------------------------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.skipif(bool(SSHD_SKIP), reason=f"no test SSH server: {SSHD_SKIP}")
def test_enroll_trigger_run_and_report_over_sftp(
    shared_hub: Hub, make_store: StoreFactory, sshd_server: Any, tmp_path: Path
) -> None:
    """The core loop: a triggered run goes to the agent, which sends over SFTP and reports counts, rejections, logs."""
    hub = shared_hub
    data, bad = pos_export(1200, bad_every=100)
    assert len(bad) == 12
    export = tmp_path / "pos-export.csv"
    export.write_bytes(data)
    remote = tmp_path / "incoming"
    remote.mkdir()
    store = make_store(hub, export, destination=sftp_destination(sshd_server, remote))
    agent = store.start_agent()

    def online() -> dict[str, Any] | None:
        listed = hub.call("GET", f"/api/agents?store_id={store.store_id}")["items"]
        return listed[0] if listed and listed[0]["status"] == "online" else None

    listed = wait_for("the agent to be online", online, why=store.evidence)
    assert listed["id"] == store.agent_id
    assert {p["name"] for p in listed["plugins"] or []} >= {"csv", "sftp", "folder"}

    run_id = store.trigger()
    run = store.wait_finished(run_id)
    assert run["status"] == "partially_failed", run
    assert run["agent_id"] == store.agent_id
    assert (run["items_read"], run["items_written"], run["items_rejected"]) == (1200 + len(bad), 1200, len(bad))
    assert run["attempt"] == 1
    assert run["started_at"]
    assert run["finished_at"]

    rejections = hub.rejections(run_id)
    assert sorted(r["ref"] for r in rejections) == sorted(bad)
    assert {r["stage"] for r in rejections} == {"validate"}
    assert all("check digit" in r["reason"] for r in rejections)

    [feed] = remote.glob("*.csv")
    assert len(feed_rows(remote)) == 1200
    assert BAD_UPC not in feed.read_text(encoding="utf-8")

    # Every record the agent logged is on the hub once, the run's tagged with it.
    logged = wait_all_shipped_once(store, agent)
    mine = [e for e in hub.logs(run_id) if not e["logger"].startswith(HUB_LOGGER)]
    assert {(e["agent_id"], e["store_id"]) for e in mine} == {(store.agent_id, store.store_id)}
    text = "\n".join(e["message"] for e in mine)
    assert f"export 'POS to marketplace' run {run_id} started" in text
    assert f"export 'POS to marketplace' run {run_id} partially_failed: read {1200 + len(bad)}, sent 1200" in text
    assert "uploaded" in text
    # The destination's private key went from the hub to the agent, and shows in no log on either side.
    key_body = sshd_server.client_key_text.splitlines()[1]
    assert not any(key_body in message for _, message in logged)
    assert key_body not in hub.log.read_text(errors="replace")
    assert key_body not in agent.output()

    # Stopped as a service manager stops it: at once, cleanly, with nothing but log lines on its console.
    assert agent.process.poll() is None, agent.output()
    assert agent.stop() == 0, agent.output()
    assert "Traceback" not in agent.output()


def test_hub_outage_mid_run_loses_and_repeats_nothing(
    backend: str, make_hub: HubFactory, pipes: list[PosExportPipe], make_store: StoreFactory, tmp_path: Path
) -> None:
    """The hub goes away while a run reads; the run finishes on the agent, and everything arrives once after."""
    # A lease shorter than the outage: the hub's grace period after a start is what keeps the run the agent's.
    hub = make_hub(backend, run_lease_seconds="3", lease_grace_seconds="60")
    data, bad = pos_export(6000, bad_every=40)
    pipe = PosExportPipe(tmp_path / "pos-export.csv", data, head=HEAD)
    pipes.append(pipe)
    store = make_store(hub, pipe.path, batch_size=250)
    agent = store.start_agent()
    run_id = store.trigger()
    # Acked and reading: some of the export has been read, the rest is held back in the pipe.
    store.wait_run(run_id, lambda r: r["status"] == "running" and r["items_read"] > 0, "to be reading")

    hub.stop()
    down = time.monotonic()
    pipe.release()
    # The run ends on the agent while the hub is away: the feed file is committed into the folder.
    wait_for("the run to end during the outage", lambda: list(store.feeds.glob("*.csv")), why=store.evidence)
    # The agent keeps trying the hub; its result, rejections and logs wait in its spool. Stay away for longer
    # than the lease.
    time.sleep(max(0.0, down + 5 - time.monotonic()))
    hub.start()

    run = store.wait_finished(run_id, timeout=90)  # the agent's backoff decides when it tries again
    assert run["status"] == "partially_failed", run
    assert (run["items_read"], run["items_written"], run["items_rejected"]) == (6000 + len(bad), 6000, len(bad))
    assert run["attempt"] == 1
    assert [r["id"] for r in hub.runs(store.job_id)] == [run_id], "the run was retried"
    assert pipe.passes == 1
    assert sorted(r["ref"] for r in hub.rejections(run_id)) == sorted(bad), "rejections lost or stored twice"
    assert len(feed_rows(store.feeds)) == 6000

    logged = wait_all_shipped_once(store, agent)
    assert any("cannot reach the hub" in message for _, message in logged), "the outage left no trace in the log"
    text = "\n".join(e["message"] for e in hub.logs(run_id))
    assert f"export 'POS to marketplace' run {run_id} started" in text
    assert f"export 'POS to marketplace' run {run_id} partially_failed" in text


def test_killed_agent_lease_expires_and_the_retry_completes(
    backend: str, make_hub: HubFactory, pipes: list[PosExportPipe], make_store: StoreFactory, tmp_path: Path
) -> None:
    """SIGKILL mid-run: the lease runs out, the attempt fails with the lease message, the retry finishes."""
    hub = make_hub(backend, run_lease_seconds="3")
    data, _ = pos_export(5000)
    pipe = PosExportPipe(tmp_path / "pos-export.csv", data, head=HEAD)
    pipes.append(pipe)
    store = make_store(hub, pipe.path, max_retries=1, batch_size=250)
    agent = store.start_agent()
    run_id = store.trigger()
    store.wait_run(run_id, lambda r: r["status"] == "running" and r["items_read"] > 0, "to be reading")

    agent.process.kill()  # SIGKILL: no chance to say goodbye
    agent.process.wait(timeout=10)
    failed = store.wait_finished(run_id, timeout=30)
    assert failed["status"] == "failed"
    assert "lease" in failed["error"], failed["error"]
    assert list(store.feeds.glob("*.csv")) == []

    def retry() -> dict[str, Any] | None:
        newer = [r for r in hub.runs(store.job_id) if r["id"] != run_id]
        return newer[0] if newer else None

    queued = wait_for("the retry to be queued", retry, why=store.evidence)
    assert queued["attempt"] == 2
    assert queued["trigger"] == "retry"
    assert f"retry queued as run {queued['id']}" in failed["error"]
    pipe.release()
    pipe.serve_again()
    store.start_agent()
    done = store.wait_finished(queued["id"])
    assert done["status"] == "succeeded", done
    assert (done["items_read"], done["items_written"]) == (5000, 5000)
    assert len(feed_rows(store.feeds)) == 5000
    # Exactly one retry: the job allowed one.
    assert len(hub.runs(store.job_id)) == 2


def test_revoked_agent_stops_with_exit_code_3_and_says_why(shared_hub: Hub, small_store: Store) -> None:
    hub, store = shared_hub, small_store
    [agent] = store.agents
    wait_for(
        "the agent to poll",
        lambda: hub.call("GET", f"/api/agents/{store.agent_id}")["last_seen_at"],
        why=store.evidence,
    )
    revoked = hub.call("POST", f"/api/agents/{store.agent_id}/revoke")
    assert revoked["status"] == "revoked"
    code = wait_for("the agent to exit", agent.process.poll, timeout=30, why=store.evidence)
    assert code == 3, agent.output()
    stderr = agent.stderr.read_text(errors="replace")
    assert "Traceback" not in stderr
    assert "revoked" in stderr
    # What to do about it, down to the command.
    assert f"grocerysync-agent enroll --hub {hub.url} --token TOKEN --force" in stderr
    # Started again (by hand, or by a service manager that ignored the exit status), it stops at its first call.
    again = subprocess.run(
        [*AGENT, "run", "--state-dir", str(store.state_dir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert again.returncode == 3, again.stderr
    assert "Traceback" not in again.stderr


def test_cancel_a_running_run_then_the_agent_takes_the_next(
    shared_hub: Hub, pipes: list[PosExportPipe], make_store: StoreFactory, tmp_path: Path
) -> None:
    """A technician cancels a run that is reading: the agent stops it, commits nothing, and reports it cancelled."""
    hub = shared_hub
    data, _ = pos_export(5000)
    pipe = PosExportPipe(tmp_path / "pos-export.csv", data, head=HEAD)
    pipes.append(pipe)
    store = make_store(hub, pipe.path, batch_size=100)
    store.start_agent()
    run_id = store.trigger()
    store.wait_run(run_id, lambda r: r["status"] == "running" and r["items_read"] > 0, "to be reading")

    asked = hub.call("POST", f"/api/runs/{run_id}/cancel")
    assert asked["cancel_requested_at"]

    def cancel_delivered() -> bool:
        listed = hub.call("GET", f"/api/agents/{store.agent_id}/commands")["items"]
        return any(c["type"] == "cancel" and c["run_id"] == run_id and c["status"] != "pending" for c in listed)

    # Only once the agent knows is the rest of the export let through: it must not finish the run regardless.
    wait_for("the agent to get the cancel", cancel_delivered, why=store.evidence)
    pipe.release()
    run = store.wait_finished(run_id)
    assert run["status"] == "cancelled", run
    assert run["items_read"] < 5000
    assert list(store.feeds.glob("*.csv")) == [], "a cancelled run committed its feed"

    # The agent carries on: the next run sends the whole catalogue (nothing of the cancelled one was committed).
    pipe.serve_again()
    again = store.trigger()
    done = store.wait_finished(again)
    assert done["status"] == "succeeded", done
    assert done["items_written"] == 5000
    assert len(feed_rows(store.feeds)) == 5000


def test_diagnostics_and_reload_commands_answer_through_the_api(shared_hub: Hub, small_store: Store) -> None:
    hub, store = shared_hub, small_store
    sent = {
        kind: hub.call("POST", f"/api/agents/{store.agent_id}/commands", {"type": kind})
        for kind in ("diagnostics", "reload")
    }
    assert {c["status"] for c in sent.values()} == {"pending"}

    def answered(command_id: int) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            found = hub.call("GET", f"/api/agents/{store.agent_id}/commands/{command_id}")
            return found if found["status"] in ("done", "failed") else None

        return probe

    diagnostics = wait_for("the diagnostics", answered(sent["diagnostics"]["id"]), why=store.evidence)
    assert diagnostics["status"] == "done", diagnostics
    report = diagnostics["result"]
    assert report["agent_id"] == store.agent_id
    assert report["hostname"] == socket.gethostname()
    assert report["hub_url"] == hub.url
    assert report["hub_reachable"] is True
    assert Path(report["state_dir"]) == store.state_dir
    assert {p["name"] for p in report["plugins"]} >= {"csv", "folder"}
    # The settings the hub gives its agents (FAST) are the ones this agent runs with.
    assert report["config"]["poll_wait"] == float(FAST["GROCERYSYNC_AGENT_POLL_WAIT_SECONDS"])
    credential = json.loads((store.state_dir / "agent.json").read_text())["credential"]
    assert credential not in json.dumps(diagnostics)

    reload = wait_for("the reload", answered(sent["reload"]["id"]), why=store.evidence)
    assert reload["status"] == "done", reload
