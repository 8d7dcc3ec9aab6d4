"""The cheap paths of the agent channel: heartbeat flushes in one statement per batch (only changed details), the
one-query "anything for me?" check before a poll's claims, the agent lookup by credential, the pool settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import Caller, demo_plugins
from dispatch_helpers import make_site, poll, trigger
from quart.typing import TestClientProtocol as Client
from tortoise import connections
from tortoise.exceptions import OperationalError

from grocerysync.core.wire import Health, Heartbeat, PluginVersion
from grocerysync.hub.app import create_app
from grocerysync.hub.db import _keep_session, tortoise_config
from grocerysync.hub.domain import dispatch
from grocerysync.hub.domain.agents import authenticate_agent
from grocerysync.hub.domain.heartbeats import HeartbeatBuffer
from grocerysync.hub.models import Agent, AgentCommand, CommandStatus, Run
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.settings import Settings

SYS = Scope(SYSTEM)


def _beat(n: int, *, spool: int = 0) -> Heartbeat:
    return Heartbeat(
        agent_version=f"2.{n}.0",
        os=f"Windows 1{n}",
        plugins=[PluginVersion(name=f"pos-{n}", distribution=f"gs-pos-{n}", version=f"1.{n}")],
        health=Health(status="degraded", message=f"spool {n} is ½ full", spool_records=spool, running=[n, 7]),
    )


async def _rows(store: int) -> dict[int, Agent]:
    return {a.id: a for a in await SYS.query(Agent).filter(store_id=store)}


async def test_a_flush_writes_every_heartbeat_column_of_every_agent(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, agents=3)
    buffer = HeartbeatBuffer(batch_size=2)  # two batches
    at = [datetime(2026, 1, 2, 3, 4, 5, n * 1000, tzinfo=UTC) for n in range(3)]
    for n, agent in enumerate(site.agents):
        buffer.record(agent.id, _beat(n, spool=10 + n), at=at[n])
    assert await buffer.flush() == 3
    rows = await _rows(site.store)
    for n, agent in enumerate(site.agents):
        row = rows[agent.id]
        assert (row.last_seen_at, row.version, row.os) == (at[n], f"2.{n}.0", f"Windows 1{n}")
        assert row.plugins == [{"name": f"pos-{n}", "distribution": f"gs-pos-{n}", "version": f"1.{n}"}]
        assert row.health == {
            "status": "degraded",
            "message": f"spool {n} is ½ full",
            "spool_records": 10 + n,
            "spool_bytes": 0,
            "running": [n, 7],
        }
    # An empty heartbeat stores no version or OS, and empty plugins and default health.
    buffer.record(site.agents[0].id, Heartbeat(), at=at[2])
    await buffer.flush()
    row = (await _rows(site.store))[site.agents[0].id]
    assert (row.version, row.os, row.plugins, (row.health or {}).get("status")) == (None, None, [], "ok")


async def test_unchanged_details_are_not_written_again_only_last_seen(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin, agents=2)
    a, b = site.agents
    buffer = HeartbeatBuffer()
    t0 = datetime.now(UTC).replace(microsecond=0)
    buffer.record(a.id, _beat(1), at=t0)
    buffer.record(b.id, _beat(2), at=t0)
    await buffer.flush()
    # Mark the stored details, to see below whether a flush rewrote them.
    await SYS.query(Agent).filter(store_id=site.store).update(version="marked")

    buffer.record(a.id, _beat(1), at=t0 + timedelta(seconds=5))  # the same as last time
    buffer.record(b.id, _beat(2, spool=3), at=t0 + timedelta(seconds=5))  # its health changed
    assert await buffer.flush() == 2
    rows = await _rows(site.store)
    assert (rows[a.id].last_seen_at, rows[a.id].version) == (t0 + timedelta(seconds=5), "marked")
    assert (rows[b.id].last_seen_at, rows[b.id].version) == (t0 + timedelta(seconds=5), "2.2.0")
    assert (rows[b.id].health or {}).get("spool_records") == 3

    # Unchanged details are written again once they are old (another hub process may have written others).
    always = HeartbeatBuffer(rewrite_seconds=0)
    always.record(a.id, _beat(1), at=t0 + timedelta(seconds=10))
    await always.flush()
    await SYS.query(Agent).filter(id=a.id).update(version="marked")
    always.record(a.id, _beat(1), at=t0 + timedelta(seconds=15))
    await always.flush()
    assert (await _rows(site.store))[a.id].version == "2.1.0"


async def test_a_failed_flush_keeps_the_heartbeats_for_the_next(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    agent = site.agents[0]
    buffer = HeartbeatBuffer()
    buffer.record(agent.id, _beat(1))
    db = Agent._meta.db
    await db.execute_script("ALTER TABLE agent RENAME TO agent_away")  # the flush cannot write
    try:
        with pytest.raises(OperationalError):
            await buffer.flush()
    finally:
        await db.execute_script("ALTER TABLE agent_away RENAME TO agent")
    assert len(buffer) == 1
    assert await buffer.flush() == 1
    row = (await _rows(site.store))[agent.id]
    assert (row.version, row.last_seen_at is not None) == ("2.1.0", True)


async def test_has_work_matches_what_the_claims_would_take(client: Client, admin: Caller, settings: Settings) -> None:
    site = await make_site(client, admin, jobs=1, agents=2)
    other = await make_site(client, admin, "Other")
    agent = await SYS.query(Agent).get(id=site.agents[0].id)
    assert await dispatch.has_work(agent, settings) == (False, False)

    # Another store's run and another agent's command are not this agent's work.
    await trigger(client, admin, other.jobs[0])
    await AgentCommand.create(retailer_id=site.retailer, agent_id=site.agents[1].id, type="reload")
    assert await dispatch.has_work(agent, settings) == (False, False)

    run = await trigger(client, admin, site.jobs[0])
    assert await dispatch.has_work(agent, settings) == (False, True)
    # A retry that may not start yet is not work yet.
    later = datetime.now(UTC) + timedelta(minutes=5)
    await SYS.query(Run).filter(id=run["id"]).update(not_before=later)
    assert await dispatch.has_work(agent, settings) == (False, False)

    command = await AgentCommand.create(retailer_id=site.retailer, agent_id=agent.id, type="reload")
    assert await dispatch.has_work(agent, settings) == (True, False)
    # Delivered: not work, until it is due for redelivery.
    now = datetime.now(UTC)
    await SYS.query(AgentCommand).filter(id=command.id).update(status=CommandStatus.DELIVERED, delivered_at=now)
    assert await dispatch.has_work(agent, settings) == (False, False)
    stale = now - timedelta(seconds=settings.command_redeliver_seconds + 1)
    await SYS.query(AgentCommand).filter(id=command.id).update(delivered_at=stale)
    assert await dispatch.has_work(agent, settings) == (True, False)
    answer = await poll(client, site.agents[0], wait=0)
    assert [c["id"] for c in answer["commands"]] == [command.id]


async def test_a_revocation_written_elsewhere_refuses_the_next_poll(client: Client, admin: Caller) -> None:
    # As another hub process would revoke it: straight in the database, with no wake-up reaching this one.
    site = await make_site(client, admin)
    agent = site.agents[0]
    assert (await authenticate_agent(agent.credential)).id == agent.id
    assert (await client.post("/agent/v1/poll", headers=agent.headers, json={"wait": 0})).status_code == 200
    await SYS.query(Agent).filter(id=agent.id).update(revoked_at=datetime.now(UTC))
    refused = await client.post("/agent/v1/poll", headers=agent.headers, json={"wait": 0})
    assert refused.status_code == 401
    assert f"agent {agent.id}" in (await refused.get_json())["error"]
    unknown = await client.post("/agent/v1/poll", headers={"Authorization": "Bearer gsa_nope"}, json={"wait": 0})
    assert unknown.status_code == 401


async def test_the_agent_found_by_its_credential_has_what_the_channel_needs(client: Client, admin: Caller) -> None:
    site = await make_site(client, admin)
    await poll(client, site.agents[0], plugins=[{"name": "demo-pos"}])
    stored = await SYS.query(Agent).get(id=site.agents[0].id)
    whole = await authenticate_agent(site.agents[0].credential)
    for name in Agent._meta.db_fields:
        assert getattr(whole, name) == getattr(stored, name), name
    found = await authenticate_agent(f"  {site.agents[0].credential} ", lean=True)
    for name in ("id", "retailer_id", "store_id", "name", "credential_prefix", "created_at", "revoked_at"):
        assert getattr(found, name) == getattr(stored, name), name
    # The heartbeat's JSON is not read for every request, and not silently missing either.
    with pytest.raises(AttributeError):
        _ = found.plugins


def test_the_pool_size_is_a_setting() -> None:
    config = tortoise_config("postgres://hub@db.example:5432/hub", Settings(database_pool_size=17).database_pool_size)
    credentials = config["connections"]["postgres"]["credentials"]
    assert credentials["maxsize"] == 17
    assert Settings().database_pool_size == 5


async def test_a_serving_hub_pools_that_many_connections_without_resetting_them(settings: Settings) -> None:
    if not settings.db_url().startswith("postgres"):
        pytest.skip("SQLite has one connection, no pool")
    app = create_app(settings.model_copy(update={"database_pool_size": 3}), plugins=demo_plugins())
    async with app.test_app():
        pool = connections.get("postgres")._pool
        assert pool.get_max_size() == 3
        assert pool._reset is _keep_session  # no RESET ALL round trip per query given back
