"""Plugin-aware configuration of POS connections and destinations, and write-only encrypted secrets."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
from conftest import Caller
from quart.typing import TestClientProtocol as Client

from grocerysync.hub.crypto import SecretBox
from grocerysync.hub.models import DestinationConfig
from grocerysync.hub.settings import Settings

CANARY = "canary-7f3e9b21-do-not-leak"
CANARY_2 = "canary-second-5d1c-do-not-leak"


async def _store(client: Client, admin: Caller) -> int:
    r = await (await client.post("/api/retailers", headers=admin.headers, json={"name": "R"})).get_json()
    s = await client.post(f"/api/retailers/{r['id']}/stores", headers=admin.headers, json={"name": "S"})
    return int((await s.get_json())["id"])


async def _post(client: Client, admin: Caller, url: str, body: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post(url, headers=admin.headers, json=body)
    return response.status_code, await response.get_json()


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"name": "d", "plugin": "nope", "config": {}}, "plugin", "no destination named 'nope'"),
        ({"name": "d", "plugin": "demo-dest", "config": {"host": "h", "port": 70000}}, "config.port", "less than"),
        ({"name": "d", "plugin": "demo-dest", "config": {}, "secrets": {"password": "p"}}, "config.host", "required"),
        ({"name": "d", "plugin": "demo-dest", "config": {"host": "h"}}, "secrets.password", "required"),
        ({"name": "d", "plugin": "demo-dest", "config": "not an object"}, "config", "dictionary"),
        ({"name": "", "plugin": "demo-dest", "config": {"host": "h"}}, "name", "at least 1"),
        (
            {"name": "d", "plugin": "demo-dest", "config": {"host": "h"}, "secrets": {"password": 5}},
            "secrets.password",
            "string",
        ),
    ],
)
async def test_destination_config_is_validated_by_the_plugin(
    client: Client, admin: Caller, body: dict[str, Any], field: str, says: str
) -> None:
    store = await _store(client, admin)
    status, answer = await _post(client, admin, f"/api/stores/{store}/destinations", body)
    assert status == 422
    [error] = [e for e in answer["fields"] if e["field"] == field]
    assert says in error["message"]
    assert field.split(".")[-1] in answer["error"]


async def test_pos_connection_config_is_validated_by_the_plugin(client: Client, admin: Caller) -> None:
    store = await _store(client, admin)
    url = f"/api/stores/{store}/connections"
    status, answer = await _post(client, admin, url, {"name": "c", "plugin": "demo-pos", "config": {"delimiter": ";;"}})
    assert status == 422
    assert {e["field"] for e in answer["fields"]} == {"config.path", "config.delimiter"}
    status, answer = await _post(client, admin, url, {"name": "c", "plugin": "demo-dest", "config": {}})
    assert (status, answer["fields"][0]["field"]) == (422, "plugin")
    status, created = await _post(client, admin, url, {"name": "c", "plugin": "demo-pos", "config": {"path": "/x.csv"}})
    assert status == 201
    patched = await client.patch(f"/api/connections/{created['id']}", headers=admin.headers, json={"config": {}})
    assert patched.status_code == 422
    assert (await (await client.get(f"/api/connections/{created['id']}", headers=admin.headers)).get_json())[
        "config"
    ] == {"path": "/x.csv"}


async def test_secrets_are_write_only_and_merged(client: Client, admin: Caller, settings: Settings) -> None:
    store = await _store(client, admin)
    body = {"name": "d", "plugin": "demo-dest", "config": {"host": "h"}, "secrets": {"password": "pw-1"}}
    status, created = await _post(client, admin, f"/api/stores/{store}/destinations", body)
    assert status == 201
    assert created["secrets_set"] == ["password"]
    assert "secrets" not in created
    url = f"/api/destinations/{created['id']}"
    patched = await (await client.patch(url, headers=admin.headers, json={"secrets": {"api_key": "k-1"}})).get_json()
    assert patched["secrets_set"] == ["api_key", "password"]
    renamed = await (await client.patch(url, headers=admin.headers, json={"name": "renamed"})).get_json()
    assert renamed["secrets_set"] == ["api_key", "password"]
    # The stored blob still holds both values: the password was kept when only the key was set.
    row = await DestinationConfig.get(id=created["id"])
    box = SecretBox(settings.encryption_key())
    assert box.decrypt(row.secrets_blob, retailer_id=row.retailer_id) == {"password": "pw-1", "api_key": "k-1"}


async def _all_rows(settings: Settings, backend: str) -> str:
    """Every row of every table as text, like a dump."""
    if backend == "postgres":
        conn = await asyncpg.connect(settings.db_url().replace("postgres://", "postgresql://", 1))
        try:
            tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            out = []
            for t in tables:
                rows = await conn.fetch(f'SELECT t::text AS row FROM "{t["tablename"]}" t')  # noqa: S608
                out += [r["row"] for r in rows]
            return "\n".join(out)
        finally:
            await conn.close()
    # SQLite: the raw bytes of the database files are the dump.
    files = sorted(settings.data_dir.glob("hub.sqlite3*"))
    assert files
    return "\n".join(p.read_bytes().decode("latin-1") for p in files)


async def test_canary_secret_leaks_nowhere(
    client: Client, admin: Caller, settings: Settings, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = await _store(client, admin)
    bodies: list[str] = []

    async def call(method: str, url: str, json: Any = None) -> dict[str, Any]:
        response = await client.open(url, method=method, headers=admin.headers, json=json)
        bodies.append(await response.get_data(as_text=True))
        return await response.get_json()

    body = {"name": "d", "plugin": "demo-dest", "config": {"host": "h"}, "secrets": {"password": CANARY}}
    created = await call("POST", f"/api/stores/{store}/destinations", body)
    url = f"/api/destinations/{created['id']}"
    await call("PATCH", url, {"secrets": {"api_key": CANARY_2}, "config": {"host": "h2"}})
    await call("GET", url)
    await call("GET", "/api/destinations")
    # A rejected change with the canary in it must not echo it either.
    await call("PATCH", url, {"secrets": {"password": CANARY, "api_key": 7}})
    await call("POST", f"/api/stores/{store}/destinations", {**body, "config": {"port": "x"}})

    assert len(bodies) == 6
    for text in bodies:
        assert CANARY not in text
        assert CANARY_2 not in text
    logged = [r.getMessage() + repr(r.args) for r in caplog.records]
    assert logged, "the test should see the hub's and tortoise's log records"
    assert not [line for line in logged if CANARY in line or CANARY_2 in line]
    dump = await _all_rows(settings, backend)
    assert "h2" in dump  # the dump does hold the destination's (non-secret) data
    assert CANARY not in dump
    assert CANARY_2 not in dump
