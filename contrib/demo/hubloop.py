"""The second half of the demo: a hub, a store set up through its API, and a store agent connected to it.

Everything runs on this machine, in processes of its own, exactly as an operator and a technician would start
them: ``grocerysync-hub init / create-user / create-token / serve``, the REST API for the store's
configuration, then ``grocerysync-agent enroll`` and ``grocerysync-agent run`` at the "store". The hub keeps
its data in SQLite in the demo folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from grocerysync.core.samples import POS_COLUMNS

HUB = [sys.executable, "-c", "import sys; from grocerysync.hub.cli import main; sys.exit(main())"]
AGENT = [sys.executable, "-m", "grocerysync.agent"]
ADMIN = "admin@example.com"
#: The demo's admin password (the demo uses the API token; the password is for signing in to the hub).
PASSWORD = "grocerysync demo"  # noqa: S105 (a throw-away demo account on loopback)
FINISHED = ("succeeded", "partially_failed", "failed", "cancelled")
#: Shorter than the hub's production timings, so the demo shows the loop within a minute or so.
DEMO_SETTINGS = {
    "GROCERYSYNC_SCHEDULER_INTERVAL_SECONDS": "2",
    "GROCERYSYNC_AGENT_POLL_WAIT_SECONDS": "20",
    "GROCERYSYNC_AGENT_PROGRESS_INTERVAL_SECONDS": "2",
    "GROCERYSYNC_HEARTBEAT_FLUSH_SECONDS": "2",
}


class DemoError(Exception):
    """Something the demo needs did not work; the message says what and where to look."""


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there on 127.0.0.1 (0: any free port), else a free one."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise DemoError("no free TCP port on 127.0.0.1")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class HubProcess:
    """``grocerysync-hub serve`` on 127.0.0.1, its data folder, and the admin's API token."""

    data_dir: Path
    port: int
    token: str = ""
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "hub.log"

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*HUB, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise DemoError(f"grocerysync-hub {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def start(self) -> None:
        """Create the database, an admin and a token, then serve; return once the hub answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "GROCERYSYNC_DATA_DIR": str(self.data_dir), **DEMO_SETTINGS}
        self.cli("init")
        self.cli("create-user", ADMIN, "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
        self.token = self.cli("create-token", ADMIN, "--name", "demo").strip().splitlines()[-1]
        (self.data_dir / "admin-token.txt").write_text(self.token + "\n", encoding="utf-8")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*HUB, "serve", "--bind", f"127.0.0.1:{self.port}"], env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise DemoError(f"the hub stopped at start-up (exit {self.process.returncode}):\n{_tail(self.log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise DemoError(f"the hub did not answer on {self.url} within a minute; see {self.log}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.process)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the hub's REST API as the admin; DemoError with the hub's message when it says no."""
        request = urllib.request.Request(  # noqa: S310 (always our own hub on loopback)
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise DemoError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None
        except OSError as exc:
            raise DemoError(f"{method} {path}: the hub at {self.url} did not answer ({exc}); see {self.log}") from None
        return json.loads(raw) if raw else None


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """Ask a process to stop (SIGTERM; on Windows, TerminateProcess) and wait; kill it if it does not."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class DemoStore:
    """What the technician set up on the hub for the demo store."""

    retailer_id: int
    store_id: int
    job_id: int
    enrollment_token: str
    next_run_at: str | None


def set_up_store(hub: HubProcess, catalogue: Path, feeds: Path) -> DemoStore:
    """A retailer, a store, its POS connection and destination, a job every minute, and an enrollment token."""
    retailer = hub.api("POST", "/api/retailers", {"name": "Main Street Market", "contact": "owner@example.com"})
    store = hub.api("POST", f"/api/retailers/{retailer['id']}/stores", {"name": "Main St", "pos_type": "CSV export"})
    source = hub.api(
        "POST",
        f"/api/stores/{store['id']}/connections",
        {
            "name": "Back-office item export",
            "plugin": "csv",
            "config": {"path": str(catalogue), "columns": POS_COLUMNS},
        },
    )
    destination = hub.api(
        "POST",
        f"/api/stores/{store['id']}/destinations",
        {"name": "Marketplace feed folder", "plugin": "folder", "config": {"path": str(feeds), "format": "csv"}},
    )
    job = hub.api(
        "POST",
        f"/api/stores/{store['id']}/jobs",
        {
            "name": "POS to marketplace",
            "source_id": source["id"],
            "destination_id": destination["id"],
            "filters": [{"field": "active", "op": "eq", "value": True}],
            "schedule": "* * * * *",
            "max_retries": 1,
            "retry_delay_seconds": 30,
        },
    )
    token = hub.api("POST", f"/api/stores/{store['id']}/enrollment-tokens", {"expires_in_hours": 1})["token"]
    return DemoStore(retailer["id"], store["id"], job["id"], token, job.get("next_run_at"))


def enroll(hub: HubProcess, token: str, state_dir: Path) -> str:
    """``grocerysync-agent enroll`` at the store; returns what it printed."""
    command = [*AGENT, "enroll", "--hub", hub.url, "--token", token, "--allow-http", "--state-dir", str(state_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise DemoError(f"grocerysync-agent enroll failed: {done.stderr.strip()}")
    return done.stdout.strip()


def start_agent(state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """``grocerysync-agent run`` in the background, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen([*AGENT, "run", "--state-dir", str(state_dir)], stdout=out, stderr=out)


def wait_for_run(
    hub: HubProcess,
    job_id: int,
    agent: subprocess.Popen[bytes],
    agent_log: Path,
    *,
    after: int = 0,
    timeout: float = 180,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The first run of the job with an id above ``after`` once it has finished; DemoError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        runs = hub.api("GET", f"/api/runs?job_id={job_id}&limit=20")["items"]
        done = [r for r in runs if r["id"] > after and r["status"] in FINISHED]
        if done:
            return dict(min(done, key=lambda r: r["id"]))
        if agent.poll() is not None:
            raise DemoError(f"the agent stopped (exit {agent.returncode}):\n{_tail(agent_log)}")
        if time.monotonic() > deadline:
            raise DemoError(
                f"no run of job {job_id} finished within {timeout:.0f}s; see the hub's log {hub.log} "
                f"and the agent's log {agent_log}"
            )
        if tick is not None:
            tick()
        time.sleep(1)


def print_run(hub: HubProcess, run: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """A technician's view of one finished run: counts, the first rejections, the agent's log lines."""
    started = run.get("started_at") or run["queued_at"]
    out.write(
        f"  run {run['id']} ({run['trigger']}, attempt {run['attempt']}) {run['status']}, started {started}\n"
        f"    read {run['items_read']:,}, sent {run['items_written']:,}, unchanged {run['items_unchanged']:,}, "
        f"removed {run['items_removed']:,}, rejected {run['items_rejected']:,}, filtered {run['items_filtered']:,}\n"
    )
    if run["error"]:
        out.write(f"    error: {run['error']}\n")
    rejections = hub.api("GET", f"/api/runs/{run['id']}/rejections?limit=5")
    for rejection in rejections["items"]:
        out.write(f"    rejected {rejection['ref']}: {rejection['reason']}\n")
    if rejections["total"] > len(rejections["items"]):
        out.write(f"    ... and {rejections['total'] - len(rejections['items'])} more rejections\n")
    logs = hub.api("GET", f"/api/logs?run_id={run['id']}&limit=5")
    out.write(f"    {logs['total']} log lines about the run on the hub (the agent's and the hub's); the latest:\n")
    for entry in reversed(logs["items"]):
        out.write(f"      {entry['at']} {entry['level'].upper():7} {entry['message']}\n")


def print_where_to_look(
    hub: HubProcess, store: DemoStore, feeds: Path, agent_log: Path, out: TextIO, *, serving: bool
) -> None:
    """The hub's address, the token, and curl commands to try (and, when the demo stops, how to serve it again)."""
    url, token = hub.url, hub.token
    if not serving:
        out.write(
            "  The demo stops the hub and the agent now (--once); everything stays in the demo folder. To look again:\n"
            f'    GROCERYSYNC_DATA_DIR="{hub.data_dir}" grocerysync-hub serve --bind 127.0.0.1:{hub.port}\n\n'
        )
    out.write(
        f"  hub:           {url}   (admin {ADMIN}, password {PASSWORD!r})\n"
        f"  API token:     {token}   (also in {hub.data_dir / 'admin-token.txt'})\n"
        f"  hub data/log:  {hub.data_dir}  /  {hub.log}\n"
        f"  agent log:     {agent_log}\n"
        f"  feed folder:   {feeds}\n\n"
        "  Try (in another terminal):\n"
        f'    export GS_TOKEN="{token}"\n'
        f'    curl -s -H "Authorization: Bearer $GS_TOKEN" "{url}/api/agents"\n'
        f'    curl -s -H "Authorization: Bearer $GS_TOKEN" "{url}/api/runs?job_id={store.job_id}"\n'
        f'    curl -s -H "Authorization: Bearer $GS_TOKEN" "{url}/api/logs?store_id={store.store_id}&limit=20"\n'
        f'    curl -s -X POST -H "Authorization: Bearer $GS_TOKEN" "{url}/api/jobs/{store.job_id}/trigger"\n'
    )


def when(iso: str | None) -> str:
    """A UTC time from the API as local wall-clock time, for the demo's messages."""
    if not iso:
        return "soon"
    return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")
