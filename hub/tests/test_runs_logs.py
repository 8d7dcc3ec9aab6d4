"""Runs with their rejections, and log entries: recording, filtering, pagination, tenant scoping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import Caller, make_caller
from quart.typing import TestClientProtocol as Client

from grocerysync.core.results import Rejection
from grocerysync.hub.domain.runs import add_logs, add_rejections
from grocerysync.hub.errors import Invalid
from grocerysync.hub.models import Retailer, Role, Run, RunStatus, Store
from grocerysync.hub.schemas_jobs import LogIn
from grocerysync.hub.scope import SYSTEM, Scope

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


async def _tenant(name: str) -> tuple[Retailer, Store, Store]:
    retailer = await Retailer.create(name=name)
    return retailer, await Store.create(retailer=retailer, name="S1"), await Store.create(retailer=retailer, name="S2")


async def test_runs_list_filters_and_rejections(client: Client, admin: Caller) -> None:
    retailer, s1, s2 = await _tenant("R")
    other, o1, _ = await _tenant("Other")
    ok = await Run.create(retailer=retailer, store=s1, job_name="a", status=RunStatus.SUCCEEDED)
    failed = await Run.create(retailer=retailer, store=s2, job_name="b", status=RunStatus.FAILED)
    foreign = await Run.create(retailer=other, store=o1, job_name="c", status=RunStatus.FAILED)
    h = admin.headers

    async def ids(query: str, headers: dict[str, str] = h) -> list[int]:
        body = await (await client.get(f"/api/runs?{query}", headers=headers)).get_json()
        return [r["id"] for r in body["items"]]

    assert await ids("") == [foreign.id, failed.id, ok.id]  # newest first
    assert await ids(f"retailer_id={retailer.id}&status=failed") == [failed.id]
    assert await ids(f"store_id={s1.id}") == [ok.id]
    assert await ids("status=queued") == []
    assert await ids("since=2000-01-01T00:00:00Z&until=2001-01-01T00:00:00Z") == []
    assert await ids("limit=1&offset=1") == [failed.id]
    bad = await client.get("/api/runs?status=sideways", headers=h)
    assert bad.status_code == 400 or bad.status_code == 422
    tech = await make_caller("t@example.com", Role.TECHNICIAN, retailers=[retailer.id])
    assert await ids("", tech.headers) == [failed.id, ok.id]

    rejections = [Rejection(f"row {n}", f"bad price {n}", "validate", item_id=f"0000{n}") for n in range(5)]
    assert await add_rejections(Scope(SYSTEM), failed.id, rejections) == 5
    page = await (await client.get(f"/api/runs/{failed.id}/rejections?limit=2&offset=2", headers=h)).get_json()
    assert page["total"] == 5
    assert [(r["ref"], r["item_id"], r["stage"]) for r in page["items"]] == [
        ("row 2", "00002", "validate"),
        ("row 3", "00003", "validate"),
    ]
    assert (await (await client.get(f"/api/runs/{failed.id}", headers=h)).get_json())["items_rejected"] == 5
    # Another tenant's run and its rejections answer 404 for the technician.
    for url in (f"/api/runs/{foreign.id}", f"/api/runs/{foreign.id}/rejections"):
        assert (await client.get(url, headers=tech.headers)).status_code == 404


async def test_logs_filters_text_search_and_scope(client: Client, admin: Caller) -> None:
    retailer, s1, s2 = await _tenant("R")
    other, o1, _ = await _tenant("Other")
    run = await Run.create(retailer=retailer, store=s1, job_name="a")
    system = Scope(SYSTEM)
    entries = [
        LogIn(at=T0, level="info", message="Read 120 items", store_id=s1.id, run_id=run.id, logger="agent.run"),
        LogIn(at=T0 + timedelta(minutes=1), level="warning", message="Discount 50% off ignored", store_id=s1.id),
        LogIn(at=T0 + timedelta(minutes=2), level="error", message="SFTP upload FAILED", store_id=s2.id, agent_id=7),
        LogIn(at=T0 + timedelta(minutes=3), level="debug", message="500 items in cache", fields={"cache": "hit"}),
    ]
    assert await add_logs(system, retailer.id, entries) == 4
    await add_logs(system, other.id, [LogIn(at=T0, level="error", message="other tenant failed", store_id=o1.id)])

    async def messages(query: str, headers: dict[str, str] = admin.headers) -> list[str]:
        response = await client.get(f"/api/logs?{query}", headers=headers)
        assert response.status_code == 200, await response.get_json()
        return [e["message"] for e in (await response.get_json())["items"]]

    assert await messages(f"retailer_id={retailer.id}") == [
        "500 items in cache",
        "SFTP upload FAILED",
        "Discount 50% off ignored",
        "Read 120 items",
    ]
    assert await messages(f"store_id={s1.id}") == ["Discount 50% off ignored", "Read 120 items"]
    assert await messages(f"run_id={run.id}") == ["Read 120 items"]
    assert await messages("agent_id=7") == ["SFTP upload FAILED"]
    assert await messages("level=warning") == ["Discount 50% off ignored"]
    assert await messages(f"min_level=warning&retailer_id={retailer.id}") == [
        "SFTP upload FAILED",
        "Discount 50% off ignored",
    ]
    since, until = (T0 + timedelta(minutes=1)).isoformat(), (T0 + timedelta(minutes=3)).isoformat()
    assert await messages(f"since={since.replace('+', '%2B')}&until={until.replace('+', '%2B')}") == [
        "SFTP upload FAILED",
        "Discount 50% off ignored",
    ]
    # Case-insensitive, and % is a plain character, not a wildcard.
    assert await messages("q=upload%20failed") == ["SFTP upload FAILED"]
    assert await messages("q=50%25") == ["Discount 50% off ignored"]
    assert await messages("q=_") == []
    first = await (await client.get("/api/logs?limit=1&min_level=debug", headers=admin.headers)).get_json()
    assert (first["total"], first["items"][0]["fields"]) == (5, {"cache": "hit"})
    bad = await client.get("/api/logs?level=loud", headers=admin.headers)
    assert bad.status_code in (400, 422)

    viewer = await make_caller("v@example.com", Role.VIEWER, retailers=[retailer.id])
    assert "other tenant failed" not in await messages("", viewer.headers)
    assert await messages(f"retailer_id={other.id}", viewer.headers) == []


async def test_logs_cannot_be_filed_under_another_tenants_store_or_run(client: Client, admin: Caller) -> None:
    retailer, s1, _ = await _tenant("R")
    other, o1, _ = await _tenant("Other")
    foreign_run = await Run.create(retailer=other, store=o1, job_name="x")
    for entry in (
        LogIn(at=T0, message="x", store_id=o1.id),
        LogIn(at=T0, message="x", store_id=s1.id, run_id=foreign_run.id),
    ):
        with pytest.raises(Invalid) as caught:
            await add_logs(Scope(SYSTEM), retailer.id, [entry])
        assert f"retailer {retailer.id} has no" in caught.value.message
    assert (await (await client.get("/api/logs", headers=admin.headers)).get_json())["total"] == 0
