"""Cross-part fixtures: a real OpenSSH server on loopback (the SFTP plugin's test server) and job files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packages" / "grocerysync-dest-sftp" / "tests"))

import sshd as sshd_helper  # noqa: E402

SSHD_SKIP = sshd_helper.unavailable_reason()


@pytest.fixture(scope="session")
def sshd_server() -> Iterator[sshd_helper.SshServer]:
    """A running OpenSSH server on 127.0.0.1 that accepts the test client key for root."""
    if SSHD_SKIP:
        pytest.skip(f"no test SSH server: {SSHD_SKIP}")
    workdir = Path(tempfile.mkdtemp(prefix="grocerysync-e2e-sshd-"))
    server = sshd_helper.SshServer.create(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class AgentRun:
    """What one ``grocerysync-agent`` process did."""

    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.stdout)


RunAgent = Callable[..., AgentRun]


@pytest.fixture
def run_agent(tmp_path: Path) -> RunAgent:
    """Run the real ``grocerysync-agent`` command in its own process, with a state folder in tmp_path."""

    def run(*args: str) -> AgentRun:
        command = [sys.executable, "-m", "grocerysync.agent", *args]
        if args and args[0] == "export":
            command += ["--state-dir", str(tmp_path / "state")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        return AgentRun(done.returncode, done.stdout, done.stderr)

    return run


def sftp_destination(server: sshd_helper.SshServer, remote: Path, **config: Any) -> dict[str, Any]:
    """A job's destination block for the test server, authenticated with the test client key."""
    return {
        "plugin": "sftp",
        "config": {
            "host": server.host,
            "port": server.port,
            "username": "root",
            "remote_dir": str(remote),
            "host_key_fingerprint": server.host_key_fingerprint,
            **config,
        },
        "secrets": {"private_key": server.client_key_text},
    }


def write_job(path: Path, **job: Any) -> Path:
    path.write_text(json.dumps({"name": "e2e", **job}), encoding="utf-8")
    return path
