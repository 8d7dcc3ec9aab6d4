"""Real hub processes for the cross-part tests and the benchmarks (``tests/bench``).

``grocerysync-hub`` is set up with its own command line, as an operator does (``init``, ``create-user``,
``create-token``), and served by hypercorn (``serve``) on a free loopback port, on SQLite in its data folder or
on a fresh PostgreSQL database on 127.0.0.1:5432 (user postgres). The admin's REST calls, and a store with its
POS connection and destination made through them, as a technician does.

A failure raises :class:`HubError` (what failed, and the end of the hub's output): a test lets it fail the test,
a benchmark turns it into its exit message. The tests import this module as ``hubprocess`` (``tests/`` is on
their path); the benchmarks put ``tests/`` on theirs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The hub's command line (a ``-c`` so that it works without the ``grocerysync-hub`` script on PATH).
HUB = [sys.executable, "-c", "import sys; from grocerysync.hub.cli import main; sys.exit(main())"]
AGENT = [sys.executable, "-m", "grocerysync.agent"]
ADMIN = "admin@example.com"
PASSWORD = "correct horse battery"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

#: ``call(method, path, body=None)``: one of the admin's REST calls (see :func:`api_call`).
Call = Callable[..., Any]


class HubError(Exception):
    """Setting up, starting or calling a hub failed; the message says what, with the hub's output."""


class DatabaseUnavailable(HubError):
    """The PostgreSQL server at 127.0.0.1:5432 cannot be used to create a database."""


class ApiError(HubError):
    """The hub answered an API call with an error status."""

    def __init__(self, status: int, body: Any, what: str = "") -> None:
        super().__init__(f"{what}: HTTP {status}: {body}" if what else f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, under a heading naming it."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:])


# --- the hub's command line and its process ---------------------------------------------------------------------


def hub_env(data_dir: Path, database: str | None = None, **settings: str) -> dict[str, str]:
    """The hub's environment: this process's, its data folder, its database (default: SQLite in the data folder),
    no periodic purge, and ``settings`` (``run_lease_seconds="3"`` sets GROCERYSYNC_RUN_LEASE_SECONDS)."""
    env = {**os.environ, "GROCERYSYNC_DATA_DIR": str(data_dir), "GROCERYSYNC_PURGE_INTERVAL_SECONDS": "0"}
    if database is not None:
        env["GROCERYSYNC_DATABASE_URL"] = database
    env.update({f"GROCERYSYNC_{name.upper()}": value for name, value in settings.items()})
    return env


def hub_cli(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 120, command: list[str] = HUB
) -> str:
    """Run ``grocerysync-hub ARGS`` with ``env``; what it printed (HubError if it failed)."""
    done = subprocess.run(
        [*command, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise HubError(f"grocerysync-hub {args[0]} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def set_up_hub(
    env: dict[str, str],
    *,
    admin: str = ADMIN,
    password: str = PASSWORD,
    token_name: str | None = None,
    timeout: float = 120,
    command: list[str] = HUB,
) -> str:
    """Create the database, an admin and the admin's API token, as an operator does once; the token."""

    def cli(*args: str, stdin: str | None = None) -> str:
        return hub_cli(env, *args, stdin=stdin, timeout=timeout, command=command)

    cli("init")
    cli("create-user", admin, "--role", "admin", "--password-stdin", stdin=password + "\n")
    named = ["--name", token_name] if token_name else []
    return cli("create-token", admin, *named).strip().splitlines()[-1]


def start_serving(
    env: dict[str, str], port: int, log: Path, *serve_args: str, timeout: float = 60, command: list[str] = HUB
) -> subprocess.Popen[bytes]:
    """Start ``grocerysync-hub serve`` on 127.0.0.1:``port`` (its output appended to ``log``); return once it
    listens. HubError (the process killed) if it exits or does not listen within ``timeout`` seconds."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [*command, "serve", "--bind", f"127.0.0.1:{port}", *serve_args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            if process.poll() is not None:
                raise HubError(f"the hub exited at start-up (exit {process.returncode})\n{tail(log)}") from None
            if time.monotonic() > deadline:
                stop_process(process, timeout=0)
                raise HubError(f"the hub did not listen on port {port} within {timeout:.0f} s\n{tail(log)}") from None
            time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 15) -> int | None:
    """Stop a process as an operator or a service manager does (SIGTERM), killing it after ``timeout``
    seconds; its exit status (None without a process)."""
    if process is None:
        return None
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class Served:
    """A ``grocerysync-hub serve`` process started by :func:`serving`."""

    url: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def serving(
    env: dict[str, str],
    log: Path,
    *serve_args: str,
    scheme: str = "http",
    timeout: float = 60,
    command: list[str] = HUB,
) -> Iterator[Served]:
    """Serve the hub (one hypercorn process) on a free loopback port until the block ends."""
    port = free_port()
    process = start_serving(env, port, log, *serve_args, timeout=timeout, command=command)
    try:
        yield Served(f"{scheme}://127.0.0.1:{port}", port, log, process)
    finally:
        stop_process(process)


# --- a PostgreSQL database of its own -----------------------------------------------------------------------------


async def _admin_sql(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def database_url(name: str) -> str:
    """The hub's ``GROCERYSYNC_DATABASE_URL`` for the database ``name`` on the local server."""
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def create_database(prefix: str) -> str:
    """A new, empty PostgreSQL database named ``<prefix>_<random>``; its name (DatabaseUnavailable if not)."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"cannot create a database on PostgreSQL at 127.0.0.1:5432 as user postgres: {exc}"
        ) from None
    return name


def drop_database(name: str) -> None:
    """Drop the database ``name`` (closing the connections still open to it)."""
    asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database (its hub URL, see :func:`database_url`), dropped afterwards."""
    name = create_database(prefix)
    try:
        yield database_url(name)
    finally:
        drop_database(name)


# --- the admin's REST calls ------------------------------------------------------------------------------------------


def api_call(
    base_url: str,
    token: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 30,
) -> Any:
    """One REST call to the hub at ``base_url`` with ``token`` (if any); the JSON answer (None if empty).

    ApiError for an error status (with the hub's JSON error, or its text); HubError if the hub did not answer.
    """
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    # The URL is always the caller's own hub on loopback (http or https).
    request = urllib.request.Request(  # noqa: S310
        base_url + path, method=method, data=json.dumps(body).encode() if body is not None else None, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            detail: Any = json.loads(text)
        except ValueError:
            detail = text
        raise ApiError(exc.code, detail, f"{method} {path}") from None
    except OSError as exc:
        raise HubError(f"{method} {path}: the hub at {base_url} did not answer ({exc})") from None
    return json.loads(raw) if raw else None


def add_store(
    call: Call,
    source_path: Path,
    feeds: Path,
    *,
    retailer: str = "",
    store: dict[str, Any] | None = None,
    destination: dict[str, Any] | None = None,
) -> dict[str, int]:
    """A new retailer with one store, its CSV POS connection reading ``source_path`` and a destination (by default
    the folder ``feeds``, CSV files); their ids: ``retailer``, ``store``, ``source``, ``destination``."""
    from grocerysync.core.samples import POS_COLUMNS

    made = call("POST", "/api/retailers", {"name": retailer or f"Corner Grocer {uuid.uuid4().hex[:8]}"})
    store_id = call("POST", f"/api/retailers/{made['id']}/stores", {"name": "Main St", **(store or {})})["id"]
    source = call(
        "POST",
        f"/api/stores/{store_id}/connections",
        {"name": "POS export", "plugin": "csv", "config": {"path": str(source_path), "columns": POS_COLUMNS}},
    )
    if destination is None:
        destination = {"plugin": "folder", "config": {"path": str(feeds), "format": "csv"}}
    dest = call("POST", f"/api/stores/{store_id}/destinations", {"name": "Marketplace feed", **destination})
    return {"retailer": made["id"], "store": store_id, "source": source["id"], "destination": dest["id"]}


def add_job(call: Call, ids: dict[str, int], name: str = "POS to marketplace", **fields: Any) -> int:
    """An export job from the store's POS connection to its destination (see :func:`add_store`); its id."""
    body = {"name": name, "source_id": ids["source"], "destination_id": ids["destination"], **fields}
    return int(call("POST", f"/api/stores/{ids['store']}/jobs", body)["id"])
