"""Shared set-up of the agent channel tests: a store with a job and enrolled agents, and the agent's calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from conftest import Caller
from quart.typing import TestClientProtocol as Client

from grocerysync.core.wire import AGENT_API_PREFIX
from grocerysync.hub.domain.agents import redeem_enrollment_token
from grocerysync.hub.domain.wake import WAKEUPS

#: The destination's password: it must reach the agent's assignment and nothing else.
PASSWORD = "pw-canary-8d1f0c2e"
API_KEY = "key-canary-77aa01"
P = AGENT_API_PREFIX


@dataclass
class AgentCall:
    """An enrolled agent: its id and the headers that authenticate it."""

    id: int
    credential: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


@dataclass
class Site:
    """A retailer's store with a POS connection, a destination with secrets, export jobs and agents."""

    retailer: int
    store: int
    source: int
    destination: int
    jobs: list[int] = field(default_factory=list)
    agents: list[AgentCall] = field(default_factory=list)


async def make_site(client: Client, admin: Caller, name: str = "R", *, jobs: int = 1, agents: int = 1) -> Site:
    h = admin.headers
    r = await (await client.post("/api/retailers", headers=h, json={"name": name})).get_json()
    s = await (await client.post(f"/api/retailers/{r['id']}/stores", headers=h, json={"name": "S"})).get_json()
    c = await client.post(
        f"/api/stores/{s['id']}/connections",
        headers=h,
        json={"name": "pos", "plugin": "demo-pos", "config": {"path": "p"}},
    )
    d = await client.post(
        f"/api/stores/{s['id']}/destinations",
        headers=h,
        json={
            "name": "d",
            "plugin": "demo-dest",
            "config": {"host": "h"},
            "secrets": {"password": PASSWORD, "api_key": API_KEY},
        },
    )
    site = Site(r["id"], s["id"], (await c.get_json())["id"], (await d.get_json())["id"])
    for n in range(jobs):
        body = {"name": f"job {n}", "source_id": site.source, "destination_id": site.destination}
        made = await client.post(f"/api/stores/{site.store}/jobs", headers=h, json=body)
        assert made.status_code == 201, await made.get_json()
        site.jobs.append((await made.get_json())["id"])
    for n in range(agents):
        token = await (await client.post(f"/api/stores/{site.store}/enrollment-tokens", headers=h, json={})).get_json()
        agent, credential = await redeem_enrollment_token(token["token"], f"till-{n}")
        site.agents.append(AgentCall(agent.id, credential))
    return site


async def trigger(client: Client, admin: Caller, job: int, query: str = "", **body: Any) -> dict[str, Any]:
    response = await client.post(f"/api/jobs/{job}/trigger{query}", headers=admin.headers, json=body or None)
    assert response.status_code == 202, await response.get_json()
    run: dict[str, Any] = await response.get_json()
    return run


async def poll(client: Client, agent: AgentCall, **body: Any) -> dict[str, Any]:
    """One poll; ``wait`` defaults to 0 (answer at once)."""
    response = await client.post(f"{P}/poll", headers=agent.headers, json={"wait": 0, **body})
    assert response.status_code == 200, await response.get_json()
    answer: dict[str, Any] = await response.get_json()
    return answer


async def call(client: Client, agent: AgentCall, path: str, body: dict[str, Any], status: int = 200) -> Any:
    """POST ``body`` to an agent channel path; assert the status and return the JSON answer."""
    response = await client.post(f"{P}/{path}", headers=agent.headers, json=body)
    answer = await response.get_json()
    assert response.status_code == status, answer
    return answer


async def get(client: Client, admin: Caller, url: str) -> Any:
    response = await client.get(url, headers=admin.headers)
    assert response.status_code == 200, await response.get_json()
    return await response.get_json()


async def until_waiting(count: int = 1) -> None:
    """Wait until ``count`` polls of this process wait for a wake-up (they registered and found nothing)."""
    for _ in range(1000):
        if WAKEUPS.waiting() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} poll(s) never started waiting ({WAKEUPS.waiting()} waiting)")
