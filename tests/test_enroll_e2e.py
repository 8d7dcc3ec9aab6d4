"""End to end: a real hub served by hypercorn (SQLite) and real ``grocerysync-agent enroll`` processes.

The hub is set up with its own command line (init, create-user, create-token, serve); the store and the
enrollment tokens are made through its API, as a technician would.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import sqlite3
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hubprocess import AGENT, api_call, hub_env, serving, set_up_hub


@dataclass
class Hub:
    """A running hub process and an admin API token for it."""

    url: str
    data_dir: Path
    token: str
    ca_file: Path | None = None

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
        return api_call(self.url, self.token, method, path, body or {}, context=context)

    def new_enrollment_token(self) -> str:
        retailer = self.api("POST", "/api/retailers", {"name": f"R{time.monotonic_ns()}"})
        store = self.api("POST", f"/api/retailers/{retailer['id']}/stores", {"name": "Main St"})
        return str(self.api("POST", f"/api/stores/{store['id']}/enrollment-tokens", {})["token"])


def _start_hub(data_dir: Path, *serve_args: str, ca_file: Path | None = None) -> Iterator[Hub]:
    env = hub_env(data_dir)
    token = set_up_hub(env, timeout=60)
    with serving(env, data_dir / "hub.log", *serve_args, scheme="https" if ca_file else "http", timeout=30) as served:
        yield Hub(url=served.url, data_dir=data_dir, token=token, ca_file=ca_file)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from _start_hub(tmp_path_factory.mktemp("hub"))


def _enroll(hub_url: str, token: str, state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, "enroll", "--hub", hub_url, "--token", token, "--state-dir", str(state), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_enroll_then_reuse_is_refused(hub: Hub, tmp_path: Path) -> None:
    token = hub.new_enrollment_token()
    first = _enroll(hub.url, token, tmp_path / "a", "--allow-http")
    assert first.returncode == 0, first.stderr
    assert "enrolled as agent" in first.stdout
    stored = tmp_path / "a" / "agent.json"
    doc = json.loads(stored.read_text())
    assert doc["credential"].startswith("gsa_")
    assert doc["hub_url"] == hub.url
    assert doc["store_name"] == "Main St"
    if os.name == "posix":
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    agent = hub.api("GET", f"/api/agents/{doc['agent_id']}")
    assert agent["store_id"] == doc["store_id"]
    assert agent["status"] != "revoked"

    again = _enroll(hub.url, token, tmp_path / "b", "--allow-http")
    assert again.returncode == 2
    lines = again.stderr.splitlines()
    assert len(lines) == 1, again.stderr
    assert "HTTP 410" in lines[0]
    assert "already used" in lines[0]
    assert "ask your technician for a new enrollment token" in lines[0]
    assert not (tmp_path / "b" / "agent.json").exists()


def test_an_expired_token_is_refused(hub: Hub, tmp_path: Path) -> None:
    token = hub.new_enrollment_token()
    # Move the token's expiry into the past directly in the hub's SQLite database, in the format tortoise wrote.
    with sqlite3.connect(hub.data_dir / "hub.sqlite3") as db:
        row_id, written = db.execute("SELECT id, expires_at FROM enrollment_token ORDER BY id DESC LIMIT 1").fetchone()
        past = dt.datetime.fromisoformat(str(written)) - dt.timedelta(days=2)
        db.execute("UPDATE enrollment_token SET expires_at = ? WHERE id = ?", (past.isoformat(sep=" "), row_id))
    done = _enroll(hub.url, token, tmp_path, "--allow-http")
    assert done.returncode == 2
    assert "expired" in done.stderr
    assert "ask your technician for a new enrollment token" in done.stderr
    assert not (tmp_path / "agent.json").exists()


def test_plain_http_needs_the_flag(hub: Hub, tmp_path: Path) -> None:
    done = _enroll(hub.url, hub.new_enrollment_token(), tmp_path)
    assert done.returncode == 2
    assert "--allow-http" in done.stderr
    assert len(done.stderr.splitlines()) == 1


# --- HTTPS with a CA of the test's own ---------------------------------------------------------------------------


def _write_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA, and a certificate for 127.0.0.1 it signed: (CA file, server cert, server key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "GrocerySync test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "hub.pem", folder / "hub-key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp("tls-hub")
    ca_file, cert_file, key_file = _write_ca_and_server_cert(data_dir)
    yield from _start_hub(data_dir, "--certfile", str(cert_file), "--keyfile", str(key_file), ca_file=ca_file)


def test_https_with_the_pinned_ca_enrolls(tls_hub: Hub, tmp_path: Path) -> None:
    assert tls_hub.ca_file is not None
    done = _enroll(tls_hub.url, tls_hub.new_enrollment_token(), tmp_path, "--ca-file", str(tls_hub.ca_file))
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "agent.json").read_text())
    assert doc["hub_url"] == tls_hub.url
    assert doc["ca_file"] == str(tls_hub.ca_file.resolve())


def test_https_without_the_ca_file_fails_verification_with_one_clear_line(tls_hub: Hub, tmp_path: Path) -> None:
    token = tls_hub.new_enrollment_token()
    done = _enroll(tls_hub.url, token, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "does not trust" in lines[0]
    assert "--ca-file" in lines[0]
    assert not (tmp_path / "agent.json").exists()
    # The token was never seen by the hub, so it still works with the right CA.
    assert tls_hub.ca_file is not None
    assert _enroll(tls_hub.url, token, tmp_path, "--ca-file", str(tls_hub.ca_file)).returncode == 0
