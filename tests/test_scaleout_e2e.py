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
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from grocerysync.core.samples import POS_COLUMNS
from grocerysync.core.wire import AGENT_API_PREFIX, EnrollRequest, Heartbeat, PollAnswer

pytestmark = pytest.mark.postgres

HUB = [sys.executable, "-c", "import sys; from grocerysync.hub.cli import main; sys.exit(main())"]
ADMIN = "admin@example.com"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
#: How long the agent asks the hub to hold its poll: a poll answered much sooner was woken.
POLL_WAIT = 30.0
#: How often each hub process looks for due schedules in these tests.
TICK = 0.5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for the two hubs (skips when the server is unreachable)."""
    name = f"gs_scaleout_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"these tests need the PostgreSQL server at 127.0.0.1:5432, which is unreachable: {exc}")
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class HubProcess:
    """One ``grocerysync-hub serve`` process."""

    name: str
    url: str
    log: Path
    process: subprocess.Popen[bytes]


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
        return _tail(self.a.log) + "\n" + _tail(self.b.log)


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([*HUB, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"grocerysync-hub {args[0]} failed: {done.stderr}"
    return done.stdout


def _serve(name: str, env: dict[str, str], folder: Path) -> HubProcess:
    port = _free_port()
    log = folder / f"hub-{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*HUB, "serve", "--bind", f"127.0.0.1:{port}"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"hub {name} did not start\n{_tail(log)}")
            time.sleep(0.1)
    return HubProcess(name, f"http://127.0.0.1:{port}", log, process)


def _stop(hub: HubProcess) -> None:
    hub.process.terminate()
    try:
        hub.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        hub.process.kill()
        hub.process.wait()


@pytest.fixture(scope="module")
def cluster(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Set the database up once (as an operator does), then serve it from two processes."""
    folder = tmp_path_factory.mktemp("scaleout")
    env = {
        **os.environ,
        "GROCERYSYNC_DATA_DIR": str(folder),
        "GROCERYSYNC_DATABASE_URL": database,
        # Every process of one hub needs the same key: each may decrypt what another saved.
        "GROCERYSYNC_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "GROCERYSYNC_SCHEDULER_INTERVAL_SECONDS": str(TICK),
        "GROCERYSYNC_PURGE_INTERVAL_SECONDS": "0",
    }
    _cli(env, "init")
    _cli(env, "create-user", ADMIN, "--role", "admin", "--password-stdin", stdin="correct horse battery\n")
    token = _cli(env, "create-token", ADMIN).strip().splitlines()[-1]
    a = _serve("a", env, folder)
    try:
        b = _serve("b", env, folder)
    except BaseException:
        _stop(a)
        raise
    yield Cluster(a, b, token, database, folder)
    _stop(a)
    _stop(b)


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


async def _store(api: Api, folder: Path, name: str) -> dict[str, int]:
    """A retailer with one store, its POS connection and destination (the configuration stays on the hub)."""
    retailer = await api("POST", "/api/retailers", {"name": name})
    store = await api("POST", f"/api/retailers/{retailer['id']}/stores", {"name": "Main St", "time_zone": "UTC"})
    source = await api(
        "POST",
        f"/api/stores/{store['id']}/connections",
        {"name": "POS", "plugin": "csv", "config": {"path": str(folder / "pos.csv"), "columns": POS_COLUMNS}},
    )
    destination = await api(
        "POST",
        f"/api/stores/{store['id']}/destinations",
        {"name": "feed", "plugin": "folder", "config": {"path": str(folder / "feeds"), "format": "csv"}},
    )
    return {"retailer": retailer["id"], "store": store["id"], "source": source["id"], "destination": destination["id"]}


async def _job(api: Api, ids: dict[str, int], name: str, schedule: str = "manual") -> int:
    body = {"name": name, "source_id": ids["source"], "destination_id": ids["destination"], "schedule": schedule}
    return int((await api("POST", f"/api/stores/{ids['store']}/jobs", body))["id"])


async def test_a_trigger_on_one_process_wakes_a_poll_held_by_another(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    on_a, on_b = Api(session, cluster.a, cluster.token), Api(session, cluster.b, cluster.token)
    ids = await _store(on_b, cluster.folder, "Corner Grocer")
    job_id = await _job(on_b, ids, "POS to marketplace")
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


async def test_a_schedule_due_in_both_processes_fires_once(cluster: Cluster, session: aiohttp.ClientSession) -> None:
    on_a = Api(session, cluster.a, cluster.token)
    ids = await _store(on_a, cluster.folder, "Schedules Inc")
    # Daily, so its next occurrence cannot come round while the test watches (every minute could).
    jobs = [await _job(on_a, ids, f"nightly {n}", schedule="0 3 * * *") for n in range(20)]
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
