"""End to end: the hub served by hypercorn and real ``grocerysync-agent run`` processes, the whole loop.

A technician's setup goes through the hub's own command line and API (a retailer, a store, a POS connection,
a destination, a job, an enrollment token); the store side is ``grocerysync-agent enroll`` then
``grocerysync-agent run``, each in its own process. The hub's timings (lease, progress interval, poll wait)
are shortened through its settings so each test takes seconds, not minutes.

Holding a run in the middle, deterministically: the store's POS export is a named pipe (see
:class:`PosExportPipe`) that the test writes, so the run is still reading when the test stops the hub, kills
the agent or cancels the run, whatever the machine's speed. POSIX only (``os.mkfifo``), like the real sshd.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import SSHD_SKIP, sftp_destination

from grocerysync.core.samples import POS_COLUMNS, catalogue_rows

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="the POS export pipe needs os.mkfifo (POSIX)")

HUB = [sys.executable, "-c", "import sys; from grocerysync.hub.cli import main; sys.exit(main())"]
AGENT = [sys.executable, "-m", "grocerysync.agent"]
ADMIN = "admin@example.com"
#: The logger of the hub's own log lines about runs and agents.
HUB_LOGGER = "grocerysync.hub"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
FINISHED = {"succeeded", "partially_failed", "failed", "cancelled"}
#: Hub timings for the tests: quick polls, progress reports and scheduler sweeps, short leases, and no grace
#: period after a start (a test of a hub restart asks for one).
FAST = {
    "GROCERYSYNC_AGENT_POLL_WAIT_SECONDS": "2",
    "GROCERYSYNC_AGENT_PROGRESS_INTERVAL_SECONDS": "0.5",
    "GROCERYSYNC_HEARTBEAT_FLUSH_SECONDS": "0.5",
    "GROCERYSYNC_RUN_ACK_SECONDS": "20",
    "GROCERYSYNC_RUN_LEASE_SECONDS": "15",
    "GROCERYSYNC_LEASE_GRACE_SECONDS": "0",
    "GROCERYSYNC_SCHEDULER_INTERVAL_SECONDS": "0.5",
    "GROCERYSYNC_PURGE_INTERVAL_SECONDS": "0",
}
#: Bytes of a POS export pipe sent at once: more than the CSV connector's first read (256 KiB), so a run reads
#: a few thousand rows and then waits for the rest.
HEAD = 400_000
T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], *, timeout: float = 30, every: float = 0.2, why: Callable[[], str] = str
) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{why()}")
        time.sleep(every)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return f"--- {path.name} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


# --- the hub ------------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """The hub answered an API call with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class Hub:
    """``grocerysync-hub serve`` in its own process; :meth:`stop` then :meth:`start` keeps its database."""

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=_free_port)
    token: str = ""
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "hub.log"

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*HUB, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"grocerysync-hub {args[0]} failed: {done.stderr}"
        return done.stdout

    def set_up(self) -> None:
        """Create the database, an admin and the admin's API token, as an operator does once."""
        self.cli("init")
        self.cli("create-user", ADMIN, "--role", "admin", "--password-stdin", stdin="correct horse battery\n")
        self.token = self.cli("create-token", ADMIN).strip().splitlines()[-1]

    def start(self) -> None:
        assert self.process is None
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"\n=== start {self.starts} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*HUB, "serve", "--bind", f"127.0.0.1:{self.port}"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        process = self.process

        def listening() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the hub exited with {process.returncode}\n{_tail(self.log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for("the hub to listen", listening, timeout=30, every=0.1, why=lambda: _tail(self.log))

    def stop(self) -> None:
        """Stop serving as an operator would (SIGTERM), and wait for the process to end."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the API as the admin; raise :class:`ApiError` for an error answer."""
        # The URL is always the test's own hub on loopback.
        request = urllib.request.Request(  # noqa: S310
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                detail: Any = json.loads(text)
            except ValueError:
                detail = text
            raise ApiError(exc.code, detail) from None
        return json.loads(raw) if raw else None

    def run(self, run_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/runs/{run_id}"))

    def runs(self, job_id: int) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/api/runs?job_id={job_id}&limit=100")["items"])

    def logs(self, run_id: int) -> list[dict[str, Any]]:
        """Every log entry the hub has for the run, oldest first."""
        entries: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", f"/api/logs?run_id={run_id}&limit=500&offset={len(entries)}")
            entries += page["items"]
            if len(entries) >= page["total"] or not page["items"]:
                return entries[::-1]

    def rejections(self, run_id: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", f"/api/runs/{run_id}/rejections?limit=500&offset={len(found)}")
            found += page["items"]
            if len(found) >= page["total"] or not page["items"]:
                return found


def _create_pg_database() -> str:
    import asyncpg

    name = f"gs_e2e_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed for the PostgreSQL end-to-end tests: {exc}")
    return name


def _drop_pg_database(name: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def running_hub(data_dir: Path, backend: str, **settings: str) -> Iterator[Hub]:
    """A hub set up and serving on its own database (SQLite in ``data_dir``, or a new PostgreSQL database), with
    the FAST timings and any ``settings`` overrides (``run_lease_seconds="3"``: GROCERYSYNC_RUN_LEASE_SECONDS)."""
    env = {**os.environ, "GROCERYSYNC_DATA_DIR": str(data_dir), **FAST}
    env.update({f"GROCERYSYNC_{k.upper()}": v for k, v in settings.items()})
    database = _create_pg_database() if backend == "postgres" else None
    if database is not None:
        env["GROCERYSYNC_DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{database}"
    hub = Hub(data_dir, env)
    try:
        hub.set_up()
        hub.start()
        yield hub
    finally:
        hub.stop()
        if database is not None:
            _drop_pg_database(database)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One hub with the FAST timings for the tests that need nothing else (each sets up its own retailer)."""
    with running_hub(tmp_path_factory.mktemp("hub"), str(request.param)) as hub:
        yield hub


HubFactory = Callable[..., Hub]


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[HubFactory]:
    """A hub of the test's own: ``make_hub(backend, **settings)`` (see :func:`running_hub`)."""
    with contextlib.ExitStack() as stack:
        made: list[Hub] = []

        def make(backend: str, **settings: str) -> Hub:
            data_dir = tmp_path / f"hub{len(made)}"
            data_dir.mkdir()
            made.append(stack.enter_context(running_hub(data_dir, backend, **settings)))
            return made[-1]

        yield make


# --- the store's POS export, written as the run reads it ------------------------------------------------------------


#: A barcode with a wrong check digit: the agent rejects the row and names it.
BAD_UPC = "036000291453"


def pos_export(items: int, *, bad_every: int = 0) -> tuple[bytes, list[str]]:
    """A POS export of ``items`` generated items, every ``bad_every``-th followed by a row with a bad barcode.

    Returns the file's bytes and the bad rows as the agent names them (``row N``, the header being row 1).
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(POS_COLUMNS.values()), lineterminator="\r\n")
    writer.writeheader()
    line = 1
    bad: list[str] = []
    for n, row in enumerate(catalogue_rows(items)):
        writer.writerow(row)
        line += 1
        if bad_every and n % bad_every == bad_every - 1:
            writer.writerow({**row, "ITEM_NO": f"9{row['ITEM_NO']}", "UPC": BAD_UPC, "PLU": ""})
            line += 1
            bad.append(f"row {line}")
    return out.getvalue().encode("utf-8"), bad


class PosExportPipe:
    """A store's POS export as a named pipe that this test writes while the agent reads it.

    One pass (one run reading the export) is served: the first ``head`` bytes at once, the rest once the test
    calls :meth:`release`, so the run is still reading for as long as the test wants. A reader that goes away
    mid-pass (a killed agent, a cancelled run) ends the pass. Another run gets the export only after
    :meth:`serve_again`: a pipe has no end-of-file of its own, so a reader still holding it open after the
    end would otherwise read the next pass as more rows.
    """

    def __init__(self, path: Path, data: bytes, *, head: int, chunk: int = 64 * 1024) -> None:
        self.path = path
        self.data = data
        self.head = head
        self.chunk = chunk
        self.released = threading.Event()
        #: Passes begun (a reader opened the pipe) and passes written to the end.
        self.passes = 0
        self.completed = 0
        self._allowed = 1
        self._stopped = False
        self._changed = threading.Condition()
        os.mkfifo(path)
        self._thread = threading.Thread(target=self._serve, name="pos-export-pipe", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Let the rest of the export through (for this pass and every later one)."""
        self.released.set()

    def serve_again(self) -> None:
        """Serve the export to one more reader (call it once the previous reader is gone)."""
        with self._changed:
            self._allowed += 1
            self._changed.notify_all()

    def _next_pass(self) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: self._allowed > 0 or self._stopped)
            if self._stopped:
                return False
            self._allowed -= 1
            return True

    def _serve(self) -> None:
        while self._next_pass():
            try:
                with self.path.open("wb", buffering=0) as pipe:  # blocks until a reader opens the pipe
                    if self._stopped:
                        return
                    self.passes += 1
                    pipe.write(self.data[: self.head])
                    self.released.wait()
                    for start in range(self.head, len(self.data), self.chunk):
                        if self._stopped:
                            return
                        pipe.write(self.data[start : start + self.chunk])
                    self.completed += 1
            except BrokenPipeError:
                continue  # the reader went away mid-pass

    def close(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self.released.set()
        try:
            # Unblock a writer waiting in open() for a reader.
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            pass
        else:
            os.close(fd)
        self._thread.join(timeout=5)


# --- a store set up through the API, and its agent processes ---------------------------------------------------------


@dataclass
class AgentProcess:
    """One ``grocerysync-agent run`` process."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return "\n".join(_tail(p, 60) for p in (self.stdout, self.stderr))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class Store:
    """A retailer's store on the hub, its export job and the folder its agent keeps state in."""

    hub: Hub
    root: Path
    retailer_id: int
    store_id: int
    job_id: int
    state_dir: Path
    feeds: Path
    agents: list[AgentProcess] = field(default_factory=list)
    agent_id: int = 0

    def enrollment_token(self) -> str:
        return str(self.hub.call("POST", f"/api/stores/{self.store_id}/enrollment-tokens", {})["token"])

    def enroll(self) -> int:
        done = subprocess.run(
            [
                *AGENT,
                "enroll",
                "--hub",
                self.hub.url,
                "--token",
                self.enrollment_token(),
                "--allow-http",
                "--state-dir",
                str(self.state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        self.agent_id = int(json.loads((self.state_dir / "agent.json").read_text())["agent_id"])
        return self.agent_id

    def start_agent(self) -> AgentProcess:
        number = len(self.agents)
        out, err = self.root / f"agent{number}.out", self.root / f"agent{number}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [*AGENT, "run", "--state-dir", str(self.state_dir)], stdout=stdout, stderr=stderr, env=os.environ
            )
        agent = AgentProcess(process, out, err)
        self.agents.append(agent)
        return agent

    def diagnostics(self) -> str:
        parts = [_tail(self.hub.log)]
        parts += [a.output() for a in self.agents]
        return "\n".join(parts)

    def trigger(self) -> int:
        return int(self.hub.call("POST", f"/api/jobs/{self.job_id}/trigger")["id"])

    def wait_run(
        self, run_id: int, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            run = self.hub.run(run_id)
            return run if predicate(run) else None

        return wait_for(f"run {run_id} {what}", probe, timeout=timeout, why=self.diagnostics)

    def wait_finished(self, run_id: int, timeout: float = 45) -> dict[str, Any]:
        return self.wait_run(run_id, lambda r: r["status"] in FINISHED, "to finish", timeout)

    def stop_agents(self) -> None:
        for agent in self.agents:
            agent.stop()


StoreFactory = Callable[..., Store]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[StoreFactory]:
    """A store on the given hub with a csv -> folder (or given destination) job, enrolled, its agent not started."""
    stores: list[Store] = []

    def make(
        hub: Hub,
        source_path: Path,
        *,
        destination: dict[str, Any] | None = None,
        max_retries: int = 0,
        batch_size: int = 500,
    ) -> Store:
        root = tmp_path / f"store{len(stores)}"
        feeds = root / "feeds"
        feeds.mkdir(parents=True)
        retailer = hub.call("POST", "/api/retailers", {"name": f"Corner Grocer {uuid.uuid4().hex[:8]}"})
        store_id = hub.call("POST", f"/api/retailers/{retailer['id']}/stores", {"name": "Main St"})["id"]
        source = hub.call(
            "POST",
            f"/api/stores/{store_id}/connections",
            {"name": "POS export", "plugin": "csv", "config": {"path": str(source_path), "columns": POS_COLUMNS}},
        )
        if destination is None:
            destination = {"plugin": "folder", "config": {"path": str(feeds), "format": "csv"}}
        dest = hub.call("POST", f"/api/stores/{store_id}/destinations", {"name": "Marketplace feed", **destination})
        job = hub.call(
            "POST",
            f"/api/stores/{store_id}/jobs",
            {
                "name": "POS to marketplace",
                "source_id": source["id"],
                "destination_id": dest["id"],
                "options": {"batch_size": batch_size},
                "max_retries": max_retries,
                "retry_delay_seconds": 0,
            },
        )
        store = Store(hub, root, retailer["id"], store_id, job["id"], root / "state", feeds)
        stores.append(store)
        store.enroll()
        return store

    yield make
    for store in stores:
        store.stop_agents()


@pytest.fixture
def pipes() -> Iterator[list[PosExportPipe]]:
    made: list[PosExportPipe] = []
    yield made
    for pipe in made:
        pipe.close()


def _feed_rows(folder: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for feed in sorted(folder.glob("*.csv")):
        rows += csv.DictReader(io.StringIO(feed.read_text(encoding="utf-8")))
    return rows


#: A line of the agent's console (``grocerysync-agent run`` logs every record there, one line each).
CONSOLE_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$"
)


def _console_records(*agents: AgentProcess) -> Counter[tuple[str, str]]:
    """(logger, message) of every record the agents logged, as counted from their consoles."""
    found: Counter[tuple[str, str]] = Counter()
    for agent in agents:
        for line in agent.stderr.read_text(encoding="utf-8", errors="replace").splitlines():
            if (match := CONSOLE_LINE.match(line)) is not None:
                found[match["logger"], match["message"]] += 1
    return found


def _shipped_records(hub: Hub, agent_id: int) -> Counter[tuple[str, str]]:
    """(logger, message) of every log record of the agent's on the hub (not the hub's own lines about it)."""
    found: Counter[tuple[str, str]] = Counter()
    offset = 0
    while True:
        page = hub.call("GET", f"/api/logs?agent_id={agent_id}&limit=500&offset={offset}")
        for entry in page["items"]:
            if not entry["logger"].startswith(HUB_LOGGER):
                found[entry["logger"], entry["message"]] += 1
        offset += len(page["items"])
        if offset >= page["total"] or not page["items"]:
            return found


def _wait_all_shipped_once(store: Store, *agents: AgentProcess) -> Counter[tuple[str, str]]:
    """Wait until the hub holds each record the running, idle agents logged exactly as often as they logged it."""
    last: list[Counter[tuple[str, str]]] = [Counter(), Counter()]

    def same() -> Counter[tuple[str, str]] | None:
        last[:] = [_console_records(*agents), _shipped_records(store.hub, store.agent_id)]
        return last[0] if last[0] == last[1] else None

    def why() -> str:
        logged, shipped = last
        return f"logged, not on the hub: {logged - shipped}\non the hub more often than logged: {shipped - logged}"

    return wait_for("the hub to hold every agent log record once", same, why=why)


# --- the tests --------------------------------------------------------------------------------------------------------


@pytest.mark.sshd
@pytest.mark.skipif(bool(SSHD_SKIP), reason=f"no test SSH server: {SSHD_SKIP}")
def test_enroll_trigger_run_and_report_over_sftp(
    shared_hub: Hub, make_store: StoreFactory, sshd_server: Any, tmp_path: Path
) -> None:
    """The core loop: a triggered run goes to the agent, which sends over SFTP and reports counts, rejections, logs."""
    hub = shared_hub
    data, bad = pos_export(1200, bad_every=100)
    assert len(bad) == 12
    export = tmp_path / "pos-export.csv"
    export.write_bytes(data)
    remote = tmp_path / "incoming"
    remote.mkdir()
    store = make_store(hub, export, destination=sftp_destination(sshd_server, remote))
    agent = store.start_agent()

    def online() -> dict[str, Any] | None:
        listed = hub.call("GET", f"/api/agents?store_id={store.store_id}")["items"]
        return listed[0] if listed and listed[0]["status"] == "online" else None

    listed = wait_for("the agent to be online", online, why=store.diagnostics)
    assert listed["id"] == store.agent_id
    assert {p["name"] for p in listed["plugins"] or []} >= {"csv", "sftp", "folder"}

    run_id = store.trigger()
    run = store.wait_finished(run_id)
    assert run["status"] == "partially_failed", run
    assert run["agent_id"] == store.agent_id
    assert (run["items_read"], run["items_written"], run["items_rejected"]) == (1200 + len(bad), 1200, len(bad))
    assert run["attempt"] == 1
    assert run["started_at"]
    assert run["finished_at"]

    rejections = hub.rejections(run_id)
    assert sorted(r["ref"] for r in rejections) == sorted(bad)
    assert {r["stage"] for r in rejections} == {"validate"}
    assert all("check digit" in r["reason"] for r in rejections)

    [feed] = remote.glob("*.csv")
    sent = list(csv.DictReader(io.StringIO(feed.read_text(encoding="utf-8"))))
    assert len(sent) == 1200
    assert BAD_UPC not in feed.read_text(encoding="utf-8")

    # Every record the agent logged is on the hub once, the run's tagged with it.
    logged = _wait_all_shipped_once(store, agent)
    mine = [e for e in hub.logs(run_id) if not e["logger"].startswith(HUB_LOGGER)]
    assert {(e["agent_id"], e["store_id"]) for e in mine} == {(store.agent_id, store.store_id)}
    text = "\n".join(e["message"] for e in mine)
    assert f"export 'POS to marketplace' run {run_id} started" in text
    assert f"export 'POS to marketplace' run {run_id} partially_failed: read {1200 + len(bad)}, sent 1200" in text
    assert "uploaded" in text
    # The destination's private key went from the hub to the agent, and shows in no log on either side.
    key_body = sshd_server.client_key_text.splitlines()[1]
    assert not any(key_body in message for _, message in logged)
    assert key_body not in hub.log.read_text(errors="replace")
    assert key_body not in agent.output()

    # Stopped as a service manager stops it: at once, cleanly, with nothing but log lines on its console.
    assert agent.process.poll() is None, agent.output()
    assert agent.stop() == 0, agent.output()
    assert "Traceback" not in agent.output()


def test_hub_outage_mid_run_loses_and_repeats_nothing(
    backend: str, make_hub: HubFactory, make_store: StoreFactory, pipes: list[PosExportPipe], tmp_path: Path
) -> None:
    """The hub goes away while a run reads; the run finishes on the agent, and everything arrives once after."""
    # A lease shorter than the outage: the hub's grace period after a start is what keeps the run the agent's.
    hub = make_hub(backend, run_lease_seconds="3", lease_grace_seconds="60")
    data, bad = pos_export(6000, bad_every=40)
    pipe = PosExportPipe(tmp_path / "pos-export.csv", data, head=HEAD)
    pipes.append(pipe)
    store = make_store(hub, pipe.path, batch_size=250)
    agent = store.start_agent()
    run_id = store.trigger()
    # Acked and reading: some of the export has been read, the rest is held back in the pipe.
    store.wait_run(run_id, lambda r: r["status"] == "running" and r["items_read"] > 0, "to be reading")

    hub.stop()
    down = time.monotonic()
    pipe.release()
    # The run ends on the agent while the hub is away: the feed file is committed into the folder.
    wait_for("the run to end during the outage", lambda: list(store.feeds.glob("*.csv")), why=store.diagnostics)
    # The agent keeps trying the hub; its result, rejections and logs wait in its spool. Stay away for longer
    # than the lease.
    time.sleep(max(0.0, down + 5 - time.monotonic()))
    hub.start()

    run = store.wait_finished(run_id, timeout=90)  # the agent's backoff decides when it tries again
    assert run["status"] == "partially_failed", run
    assert (run["items_read"], run["items_written"], run["items_rejected"]) == (6000 + len(bad), 6000, len(bad))
    assert run["attempt"] == 1
    assert [r["id"] for r in hub.runs(store.job_id)] == [run_id], "the run was retried"
    assert pipe.passes == 1
    assert sorted(r["ref"] for r in hub.rejections(run_id)) == sorted(bad), "rejections lost or stored twice"
    assert len(_feed_rows(store.feeds)) == 6000

    logged = _wait_all_shipped_once(store, agent)
    assert any("cannot reach the hub" in message for _, message in logged), "the outage left no trace in the log"
    text = "\n".join(e["message"] for e in hub.logs(run_id))
    assert f"export 'POS to marketplace' run {run_id} started" in text
    assert f"export 'POS to marketplace' run {run_id} partially_failed" in text


def test_killed_agent_lease_expires_and_the_retry_completes(
    backend: str, make_hub: HubFactory, make_store: StoreFactory, pipes: list[PosExportPipe], tmp_path: Path
) -> None:
    """SIGKILL mid-run: the lease runs out, the attempt fails with the lease message, the retry finishes."""
    hub = make_hub(backend, run_lease_seconds="3")
    data, _ = pos_export(5000)
    pipe = PosExportPipe(tmp_path / "pos-export.csv", data, head=HEAD)
    pipes.append(pipe)
    store = make_store(hub, pipe.path, max_retries=1, batch_size=250)
    agent = store.start_agent()
    run_id = store.trigger()
    store.wait_run(run_id, lambda r: r["status"] == "running" and r["items_read"] > 0, "to be reading")

    agent.process.send_signal(signal.SIGKILL)
    agent.process.wait(timeout=10)
    failed = store.wait_finished(run_id, timeout=30)
    assert failed["status"] == "failed"
    assert "lease" in failed["error"], failed["error"]
    assert list(store.feeds.glob("*.csv")) == []

    def retry() -> dict[str, Any] | None:
        newer = [r for r in hub.runs(store.job_id) if r["id"] != run_id]
        return newer[0] if newer else None

    queued = wait_for("the retry to be queued", retry, why=store.diagnostics)
    assert queued["attempt"] == 2
    assert queued["trigger"] == "retry"
    assert f"retry queued as run {queued['id']}" in failed["error"]
    pipe.release()
    pipe.serve_again()
    store.start_agent()
    done = store.wait_finished(queued["id"])
    assert done["status"] == "succeeded", done
    assert (done["items_read"], done["items_written"]) == (5000, 5000)
    assert len(_feed_rows(store.feeds)) == 5000
    # Exactly one retry: the job allowed one.
    assert len(hub.runs(store.job_id)) == 2


def test_revoked_agent_stops_with_exit_code_3_and_says_why(
    shared_hub: Hub, make_store: StoreFactory, tmp_path: Path
) -> None:
    hub = shared_hub
    export = tmp_path / "pos-export.csv"
    export.write_bytes(pos_export(10)[0])
    store = make_store(hub, export)
    agent = store.start_agent()
    wait_for(
        "the agent to poll",
        lambda: hub.call("GET", f"/api/agents/{store.agent_id}")["last_seen_at"],
        why=store.diagnostics,
    )
    revoked = hub.call("POST", f"/api/agents/{store.agent_id}/revoke")
    assert revoked["status"] == "revoked"
    code = wait_for("the agent to exit", agent.process.poll, timeout=30, why=store.diagnostics)
    assert code == 3, agent.output()
    stderr = agent.stderr.read_text(errors="replace")
    assert "Traceback" not in stderr
    assert "revoked" in stderr
    # What to do about it, down to the command.
    assert f"grocerysync-agent enroll --hub {hub.url} --token TOKEN --force" in stderr
    # Started again (by hand, or by a service manager that ignored the exit status), it stops at its first call.
    again = subprocess.run(
        [*AGENT, "run", "--state-dir", str(store.state_dir)], capture_output=True, text=True, timeout=60, check=False
    )
    assert again.returncode == 3, again.stderr
    assert "Traceback" not in again.stderr


def test_cancel_a_running_run_then_the_agent_takes_the_next(
    shared_hub: Hub, make_store: StoreFactory, pipes: list[PosExportPipe], tmp_path: Path
) -> None:
    """A technician cancels a run that is reading: the agent stops it, commits nothing, and reports it cancelled."""
    hub = shared_hub
    data, _ = pos_export(5000)
    pipe = PosExportPipe(tmp_path / "pos-export.csv", data, head=HEAD)
    pipes.append(pipe)
    store = make_store(hub, pipe.path, batch_size=100)
    store.start_agent()
    run_id = store.trigger()
    store.wait_run(run_id, lambda r: r["status"] == "running" and r["items_read"] > 0, "to be reading")

    asked = hub.call("POST", f"/api/runs/{run_id}/cancel")
    assert asked["cancel_requested_at"]

    def cancel_delivered() -> bool:
        listed = hub.call("GET", f"/api/agents/{store.agent_id}/commands")["items"]
        return any(c["type"] == "cancel" and c["run_id"] == run_id and c["status"] != "pending" for c in listed)

    # Only once the agent knows is the rest of the export let through: it must not finish the run regardless.
    wait_for("the agent to get the cancel", cancel_delivered, why=store.diagnostics)
    pipe.release()
    run = store.wait_finished(run_id)
    assert run["status"] == "cancelled", run
    assert run["items_read"] < 5000
    assert list(store.feeds.glob("*.csv")) == [], "a cancelled run committed its feed"

    # The agent carries on: the next run sends the whole catalogue (nothing of the cancelled one was committed).
    pipe.serve_again()
    again = store.trigger()
    done = store.wait_finished(again)
    assert done["status"] == "succeeded", done
    assert done["items_written"] == 5000
    assert len(_feed_rows(store.feeds)) == 5000


def test_diagnostics_and_reload_commands_answer_through_the_api(
    shared_hub: Hub, make_store: StoreFactory, tmp_path: Path
) -> None:
    hub = shared_hub
    export = tmp_path / "pos-export.csv"
    export.write_bytes(pos_export(10)[0])
    store = make_store(hub, export)
    store.start_agent()
    sent = {
        kind: hub.call("POST", f"/api/agents/{store.agent_id}/commands", {"type": kind})
        for kind in ("diagnostics", "reload")
    }
    assert {c["status"] for c in sent.values()} == {"pending"}

    def answered(command_id: int) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            found = hub.call("GET", f"/api/agents/{store.agent_id}/commands/{command_id}")
            return found if found["status"] in ("done", "failed") else None

        return probe

    diagnostics = wait_for("the diagnostics", answered(sent["diagnostics"]["id"]), why=store.diagnostics)
    assert diagnostics["status"] == "done", diagnostics
    report = diagnostics["result"]
    assert report["agent_id"] == store.agent_id
    assert report["hostname"] == socket.gethostname()
    assert report["hub_url"] == hub.url
    assert report["hub_reachable"] is True
    assert Path(report["state_dir"]) == store.state_dir
    assert {p["name"] for p in report["plugins"]} >= {"csv", "folder"}
    # The settings the hub gives its agents (FAST) are the ones this agent runs with.
    assert report["config"]["poll_wait"] == float(FAST["GROCERYSYNC_AGENT_POLL_WAIT_SECONDS"])
    credential = json.loads((store.state_dir / "agent.json").read_text())["credential"]
    assert credential not in json.dumps(diagnostics)

    reload = wait_for("the reload", answered(sent["reload"]["id"]), why=store.diagnostics)
    assert reload["status"] == "done", reload
