"""POST /agent/v1/enroll: an agent trades a one-time enrollment token for its credential, without a user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import Caller
from quart.typing import TestClientProtocol as Client

from grocerysync.hub.domain.agents import authenticate_agent
from grocerysync.hub.models import Agent, EnrollmentToken
from grocerysync.hub.scope import SYSTEM, Scope

SYS = Scope(SYSTEM)
URL = "/agent/v1/enroll"


async def _token(client: Client, admin: Caller) -> tuple[int, int, str]:
    h = admin.headers
    r = await (await client.post("/api/retailers", headers=h, json={"name": "R"})).get_json()
    s = await (await client.post(f"/api/retailers/{r['id']}/stores", headers=h, json={"name": "Main St"})).get_json()
    made = await (await client.post(f"/api/stores/{s['id']}/enrollment-tokens", headers=h, json={})).get_json()
    return r["id"], s["id"], str(made["token"])


def _body(token: str, **extra: object) -> dict[str, object]:
    return {
        "token": token,
        "hostname": "till-01",
        "os": "Windows 11",
        "agent_version": "0.1.0",
        "plugins": [{"name": "csv", "distribution": "grocerysync-pos-csv", "version": "1.0"}],
        **extra,
    }


async def test_enroll_answers_a_credential_that_authenticates(client: Client, admin: Caller) -> None:
    retailer, store, token = await _token(client, admin)
    response = await client.post(URL, json=_body(token))
    assert response.status_code == 201
    doc = await response.get_json()
    assert doc["retailer_id"] == retailer
    assert doc["store_id"] == store
    assert doc["store_name"] == "Main St"
    assert doc["credential"].startswith("gsa_")
    agent = await authenticate_agent(doc["credential"])
    assert agent.id == doc["agent_id"]
    assert (agent.name, agent.os, agent.version) == ("till-01", "Windows 11", "0.1.0")
    assert agent.plugins == [{"name": "csv", "distribution": "grocerysync-pos-csv", "version": "1.0"}]


async def test_a_used_token_answers_410_with_what_to_do(client: Client, admin: Caller) -> None:
    _, _, token = await _token(client, admin)
    assert (await client.post(URL, json=_body(token))).status_code == 201
    again = await client.post(URL, json=_body(token, hostname="till-02"))
    assert again.status_code == 410
    message = (await again.get_json())["error"]
    assert "already used" in message
    assert "ask your technician for a new enrollment token" in message
    assert token not in message
    assert await SYS.query(Agent).count() == 1


async def test_an_expired_token_answers_410(client: Client, admin: Caller) -> None:
    _, _, token = await _token(client, admin)
    await SYS.query(EnrollmentToken).update(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    response = await client.post(URL, json=_body(token))
    assert response.status_code == 410
    message = (await response.get_json())["error"]
    assert "expired" in message
    assert "ask your technician for a new enrollment token" in message
    assert await SYS.query(Agent).count() == 0


async def test_an_unknown_token_answers_401(client: Client, admin: Caller) -> None:
    await _token(client, admin)
    response = await client.post(URL, json=_body("gse_not-a-real-token"))
    assert response.status_code == 401
    message = (await response.get_json())["error"]
    assert "unknown" in message
    assert "gse_not-a-real-token" not in message


async def test_bad_bodies_name_the_field_and_never_echo_the_token(client: Client, admin: Caller) -> None:
    _, _, token = await _token(client, admin)
    response = await client.post(URL, json=_body(token, hostname=""))
    assert response.status_code == 422
    doc = await response.get_json()
    assert [f["field"] for f in doc["fields"]] == ["hostname"]
    assert token not in await response.get_data(as_text=True)
    missing = await client.post(URL, json={"hostname": "h"})
    assert missing.status_code == 422
    assert [f["field"] for f in (await missing.get_json())["fields"]] == ["token"]
    # The token is still unused: a bad request does not spend it.
    assert (await client.post(URL, json=_body(token))).status_code == 201


async def test_oversized_bodies_are_refused(client: Client, admin: Caller) -> None:
    response = await client.post(URL, json={"token": "x" * 1_100_000, "hostname": "h"})
    assert response.status_code == 413
    assert "larger than" in (await response.get_json())["error"]
