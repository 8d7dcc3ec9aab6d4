"""Tenant isolation: other tenants' objects answer 404 for every verb, viewers' writes answer 403."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import Caller, make_caller
from quart.typing import TestAppProtocol as RunningApp
from quart.typing import TestClientProtocol as Client

from grocerysync.core.wire import AGENT_API_PREFIX
from grocerysync.hub.domain.agents import redeem_enrollment_token
from grocerysync.hub.models import TENANT_MODELS, Role

HUB_SRC = Path(__file__).parents[1] / "src" / "grocerysync" / "hub"


@dataclass
class Tenant:
    retailer: int
    store: int
    connection: int
    destination: int
    job: int = 0
    run: int = 0
    agent: int = 0
    enrollment_token: int = 0
    command: int = 0
    credential: str = ""

    @property
    def agent_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


async def _tenant(client: Client, admin: Caller, name: str) -> Tenant:
    h = admin.headers
    retailer = (await (await client.post("/api/retailers", headers=h, json={"name": name})).get_json())["id"]
    store = (await (await client.post(f"/api/retailers/{retailer}/stores", headers=h, json={"name": "S"})).get_json())[
        "id"
    ]
    conn = await client.post(
        f"/api/stores/{store}/connections",
        headers=h,
        json={"name": "pos", "plugin": "demo-pos", "config": {"path": "p"}},
    )
    dest = await client.post(
        f"/api/stores/{store}/destinations",
        headers=h,
        json={"name": "d", "plugin": "demo-dest", "config": {"host": "h"}, "secrets": {"password": "pw"}},
    )
    t = Tenant(retailer, store, (await conn.get_json())["id"], (await dest.get_json())["id"])
    job = await client.post(f"/api/stores/{store}/jobs", headers=h, json=_job_body(t))
    t.job = (await job.get_json())["id"]
    t.run = (await (await client.post(f"/api/jobs/{t.job}/trigger", headers=h)).get_json())["id"]
    tokens = f"/api/stores/{store}/enrollment-tokens"
    used = await (await client.post(tokens, headers=h, json={})).get_json()
    agent, t.credential = await redeem_enrollment_token(used["token"], f"{name} till")
    t.agent = agent.id
    t.enrollment_token = (await (await client.post(tokens, headers=h, json={})).get_json())["id"]
    command = await client.post(f"/api/agents/{t.agent}/commands", headers=h, json={"type": "diagnostics"})
    t.command = (await command.get_json())["id"]
    return t


def _job_body(t: Tenant) -> dict[str, Any]:
    return {"name": "j", "source_id": t.connection, "destination_id": t.destination, "schedule": "0 6 * * *"}


def _requests(t: Tenant) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, url rule filled with tenant t's ids, body) for every tenant-owned object endpoint."""
    return [
        ("GET", f"/api/retailers/{t.retailer}", None),
        ("PATCH", f"/api/retailers/{t.retailer}", {"notes": "changed"}),
        ("DELETE", f"/api/retailers/{t.retailer}", None),
        ("POST", f"/api/retailers/{t.retailer}/stores", {"name": "new"}),
        ("GET", f"/api/stores/{t.store}", None),
        ("PATCH", f"/api/stores/{t.store}", {"pos_type": "changed"}),
        ("DELETE", f"/api/stores/{t.store}", None),
        ("POST", f"/api/stores/{t.store}/connections", {"name": "n", "plugin": "demo-pos", "config": {"path": "x"}}),
        (
            "POST",
            f"/api/stores/{t.store}/destinations",
            {"name": "n", "plugin": "demo-dest", "config": {"host": "x"}, "secrets": {"password": "x"}},
        ),
        ("GET", f"/api/connections/{t.connection}", None),
        ("PATCH", f"/api/connections/{t.connection}", {"name": "changed"}),
        ("DELETE", f"/api/connections/{t.connection}", None),
        ("GET", f"/api/destinations/{t.destination}", None),
        ("PATCH", f"/api/destinations/{t.destination}", {"name": "changed"}),
        ("DELETE", f"/api/destinations/{t.destination}", None),
        ("POST", f"/api/stores/{t.store}/jobs", _job_body(t)),
        ("GET", f"/api/jobs/{t.job}", None),
        ("PATCH", f"/api/jobs/{t.job}", {"name": "changed"}),
        ("DELETE", f"/api/jobs/{t.job}", None),
        ("POST", f"/api/jobs/{t.job}/enable", None),
        ("POST", f"/api/jobs/{t.job}/disable", None),
        ("POST", f"/api/jobs/{t.job}/trigger", None),
        ("GET", f"/api/jobs/{t.job}/spec", None),
        ("GET", f"/api/runs/{t.run}", None),
        ("GET", f"/api/runs/{t.run}/rejections", None),
        ("POST", f"/api/runs/{t.run}/cancel", None),
        ("POST", f"/api/stores/{t.store}/enrollment-tokens", {"expires_in_hours": 1}),
        ("GET", f"/api/stores/{t.store}/enrollment-tokens", None),
        ("DELETE", f"/api/enrollment-tokens/{t.enrollment_token}", None),
        ("GET", f"/api/agents/{t.agent}", None),
        ("POST", f"/api/agents/{t.agent}/revoke", None),
        ("POST", f"/api/agents/{t.agent}/commands", {"type": "reload"}),
        ("GET", f"/api/agents/{t.agent}/commands", None),
        ("GET", f"/api/agents/{t.agent}/commands/{t.command}", None),
    ]


def _account_requests(user: int, token: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Users and tokens are not tenant-owned: people other than admins see only their own (others answer 404)."""
    return [
        ("GET", f"/api/users/{user}", None),
        ("PATCH", f"/api/users/{user}", {"role": "admin"}),
        ("DELETE", f"/api/tokens/{token}", None),
    ]


def _rule_of(url: str) -> str:
    return re.sub(r"/\d+", "/<id>", url)


async def test_every_object_endpoint_is_in_the_matrix(test_app: RunningApp) -> None:
    app = test_app.app  # type: ignore[attr-defined]
    routes = {
        (method, re.sub(r"<int:\w+>", "<id>", rule.rule))
        for rule in app.url_map.iter_rules()
        if "<int:" in rule.rule and not rule.rule.startswith(AGENT_API_PREFIX)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    ids = Tenant(1, 2, 3, 4, 5, 6, 9, 10, command=11)
    covered = {(m, _rule_of(u)) for m, u, _ in _requests(ids) + _account_requests(7, 8)}
    assert routes == covered, "add new object endpoints to the cross-tenant matrix"


async def test_cross_tenant_matrix(client: Client, admin: Caller) -> None:
    a = await _tenant(client, admin, "Retailer A")
    b = await _tenant(client, admin, "Retailer B")
    tech_a = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[a.retailer])
    viewer_a = await make_caller("viewer@example.com", Role.VIEWER, retailers=[a.retailer])
    before_b = {
        url: await (await client.get(url, headers=admin.headers)).get_json() for m, url, _ in _requests(b) if m == "GET"
    }

    # Another tenant's objects: 404 for every verb, for technicians and viewers alike, and no data in the body.
    for caller in (tech_a, viewer_a):
        for method, url, body in _requests(b):
            response = await client.open(url, method=method, headers=caller.headers, json=body)
            assert response.status_code == 404, (caller.email, method, url, response.status_code)
            text = await response.get_data(as_text=True)
            assert "Retailer B" not in text
            assert "demo-dest" not in text

    # Their own tenant: viewers read but every write is 403; technicians read.
    for method, url, body in _requests(a):
        response = await client.open(url, method=method, headers=viewer_a.headers, json=body)
        assert response.status_code == (200 if method == "GET" else 403), (method, url, response.status_code)
        if method == "GET":
            assert (await client.get(url, headers=tech_a.headers)).status_code == 200
    assert (await client.post("/api/retailers", headers=viewer_a.headers, json={"name": "V"})).status_code == 403
    # Technicians assigned to some retailers cannot add tenants.
    assert (await client.post("/api/retailers", headers=tech_a.headers, json={"name": "T"})).status_code == 403

    # Lists show only the caller's tenant; the admin sees both.
    lists = ("/api/retailers", "/api/stores", "/api/connections", "/api/destinations", "/api/jobs", "/api/runs")
    for url in (*lists, "/api/agents"):
        mine = await (await client.get(url, headers=tech_a.headers)).get_json()
        assert {i.get("retailer_id", i["id"]) for i in mine["items"]} == {a.retailer}, url
        assert mine["total"] == 1
        everything = await (await client.get(url, headers=admin.headers)).get_json()
        assert everything["total"] == 2
    filtered = await client.get(f"/api/stores?retailer_id={b.retailer}", headers=tech_a.headers)
    assert (await filtered.get_json())["items"] == []

    # Nothing of B's changed.
    for url, body in before_b.items():
        assert await (await client.get(url, headers=admin.headers)).get_json() == body


async def test_technician_writes_own_tenant(client: Client, admin: Caller) -> None:
    a = await _tenant(client, admin, "Retailer A")
    tech = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[a.retailer])
    patched = await client.patch(f"/api/stores/{a.store}", headers=tech.headers, json={"pos_type": "counterpoint"})
    assert (await patched.get_json())["pos_type"] == "counterpoint"
    # Deleting a tenant is an admin's job.
    assert (await client.delete(f"/api/retailers/{a.retailer}", headers=tech.headers)).status_code == 403
    assert (await client.delete(f"/api/retailers/{a.retailer}", headers=admin.headers)).status_code == 204
    assert (await client.get(f"/api/stores/{a.store}", headers=admin.headers)).status_code == 404


_TENANT_NAMES = "|".join(m.__name__ for m in TENANT_MODELS)
_DIRECT_QUERY = re.compile(
    rf"\b({_TENANT_NAMES})\.(filter|all|get|get_or_none|exclude|first|exists|annotate|raw|select_for_update|in_bulk)\("
)


def test_tenant_owned_models_are_queried_only_through_the_scope() -> None:
    offenders = []
    for path in HUB_SRC.rglob("*.py"):
        if path.name == "scope.py" or "migrations" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _DIRECT_QUERY.search(line):
                offenders.append(f"{path.relative_to(HUB_SRC)}:{number}: {line.strip()}")
    assert offenders == [], "query tenant-owned models through Scope.query/Scope.get"
    # The pattern does catch a direct query.
    assert _DIRECT_QUERY.search("rows = await Store.filter(name='x')")


def test_blueprints_hold_transport_only() -> None:
    for path in (HUB_SRC / "api").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "grocerysync.hub.models" not in text, f"{path.name} imports models: move the work to domain/"
    for path in (HUB_SRC / "domain").glob("*.py"):
        assert "quart" not in path.read_text(encoding="utf-8"), f"{path.name} imports Quart"


async def test_cross_account_matrix(client: Client, admin: Caller) -> None:
    a = await _tenant(client, admin, "Retailer A")
    b = await _tenant(client, admin, "Retailer B")
    tech_a = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[a.retailer])
    viewer_a = await make_caller("viewer@example.com", Role.VIEWER, retailers=[a.retailer])
    tech_b = await make_caller("tech-b@example.com", Role.TECHNICIAN, retailers=[b.retailer])
    users = {
        u["email"]: u["id"] for u in (await (await client.get("/api/users", headers=admin.headers)).get_json())["items"]
    }
    tokens = {}
    for caller in (tech_b, viewer_a):
        made = await client.post("/api/tokens", headers=caller.headers, json={"name": "t"})
        tokens[caller.email] = (await made.get_json())["id"]

    # Someone else's account and tokens: 404 for every verb, and nothing about them in the body.
    for caller in (tech_a, viewer_a):
        for other in ("tech-b@example.com", "admin@example.com"):
            for method, url, body in _account_requests(users[other], tokens["tech-b@example.com"]):
                response = await client.open(url, method=method, headers=caller.headers, json=body)
                assert response.status_code == 404, (caller.email, method, url, response.status_code)
                assert other not in await response.get_data(as_text=True)
    # Their own: they read it, but only admins change users; their own tokens they may revoke.
    own_user, own_token = users["viewer@example.com"], tokens["viewer@example.com"]
    expected = {"GET": 200, "PATCH": 403, "DELETE": 204}
    for method, url, body in _account_requests(own_user, own_token):
        response = await client.open(url, method=method, headers=viewer_a.headers, json=body)
        assert response.status_code == expected[method], (method, url, response.status_code)
    assert (await client.get(f"/api/users/{users['tech-b@example.com']}", headers=admin.headers)).status_code == 200


# --- the agent channel: an agent sees only its own store's runs and its own commands -------------------------


def _agent_requests(t: Tenant) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, url, valid body) of every agent channel route about one run or command of tenant t."""
    rejection = {"ref": "row 1", "reason": "no price", "stage": "validate"}
    return [
        ("POST", f"{AGENT_API_PREFIX}/runs/{t.run}/ack", {"attempt": 1}),
        ("POST", f"{AGENT_API_PREFIX}/runs/{t.run}/progress", {"attempt": 1, "read": 5}),
        (
            "POST",
            f"{AGENT_API_PREFIX}/runs/{t.run}/rejections",
            {"attempt": 1, "first_seq": 0, "rejections": [rejection]},
        ),
        ("POST", f"{AGENT_API_PREFIX}/runs/{t.run}/result", {"attempt": 1, "status": "succeeded", "read": 5}),
        ("POST", f"{AGENT_API_PREFIX}/commands/{t.command}/result", {"ok": True, "message": "done"}),
    ]


async def _poll(client: Client, t: Tenant) -> dict[str, Any]:
    response = await client.post(f"{AGENT_API_PREFIX}/poll", headers=t.agent_headers, json={"wait": 0})
    assert response.status_code == 200, await response.get_json()
    answer: dict[str, Any] = await response.get_json()
    return answer


async def test_every_agent_route_is_in_the_agent_matrix(test_app: RunningApp) -> None:
    app = test_app.app  # type: ignore[attr-defined]
    routes = {
        (method, re.sub(r"<int:\w+>", "<id>", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("agent_channel.") and rule.endpoint != "agent_channel.enroll"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    covered = {(m, _rule_of(u)) for m, u, _ in _agent_requests(Tenant(1, 2, 3, 4, run=6, command=11))}
    assert routes == covered | {("POST", f"{AGENT_API_PREFIX}/poll")}, "add new agent routes to the agent matrix"


async def test_agents_cannot_touch_other_stores_runs_or_other_agents_commands(client: Client, admin: Caller) -> None:
    a = await _tenant(client, admin, "Retailer A")
    b = await _tenant(client, admin, "Retailer B")
    # Each agent takes its own store's run and command.
    for t in (a, b):
        answer = await _poll(client, t)
        assert [r["run_id"] for r in answer["runs"]] == [t.run]
        assert [c["id"] for c in answer["commands"]] == [t.command]
    run_b = await (await client.get(f"/api/runs/{b.run}", headers=admin.headers)).get_json()
    command_b = await (
        await client.get(f"/api/agents/{b.agent}/commands/{b.command}", headers=admin.headers)
    ).get_json()

    # Agent A reporting on B's run or answering B's command: 404, as if neither existed.
    for method, url, body in _agent_requests(b):
        response = await client.open(url, method=method, headers=a.agent_headers, json=body)
        assert response.status_code == 404, (method, url, response.status_code)
        assert "Retailer B" not in await response.get_data(as_text=True)
    assert await (await client.get(f"/api/runs/{b.run}", headers=admin.headers)).get_json() == run_b
    assert (await (await client.get(f"/api/runs/{b.run}/rejections", headers=admin.headers)).get_json())["total"] == 0
    after = await (await client.get(f"/api/agents/{b.agent}/commands/{b.command}", headers=admin.headers)).get_json()
    assert after == command_b

    # The same requests from B's own agent are accepted: the 404s above came from the isolation, not the bodies.
    for method, url, body in _agent_requests(b):
        response = await client.open(url, method=method, headers=b.agent_headers, json=body)
        assert response.status_code == 200, (method, url, await response.get_json())
    finished = await (await client.get(f"/api/runs/{b.run}", headers=admin.headers)).get_json()
    assert (finished["status"], finished["items_read"]) == ("succeeded", 5)


async def test_a_revoked_agent_gets_401_on_every_agent_route(client: Client, admin: Caller) -> None:
    a = await _tenant(client, admin, "Retailer A")
    await _poll(client, a)
    assert (await client.post(f"/api/agents/{a.agent}/revoke", headers=admin.headers)).status_code == 200
    requests = [("POST", f"{AGENT_API_PREFIX}/poll", {"wait": 0}), *_agent_requests(a)]
    for method, url, body in requests:
        response = await client.open(url, method=method, headers=a.agent_headers, json=body)
        assert response.status_code == 401, (method, url, response.status_code)
        error = (await response.get_json())["error"]
        assert "was revoked" in error, error
        assert "enroll it again" in error, error
        # No credential at all: 401 saying how to send one.
        response = await client.open(url, method=method, json=body)
        assert response.status_code == 401
        assert "Authorization: Bearer" in (await response.get_json())["error"]
