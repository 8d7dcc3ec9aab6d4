"""Fixtures: a real OpenSSH server on loopback (see ``sshd.py``), shared by a whole test session."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import sshd as sshd_helper

SSHD_SKIP = sshd_helper.unavailable_reason()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.sshd`` tests, saying why, when no test sshd can run here."""
    if SSHD_SKIP:
        skip = pytest.mark.skip(reason=f"no test SSH server: {SSHD_SKIP}")
        for item in items:
            if "sshd" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def password_user() -> Iterator[sshd_helper.TestUser | None]:
    """A throwaway local account with a random password, or None when not root."""
    if SSHD_SKIP:
        yield None
        return
    try:
        user = sshd_helper.create_password_user()
    except (OSError, RuntimeError, sshd_helper.subprocess.CalledProcessError):
        yield None
        return
    try:
        yield user
    finally:
        sshd_helper.delete_user(user)


@pytest.fixture(scope="session")
def sshd_server(password_user: sshd_helper.TestUser | None) -> Iterator[sshd_helper.SshServer]:
    """A running OpenSSH server on 127.0.0.1 (key login as root; password login for ``password_user``)."""
    if SSHD_SKIP:
        pytest.skip(f"no test SSH server: {SSHD_SKIP}")
    workdir = Path(tempfile.mkdtemp(prefix="grocerysync-sshd-"))
    server = sshd_helper.SshServer.create(workdir, password_auth=password_user is not None)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def sshd(sshd_server: sshd_helper.SshServer) -> sshd_helper.SshServer:
    """The session's server, (re)started if a test stopped it."""
    sshd_server.start()
    return sshd_server


@pytest.fixture
def remote_dir(tmp_path: Path) -> Path:
    """An empty folder for the server side of one test (the server is on this machine)."""
    path = tmp_path / "incoming"
    path.mkdir()
    return path
