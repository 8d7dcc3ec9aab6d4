"""POST /agent/v1/logs: agents' log records stored once each, under the agent's own tenant, store and runs."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from conftest import Caller, make_caller
from quart.typing import TestAppProtocol as RunningApp
from quart.typing import TestClientProtocol as Client
from test_rls import _dsn, app_role, as_app_role, owner_url  # noqa: F401  (fixtures for the RLS test)

from grocerysync.core.wire import MAX_BATCH, MAX_MESSAGE
from grocerysync.hub.domain.agents import redeem_enrollment_token
from grocerysync.hub.domain.log_ingest import AGENT_AT_KEY, HUB_LOGGER, UNLINKED_RUN_KEY
from grocerysync.hub.models import Role, Run
from grocerysync.hub.settings import Settings

URL = "/agent/v1/logs"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Till:
    """An enrolled agent: its ids and the headers that authenticate it."""

    retailer: int
    store: int
    agent: int
    credential: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}", "Content-Type": "application/json"}


async def _store(client: Client, admin: Caller, retailer_name: str, store_name: str = "Main St") -> tuple[int, int]:
    h = admin.headers
    listed = await (await client.get("/api/retailers?limit=500", headers=h)).get_json()
    found = [r["id"] for r in listed["items"] if r["name"] == retailer_name]
    retailer = (
        found[0]
        if found
        else (await (await client.post("/api/retailers", headers=h, json={"name": retailer_name})).get_json())["id"]
    )
    store = await client.post(f"/api/retailers/{retailer}/stores", headers=h, json={"name": store_name})
    assert store.status_code == 201, await store.get_json()
    return retailer, (await store.get_json())["id"]


async def _till(client: Client, admin: Caller, retailer_name: str = "R", store_name: str = "Main St") -> Till:
    retailer, store = await _store(client, admin, retailer_name, store_name)
    made = await client.post(f"/api/stores/{store}/enrollment-tokens", headers=admin.headers, json={})
    agent, credential = await redeem_enrollment_token((await made.get_json())["token"], f"{store_name} till")
    return Till(retailer, store, agent.id, credential)


def record(message: str, *, at: datetime = T0, level: str = "info", **fields: Any) -> dict[str, Any]:
    """A log record as the agent ships it (wire.LogRecord as JSON)."""
    return {"uid": str(uuid.uuid4()), "at": at.isoformat(), "level": level, "message": message, **fields}


def body(*records: dict[str, Any]) -> bytes:
    return orjson.dumps({"records": list(records)})


async def ship(client: Client, till: Till, payload: bytes) -> dict[str, Any]:
    response = await client.post(URL, data=payload, headers=till.headers)
    answer: dict[str, Any] = await response.get_json()
    assert response.status_code == 200, answer
    return answer


async def listed(client: Client, caller: Caller, query: str = "") -> list[dict[str, Any]]:
    """Every log entry the caller sees for ``query``, newest first (all pages)."""
    entries: list[dict[str, Any]] = []
    while True:
        response = await client.get(f"/api/logs?limit=500&offset={len(entries)}&{query}", headers=caller.headers)
        assert response.status_code == 200, await response.get_json()
        page = await response.get_json()
        entries += page["items"]
        if len(entries) >= page["total"]:
            return entries


async def test_a_batch_is_listed_under_the_agents_tenant_store_agent_and_run(client: Client, admin: Caller) -> None:
    till = await _till(client, admin)
    other = await _till(client, admin, "Other")
    run = await Run.create(retailer_id=till.retailer, store_id=till.store, job_name="nightly")
    shipped = [
        record("Read 120 items", logger="grocerysync.agent.pipeline", run_id=run.id, extra={"items": 120}),
        record("SFTP upload failed", at=T0 + timedelta(seconds=1), level="error", run_id=run.id),
        record("cache warm", at=T0 + timedelta(seconds=2), level="debug"),
    ]
    assert await ship(client, till, body(*shipped)) == {"recorded": 3, "duplicates": 0}
    await ship(client, other, body(record("other tenant's line")))

    entries = await listed(client, admin, f"agent_id={till.agent}")
    assert [e["message"] for e in entries] == ["cache warm", "SFTP upload failed", "Read 120 items"]
    assert {(e["retailer_id"], e["store_id"], e["agent_id"]) for e in entries} == {
        (till.retailer, till.store, till.agent)
    }
    assert [(e["level"], e["run_id"], e["logger"]) for e in entries] == [
        ("debug", None, ""),
        ("error", run.id, ""),
        ("info", run.id, "grocerysync.agent.pipeline"),
    ]
    assert entries[-1]["fields"] == {"items": 120}
    assert datetime.fromisoformat(entries[-1]["at"]) == T0
    assert [e["message"] for e in await listed(client, admin, f"run_id={run.id}&min_level=warning")] == [
        "SFTP upload failed"
    ]
    # A technician of the other retailer sees only that retailer's line.
    tech = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[other.retailer])
    assert [e["message"] for e in await listed(client, tech)] == ["other tenant's line"]


async def test_a_record_shipped_again_is_stored_once(client: Client, admin: Caller) -> None:
    till = await _till(client, admin)
    first = [record(f"line {n}", at=T0 + timedelta(seconds=n)) for n in range(3)]
    assert await ship(client, till, body(*first)) == {"recorded": 3, "duplicates": 0}
    assert await ship(client, till, body(*first)) == {"recorded": 0, "duplicates": 3}
    # Old and new mixed, and one new record twice in the same batch.
    new = record("line 3", at=T0 + timedelta(seconds=3))
    assert await ship(client, till, body(first[0], new, first[2], new)) == {"recorded": 1, "duplicates": 3}
    entries = await listed(client, admin)
    assert [e["message"] for e in entries] == ["line 3", "line 2", "line 1", "line 0"]


async def test_concurrent_deliveries_of_one_batch_store_it_once(client: Client, admin: Caller) -> None:
    till = await _till(client, admin)
    payload = body(*(record(f"line {n}") for n in range(200)))
    answers = await asyncio.gather(*(ship(client, till, payload) for _ in range(4)))
    assert sum(a["recorded"] for a in answers) == 200
    assert sum(a["duplicates"] for a in answers) == 600
    assert len(await listed(client, admin)) == 200


async def test_a_run_of_another_store_is_never_linked(client: Client, admin: Caller) -> None:
    till = await _till(client, admin)
    _, sister_store = await _store(client, admin, "R", "Sister St")
    other = await _till(client, admin, "Other")
    sister_run = await Run.create(retailer_id=till.retailer, store_id=sister_store, job_name="j")
    foreign_run = await Run.create(retailer_id=other.retailer, store_id=other.store, job_name="j")
    run_ids = [sister_run.id, foreign_run.id, 999_999, 2**40]
    shipped = [record(f"names run {r}", run_id=r, extra={"k": "v"}) for r in run_ids]
    assert await ship(client, till, body(*shipped)) == {"recorded": 4, "duplicates": 0}

    entries = await listed(client, admin, f"agent_id={till.agent}")
    assert {e["message"]: (e["run_id"], e["store_id"], e["fields"]) for e in entries} == {
        f"names run {r}": (None, till.store, {"k": "v", UNLINKED_RUN_KEY: r}) for r in run_ids
    }
    for run in (sister_run, foreign_run):
        assert await listed(client, admin, f"run_id={run.id}") == []
    tech = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[other.retailer])
    assert await listed(client, tech) == []


async def test_unknown_or_revoked_agents_are_refused(client: Client, admin: Caller) -> None:
    till = await _till(client, admin)
    payload = body(record("hello"))
    for headers in ({}, {"Authorization": "Bearer gsa_not-a-credential"}, admin.headers):
        refused = await client.post(URL, data=payload, headers={**headers, "Content-Type": "application/json"})
        assert refused.status_code == 401
        assert "enroll" in (await refused.get_json())["error"]
    revoked = await client.post(f"/api/agents/{till.agent}/revoke", headers=admin.headers)
    assert revoked.status_code == 200, await revoked.get_json()
    refused = await client.post(URL, data=payload, headers=till.headers)
    assert refused.status_code == 401
    assert f"agent {till.agent}" in (await refused.get_json())["error"]
    assert "was revoked" in (await refused.get_json())["error"]
    assert await listed(client, admin) == []


async def test_unicode_nul_and_large_extra_round_trip(client: Client, admin: Caller) -> None:
    till = await _till(client, admin)
    big = {"traceback": "Traceback (most recent call last):\n" + "  File x.py, line 1\n" * 10_000}
    nested: dict[str, Any] = {"leaf": "ü"}
    for depth in range(40):
        nested = {f"level{depth}": nested, "list": [depth, 1.5, None, True]}
    messages = [
        "Prix réduit: 2,99 € — 🍎 pommes",
        "価格を更新しました (1,024 件)",
        "שלום עולם",
        "x" * MAX_MESSAGE,
    ]
    shipped = [
        record(m, at=T0 + timedelta(seconds=n), logger="grocerysync.plugins.caisse-é") for n, m in enumerate(messages)
    ]
    shipped.append(record("big", at=T0 + timedelta(seconds=10), extra=big))
    shipped.append(record("deep", at=T0 + timedelta(seconds=11), extra=nested))
    # Deeper than the fast JSON reader goes: read on the slow path, kept to 64 levels, the rest as JSON text.
    abyss: dict[str, Any] = {"bottom": 1}
    for _ in range(200):
        abyss = {"a": abyss}
    shipped.append(record("abyss", at=T0 + timedelta(seconds=12), extra=abyss))
    assert await ship(client, till, body(*shipped)) == {"recorded": 7, "duplicates": 0}
    # What orjson cannot write but an agent's JSON may hold: NUL characters, NaN, integers beyond 64 bits.
    odd = (
        b'{"records": [{"uid": "%s", "at": "2024-05-01T13:00:00Z", "level": "warning", "logger": "a\\u0000b",'
        b' "message": "before\\u0000after", "extra": {"k\\u0000": "v\\u0000", "nan": NaN, "inf": -Infinity,'
        b' "huge": 123456789012345678901234567890}}]}'
    ) % str(uuid.uuid4()).encode()
    assert await ship(client, till, odd) == {"recorded": 1, "duplicates": 0}
    # A lone surrogate (what Python's json writes for a broken file name): the strict reader refuses it, the hub
    # reads the batch on its slow path and replaces it; a proper pair is one character.
    surrogates = (
        b'{"records": [{"uid": "%s", "at": "2024-05-01T13:00:01Z", "level": "info",'
        b' "message": "C:\\\\caisse\\\\\\udcff \\ud83c\\udf4e"}]}'
    ) % str(uuid.uuid4()).encode()
    assert await ship(client, till, surrogates) == {"recorded": 1, "duplicates": 0}

    entries = {e["message"]: e for e in await listed(client, admin)}
    for message in messages:
        assert entries[message]["logger"] == "grocerysync.plugins.caisse-é"
    assert entries["big"]["fields"] == big
    assert entries["deep"]["fields"] == nested
    kept = entries["abyss"]["fields"]
    for _ in range(64):
        kept = kept["a"]
    assert isinstance(kept, str)
    assert kept.startswith('{"a": {"a": ')
    assert "C:\\caisse\\\ufffd \U0001f34e" in entries
    strange = entries["before\ufffdafter"]
    assert strange["logger"] == "a\ufffdb"
    assert strange["fields"] == {
        "k\ufffd": "v\ufffd",
        "nan": None,
        "inf": None,
        "huge": "123456789012345678901234567890",
    }


async def test_1000_typical_records_fit_the_body_limit(client: Client, admin: Caller, settings: Settings) -> None:
    till = await _till(client, admin)
    run = await Run.create(retailer_id=till.retailer, store_id=till.store, job_name="nightly")
    typical = [
        record(
            f"sent batch {n} of 1000 items to sftp://feeds.example.com/incoming/items-0501.csv (1000 ok, 0 failed)",
            at=T0 + timedelta(milliseconds=n),
            logger="grocerysync.agent.pipeline",
            run_id=run.id,
            extra={"run_id": str(run.id), "job": "Nightly price and stock export", "batch": n, "took_ms": 412.5},
        )
        for n in range(MAX_BATCH)
    ]
    payload = body(*typical)
    # Agents are told to keep a body under 800 KB (docs/logs.md): a full batch of typical records does, with room.
    assert len(payload) < 800_000 <= settings.max_body_bytes, len(payload)
    assert await ship(client, till, payload) == {"recorded": MAX_BATCH, "duplicates": 0}
    assert len(await listed(client, admin, f"run_id={run.id}")) == MAX_BATCH

    # A body over the limit is refused with a message that says the limit.
    huge = body(*(record("y" * MAX_MESSAGE) for _ in range(settings.max_body_bytes // MAX_MESSAGE + 1)))
    too_big = await client.post(URL, data=huge, headers=till.headers)
    assert too_big.status_code == 413
    assert str(settings.max_body_bytes) in (await too_big.get_json())["error"]


async def test_an_unreadable_record_is_kept_as_a_warning_and_a_non_batch_refused(client: Client, admin: Caller) -> None:
    till = await _till(client, admin)
    good = record("fine")
    loud = record("too loud", level="loud", extra={"a": 1})
    assert await ship(client, till, body(good, loud, {"message": "no uid"})) == {"recorded": 3, "duplicates": 0}
    # Shipped again: the unreadable record with a uid is a duplicate; the one without cannot be recognised.
    assert await ship(client, till, body(good, loud)) == {"recorded": 0, "duplicates": 2}
    entries = await listed(client, admin)
    warnings = [e for e in entries if e["logger"] == HUB_LOGGER]
    assert len(warnings) == 2
    assert all(e["level"] == "warning" and e["store_id"] == till.store for e in warnings)
    kept = {e["fields"]["record"]["message"]: e for e in warnings}
    assert kept["too loud"]["fields"]["record"] == loud
    assert "record 1 of its batch: level:" in kept["too loud"]["message"]
    assert "record 2 of its batch: uid: Field required" in kept["no uid"]["message"]

    for payload, says in (
        (b"not json", "not valid JSON"),
        (b"[]", 'list "records"'),
        (b'{"records": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "nested too deeply"),
        (b'{"records": {}}', 'list "records"'),
        (body(*(record("x") for _ in range(MAX_BATCH + 1))), f"at most {MAX_BATCH}"),
    ):
        refused = await client.post(URL, data=payload, headers=till.headers)
        assert refused.status_code == 422, payload[:50]
        assert says in (await refused.get_json())["error"]
    assert len(await listed(client, admin)) == 3


async def test_a_record_dated_far_ahead_is_stored_when_it_arrived(client: Client, admin: Caller) -> None:
    till = await _till(client, admin)
    ahead = datetime.now(UTC) + timedelta(days=400)
    slightly = datetime.now(UTC) + timedelta(minutes=5)
    naive = datetime(2024, 5, 1, 12, 0)
    before = datetime.now(UTC)
    shipped = [record("clock ahead", at=ahead), record("a bit ahead", at=slightly), record("naive", at=naive)]
    await ship(client, till, body(*shipped))
    entries = {e["message"]: e for e in await listed(client, admin)}
    stored_at = datetime.fromisoformat(entries["clock ahead"]["at"])
    assert before <= stored_at <= datetime.now(UTC)
    assert datetime.fromisoformat(entries["clock ahead"]["fields"][AGENT_AT_KEY]) == ahead
    assert datetime.fromisoformat(entries["a bit ahead"]["at"]) == slightly
    assert entries["a bit ahead"]["fields"] == {}
    assert datetime.fromisoformat(entries["naive"]["at"]) == naive.replace(tzinfo=UTC)


@pytest.mark.postgres
async def test_ingest_works_as_the_app_role_under_row_level_security(
    as_app_role: RunningApp,  # noqa: F811
    owner_url: str,  # noqa: F811
    app_role: str,  # noqa: F811
) -> None:
    client = as_app_role.test_client()
    admin = await make_caller("admin@example.com", Role.ADMIN)
    till = await _till(client, admin)
    other = await _till(client, admin, "Other")
    run = await Run.create(retailer_id=till.retailer, store_id=till.store, job_name="j")
    foreign_run = await Run.create(retailer_id=other.retailer, store_id=other.store, job_name="j")
    shipped = [record(f"line {n}", run_id=run.id) for n in range(50)] + [record("foreign", run_id=foreign_run.id)]
    assert await ship(client, till, body(*shipped)) == {"recorded": 51, "duplicates": 0}
    assert await ship(client, till, body(*shipped)) == {"recorded": 0, "duplicates": 51}

    tech = await make_caller("tech@example.com", Role.TECHNICIAN, retailers=[till.retailer])
    assert len(await listed(client, tech, f"run_id={run.id}")) == 50
    tech_other = await make_caller("other@example.com", Role.TECHNICIAN, retailers=[other.retailer])
    assert await listed(client, tech_other) == []
    # The rows are the agent's retailer's as far as the wall is concerned.
    conn = await asyncpg.connect(_dsn(owner_url, app_role))
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL grocerysync.retailer_ids = '{other.retailer}'")
            assert await conn.fetchval("SELECT count(*) FROM log_entry") == 0
        async with conn.transaction():
            await conn.execute(f"SET LOCAL grocerysync.retailer_ids = '{till.retailer}'")
            assert await conn.fetchval("SELECT count(*) FROM log_entry") == 51
    finally:
        await conn.close()
