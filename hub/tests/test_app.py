from conftest import Caller
from quart.typing import TestClientProtocol as Client


async def test_health_and_plugin_catalogue(client: Client) -> None:
    assert (await (await client.get("/health")).get_json()) == {"status": "ok"}
    body = await (await client.get("/api/plugins")).get_json()
    entries = {e["name"]: e for e in body["plugins"]}
    assert set(entries) == {"demo-pos", "demo-dest"}
    dest = entries["demo-dest"]
    assert dest["distribution"] == "grocerysync-demo"
    assert dest["config_schema"]["required"] == ["host"]
    assert dest["secrets_schema"]["properties"]["password"]["writeOnly"] is True


async def test_openapi_lists_the_api_with_bearer_auth(client: Client) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    assert "/api/retailers" in spec["paths"]
    assert "/api/stores/{store_id}/destinations" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    docs = await client.get("/docs")
    assert docs.status_code == 200


async def test_errors_are_json_without_tracebacks(client: Client, admin: Caller) -> None:
    missing = await client.get("/api/nowhere", headers=admin.headers)
    assert missing.status_code == 404
    assert set(await missing.get_json()) == {"error", "fields"}
    bad_json = await client.post(
        "/api/retailers", headers={**admin.headers, "Content-Type": "application/json"}, data="{not json"
    )
    assert bad_json.status_code == 400
    assert "valid JSON" in (await bad_json.get_json())["error"]
    huge = await client.post("/api/retailers", headers=admin.headers, json={"name": "x", "notes": "n" * 2_000_000})
    assert huge.status_code == 413
    assert "larger than" in (await huge.get_json())["error"]


async def test_api_needs_a_valid_token(client: Client, admin: Caller) -> None:
    for headers, says in (
        ({}, "Authorization: Bearer"),
        ({"Authorization": admin.token}, "Authorization: Bearer"),
        ({"Authorization": "Bearer nope"}, "unknown or revoked"),
    ):
        response = await client.get("/api/retailers", headers=headers)
        assert response.status_code == 401
        assert says in (await response.get_json())["error"]
    assert (await client.get("/api/retailers", headers=admin.headers)).status_code == 200
