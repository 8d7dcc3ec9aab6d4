"""The grocerysync-hub command: init, create-user, create-token, serve (real processes where it matters)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import TEST_KEY

from grocerysync.hub import cli
from grocerysync.hub.settings import Settings


def _env(settings: Settings) -> dict[str, str]:
    env = {"GROCERYSYNC_DATA_DIR": str(settings.data_dir), "GROCERYSYNC_SECRET_KEY": TEST_KEY}
    if settings.database_url is not None:
        env["GROCERYSYNC_DATABASE_URL"] = settings.db_url()
    return env


def _run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grocerysync.hub.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


def test_init_creates_key_and_database(tmp_path: Path) -> None:
    result = _run({"GROCERYSYNC_DATA_DIR": str(tmp_path / "data")}, "init")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "secret.key").exists()
    assert (tmp_path / "data" / "hub.sqlite3").exists()
    again = _run({"GROCERYSYNC_DATA_DIR": str(tmp_path / "data")}, "init")
    assert again.returncode == 0
    assert "created the secret key" not in again.stdout


async def test_users_and_tokens(settings: Settings) -> None:
    env = _env(settings)
    made = _run(
        env, "create-user", "Tech@Example.com", "--role", "technician", "--password-stdin", stdin="long enough pw\n"
    )
    assert made.returncode == 0, made.stderr
    assert "technician tech@example.com" in made.stdout
    dup = _run(env, "create-user", "tech@example.com", "--role", "viewer", "--password-stdin", stdin="long enough pw\n")
    assert dup.returncode == 2
    assert "already exists" in dup.stderr
    assert "Traceback" not in dup.stderr
    short = _run(env, "create-user", "v@example.com", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert short.returncode == 2
    assert "at least 10" in short.stderr
    token = _run(env, "create-token", "tech@example.com")
    assert token.returncode == 0
    assert token.stdout.strip().startswith("gsh_")
    missing = _run(env, "create-token", "nobody@example.com")
    assert missing.returncode == 2
    assert "create-user" in missing.stderr


def test_password_prompt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GROCERYSYNC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GROCERYSYNC_SECRET_KEY", TEST_KEY)
    assert cli.main(["init"]) == 0
    answers = iter(["prompted password", "different"])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt: next(answers))
    assert cli.main(["create-user", "a@example.com", "--role", "admin"]) == 2
    answers = iter(["prompted password", "prompted password"])
    assert cli.main(["create-user", "a@example.com", "--role", "admin"]) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_on_the_bound_port(tmp_path: Path) -> None:
    env = {"GROCERYSYNC_DATA_DIR": str(tmp_path), "GROCERYSYNC_SECRET_KEY": TEST_KEY}
    assert _run(env, "init").returncode == 0
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "grocerysync.hub.cli", "serve", "--bind", f"127.0.0.1:{port}"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = b""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    body = response.read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
                time.sleep(0.1)
        assert body == b'{"status":"ok"}\n'
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_without_key_says_what_to_do(tmp_path: Path) -> None:
    result = _run({"GROCERYSYNC_DATA_DIR": str(tmp_path)}, "serve", "--bind", "127.0.0.1:1")
    assert result.returncode == 2
    assert "grocerysync-hub init" in result.stderr
    assert "Traceback" not in result.stderr
