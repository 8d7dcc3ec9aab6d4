"""Users (admins manage, others see themselves), one's own API tokens, and the audit log listing."""

from __future__ import annotations

from typing import Any

from conftest import Caller, make_caller
from quart.typing import TestClientProtocol as Client

from grocerysync.hub.models import Role

PASSWORD = "a long enough password"


async def _retailer(client: Client, admin: Caller, name: str) -> int:
    return int(
        (await (await client.post("/api/retailers", headers=admin.headers, json={"name": name})).get_json())["id"]
    )


async def _json(response: Any) -> Any:
    return await response.get_json()


async def test_admin_manages_users(client: Client, admin: Caller) -> None:
    a = await _retailer(client, admin, "A")
    b = await _retailer(client, admin, "B")
    h = admin.headers
    body = {"email": "Tech@Example.com", "role": "technician", "password": PASSWORD, "retailer_ids": [b, a]}
    created = await client.post("/api/users", headers=h, json=body)
    assert created.status_code == 201
    user = await created.get_json()
    assert (user["email"], user["role"], user["retailer_ids"], user["active"]) == (
        "tech@example.com",
        "technician",
        sorted([a, b]),
        True,
    )
    assert PASSWORD not in await created.get_data(as_text=True)
    assert "password" not in user

    url = f"/api/users/{user['id']}"
    changed = await _json(await client.patch(url, headers=h, json={"role": "viewer", "retailer_ids": [a]}))
    assert (changed["role"], changed["retailer_ids"]) == ("viewer", [a])
    listed = await _json(await client.get("/api/users?role=viewer", headers=h))
    assert [u["email"] for u in listed["items"]] == ["tech@example.com"]

    # Disabling a user stops their tokens at once.
    token = await _json(await client.post("/api/tokens", headers=h, json={"name": "x"}))
    assert token["token"].startswith("gsh_")
    from grocerysync.hub.domain import users

    their_token = await users.create_token("tech@example.com")
    assert (await client.get("/api/retailers", headers={"Authorization": f"Bearer {their_token}"})).status_code == 200
    assert (await _json(await client.patch(url, headers=h, json={"active": False})))["active"] is False
    assert (await client.get("/api/retailers", headers={"Authorization": f"Bearer {their_token}"})).status_code == 401

    audit = await _json(await client.get("/api/audit?object_type=User", headers=h))
    assert [e["action"] for e in audit["items"]] == ["update", "update", "create"]
    assert audit["items"][1]["before"]["role"] == "technician"
    assert audit["items"][1]["after"]["role"] == "viewer"


async def test_bad_users_answer_4xx_naming_the_field(client: Client, admin: Caller) -> None:
    h = admin.headers
    cases = [
        ({"email": "nobody", "role": "viewer", "password": PASSWORD}, 422, "email"),
        ({"email": "x@example.com", "role": "boss", "password": PASSWORD}, 422, "role"),
        ({"email": "x@example.com", "role": "viewer", "password": "short"}, 422, "password"),
        (
            {"email": "x@example.com", "role": "viewer", "password": PASSWORD, "retailer_ids": [999]},
            422,
            "retailer_ids",
        ),
        ({"email": "admin@example.com", "role": "viewer", "password": PASSWORD}, 409, None),
    ]
    for body, status, field in cases:
        response = await client.post("/api/users", headers=h, json=body)
        answer = await response.get_json()
        assert response.status_code == status, (body, answer)
        if field is not None:
            assert field in {e["field"] for e in answer["fields"]}, answer
        assert PASSWORD not in await response.get_data(as_text=True)


async def test_the_last_admin_cannot_be_demoted_or_disabled(client: Client, admin: Caller) -> None:
    me = (await _json(await client.get("/api/users", headers=admin.headers)))["items"][0]
    for change in ({"role": "technician"}, {"active": False}):
        response = await client.patch(f"/api/users/{me['id']}", headers=admin.headers, json=change)
        assert response.status_code == 409
        assert "last active admin" in (await response.get_json())["error"]
    second = await make_caller("second@example.com", Role.ADMIN)
    response = await client.patch(f"/api/users/{me['id']}", headers=second.headers, json={"role": "technician"})
    assert response.status_code == 200


async def test_others_see_only_themselves(client: Client, admin: Caller) -> None:
    a = await _retailer(client, admin, "A")
    tech = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[a])
    viewer = await make_caller("viewer@example.com", Role.VIEWER, all_retailers=True)
    for caller in (tech, viewer):
        mine = await _json(await client.get("/api/users", headers=caller.headers))
        assert [u["email"] for u in mine["items"]] == [caller.email]
        assert mine["total"] == 1
        own = mine["items"][0]["id"]
        assert (await client.get(f"/api/users/{own}", headers=caller.headers)).status_code == 200
        # Another user is as invisible as another tenant's object.
        others = [u["id"] for u in (await _json(await client.get("/api/users", headers=admin.headers)))["items"]]
        for other in set(others) - {own}:
            assert (await client.get(f"/api/users/{other}", headers=caller.headers)).status_code == 404
            assert (await client.patch(f"/api/users/{other}", headers=caller.headers, json={})).status_code == 404
        # Nobody but admins changes users, themselves included.
        assert (
            await client.patch(f"/api/users/{own}", headers=caller.headers, json={"role": "admin"})
        ).status_code == 403
        body = {"email": "new@example.com", "role": "admin", "password": PASSWORD}
        assert (await client.post("/api/users", headers=caller.headers, json=body)).status_code == 403


async def test_own_tokens(client: Client, admin: Caller) -> None:
    tech = await make_caller("tech@example.com", Role.TECHNICIAN, all_retailers=True)
    made = await client.post("/api/tokens", headers=tech.headers, json={"name": "ci"})
    assert made.status_code == 201
    token = await made.get_json()
    listed = await _json(await client.get("/api/tokens", headers=tech.headers))
    assert [(t["name"], t["revoked"]) for t in listed["items"]] == [("", False), ("ci", False)]
    assert all("token" not in t for t in listed["items"])
    assert token["token"] not in str(listed)
    new_headers = {"Authorization": f"Bearer {token['token']}"}
    assert (await client.get("/api/retailers", headers=new_headers)).status_code == 200
    # Someone else's token answers 404 and stays valid.
    assert (await client.delete(f"/api/tokens/{token['id']}", headers=admin.headers)).status_code == 404
    assert (await client.get("/api/retailers", headers=new_headers)).status_code == 200
    assert (await client.delete(f"/api/tokens/{token['id']}", headers=tech.headers)).status_code == 204
    assert (await client.get("/api/retailers", headers=new_headers)).status_code == 401
    audit = await _json(await client.get("/api/audit?object_type=ApiToken", headers=admin.headers))
    assert [e["action"] for e in audit["items"]] == ["revoke", "create"]
    assert token["token"] not in str(audit)


async def test_audit_listing_is_scoped_and_filtered(client: Client, admin: Caller) -> None:
    a = await _retailer(client, admin, "A")
    b = await _retailer(client, admin, "B")
    await client.patch(f"/api/retailers/{b}", headers=admin.headers, json={"notes": "secret plans of B"})
    tech = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[a])
    await client.post(f"/api/retailers/{a}/stores", headers=tech.headers, json={"name": "S"})
    await client.post(
        "/api/users", headers=admin.headers, json={"email": "u@example.com", "role": "viewer", "password": PASSWORD}
    )

    everything = await _json(await client.get("/api/audit", headers=admin.headers))
    assert {e["retailer_id"] for e in everything["items"]} == {a, b, None}
    mine = await _json(await client.get("/api/audit", headers=tech.headers))
    assert {e["retailer_id"] for e in mine["items"]} == {a}
    assert "secret plans" not in str(mine)
    assert (await _json(await client.get(f"/api/audit?retailer_id={b}", headers=tech.headers)))["items"] == []
    by_tech = await _json(await client.get("/api/audit?actor=tech@example.com", headers=admin.headers))
    assert [(e["action"], e["object_type"]) for e in by_tech["items"]] == [("create", "Store")]
    newest = everything["items"][0]["at"]
    later = await _json(
        await client.get(f"/api/audit?since={newest.replace('+', '%2B')}&object_type=User", headers=admin.headers)
    )
    assert [e["object_type"] for e in later["items"]] == ["User"]
    # Users who see every retailer still do not see user and token changes.
    viewer = await make_caller("all@example.com", Role.VIEWER, all_retailers=True)
    seen = await _json(await client.get("/api/audit", headers=viewer.headers))
    assert None not in {e["retailer_id"] for e in seen["items"]}
    assert {e["retailer_id"] for e in seen["items"]} == {a, b}
