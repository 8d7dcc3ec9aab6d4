"""End to end: two real hub processes (hypercorn) serving one PostgreSQL database.

An agent's long poll held by process A is answered at once when a technician triggers the job on process B
(the wake-up crosses processes through PostgreSQL LISTEN/NOTIFY), and a schedule that is due in both processes
at the same moment queues one run (the due jobs are claimed with FOR UPDATE SKIP LOCKED).

The "agent" here is the test itself speaking the wire protocol (``grocerysync.core.wire``) with aiohttp, so the
test measures the hub, not an agent's polling loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from hubprocess import (
    DatabaseUnavailable,
    Served,
    add_job,
    add_store,
    api_call,
    fresh_database,
    hub_env,
    serving,
    set_up_hub,
    tail,
)

from grocerysync.core.wire import AGENT_API_PREFIX, EnrollRequest, Heartbeat, PollAnswer

pytestmark = pytest.mark.postgres

#: How long the agent asks the hub to hold its poll: a poll answered much sooner was woken.
POLL_WAIT = 30.0
#: How often each hub process looks for due schedules in these tests.
TICK = 0.5


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for the two hubs (skips when the server is unreachable)."""
    try:
        with fresh_database("gs_scaleout") as url:
            yield url
    except DatabaseUnavailable as exc:
        pytest.skip(f"these tests need the PostgreSQL server at 127.0.0.1:5432: {exc}")


@dataclass
class HubProcess:
    """One ``grocerysync-hub serve`` process."""

    name: str
    served: Served

    @property
    def url(self) -> str:
        return self.served.url


@dataclass
class Cluster:
    """Two hub processes on one database, and an admin API token valid on both."""

    a: HubProcess
    b: HubProcess
    token: str
    database: str
    folder: Path

    @property
    def logs(self) -> str:
        return tail(self.a.served.log) + "\n" + tail(self.b.served.log)


@pytest.fixture(scope="module")
def cluster(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Set the database up once (as an operator does), then serve it from two processes."""
    folder = tmp_path_factory.mktemp("scaleout")
    env = hub_env(
        folder,
        database,
        # Every process of one hub needs the same key: each may decrypt what another saved.
        secret_key=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        scheduler_interval_seconds=str(TICK),
    )
    token = set_up_hub(env, timeout=60)
    with contextlib.ExitStack() as stack:
        a, b = (HubProcess(name, stack.enter_context(serving(env, folder / f"hub-{name}.log"))) for name in "ab")
        yield Cluster(a, b, token, database, folder)


class Api:
    """The admin's REST calls to one hub process."""

    def __init__(self, session: aiohttp.ClientSession, hub: HubProcess, token: str) -> None:
        self.session, self.hub, self.headers = session, hub, {"Authorization": f"Bearer {token}"}

    async def __call__(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.session.request(method, self.hub.url + path, json=body, headers=self.headers) as response:
            answer = await response.json()
            assert response.status < 300, f"{method} {path} on hub {self.hub.name}: HTTP {response.status} {answer}"
            return answer


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POLL_WAIT + 30)) as made:
        yield made


async def _store(cluster: Cluster, hub: HubProcess, name: str) -> dict[str, int]:
    """A retailer with one store, its POS connection and destination, made through ``hub``'s API."""
    call = functools.partial(api_call, hub.url, cluster.token)
    folder = cluster.folder
    return await asyncio.to_thread(
        add_store, call, folder / "pos.csv", folder / "feeds", retailer=name, store={"time_zone": "UTC"}
    )


async def _job(cluster: Cluster, hub: HubProcess, ids: dict[str, int], name: str, schedule: str = "manual") -> int:
    call = functools.partial(api_call, hub.url, cluster.token)
    return await asyncio.to_thread(add_job, call, ids, name, schedule=schedule)


async def test_a_trigger_on_one_process_wakes_a_poll_held_by_another(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    on_a, on_b = Api(session, cluster.a, cluster.token), Api(session, cluster.b, cluster.token)
    ids = await _store(cluster, cluster.b, "Corner Grocer")
    job_id = await _job(cluster, cluster.b, ids, "POS to marketplace")
    token = (await on_b("POST", f"/api/stores/{ids['store']}/enrollment-tokens", {}))["token"]
    enroll = EnrollRequest.model_validate({"token": token, "hostname": "till-01"})
    async with session.post(f"{cluster.a.url}{AGENT_API_PREFIX}/enroll", json=enroll.wire()) as response:
        assert response.status == 201, await response.text()
        credential = (await response.json())["credential"]

    async def poll() -> tuple[PollAnswer, float]:
        heartbeat = Heartbeat(hostname="till-01", wait=POLL_WAIT, capacity=1)
        async with session.post(
            f"{cluster.a.url}{AGENT_API_PREFIX}/poll",
            json=heartbeat.model_dump(mode="json"),
            headers={"Authorization": f"Bearer {credential}"},
        ) as response:
            assert response.status == 200, await response.text()
            answer = PollAnswer.model_validate(await response.json())
        return answer, time.monotonic()

    polling = asyncio.create_task(poll())
    # Let the poll reach process A and wait there with nothing to do.
    await asyncio.sleep(1.5)
    assert not polling.done(), f"the poll returned before there was work: {polling.result()[0]}\n{cluster.logs}"

    run = await on_b("POST", f"/api/jobs/{job_id}/trigger")
    committed = time.monotonic()
    answer, answered = await asyncio.wait_for(polling, POLL_WAIT + 10)
    elapsed = answered - committed
    assert [r.run_id for r in answer.runs] == [run["id"]], (
        f"the poll on hub A ended {elapsed:.2f} s after the trigger on hub B without the run (its wait was "
        f"{POLL_WAIT:.0f} s): the wake-up did not cross processes\n{cluster.logs}"
    )
    assert elapsed < 5, (
        f"the poll on hub A took {elapsed:.2f} s to answer a trigger made on hub B (its wait was {POLL_WAIT:.0f} s): "
        f"the wake-up did not cross processes\n{cluster.logs}"
    )
    print(f"hub A answered the poll {elapsed:.3f} s after hub B committed the trigger")
    assert answer.runs[0].spec.name == "POS to marketplace"
    assert (await on_a("GET", f"/api/runs/{run['id']}"))["status"] == "dispatched"


async def test_a_schedule_due_in_both_processes_fires_once(cluster: Cluster) -> None:
    ids = await _store(cluster, cluster.a, "Schedules Inc")
    # Daily, so its next occurrence cannot come round while the test watches (every minute could).
    jobs = [await _job(cluster, cluster.a, ids, f"nightly {n}", schedule="0 3 * * *") for n in range(20)]
    # Both processes are ticking; make every job due at once, as after a hub outage.
    conn = await asyncpg.connect(cluster.database.replace("postgres://", "postgresql://", 1))
    try:
        past = datetime.now(UTC) - timedelta(minutes=5)
        await conn.execute("UPDATE export_job SET next_run_at = $1 WHERE id = ANY($2::int[])", past, jobs)
        # Two ticks of each process, and then some.
        await asyncio.sleep(4 * TICK + 1)
        counts = await conn.fetch(
            "SELECT job_id, count(*) AS n, array_agg(trigger) AS triggers FROM run WHERE job_id = ANY($1::int[]) "
            "GROUP BY job_id",
            jobs,
        )
        upcoming = await conn.fetch("SELECT next_run_at FROM export_job WHERE id = ANY($1::int[])", jobs)
    finally:
        await conn.close()
    per_job = {row["job_id"]: (row["n"], list(row["triggers"])) for row in counts}
    assert per_job == dict.fromkeys(jobs, (1, ["schedule"])), f"runs per job: {per_job}\n{cluster.logs}"
    assert all(row["next_run_at"] > datetime.now(UTC) for row in upcoming), "a job's next run was not moved on"
