"""The destination contract (grocerysync.core.testing) run against the ``sftp`` destination and a real sshd.

The OpenSSH server (tests/sshd.py, started once per session by conftest.py) runs on loopback and serves
this machine's file system, so the uploaded feed files are read back straight from the remote folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sshd as sshd_helper

from grocerysync.core.feeds import FeedFormat
from grocerysync.core.testing.feeds import FeedDestinationContract

pytestmark = pytest.mark.sshd


class SftpContract(FeedDestinationContract):
    destination_name = "sftp"
    supports_delete = True
    transactional = True

    @pytest.fixture
    def feed_folder(self, remote_dir: Path) -> Path:
        return remote_dir

    @pytest.fixture
    def destination_config(self, sshd: sshd_helper.SshServer, remote_dir: Path) -> dict[str, Any]:
        return {
            "host": sshd.host,
            "port": sshd.port,
            "username": "root",
            "remote_dir": str(remote_dir),
            "host_key_fingerprint": sshd.host_key_fingerprint,
            "format": self.feed_format.value,
            "file_prefix": "store7_",
            "connect_timeout": 5,
            "max_attempts": 2,
            "backoff": 0.1,
        }

    @pytest.fixture
    def destination_secrets(self, sshd: sshd_helper.SshServer) -> dict[str, Any]:
        return {"private_key": sshd.client_key_text}

    @pytest.fixture
    def unreachable_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        # Nothing listens on a fresh free port: the connection is refused at once.
        return {**destination_config, "port": sshd_helper.free_port(), "max_attempts": 1}


class TestSftpCsvContract(SftpContract):
    feed_format = FeedFormat.CSV


class TestSftpJsonlContract(SftpContract):
    feed_format = FeedFormat.JSONL
