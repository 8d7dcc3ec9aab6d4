"""What the end-to-end tests of the agent-hub loop drive: hub and agent processes, a store set up through the
hub's API, and a POS export the test writes while the agent reads it (see ``test_loop_e2e.py``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hubprocess import (
    AGENT,
    DatabaseUnavailable,
    add_job,
    add_store,
    api_call,
    create_database,
    database_url,
    drop_database,
    free_port,
    hub_env,
    set_up_hub,
    start_serving,
    stop_process,
    tail,
)

from grocerysync.core.samples import POS_COLUMNS, catalogue_rows

#: The logger of the hub's own log lines about runs and agents.
HUB_LOGGER = "grocerysync.hub"
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


# --- the hub ------------------------------------------------------------------------------------------------------


@dataclass
class Hub:
    """``grocerysync-hub serve`` in its own process; :meth:`stop` then :meth:`start` keeps its database."""

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    token: str = ""
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "hub.log"

    def set_up(self) -> None:
        """Create the database, an admin and the admin's API token, as an operator does once."""
        self.token = set_up_hub(self.env, timeout=60)

    def start(self) -> None:
        assert self.process is None
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"\n=== start {self.starts} ===\n".encode())
        self.process = start_serving(self.env, self.port, self.log, timeout=30)

    def stop(self) -> None:
        """Stop serving as an operator would (SIGTERM), and wait for the process to end."""
        stop_process(self.process)
        self.process = None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the API as the admin; raise :class:`hubprocess.ApiError` for an error answer."""
        return api_call(self.url, self.token, method, path, body)

    def run(self, run_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/runs/{run_id}"))

    def runs(self, job_id: int) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/api/runs?job_id={job_id}&limit=100")["items"])

    def every(self, path: str, **query: object) -> list[dict[str, Any]]:
        """Every item of the API's paged list at ``path`` (filtered by ``query``), in the order the API lists them."""
        found: list[dict[str, Any]] = []
        while True:
            params = urllib.parse.urlencode({**query, "limit": 500, "offset": len(found)})
            page = self.call("GET", f"{path}?{params}")
            found += page["items"]
            if len(found) >= page["total"] or not page["items"]:
                return found

    def logs(self, run_id: int) -> list[dict[str, Any]]:
        """Every log entry the hub has for the run, oldest first."""
        return self.every("/api/logs", run_id=run_id)[::-1]

    def rejections(self, run_id: int) -> list[dict[str, Any]]:
        return self.every(f"/api/runs/{run_id}/rejections")


@contextlib.contextmanager
def running_hub(data_dir: Path, backend: str, **settings: str) -> Iterator[Hub]:
    """A hub set up and serving on its own database (SQLite in ``data_dir``, or a new PostgreSQL database), with
    the FAST timings and any ``settings`` overrides (``run_lease_seconds="3"``: GROCERYSYNC_RUN_LEASE_SECONDS)."""
    database = None
    if backend == "postgres":
        try:
            database = create_database("gs_e2e")
        except DatabaseUnavailable as exc:
            pytest.fail(f"the PostgreSQL end-to-end tests need PostgreSQL: {exc}")
    fast = {name.removeprefix("GROCERYSYNC_").lower(): value for name, value in FAST.items()}
    env = hub_env(data_dir, database_url(database) if database else None, **{**fast, **settings})
    hub = Hub(data_dir, env)
    try:
        hub.set_up()
        hub.start()
        yield hub
    finally:
        hub.stop()
        if database is not None:
            drop_database(database)


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
        self._stop = threading.Event()
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
            self._changed.wait_for(lambda: self._allowed > 0 or self._stop.is_set())
            if self._stop.is_set():
                return False
            self._allowed -= 1
            return True

    def _serve(self) -> None:
        while self._next_pass():
            try:
                with self.path.open("wb", buffering=0) as pipe:  # blocks until a reader opens the pipe
                    if self._stop.is_set():
                        return
                    self.passes += 1
                    pipe.write(self.data[: self.head])
                    self.released.wait()
                    for start in range(self.head, len(self.data), self.chunk):
                        if self._stop.is_set():
                            return
                        pipe.write(self.data[start : start + self.chunk])
                    self.completed += 1
            except BrokenPipeError:
                continue  # the reader went away mid-pass

    def close(self) -> None:
        with self._changed:
            self._stop.set()
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
        return "\n".join(tail(p, 60) for p in (self.stdout, self.stderr))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM, as a service manager stops it
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

    def evidence(self) -> str:
        parts = [tail(self.hub.log)]
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

        return wait_for(f"run {run_id} {what}", probe, timeout=timeout, why=self.evidence)

    def wait_finished(self, run_id: int, timeout: float = 45) -> dict[str, Any]:
        return self.wait_run(run_id, lambda r: r["status"] in FINISHED, "to finish", timeout)

    def stop_agents(self) -> None:
        for agent in self.agents:
            agent.stop()


def create_store(
    hub: Hub,
    root: Path,
    source_path: Path,
    *,
    destination: dict[str, Any] | None = None,
    max_retries: int = 0,
    batch_size: int = 500,
) -> Store:
    """A new retailer's store on ``hub`` with a csv -> folder (or ``destination``) job, and its agent enrolled
    (not started) with its state in ``root``."""
    feeds = root / "feeds"
    feeds.mkdir(parents=True)
    ids = add_store(hub.call, source_path, feeds, destination=destination)
    job_id = add_job(hub.call, ids, options={"batch_size": batch_size}, max_retries=max_retries, retry_delay_seconds=0)
    store = Store(hub, root, ids["retailer"], ids["store"], job_id, root / "state", feeds)
    store.enroll()
    return store


def feed_rows(folder: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for feed in sorted(folder.glob("*.csv")):
        rows += csv.DictReader(io.StringIO(feed.read_text(encoding="utf-8")))
    return rows


#: A line of the agent's console (``grocerysync-agent run`` logs every record there, one line each).
CONSOLE_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$"
)


def console_records(*agents: AgentProcess) -> Counter[tuple[str, str]]:
    """(logger, message) of every record the agents logged, as counted from their consoles."""
    found: Counter[tuple[str, str]] = Counter()
    for agent in agents:
        for line in agent.stderr.read_text(encoding="utf-8", errors="replace").splitlines():
            if (match := CONSOLE_LINE.match(line)) is not None:
                found[match["logger"], match["message"]] += 1
    return found


def shipped_records(hub: Hub, agent_id: int) -> Counter[tuple[str, str]]:
    """(logger, message) of every log record of the agent's on the hub (not the hub's own lines about it)."""
    entries = hub.every("/api/logs", agent_id=agent_id)
    return Counter((e["logger"], e["message"]) for e in entries if not e["logger"].startswith(HUB_LOGGER))


def wait_all_shipped_once(store: Store, *agents: AgentProcess) -> Counter[tuple[str, str]]:
    """Wait until the hub holds each record the running, idle agents logged exactly as often as they logged it."""
    last: list[Counter[tuple[str, str]]] = [Counter(), Counter()]

    def same() -> Counter[tuple[str, str]] | None:
        last[:] = [console_records(*agents), shipped_records(store.hub, store.agent_id)]
        return last[0] if last[0] == last[1] else None

    def why() -> str:
        logged, shipped = last
        return f"logged, not on the hub: {logged - shipped}\non the hub more often than logged: {shipped - logged}"

    return wait_for("the hub to hold every agent log record once", same, why=why)
