"""``grocerysync-agent enroll`` against a real HTTP server on loopback standing in for the hub's enroll route.

(The real hub is exercised end to end in tests/test_enroll_e2e.py; the agent never imports the hub.)
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from grocerysync.agent.cli import main
from grocerysync.agent.credentials import (
    AgentCredentials,
    CredentialsError,
    credentials_path,
    load_credentials,
    save_credentials,
)
from grocerysync.agent.enroll import EnrollError, enroll, normalize_hub_url
from grocerysync.core.manager import PluginManager

ANSWER = {"agent_id": 7, "credential": "gsa_secret", "retailer_id": 1, "store_id": 2, "store_name": "Main St"}


@dataclass
class FakeHub:
    """What the server answers, and the bodies it received."""

    url: str
    status: int = 201
    answer: dict[str, Any] = field(default_factory=lambda: dict(ANSWER))
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    state = FakeHub(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.received.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
            payload = json.dumps(state.answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _no_plugins() -> PluginManager:
    return PluginManager(autoload=False)


def test_enroll_stores_the_credential_owner_only(hub: FakeHub, tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = enroll(hub.url, " gse_tok ", state, allow_http=True, plugins=_no_plugins())
    assert hub.received[0]["path"] == "/agent/v1/enroll"
    body = hub.received[0]["body"]
    assert body["token"] == "gse_tok"
    assert body["hostname"]
    assert done.path == credentials_path(state)
    stored = json.loads(done.path.read_text())
    assert stored["credential"] == "gsa_secret"
    assert stored["hub_url"] == hub.url
    assert stored["agent_id"] == 7
    assert stored["ca_file"] is None
    assert load_credentials(state).credential.get_secret_value() == "gsa_secret"
    assert "gsa_secret" not in repr(load_credentials(state))
    if os.name == "posix":
        assert stat.S_IMODE(done.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert [p.name for p in state.iterdir()] == ["agent.json"]  # no temporary file left behind


def test_an_existing_enrollment_is_kept_unless_forced_and_no_token_is_spent(hub: FakeHub, tmp_path: Path) -> None:
    enroll(hub.url, "t1", tmp_path, allow_http=True, plugins=_no_plugins())
    with pytest.raises(CredentialsError, match=r"already enrolled.*--force"):
        enroll(hub.url, "t2", tmp_path, allow_http=True, plugins=_no_plugins())
    assert len(hub.received) == 1
    hub.answer = {**ANSWER, "agent_id": 8, "credential": "gsa_new"}
    enroll(hub.url, "t3", tmp_path, allow_http=True, force=True, plugins=_no_plugins())
    assert load_credentials(tmp_path).agent_id == 8


def test_a_refusal_shows_the_hubs_message_and_stores_nothing(hub: FakeHub, tmp_path: Path) -> None:
    hub.status = 410
    hub.answer = {"error": "enrollment refused: token gse_ab… was already used; ask your technician", "fields": []}
    with pytest.raises(EnrollError, match=r"HTTP 410\): enrollment refused: token gse_ab… was already used"):
        enroll(hub.url, "t", tmp_path, allow_http=True, plugins=_no_plugins())
    assert not credentials_path(tmp_path).exists()


def test_an_answer_that_is_no_enrollment_is_a_clear_error(hub: FakeHub, tmp_path: Path) -> None:
    hub.answer = {"hello": "world"}
    with pytest.raises(EnrollError, match="not an enrollment"):
        enroll(hub.url, "t", tmp_path, allow_http=True, plugins=_no_plugins())


def test_an_unreachable_hub_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    err = io.StringIO()
    code = main(
        ["enroll", "--hub", f"http://127.0.0.1:{port}", "--token", "t", "--allow-http", "--state-dir", str(tmp_path)],
        plugins=_no_plugins(),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"grocerysync-agent: error: cannot reach the hub at http://127.0.0.1:{port}")


def test_the_cli_prints_what_was_enrolled(hub: FakeHub, tmp_path: Path) -> None:
    out = io.StringIO()
    args = ["enroll", "--hub", hub.url + "/", "--token", "t", "--allow-http", "--state-dir", str(tmp_path)]
    assert main(args, plugins=_no_plugins(), stdout=out, stderr=io.StringIO()) == 0
    assert "enrolled as agent 7 of store 'Main St'" in out.getvalue()
    assert "gsa_secret" not in out.getvalue()


@pytest.mark.parametrize(
    ("url", "allow_http", "message"),
    [
        ("http://127.0.0.1:8080", False, "plain HTTP"),
        ("http://hub.example.com", True, "only for a hub on this machine"),
        ("http://10.0.0.5:8080", True, "only for a hub on this machine"),
        ("ftp://hub.example.com", False, "not a hub address"),
        ("hub.example.com", False, "not a hub address"),
        ("https://hub.example.com/?x=1", False, "query"),
    ],
)
def test_unsafe_or_malformed_hub_urls_are_refused(url: str, allow_http: bool, message: str) -> None:
    with pytest.raises(EnrollError, match=message):
        normalize_hub_url(url, allow_http=allow_http)


@pytest.mark.parametrize(
    ("url", "allow_http", "expected"),
    [
        ("https://hub.example.com/", False, "https://hub.example.com"),
        ("http://localhost:8080", True, "http://localhost:8080"),
        ("http://[::1]:8080/", True, "http://[::1]:8080"),
    ],
)
def test_good_hub_urls_are_normalized(url: str, allow_http: bool, expected: str) -> None:
    assert normalize_hub_url(url, allow_http=allow_http) == expected


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EnrollError, match=r"--ca-file .*does not exist"):
        enroll("https://127.0.0.1:1", "t", tmp_path, ca_file=tmp_path / "nope.pem", plugins=_no_plugins())


def test_a_damaged_enrollment_file_says_to_enroll_again(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="not enrolled"):
        load_credentials(tmp_path)
    save_credentials(tmp_path, AgentCredentials(hub_url="https://h", agent_id=1, credential=SecretStr("c")))
    credentials_path(tmp_path).write_text('{"hub_url": "https://h"}')
    with pytest.raises(CredentialsError, match=r"damaged.*--force"):
        load_credentials(tmp_path)
