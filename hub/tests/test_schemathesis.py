"""schemathesis against /openapi.json of a real hypercorn serving the hub, as an admin: no server errors.

Bounded: a few examples per operation, no deadline (shared CI machines), one SQLite hub for the whole module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from conftest import TEST_KEY, Caller
from hypothesis import HealthCheck, settings
from quart.typing import TestClientProtocol as Client
from schemathesis.checks import not_a_server_error

EXAMPLES_PER_OPERATION = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "grocerysync.hub.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A hub served by hypercorn on loopback: its base URL and an admin's API token."""
    data: Path = tmp_path_factory.mktemp("schemathesis-hub")
    env = {**os.environ, "GROCERYSYNC_DATA_DIR": str(data), "GROCERYSYNC_SECRET_KEY": TEST_KEY}
    _cli(env, "init")
    _cli(env, "create-user", "admin@example.com", "--role", "admin", "--password-stdin", stdin="long enough pw\n")
    token = _cli(env, "create-token", "admin@example.com").strip()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "grocerysync.hub.cli", "serve", "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
                time.sleep(0.1)
        yield base, token
    finally:
        proc.terminate()
        _, errors = proc.communicate(timeout=30)
        # The hub logs every unexpected error with its traceback: there must be none.
        assert b"Traceback" not in errors, errors.decode(errors="replace")[-5000:]


@pytest.fixture(scope="module")
def api_schema(hub: tuple[str, str]) -> schemathesis.BaseSchema:
    base, _ = hub
    return schemathesis.openapi.from_url(f"{base}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_error(case: schemathesis.Case, hub: tuple[str, str]) -> None:
    _, token = hub
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error], timeout=30)


# What schemathesis found once, kept as plain regression tests (in process, both databases).


async def test_body_that_is_not_utf8_answers_400(client: Client, admin: Caller) -> None:
    for url in ("/api/auth/login", "/api/retailers"):
        response = await client.post(
            url, data=b'{"name": "\xff"}', headers={**admin.headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert "not UTF-8" in (await response.get_json())["error"]


async def test_numbers_beyond_the_id_columns_answer_4xx(client: Client, admin: Caller) -> None:
    huge = 2**70
    assert (await client.get(f"/api/retailers/{huge}", headers=admin.headers)).status_code == 404
    assert (await client.patch(f"/api/stores/{2**31}", headers=admin.headers, json={})).status_code == 404
    for query in (f"offset={huge}", f"retailer_id={huge}"):
        response = await client.get(f"/api/stores?{query}", headers=admin.headers)
        assert response.status_code == 422
        assert query.split("=")[0] in (await response.get_json())["error"]
    assert (await client.get(f"/api/retailers/{2**31 - 1}", headers=admin.headers)).status_code == 404
