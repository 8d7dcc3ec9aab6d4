"""Commands to agents (reload, diagnostics) and cancelling runs: delivered once with a poll, answered once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from conftest import Caller, make_caller
from dispatch_helpers import call, get, make_site, poll, trigger, until_waiting
from quart.typing import TestClientProtocol as Client

from grocerysync.hub.models import AgentCommand, AuditEntry, Role
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.settings import Settings

SYS = Scope(SYSTEM)


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    """No scheduler (lease expiry) running behind the tests' backs."""
    return settings.model_copy(update={"scheduler_interval_seconds": 0})


async def _command(client: Client, caller: Caller, agent: int, kind: str, status: int = 201) -> Any:
    response = await client.post(f"/api/agents/{agent}/commands", headers=caller.headers, json={"type": kind})
    answer = await response.get_json()
    assert response.status_code == status, answer
    return answer


async def test_a_command_is_delivered_once_and_its_result_kept(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, agents=2)
    agent, other = site.agents
    made = await _command(client, admin, agent.id, "diagnostics")
    assert (made["status"], made["type"], made["agent_id"], made["created_by"]) == (
        "pending",
        "diagnostics",
        agent.id,
        admin.email,
    )
    audit = await SYS.query(AuditEntry).get(object_type="AgentCommand", action="create")
    assert (audit.retailer_id, audit.object_id) == (site.retailer, str(made["id"]))

    # Only its own agent gets it, once.
    assert (await poll(client, other))["commands"] == []
    assert (await poll(client, agent))["commands"] == [{"id": made["id"], "type": "diagnostics", "run_id": None}]
    assert (await poll(client, agent))["commands"] == []
    url = f"/api/agents/{agent.id}/commands/{made['id']}"
    delivered = await get(client, admin, url)
    assert delivered["status"] == "delivered"
    assert delivered["delivered_at"] is not None

    # Another agent cannot answer it, even of the same store.
    await call(client, other, f"commands/{made['id']}/result", {"ok": True}, status=404)
    report = {"ok": True, "message": "diagnostics attached", "data": {"disk_free_mb": 5120, "plugins": ["demo-pos"]}}
    assert await call(client, agent, f"commands/{made['id']}/result", report) == {"recorded": 1, "duplicates": 0}
    done = await get(client, admin, url)
    assert (done["status"], done["message"], done["result"]) == ("done", "diagnostics attached", report["data"])
    assert done["completed_at"] is not None
    # Sent again (the answer was lost): a duplicate, nothing changes.
    again = {"ok": False, "message": "other"}
    assert await call(client, agent, f"commands/{made['id']}/result", again) == {"recorded": 0, "duplicates": 1}
    assert await get(client, admin, url) == done

    failing = await _command(client, admin, agent.id, "reload")
    await poll(client, agent)
    await call(client, agent, f"commands/{failing['id']}/result", {"ok": False, "message": "config file is locked"})
    failed = await get(client, admin, f"/api/agents/{agent.id}/commands/{failing['id']}")
    assert (failed["status"], failed["message"]) == ("failed", "config file is locked")

    listed = await get(client, admin, f"/api/agents/{agent.id}/commands")
    assert [c["id"] for c in listed["items"]] == [failing["id"], made["id"]]  # newest first
    only_done = await get(client, admin, f"/api/agents/{agent.id}/commands?status=done&limit=1")
    assert ([c["id"] for c in only_done["items"]], only_done["total"]) == ([made["id"]], 1)
    # A command of one agent is not found under another.
    response = await client.get(f"/api/agents/{other.id}/commands/{made['id']}", headers=admin.headers)
    assert response.status_code == 404


async def test_an_unanswered_command_is_delivered_again(client: Client, admin: Caller, settings: Settings) -> None:
    site = await make_site(client, admin, agents=1)
    (agent,) = site.agents
    made = await _command(client, admin, agent.id, "diagnostics")
    expected = [{"id": made["id"], "type": "diagnostics", "run_id": None}]
    assert (await poll(client, agent))["commands"] == expected
    # Within the redelivery time the agent may still be answering: not again.
    assert (await poll(client, agent))["commands"] == []
    # The answer never came (the poll's answer was lost, or the agent died): after the redelivery time, again, once.
    row = await SYS.query(AgentCommand).get(id=made["id"])
    await (
        SYS.query(AgentCommand)
        .filter(id=row.id)
        .update(delivered_at=row.delivered_at - timedelta(seconds=settings.command_redeliver_seconds + 1))
    )
    assert (await poll(client, agent))["commands"] == expected
    assert (await poll(client, agent))["commands"] == []
    await call(client, agent, f"commands/{made['id']}/result", {"ok": True, "message": "sent"})
    await SYS.query(AgentCommand).filter(id=row.id).update(delivered_at=row.delivered_at - timedelta(days=1))
    assert (await poll(client, agent))["commands"] == []  # answered: never again


async def test_a_command_wakes_the_agents_waiting_poll(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    wait = 15.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(poll(client, site.agents[0], wait=wait))
    await until_waiting()
    await asyncio.sleep(0.2)  # let it reach its wait
    made = await _command(client, admin, site.agents[0].id, "reload")
    answer = await asyncio.wait_for(waiting, wait + 10)
    assert [c["id"] for c in answer["commands"]] == [made["id"]]
    assert loop.time() - started < wait, "the poll ran its whole wait instead of being woken"


async def test_who_may_send_commands(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    agent = site.agents[0].id
    viewer = await make_caller("viewer@example.com", Role.VIEWER, retailers=[site.retailer])
    assert "viewer" in (await _command(client, viewer, agent, "reload", status=403))["error"]
    assert (await get(client, viewer, f"/api/agents/{agent}/commands"))["total"] == 0
    refused = await client.post(f"/api/agents/{agent}/commands", headers=admin.headers, json={"type": "cancel"})
    assert refused.status_code == 422  # runs are cancelled through the run
    await client.post(f"/api/agents/{agent}/revoke", headers=admin.headers)
    revoked = await _command(client, admin, agent, "diagnostics", status=409)
    assert "revoked" in revoked["error"]


# --- cancelling runs --------------------------------------------------------------------------------------------


async def test_cancelling_a_queued_run_ends_it_at_once(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    run = await trigger(client, admin, site.jobs[0])
    response = await client.post(f"/api/runs/{run['id']}/cancel", headers=admin.headers)
    assert response.status_code == 200
    cancelled = await response.get_json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert admin.email in cancelled["error"]
    assert (await poll(client, site.agents[0]))["runs"] == []
    again = await client.post(f"/api/runs/{run['id']}/cancel", headers=admin.headers)
    assert again.status_code == 409
    assert "already cancelled" in (await again.get_json())["error"]
    entry = await SYS.query(AuditEntry).get(object_type="Run", action="cancel")
    assert (entry.before or {})["status"] == "queued"
    assert (entry.after or {})["status"] == "cancelled"
    # The job can run again.
    await trigger(client, admin, site.jobs[0])


async def test_cancelling_a_running_run_goes_through_its_agent(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, agents=2)
    agent = site.agents[0]
    run = await trigger(client, admin, site.jobs[0])
    rid = run["id"]
    [assignment] = (await poll(client, agent))["runs"]
    await call(client, agent, f"runs/{rid}/ack", {"attempt": assignment["attempt"]})

    # The agent's poll is waiting when the technician cancels: it is woken with the cancel command.
    waiting = asyncio.create_task(poll(client, agent, wait=15, capacity=0))
    await until_waiting()
    asked = await client.post(f"/api/runs/{rid}/cancel", headers=admin.headers)
    assert asked.status_code == 200
    shown = await asked.get_json()
    assert (shown["status"], shown["agent_id"]) == ("running", agent.id)
    assert shown["cancel_requested_at"] is not None
    answer = await asyncio.wait_for(waiting, 25)
    [command] = answer["commands"]
    assert (command["type"], command["run_id"]) == ("cancel", rid)
    # Only the run's agent hears of it.
    assert (await poll(client, site.agents[1]))["commands"] == []

    # Cancelling twice sends one command; progress reports say to stop.
    assert (await client.post(f"/api/runs/{rid}/cancel", headers=admin.headers)).status_code == 200
    commands = await get(client, admin, f"/api/agents/{agent.id}/commands")
    assert [(c["type"], c["run_id"]) for c in commands["items"]] == [("cancel", rid)]
    progress = await call(client, agent, f"runs/{rid}/progress", {"attempt": 1, "read": 10})
    assert progress["cancel"] is True
    assert (await call(client, agent, f"runs/{rid}/ack", {"attempt": 1}))["cancel"] is True

    await call(client, agent, f"commands/{command['id']}/result", {"ok": True})
    await call(client, agent, f"runs/{rid}/result", {"attempt": 1, "status": "cancelled", "read": 10})
    finished = await get(client, admin, f"/api/runs/{rid}")
    assert (finished["status"], finished["items_read"]) == ("cancelled", 10)
    late = await client.post(f"/api/runs/{rid}/cancel", headers=admin.headers)
    assert late.status_code == 409


async def test_viewers_cannot_cancel(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    run = await trigger(client, admin, site.jobs[0])
    viewer = await make_caller("viewer@example.com", Role.VIEWER, retailers=[site.retailer])
    assert (await client.post(f"/api/runs/{run['id']}/cancel", headers=viewer.headers)).status_code == 403
    assert (await get(client, admin, f"/api/runs/{run['id']}"))["status"] == "queued"
