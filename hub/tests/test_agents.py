"""Agents and enrollment tokens: one-time, expiring tokens traded for revocable credentials; derived status."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from conftest import Caller, make_caller
from quart.typing import TestClientProtocol as Client

from grocerysync.hub.domain.agents import (
    EnrollmentRefused,
    agent_status,
    authenticate_agent,
    redeem_enrollment_token,
)
from grocerysync.hub.errors import Invalid, Unauthorized
from grocerysync.hub.models import Agent, AuditEntry, EnrollmentToken, Role
from grocerysync.hub.schemas_agents import AgentStatus
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.settings import Settings

SYS = Scope(SYSTEM)


async def _store(client: Client, admin: Caller, name: str = "R") -> tuple[int, int]:
    h = admin.headers
    r = await (await client.post("/api/retailers", headers=h, json={"name": name})).get_json()
    s = await (await client.post(f"/api/retailers/{r['id']}/stores", headers=h, json={"name": "S"})).get_json()
    return r["id"], s["id"]


async def _token(client: Client, caller: Caller, store: int, **body: float) -> dict[str, object]:
    response = await client.post(f"/api/stores/{store}/enrollment-tokens", headers=caller.headers, json=body)
    assert response.status_code == 201, await response.get_json()
    made: dict[str, object] = await response.get_json()
    return made


async def test_token_is_shown_once_and_expires_in_a_day_by_default(client: Client, admin: Caller) -> None:
    _, store = await _store(client, admin)
    made = await _token(client, admin, store)
    token = str(made["token"])
    assert token.startswith("gse_")
    assert len(token) > 40
    assert token.startswith(str(made["prefix"]))
    expires = datetime.fromisoformat(str(made["expires_at"]))
    assert timedelta(hours=23, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=24)
    assert made["used_at"] is None

    listed = await client.get(f"/api/stores/{store}/enrollment-tokens", headers=admin.headers)
    text = await listed.get_data(as_text=True)
    assert token not in text
    assert [t["id"] for t in (await listed.get_json())["items"]] == [made["id"]]
    # The database holds only the hash.
    row = await SYS.get(EnrollmentToken, made["id"])
    assert token not in (row.token_hash, row.prefix)
    entry = await SYS.query(AuditEntry).get(object_type="EnrollmentToken", action="create")
    assert token not in str(entry.after)

    week = await _token(client, admin, store, expires_in_hours=168)
    assert datetime.fromisoformat(str(week["expires_at"])) - datetime.now(UTC) > timedelta(days=6, hours=23)


@pytest.mark.parametrize("hours", [0, -1, 169, 24 * 30])
async def test_token_lifetime_is_bounded(client: Client, admin: Caller, hours: int) -> None:
    _, store = await _store(client, admin)
    response = await client.post(
        f"/api/stores/{store}/enrollment-tokens", headers=admin.headers, json={"expires_in_hours": hours}
    )
    assert response.status_code == 422
    assert [f["field"] for f in (await response.get_json())["fields"]] == ["expires_in_hours"]


async def test_redeem_makes_an_agent_whose_credential_authenticates(client: Client, admin: Caller) -> None:
    retailer, store = await _store(client, admin)
    made = await _token(client, admin, store)
    agent, credential = await redeem_enrollment_token(
        f" {made['token']} ", "till-01", version="1.2.0", os="Windows 11", plugins=[{"name": "x", "version": "1"}]
    )
    assert credential.startswith("gsa_")
    assert (agent.retailer_id, agent.store_id, agent.name) == (retailer, store, "till-01")
    assert credential not in (agent.credential_hash, agent.credential_prefix)
    assert (await authenticate_agent(credential)).id == agent.id

    shown = await (await client.get(f"/api/agents/{agent.id}", headers=admin.headers)).get_json()
    assert shown["status"] == "offline"  # enrolled, but no heartbeat yet
    assert (shown["version"], shown["os"], shown["plugins"]) == ("1.2.0", "Windows 11", [{"name": "x", "version": "1"}])
    assert credential not in str(shown)
    listed = await (await client.get(f"/api/stores/{store}/enrollment-tokens", headers=admin.headers)).get_json()
    assert listed["items"][0]["used_by_id"] == agent.id
    assert listed["items"][0]["used_at"] is not None
    enrolled = await SYS.query(AuditEntry).get(action="enroll")
    assert (enrolled.retailer_id, enrolled.object_id) == (retailer, str(agent.id))


async def test_unknown_used_and_expired_tokens_are_refused_distinctly(client: Client, admin: Caller) -> None:
    _, store = await _store(client, admin)
    with pytest.raises(EnrollmentRefused, match="unknown") as unknown:
        await redeem_enrollment_token("gse_nothing-like-this", "host")
    assert unknown.value.reason == "unknown"

    used = await _token(client, admin, store)
    await redeem_enrollment_token(str(used["token"]), "host")
    with pytest.raises(EnrollmentRefused, match="already used") as again:
        await redeem_enrollment_token(str(used["token"]), "other-host")
    assert again.value.reason == "used"

    old = await _token(client, admin, store)
    await SYS.query(EnrollmentToken).filter(id=old["id"]).update(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(EnrollmentRefused, match="expired") as expired:
        await redeem_enrollment_token(str(old["token"]), "host")
    assert expired.value.reason == "expired"
    assert expired.value.status == 401

    fresh = await _token(client, admin, store)
    with pytest.raises(Invalid, match="host name"):
        await redeem_enrollment_token(str(fresh["token"]), "   ")
    # Only the one good redeem made an agent, and a refused host name did not spend the token.
    assert await SYS.query(Agent).count() == 1
    await redeem_enrollment_token(str(fresh["token"]), "host-2")


async def test_concurrent_redeems_of_one_token_make_exactly_one_agent(client: Client, admin: Caller) -> None:
    _, store = await _store(client, admin)
    made = await _token(client, admin, store)
    outcomes = await asyncio.gather(
        *(redeem_enrollment_token(str(made["token"]), f"host-{i}") for i in range(5)), return_exceptions=True
    )
    winners = [o for o in outcomes if isinstance(o, tuple)]
    losers = [o for o in outcomes if not isinstance(o, tuple)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, EnrollmentRefused) and o.reason == "used" for o in losers), outcomes
    assert await SYS.query(Agent).count() == 1
    row = await SYS.get(EnrollmentToken, made["id"])
    assert row.used_by_id == winners[0][0].id


async def test_delete_revokes_only_unused_tokens(client: Client, admin: Caller) -> None:
    _, store = await _store(client, admin)
    unused = await _token(client, admin, store)
    assert (await client.delete(f"/api/enrollment-tokens/{unused['id']}", headers=admin.headers)).status_code == 204
    with pytest.raises(EnrollmentRefused) as refused:
        await redeem_enrollment_token(str(unused["token"]), "host")
    assert refused.value.reason == "unknown"

    used = await _token(client, admin, store)
    agent, _ = await redeem_enrollment_token(str(used["token"]), "host")
    response = await client.delete(f"/api/enrollment-tokens/{used['id']}", headers=admin.headers)
    assert response.status_code == 409
    assert f"/api/agents/{agent.id}/revoke" in (await response.get_json())["error"]
    actions = [e.action for e in await SYS.query(AuditEntry).filter(object_type="EnrollmentToken").order_by("id")]
    assert actions == ["create", "delete", "create"]


async def test_revoked_agents_cannot_authenticate(client: Client, admin: Caller) -> None:
    retailer, store = await _store(client, admin)
    tech = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[retailer])
    agent, credential = await redeem_enrollment_token(str((await _token(client, tech, store))["token"]), "till")
    revoked = await client.post(f"/api/agents/{agent.id}/revoke", headers=tech.headers)
    assert (await revoked.get_json())["status"] == "revoked"
    with pytest.raises(Unauthorized, match="revoked"):
        await authenticate_agent(credential)
    with pytest.raises(Unauthorized, match="unknown"):
        await authenticate_agent(credential + "x")
    # Revoking again changes nothing and records nothing.
    assert (await client.post(f"/api/agents/{agent.id}/revoke", headers=tech.headers)).status_code == 200
    entries = await SYS.query(AuditEntry).filter(object_type="Agent", action="revoke")
    assert [(e.actor, e.before["status"], e.after["status"]) for e in entries] == [  # type: ignore[index]
        ("tech@example.com", "offline", "revoked")
    ]


async def test_status_filter_and_pagination(client: Client, admin: Caller) -> None:
    _, store = await _store(client, admin)
    _, other_store = await _store(client, admin, "Other")
    now = datetime.now(UTC)
    seen = {"online": now - timedelta(seconds=10), "stale": now - timedelta(minutes=5), "offline": None}
    ids: dict[str, int] = {}
    for name in ("online", "stale", "offline", "old", "revoked"):
        agent, _ = await redeem_enrollment_token(str((await _token(client, admin, store))["token"]), name)
        ids[name] = agent.id
    await redeem_enrollment_token(str((await _token(client, admin, other_store))["token"]), "elsewhere")
    for name, at in seen.items():
        await SYS.query(Agent).filter(id=ids[name]).update(last_seen_at=at)
    await SYS.query(Agent).filter(id=ids["old"]).update(last_seen_at=now - timedelta(hours=2))
    await SYS.query(Agent).filter(id=ids["revoked"]).update(last_seen_at=now, revoked_at=now)

    async def names(query: str) -> list[str]:
        page = await (await client.get(f"/api/agents?store_id={store}&{query}", headers=admin.headers)).get_json()
        return [a["name"] for a in page["items"]]

    assert await names("status=online") == ["online"]
    assert await names("status=stale") == ["stale"]
    assert await names("status=offline") == ["offline", "old"]
    assert await names("status=revoked") == ["revoked"]
    assert await names("limit=2&offset=1") == ["stale", "offline"]
    everything = await (await client.get("/api/agents", headers=admin.headers)).get_json()
    assert everything["total"] == 6
    assert {a["name"]: a["status"] for a in everything["items"]}["old"] == "offline"
    bad = await client.get("/api/agents?status=asleep", headers=admin.headers)
    assert bad.status_code == 422


def test_status_thresholds_come_from_settings() -> None:
    now = datetime.now(UTC)
    agent = Agent(name="a", last_seen_at=now - timedelta(seconds=120), revoked_at=None)
    assert agent_status(agent, Settings(), now) is AgentStatus.STALE
    assert agent_status(agent, Settings(agent_online_seconds=180), now) is AgentStatus.ONLINE
    assert agent_status(agent, Settings(agent_online_seconds=30, agent_stale_seconds=60), now) is AgentStatus.OFFLINE
