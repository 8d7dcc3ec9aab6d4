"""Wake-ups across hub processes: PostgreSQL LISTEN/NOTIFY between Wakeups instances on separate connections."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from grocerysync.hub.domain.pglisten import APPLICATION_NAME, connect_kwargs
from grocerysync.hub.domain.wake import Wakeups

# Each test gets its own channel, so hub processes of other test sessions on this server cannot wake its waiters.
CHANNEL = "grocerysync_wake_test"


async def _set_soon(event: asyncio.Event, seconds: float = 5.0) -> bool:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


@pytest.fixture
async def two_hubs(pg_database: str) -> AsyncIterator[tuple[Wakeups, Wakeups]]:
    """Two Wakeups, as in two hub processes: each with its own LISTEN connection to the same database."""
    channel = f"{CHANNEL}_{uuid.uuid4().hex[:12]}"
    a, b = Wakeups(), Wakeups()
    await a.start(pg_database, channel=channel)
    await b.start(pg_database, channel=channel)
    assert a.listening
    assert b.listening
    yield a, b
    await a.stop()
    await b.stop()


pg = pytest.mark.postgres


@pg
async def test_a_notification_in_one_process_wakes_a_poll_in_another(two_hubs: tuple[Wakeups, Wakeups]) -> None:
    a, b = two_hubs
    with (
        b.waiter(agent_id=1, store_id=10) as by_store,
        b.waiter(agent_id=2, store_id=20) as by_agent,
        b.waiter(agent_id=3, store_id=30) as bystander,
        a.waiter(agent_id=4, store_id=10) as local,
    ):
        await a.notify_store(10)
        assert local.is_set(), "the notifying process wakes its own polls at once"
        assert await _set_soon(by_store), "store 10's poll on the other process was not woken"
        await a.notify_agent(2)
        assert await _set_soon(by_agent), "agent 2's poll on the other process was not woken"
        await asyncio.sleep(0.2)
        assert not bystander.is_set(), "a poll of another store and agent was woken"


@pg
async def test_the_listener_reconnects_and_then_wakes_every_local_poll(
    two_hubs: tuple[Wakeups, Wakeups], pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = two_hubs
    admin = await asyncpg.connect(pg_database.replace("postgres://", "postgresql://", 1))
    try:
        with b.waiter(agent_id=1, store_id=10) as waiting, caplog.at_level(logging.INFO):
            # Cut both listeners off, as a database restart or a network drop would.
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                APPLICATION_NAME,
            )
            assert killed == 2
            # Notifications sent meanwhile may be lost, so every poll re-reads the database after reconnecting.
            assert await _set_soon(waiting, 15), "a poll waiting across the reconnection was not woken"
            assert await b.wait_listening(15)
            assert await a.wait_listening(15)
        dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 2, caplog.text
        assert "reconnecting" in dropped[0]
        assert any("listening on PostgreSQL" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
        with b.waiter(agent_id=5, store_id=50) as after:
            await a.notify_store(50)
            assert await _set_soon(after), "wake-ups did not cross processes after reconnecting"
    finally:
        await admin.close()


@pg
async def test_a_process_does_not_wake_its_own_polls_twice(two_hubs: tuple[Wakeups, Wakeups]) -> None:
    a, _ = two_hubs
    with a.waiter(agent_id=1, store_id=10) as event:
        await a.notify_store(10)
        assert event.is_set()
        event.clear()
        # Its own notification coming back from PostgreSQL is recognised (same backend) and ignored.
        await asyncio.sleep(0.5)
        assert not event.is_set()


async def test_sqlite_wakes_only_within_the_process(tmp_path: Path) -> None:
    hub = Wakeups()
    await hub.start(f"sqlite://{tmp_path}/hub.sqlite3")
    try:
        assert not hub.listening
        assert not await hub.wait_listening(0.1)
        with hub.waiter(agent_id=1, store_id=10) as event:
            await hub.notify_store(10)
            assert event.is_set()
    finally:
        await hub.stop()
    assert hub.waiting() == 0


def test_the_listener_connects_like_the_pool_without_its_pool_settings() -> None:
    kwargs = connect_kwargs("postgres://hub:s3cret@db.example:6543/grocery?minsize=2&maxsize=9&ssl=require")
    assert {k: kwargs[k] for k in ("host", "port", "user", "password", "database")} == {
        "host": "db.example",
        "port": 6543,
        "user": "hub",
        "password": "s3cret",
        "database": "grocery",
    }
    assert kwargs["ssl"] is True
    assert "minsize" not in kwargs
    assert "maxsize" not in kwargs
    # The hub's system connections act for every retailer under row-level security; so does this one.
    assert kwargs["server_settings"]["grocerysync.all_retailers"] == "on"
    assert kwargs["server_settings"]["application_name"] == APPLICATION_NAME
