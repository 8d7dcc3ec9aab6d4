"""The agent channel's dispatch: long polls hand out runs (with their secrets) once, leases, reports, heartbeats."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Caller, demo_plugins
from dispatch_helpers import API_KEY, PASSWORD, call, get, make_site, poll, trigger, until_waiting
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from quart.typing import TestClientProtocol as Client

from grocerysync.core.wire import Heartbeat
from grocerysync.hub.app import create_app
from grocerysync.hub.crypto import SecretBox
from grocerysync.hub.domain import dispatch
from grocerysync.hub.domain.agents import create_enrollment_token, redeem_enrollment_token
from grocerysync.hub.domain.heartbeats import HeartbeatBuffer
from grocerysync.hub.domain.wake import WAKEUPS
from grocerysync.hub.models import Agent, DestinationConfig, LogEntry, Retailer, Run, RunRejection, RunStatus, Store
from grocerysync.hub.schemas_agents import EnrollmentTokenIn
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.settings import Settings

SYS = Scope(SYSTEM)
KEPT = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    """Quick heartbeat flushes, a small rejection limit, a short poll limit; no scheduler (lease expiry) running."""
    return settings.model_copy(
        update={
            "heartbeat_flush_seconds": 0.1,
            "run_rejections_kept": KEPT,
            "agent_poll_max_wait_seconds": 20,
            "scheduler_interval_seconds": 0,
        }
    )


async def _assigned(client: Client, admin: Caller) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A site whose one run was handed to its first agent: (site, run as triggered, assignment)."""
    site = await make_site(client, admin)
    run = await trigger(client, admin, site.jobs[0])
    answer = await poll(client, site.agents[0])
    assert [a["run_id"] for a in answer["runs"]] == [run["id"]]
    return site, run, answer["runs"][0]


# --- handing out runs -------------------------------------------------------------------------------------------


async def test_a_triggered_run_is_handed_out_once_with_its_decrypted_secrets(
    client: Client, admin: Caller, settings: Settings
) -> None:
    site = await make_site(client, admin)
    agent = site.agents[0]
    idle = await poll(client, agent)
    assert (idle["runs"], idle["commands"]) == ([], [])
    assert idle["config"] == {
        "log_level": settings.agent_log_level,
        "poll_wait": settings.agent_poll_wait_seconds,
        "progress_interval": settings.agent_progress_interval_seconds,
    }

    run = await trigger(client, admin, site.jobs[0])
    before = datetime.now(UTC)
    answer = await poll(client, agent)
    [assignment] = answer["runs"]
    assert (assignment["run_id"], assignment["attempt"], assignment["job_id"]) == (run["id"], 1, site.jobs[0])
    assert (assignment["trigger"], assignment["full"]) == ("manual", False)
    assert assignment["lease_seconds"] == settings.run_lease_seconds
    lease = datetime.fromisoformat(assignment["lease_expires_at"])
    assert before < lease <= datetime.now(UTC) + timedelta(seconds=settings.run_ack_seconds)
    spec = assignment["spec"]
    assert (spec["source"]["plugin"], spec["destination"]["plugin"]) == ("demo-pos", "demo-dest")
    assert spec["destination"]["secrets"] == {"password": PASSWORD, "api_key": API_KEY}

    shown = await get(client, admin, f"/api/runs/{run['id']}")
    assert (shown["status"], shown["agent_id"]) == ("dispatched", agent.id)
    assert shown["lease_expires_at"] is not None
    # The secrets leave the hub in the assignment only.
    for url in (f"/api/runs/{run['id']}", "/api/logs", f"/api/agents/{agent.id}"):
        text = await (await client.get(url, headers=admin.headers)).get_data(as_text=True)
        assert PASSWORD not in text
        assert API_KEY not in text

    again = await poll(client, agent)
    assert again["runs"] == []


async def test_full_runs_on_request(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, jobs=2)
    agent = site.agents[0]
    first = await trigger(client, admin, site.jobs[0], full=True)
    second = await trigger(client, admin, site.jobs[1], "?full=true")
    assert (first["full"], second["full"]) == (True, True)
    answer = await poll(client, agent, capacity=2)
    assert sorted((a["run_id"], a["full"]) for a in answer["runs"]) == [(first["id"], True), (second["id"], True)]

    # A run is pending for each job now, and a body that is not the documented one is refused.
    bad = await client.post(f"/api/jobs/{site.jobs[0]}/trigger", headers=admin.headers, json={"fulll": True})
    assert bad.status_code == 422
    assert (await bad.get_json())["fields"][0]["field"] == "fulll"
    listed = await client.post(f"/api/jobs/{site.jobs[0]}/trigger", headers=admin.headers, json=[1])
    assert listed.status_code == 400


async def test_the_oldest_runs_go_first_up_to_the_agents_capacity(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, jobs=3)
    agent = site.agents[0]
    runs = [await trigger(client, admin, job) for job in site.jobs]
    busy = await poll(client, agent, capacity=0)
    assert busy["runs"] == []
    assert (await get(client, admin, f"/api/runs/{runs[0]['id']}"))["status"] == "queued"
    assert [a["run_id"] for a in (await poll(client, agent, capacity=2))["runs"]] == [runs[0]["id"], runs[1]["id"]]
    assert [a["run_id"] for a in (await poll(client, agent, capacity=2))["runs"]] == [runs[2]["id"]]


async def test_concurrent_polls_of_one_store_get_each_run_once(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, jobs=3, agents=4)
    runs = {(await trigger(client, admin, job))["id"] for job in site.jobs}
    answers = await asyncio.gather(*(poll(client, agent) for agent in site.agents))
    handed = [
        (agent.id, a["run_id"]) for agent, answer in zip(site.agents, answers, strict=True) for a in answer["runs"]
    ]
    assert sorted(run for _, run in handed) == sorted(runs)
    for agent_id, run_id in handed:
        assert (await get(client, admin, f"/api/runs/{run_id}"))["agent_id"] == agent_id


async def test_a_retry_waits_for_its_time(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    run = await trigger(client, admin, site.jobs[0])
    await SYS.query(Run).filter(id=run["id"]).update(not_before=datetime.now(UTC) + timedelta(minutes=5))
    assert (await poll(client, site.agents[0]))["runs"] == []
    await SYS.query(Run).filter(id=run["id"]).update(not_before=datetime.now(UTC) - timedelta(seconds=1))
    assert [a["run_id"] for a in (await poll(client, site.agents[0]))["runs"]] == [run["id"]]


async def test_a_run_whose_job_was_deleted_fails_instead_of_being_sent(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    run = await trigger(client, admin, site.jobs[0])
    assert (await client.delete(f"/api/jobs/{site.jobs[0]}", headers=admin.headers)).status_code == 204
    assert (await poll(client, site.agents[0]))["runs"] == []
    failed = await get(client, admin, f"/api/runs/{run['id']}")
    assert failed["status"] == "failed"
    assert "export job (job 0) was deleted" in failed["error"]
    assert failed["finished_at"] is not None
    entry = await SYS.query(LogEntry).get(run_id=run["id"])
    assert (entry.level, entry.store_id) == ("error", site.store)
    assert "was deleted" in entry.message


async def test_a_run_whose_secrets_do_not_decrypt_fails_saying_what_to_do(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    run = await trigger(client, admin, site.jobs[0])
    # Sealed by a key the hub does not have (e.g. a restored database without its key ring).
    await (
        SYS.query(DestinationConfig)
        .filter(id=site.destination)
        .update(secrets_blob="v1:0123456789ab:AAAAAAAAAAAAAAAAAAAA")
    )
    assert (await poll(client, site.agents[0]))["runs"] == []
    failed = await get(client, admin, f"/api/runs/{run['id']}")
    assert failed["status"] == "failed"
    assert "cannot be decrypted" in failed["error"]
    assert "save the destination's secrets again" in failed["error"]


# --- long polls -------------------------------------------------------------------------------------------------


async def test_a_waiting_poll_returns_with_a_run_triggered_meanwhile(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    wait = 15.0
    started = asyncio.get_running_loop().time()
    waiting = asyncio.create_task(poll(client, site.agents[0], wait=wait))
    await until_waiting()
    await asyncio.sleep(0.2)  # let it reach its wait
    run = await trigger(client, admin, site.jobs[0])
    answer = await asyncio.wait_for(waiting, wait + 10)
    assert [a["run_id"] for a in answer["runs"]] == [run["id"]]
    assert asyncio.get_running_loop().time() - started < wait, "the poll ran its whole wait instead of being woken"
    assert WAKEUPS.waiting() == 0


async def test_an_idle_poll_answers_empty_after_its_wait(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await asyncio.wait_for(poll(client, site.agents[0], wait=0.5), 10)
    assert loop.time() - started >= 0.5
    assert (answer["runs"], answer["commands"]) == ([], [])
    assert WAKEUPS.waiting() == 0


async def test_the_hub_caps_how_long_it_holds_a_poll(client: Client, admin: Caller, settings: Settings) -> None:
    site = await make_site(client, admin)
    agent = await SYS.get(Agent, site.agents[0].id)
    capped = settings.model_copy(update={"agent_poll_max_wait_seconds": 0.3})
    box = SecretBox.from_keys(settings.encryption_keys())
    answer = await asyncio.wait_for(dispatch.poll(agent, Heartbeat(wait=60), capped, box, HeartbeatBuffer()), 10)
    assert (answer.runs, answer.commands) == ([], [])


async def test_a_poll_whose_agent_hangs_up_leaves_no_waiter(settings: Settings) -> None:
    # A real hypercorn in this event loop: it tells the app when the agent's connection closes.
    app = create_app(settings, plugins=demo_plugins())
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{_free_port()}"]
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        host, port = config.bind[0].split(":")
        for _ in range(500):
            try:
                _, writer = await asyncio.open_connection(host, int(port))
                break
            except OSError:
                await asyncio.sleep(0.01)
        retailer = await Retailer.create(name="R")
        store = await Store.create(retailer=retailer, name="S")
        token = await create_enrollment_token(SYS, store.id, EnrollmentTokenIn())
        _, credential = await redeem_enrollment_token(token.token, "till")
        body = b'{"wait": 30}'
        writer.write(
            b"POST /agent/v1/poll HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {credential}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        await until_waiting()
        writer.close()  # the agent hangs up
        for _ in range(500):
            if WAKEUPS.waiting() == 0:
                break
            await asyncio.sleep(0.01)
        assert WAKEUPS.waiting() == 0, "a poll of a closed connection still waits"
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)


async def test_an_agent_revoked_while_its_poll_waits_gets_no_work(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    agent = site.agents[0]
    response = asyncio.create_task(client.post("/agent/v1/poll", headers=agent.headers, json={"wait": 15}))
    await until_waiting()
    assert (await client.post(f"/api/agents/{agent.id}/revoke", headers=admin.headers)).status_code == 200
    # The revocation itself wakes the poll: refused long before its 15 s wait runs out.
    refused = await asyncio.wait_for(response, 5)
    assert refused.status_code == 401
    assert "revoked" in (await refused.get_json())["error"]
    run = await trigger(client, admin, site.jobs[0])
    assert (await get(client, admin, f"/api/runs/{run['id']}"))["status"] == "queued"


# --- heartbeats -------------------------------------------------------------------------------------------------


async def test_heartbeats_are_written_in_batches_and_make_the_agent_online(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, agents=2)
    agent = site.agents[0]
    assert (await get(client, admin, f"/api/agents/{agent.id}"))["status"] == "offline"
    health = {"status": "degraded", "message": "the spool is full", "spool_records": 12, "running": [7]}
    plugins = [{"name": "demo-pos", "distribution": "grocerysync-demo", "version": "1.0"}]
    await poll(client, agent, agent_version="2.1.0", os="Windows 11", plugins=plugins, health=health)
    shown: dict[str, Any] = {}
    for _ in range(100):  # the app flushes every 0.1 s here
        shown = await get(client, admin, f"/api/agents/{agent.id}")
        if shown["status"] == "online":
            break
        await asyncio.sleep(0.05)
    assert shown["status"] == "online"
    assert (shown["version"], shown["os"], shown["plugins"]) == ("2.1.0", "Windows 11", plugins)
    assert shown["health"]["message"] == "the spool is full"
    assert shown["health"]["running"] == [7]
    assert (await get(client, admin, f"/api/agents/{site.agents[1].id}"))["status"] == "offline"
    online = await get(client, admin, f"/api/agents?status=online&store_id={site.store}")
    assert [a["id"] for a in online["items"]] == [agent.id]


async def test_the_buffer_writes_nothing_until_it_flushes(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, agents=3)
    buffer = HeartbeatBuffer(batch_size=2)
    for n, agent in enumerate(site.agents):
        buffer.record(agent.id, Heartbeat(agent_version=f"1.{n}"))
    buffer.record(site.agents[0].id, Heartbeat(agent_version="1.9"))  # the newest heartbeat wins
    assert len(buffer) == 3
    assert await SYS.query(Agent).filter(last_seen_at__isnull=False).count() == 0
    assert await buffer.flush() == 3
    assert len(buffer) == 0
    rows = {a.id: a for a in await SYS.query(Agent).filter(store_id=site.store)}
    assert [rows[a.id].version for a in site.agents] == ["1.9", "1.1", "1.2"]
    assert all(rows[a.id].last_seen_at is not None for a in site.agents)
    assert await buffer.flush() == 0


# --- reports on a run -------------------------------------------------------------------------------------------


async def test_ack_progress_and_result(client: Client, admin: Caller, settings: Settings) -> None:
    site, run, assignment = await _assigned(client, admin)
    agent = site.agents[0]
    rid = run["id"]
    acked = await call(client, agent, f"runs/{rid}/ack", {"attempt": 1})
    assert acked["cancel"] is False
    lease = datetime.fromisoformat(acked["lease_expires_at"])
    assert lease > datetime.fromisoformat(assignment["lease_expires_at"])
    assert lease <= datetime.now(UTC) + timedelta(seconds=settings.run_lease_seconds)
    running = await get(client, admin, f"/api/runs/{rid}")
    assert running["status"] == "running"
    assert running["started_at"] is not None
    # Acking again (the answer was lost) answers the same way and keeps the start time.
    assert (await call(client, agent, f"runs/{rid}/ack", {"attempt": 1}))["cancel"] is False
    assert (await get(client, admin, f"/api/runs/{rid}"))["started_at"] == running["started_at"]

    counts = {"read": 120, "sent": 40, "unchanged": 70, "rejected": 3, "filtered": 5, "failed": 2, "removed": 1}
    progress = await call(client, agent, f"runs/{rid}/progress", {"attempt": 1, "phase": "reading", **counts})
    assert progress["cancel"] is False
    shown = await get(client, admin, f"/api/runs/{rid}")
    assert (shown["items_read"], shown["items_written"], shown["items_unchanged"]) == (120, 40, 70)
    assert (shown["items_rejected"], shown["items_filtered"], shown["items_failed"], shown["items_removed"]) == (
        3,
        5,
        2,
        1,
    )
    assert shown["phase"] == "reading"
    assert shown["progress_at"] is not None

    final = {**counts, "read": 200, "sent": 90}
    result = {
        "attempt": 1,
        "status": "partially_failed",
        "warnings": ["3 items had no price"],
        "commit": "uploaded items.csv (90 rows)",
        "duration_s": 12.5,
        "rejections_total": 3,
        **final,
    }
    assert await call(client, agent, f"runs/{rid}/result", result) == {"recorded": 1, "duplicates": 0}
    done = await get(client, admin, f"/api/runs/{rid}")
    assert (done["status"], done["items_read"], done["items_written"]) == ("partially_failed", 200, 90)
    assert done["finished_at"] is not None
    assert done["lease_expires_at"] is None
    assert done["details"]["warnings"] == ["3 items had no price"]
    assert done["details"]["commit"] == "uploaded items.csv (90 rows)"
    assert (done["details"]["duration_s"], done["details"]["rejections_total"]) == (12.5, 3)
    summary = await SYS.query(LogEntry).get(run_id=rid)
    assert summary.level == "warning"
    assert "partially failed" in summary.message
    assert "sent 90" in summary.message

    # The same result again: a duplicate, nothing changes.
    assert await call(client, agent, f"runs/{rid}/result", {**result, "status": "succeeded"}) == {
        "recorded": 0,
        "duplicates": 1,
    }
    assert await get(client, admin, f"/api/runs/{rid}") == done
    # Reports on a finished run are refused: the agent drops them.
    late = await call(client, agent, f"runs/{rid}/progress", {"attempt": 1}, status=409)
    assert f"run {rid} is no longer assigned to this agent" in late["error"]
    assert "partially_failed" in late["error"]


async def test_a_failed_run_is_retried_by_its_jobs_policy(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    agent, job = site.agents[0], site.jobs[0]
    patched = await client.patch(
        f"/api/jobs/{job}", headers=admin.headers, json={"max_retries": 1, "retry_delay_seconds": 60}
    )
    assert patched.status_code == 200, await patched.get_json()
    run = await trigger(client, admin, job)
    failed = {"attempt": 1, "status": "failed", "error": "cannot reach sftp.example.com:22 (connection refused)"}
    for attempt in (1, 2):
        [assignment] = (await poll(client, agent))["runs"]
        assert assignment["attempt"] == attempt
        await call(client, agent, f"runs/{assignment['run_id']}/ack", {"attempt": attempt})
        result = {**failed, "attempt": attempt}
        assert await call(client, agent, f"runs/{assignment['run_id']}/result", result) == {
            "recorded": 1,
            "duplicates": 0,
        }
        # The same failure reported again (its answer was lost) queues nothing more.
        assert (await call(client, agent, f"runs/{assignment['run_id']}/result", result))["duplicates"] == 1
        if attempt == 1:
            first = await get(client, admin, f"/api/runs/{run['id']}")
            assert first["status"] == "failed"
            assert first["error"].startswith(failed["error"] + "; retry queued as run ")
            runs = (await get(client, admin, f"/api/runs?job_id={job}"))["items"]
            retry = runs[0]
            assert (len(runs), retry["trigger"], retry["attempt"], retry["status"]) == (2, "retry", 2, "queued")
            # Not before its delay: nothing for the agent now; then the delay passes.
            assert (await poll(client, agent))["runs"] == []
            await SYS.query(Run).filter(id=retry["id"]).update(not_before=datetime.now(UTC) - timedelta(seconds=1))
    # The second failure used the last attempt: no third run, and the error says only what the agent said.
    runs = (await get(client, admin, f"/api/runs?job_id={job}"))["items"]
    assert [r["status"] for r in runs] == ["failed", "failed"]
    assert runs[0]["error"] == failed["error"]


async def test_reports_for_another_agent_or_attempt_are_refused(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, agents=2)
    queued = await trigger(client, admin, site.jobs[0])
    # Not handed to anyone yet.
    refused = await call(client, site.agents[0], f"runs/{queued['id']}/ack", {"attempt": 1}, status=409)
    assert "was not handed to this agent" in refused["error"]
    [assignment] = (await poll(client, site.agents[0]))["runs"]
    rid = assignment["run_id"]
    other = await call(client, site.agents[1], f"runs/{rid}/ack", {"attempt": 1}, status=409)
    assert "handed to another agent" in other["error"]
    stale = await call(client, site.agents[0], f"runs/{rid}/progress", {"attempt": 2}, status=409)
    assert "attempt 2" in stale["error"]
    result = {"attempt": 1, "status": "succeeded"}
    await call(client, site.agents[1], f"runs/{rid}/result", result, status=409)
    assert (await get(client, admin, f"/api/runs/{rid}"))["status"] == "dispatched"
    missing = await call(client, site.agents[0], "runs/999999/ack", {"attempt": 1}, status=404)
    assert "not a run of this agent's store" in missing["error"]


async def test_a_result_after_the_hub_failed_the_run_is_refused(client: Client, admin: Caller) -> None:
    site, run, _ = await _assigned(client, admin)
    agent = site.agents[0]
    await call(client, agent, f"runs/{run['id']}/ack", {"attempt": 1})
    # What the lease sweeper does when the agent goes quiet for longer than the lease.
    expired = "the agent stopped reporting: lease expired"
    await (
        SYS.query(Run)
        .filter(id=run["id"])
        .update(status=RunStatus.FAILED, error=expired, finished_at=datetime.now(UTC))
    )
    refused = await call(client, agent, f"runs/{run['id']}/result", {"attempt": 1, "status": "succeeded"}, status=409)
    assert "no longer assigned to this agent" in refused["error"]
    assert expired in refused["error"]
    assert (await get(client, admin, f"/api/runs/{run['id']}"))["status"] == "failed"


async def test_rejections_are_stored_once_each_up_to_the_limit(client: Client, admin: Caller) -> None:
    site, run, _ = await _assigned(client, admin)
    agent = site.agents[0]
    rid = run["id"]
    await call(client, agent, f"runs/{rid}/ack", {"attempt": 1})

    def batch(first: int, count: int) -> dict[str, Any]:
        rows = [
            {"ref": f"row {n}" + "x" * 600, "reason": f"bad price {n}", "stage": "validate", "item_id": f"{n:05d}"}
            for n in range(first, first + count)
        ]
        return {"attempt": 1, "first_seq": first, "rejections": rows}

    assert await call(client, agent, f"runs/{rid}/rejections", batch(0, 10)) == {"recorded": 10, "duplicates": 0}
    assert await call(client, agent, f"runs/{rid}/rejections", batch(0, 10)) == {"recorded": 0, "duplicates": 10}
    assert await call(client, agent, f"runs/{rid}/rejections", batch(5, 10)) == {"recorded": 5, "duplicates": 5}
    # Sent twice at once (a retry racing the original): stored once.
    await asyncio.gather(*(call(client, agent, f"runs/{rid}/rejections", batch(15, 5)) for _ in range(2)))
    # Past the hub's limit (KEPT per run): counted, not stored.
    assert await call(client, agent, f"runs/{rid}/rejections", batch(20, 10)) == {"recorded": 10, "duplicates": 0}
    assert await call(client, agent, f"runs/{rid}/rejections", batch(40, 3)) == {"recorded": 3, "duplicates": 0}
    stored = await SYS.query(RunRejection).filter(run_id=rid).order_by("seq").values_list("seq", flat=True)
    assert list(stored) == list(range(KEPT))
    page = await get(client, admin, f"/api/runs/{rid}/rejections?limit=1")
    assert page["total"] == KEPT
    assert len(page["items"][0]["ref"]) == 500  # cut to the column, not refused

    result = {"attempt": 1, "status": "partially_failed", "rejected": 43, "rejections_total": 43}
    await call(client, agent, f"runs/{rid}/result", result)
    details = (await get(client, admin, f"/api/runs/{rid}"))["details"]
    assert (details["rejections_total"], details["rejections_kept"]) == (43, KEPT)
    # The spool may deliver a batch after the result: still accepted, still once.
    assert await call(client, agent, f"runs/{rid}/rejections", batch(0, 2)) == {"recorded": 0, "duplicates": 2}
    # But not from another attempt.
    await call(client, agent, f"runs/{rid}/rejections", {**batch(0, 1), "attempt": 2}, status=409)
