"""Browser sessions: sign-in, the session cookie, CSRF on unsafe methods, expiry, and login throttling."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY, Caller, demo_plugins, make_caller
from quart.typing import TestAppProtocol as RunningApp
from quart.typing import TestClientProtocol as Client

from grocerysync.hub import cli
from grocerysync.hub.app import create_app
from grocerysync.hub.models import LoginThrottle, Role, User, UserSession
from grocerysync.hub.sessions import csrf_ok, csrf_token_for, purge_expired
from grocerysync.hub.settings import Settings

PASSWORD = "correct horse battery"  # what conftest.make_caller gives every user
ADDRESS = {"client": ("203.0.113.7", 50000)}


def _client(app: RunningApp) -> Client:
    # Cookies are sent by hand, so each test says exactly what the browser would send.
    return app.app.test_client(use_cookies=False)  # type: ignore[attr-defined, no-any-return]


async def _login(
    client: Client, email: str, password: str = PASSWORD, scope_base: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any], SimpleCookie, Any]:
    response = await client.post(
        "/api/auth/login", json={"email": email, "password": password}, scope_base=scope_base or ADDRESS
    )
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        jar.load(header)
    return response.status_code, await response.get_json(), jar, response.headers


def _cookie_header(jar: SimpleCookie) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={m.value}" for k, m in jar.items())}


@pytest.fixture
async def app(test_app: RunningApp) -> RunningApp:
    return test_app


async def test_login_sets_a_hardened_cookie_and_csrf_guards_unsafe_methods(app: RunningApp, admin: Caller) -> None:
    client = _client(app)
    status, body, jar, headers = await _login(client, "Admin@Example.com")
    assert status == 200, body
    assert body["email"] == "admin@example.com"
    assert body["role"] == "admin"
    assert body["auth"] == "session"
    [(name, morsel)] = jar.items()
    assert name == "__Host-grocerysync_session"
    assert morsel["httponly"] is True
    assert morsel["secure"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) == 12 * 3600
    assert headers["Cache-Control"] == "no-store"
    # The cookie holds a random token, not anything the CSRF token or the database reveals.
    assert morsel.value != body["csrf_token"]
    assert await UserSession.filter(token_hash=morsel.value).count() == 0
    cookie = _cookie_header(jar)

    me = await client.get("/api/auth/me", headers=cookie)
    assert (await me.get_json())["csrf_token"] == body["csrf_token"]
    assert (await client.get("/api/retailers", headers=cookie)).status_code == 200

    # Unsafe methods with the cookie need the CSRF token; a wrong one is refused the same way.
    for extra in ({}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": csrf_token_for("another session")}):
        refused = await client.post("/api/retailers", headers={**cookie, **extra}, json={"name": "R"})
        assert refused.status_code == 403
        assert "X-CSRF-Token" in (await refused.get_json())["error"]
    assert (await client.get("/api/retailers", headers=cookie)).status_code == 200
    made = await client.post(
        "/api/retailers", headers={**cookie, "X-CSRF-Token": body["csrf_token"]}, json={"name": "R"}
    )
    assert made.status_code == 201
    # Bearer tokens are exempt: a browser never attaches them on its own.
    assert (await client.post("/api/retailers", headers=admin.headers, json={"name": "R2"})).status_code == 201
    me_token = await (await client.get("/api/auth/me", headers=admin.headers)).get_json()
    assert (me_token["auth"], me_token["csrf_token"]) == ("token", None)

    # Signing out needs the token too, then ends the session for good.
    assert (await client.post("/api/auth/logout", headers=cookie)).status_code == 403
    out = await client.post("/api/auth/logout", headers={**cookie, "X-CSRF-Token": body["csrf_token"]})
    assert out.status_code == 204
    assert "Max-Age=0" in out.headers["Set-Cookie"] or "expires=Thu, 01 Jan 1970" in out.headers["Set-Cookie"]
    after = await client.get("/api/retailers", headers=cookie)
    assert after.status_code == 401
    assert "sign in again" in (await after.get_json())["error"]


async def test_wrong_password_and_unknown_user_answer_alike(app: RunningApp, admin: Caller) -> None:
    client = _client(app)
    wrong = await _login(client, "admin@example.com", "not the password")
    unknown = await _login(client, "nobody@example.com", "not the password")
    assert wrong[0] == unknown[0] == 401
    assert wrong[1] == unknown[1]
    assert not wrong[2]
    assert not unknown[2]
    bad = await client.post("/api/auth/login", json={"email": "a@example.com"})
    assert bad.status_code == 422
    assert (await bad.get_json())["fields"][0]["field"] == "password"


async def test_sessions_end_on_expiry_idleness_and_deactivation(app: RunningApp, admin: Caller) -> None:
    client = _client(app)
    now = datetime.now(UTC)
    for change in (
        {"expires_at": now - timedelta(seconds=1)},
        {"last_seen_at": now - timedelta(minutes=121)},
    ):
        _, _, jar, _ = await _login(client, "admin@example.com")
        assert (await client.get("/api/auth/me", headers=_cookie_header(jar))).status_code == 200
        await UserSession.all().update(**change)
        assert (await client.get("/api/auth/me", headers=_cookie_header(jar))).status_code == 401
        assert await UserSession.all().count() == 0  # an ended session is deleted when seen
    _, _, jar, _ = await _login(client, "admin@example.com")
    await User.filter(email="admin@example.com").update(active=False)
    assert (await client.get("/api/auth/me", headers=_cookie_header(jar))).status_code == 401
    # A disabled account cannot sign in either.
    assert (await _login(client, "admin@example.com"))[0] == 401


async def test_purge_removes_ended_sessions_and_old_failures(app: RunningApp, settings: Settings) -> None:
    await make_caller("tech@example.com", Role.TECHNICIAN, all_retailers=True)
    client = _client(app)
    await _login(client, "tech@example.com")
    await _login(client, "tech@example.com")
    await _login(client, "tech@example.com", "wrong password")
    [old, current] = await UserSession.all().order_by("id")
    await UserSession.filter(id=old.id).update(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    await LoginThrottle.all().update(last_failure_at=datetime.now(UTC) - timedelta(hours=2))
    assert await purge_expired(settings) == 3
    assert [s.id for s in await UserSession.all()] == [current.id]
    assert await LoginThrottle.all().count() == 0


_OTHER_PROCESS = """
import asyncio, sys
from tortoise import Tortoise
from grocerysync.hub import sessions
from grocerysync.hub.db import tortoise_config
from grocerysync.hub.settings import Settings

async def main():
    settings = Settings()
    await Tortoise.init(config=tortoise_config(settings.db_url()))
    try:
        await sessions.login(settings, sys.argv[1], sys.argv[2])
        print("signed in")
    except Exception as exc:
        print(type(exc).__name__)
    finally:
        await Tortoise.close_connections()

asyncio.run(main())
"""


def _login_in_another_process(settings: Settings, email: str) -> str:
    env = {**os.environ, "GROCERYSYNC_DATA_DIR": str(settings.data_dir), "GROCERYSYNC_SECRET_KEY": TEST_KEY}
    if settings.database_url is not None:
        env["GROCERYSYNC_DATABASE_URL"] = settings.db_url()
    result = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, email, PASSWORD],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
async def strict_app(settings: Settings) -> AsyncIterator[RunningApp]:
    strict = settings.model_copy(update={"login_max_failures": 2, "login_max_failures_per_address": 4})
    async with create_app(strict, plugins=demo_plugins()).test_app() as running:
        yield running


async def test_account_throttling_backs_off_and_is_shared(strict_app: RunningApp, settings: Settings) -> None:
    await make_caller("tech@example.com", Role.TECHNICIAN, all_retailers=True)
    client = _client(strict_app)
    assert (await _login(client, "tech@example.com", "wrong 1"))[0] == 401
    assert (await _login(client, "tech@example.com", "wrong 2"))[0] == 401
    # Locked now: even the right password waits, and the answer says for how long.
    status, body, jar, headers = await _login(client, "tech@example.com")
    assert status == 429
    assert not jar
    assert int(headers["Retry-After"]) >= 1
    assert "try again in" in body["error"]
    # From another address too: the account's count is the account's.
    other = {"client": ("198.51.100.9", 40000)}
    assert (await _login(client, "tech@example.com", scope_base=other))[0] == 429

    # Another hub process on the same database sees the same lock.
    assert _login_in_another_process(settings, "tech@example.com") == "Throttled"

    # Each failure after the wait doubles the next wait.
    row = await LoginThrottle.get(key="account:tech@example.com")
    first_wait = row.locked_until - row.last_failure_at  # type: ignore[operator]
    await LoginThrottle.filter(id=row.id).update(locked_until=datetime.now(UTC) - timedelta(seconds=1))
    assert (await _login(client, "tech@example.com", "wrong 3"))[0] == 401
    row = await LoginThrottle.get(key="account:tech@example.com")
    assert row.locked_until - row.last_failure_at == 2 * first_wait  # type: ignore[operator]

    # Once the wait is over, the right password signs in and forgives the account's failures.
    await LoginThrottle.filter(id=row.id).update(locked_until=datetime.now(UTC) - timedelta(seconds=1))
    assert (await _login(client, "tech@example.com"))[0] == 200
    assert not await LoginThrottle.filter(key="account:tech@example.com").exists()


async def test_address_throttling_covers_every_account(strict_app: RunningApp) -> None:
    await make_caller("tech@example.com", Role.TECHNICIAN, all_retailers=True)
    client = _client(strict_app)
    for n in range(4):
        assert (await _login(client, f"guess{n}@example.com", "wrong"))[0] == 401
    # This address is locked for every account, even a right password of an untried one.
    status, _, _, headers = await _login(client, "tech@example.com")
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    # Another address is not.
    assert (await _login(client, "tech@example.com", scope_base={"client": ("198.51.100.9", 1)}))[0] == 200


async def test_plain_cookie_only_for_loopback_development(settings: Settings) -> None:
    dev = settings.model_copy(update={"cookie_secure": False})
    async with create_app(dev, plugins=demo_plugins()).test_app() as running:
        await make_caller("admin@example.com", Role.ADMIN)
        client = _client(running)
        _, _, jar, _ = await _login(client, "admin@example.com", scope_base={"client": ("127.0.0.1", 5000)})
        [(name, morsel)] = jar.items()
        assert name == "grocerysync_session"
        assert not morsel["secure"]
        assert morsel["httponly"] is True
        # A client that is not on this machine still gets a Secure cookie.
        _, _, jar, _ = await _login(client, "admin@example.com")
        [(name, morsel)] = jar.items()
        assert (name, morsel["secure"]) == ("__Host-grocerysync_session", True)


def test_csrf_token_check() -> None:
    token = csrf_token_for("session-a")
    assert csrf_ok("session-a", token)
    assert not csrf_ok("session-b", token)
    assert not csrf_ok("session-a", None)
    assert not csrf_ok("session-a", "")
    assert "session-a" not in token


def test_serve_refuses_plain_cookies_off_loopback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GROCERYSYNC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GROCERYSYNC_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("GROCERYSYNC_COOKIE_SECURE", "false")
    assert cli.main(["serve", "--bind", "0.0.0.0:8080"]) == 2
    err = capsys.readouterr().err
    assert "only for development on loopback" in err
    assert "Traceback" not in err
