"""Browser sessions, CSRF tokens and login throttling (no HTTP here: :mod:`grocerysync.hub.api.auth` is the transport).

Sessions are server-side rows rather than signed cookies: signing out, deactivating a user or a password
change must end a session at once, across every hub process, and a row is what can be deleted. The cookie
holds a random token, and the row only its SHA-256 (like API tokens), so a copy of the database signs nobody
in. A session ends at a fixed time after sign-in and after a spell of inactivity, whichever comes first.

CSRF: every unsafe request authenticated by the cookie must carry ``X-CSRF-Token``, a synchronizer token
derived from the session token (HMAC), so it needs no storage and a page of another site can neither read nor
guess it. Requests with a bearer token are exempt: browsers never attach those on their own.

Throttling: failures are counted per account and per client address in the database, so every hub process
behind a load balancer sees the same counts. Past the allowed number, each further try must wait twice as
long as the one before (up to :data:`MAX_DELAY`), and is refused with a Retry-After meanwhile. Failures are
forgotten after :data:`FORGET_AFTER` without any.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F

from grocerysync.hub.errors import ApiError, Unauthorized
from grocerysync.hub.models import LoginThrottle, User, UserSession
from grocerysync.hub.scope import Principal, principal_for
from grocerysync.hub.security import hash_password, verify_password
from grocerysync.hub.settings import Settings

#: The header that carries the CSRF token on unsafe cookie-authenticated requests.
CSRF_HEADER = "X-CSRF-Token"
#: Methods that change nothing and need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The first wait once the allowed failures are used up, and the longest.
BASE_DELAY = timedelta(seconds=2)
MAX_DELAY = timedelta(minutes=15)
FORGET_AFTER = timedelta(hours=1)
#: Sessions record their last use at most this often, so reading pages does not write a row each time.
TOUCH_EVERY = timedelta(minutes=2)

_dummy_hash: str | None = None


class Throttled(ApiError):
    """Too many failed sign-ins: try again after ``retry_after`` seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SignedIn:
    """A new session: the cookie value (shown once), its CSRF token, and when it ends at the latest."""

    token: str
    csrf_token: str
    expires_at: datetime
    principal: Principal


def _now() -> datetime:
    return datetime.now(UTC)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_token_for(session_token: str) -> str:
    """The CSRF token of a session (derived, so nothing more is stored)."""
    return hmac.new(session_token.encode("utf-8"), b"grocerysync-csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_token: str, sent: str | None) -> bool:
    """Whether ``sent`` is the session's CSRF token (compared in constant time)."""
    return bool(sent) and hmac.compare_digest(csrf_token_for(session_token), sent or "")


def _throttle_keys(email: str, address: str, settings: Settings) -> list[tuple[str, int]]:
    keys = [(f"account:{email}"[:400], settings.login_max_failures)]
    if address:
        keys.append((f"address:{address}"[:400], settings.login_max_failures_per_address))
    return keys


async def _check_throttle(keys: list[tuple[str, int]], now: datetime) -> None:
    rows = await LoginThrottle.filter(key__in=[k for k, _ in keys], locked_until__gt=now)
    if rows:
        until = max(r.locked_until for r in rows if r.locked_until is not None)
        wait = max(1, math.ceil((until - now).total_seconds()))
        raise Throttled(
            f"too many failed sign-ins for this account or from this address; try again in {wait} seconds",
            wait,
        )


async def _record_failure(key: str, allowed: int, now: datetime) -> None:
    # Single statements, so hub processes counting at once do not lose each other's failures.
    await LoginThrottle.filter(key=key, last_failure_at__lt=now - FORGET_AFTER).update(failures=0)
    updated = await LoginThrottle.filter(key=key).update(failures=F("failures") + 1, last_failure_at=now)
    if not updated:
        try:
            await LoginThrottle.create(key=key, failures=1, last_failure_at=now)
        except IntegrityError:  # another process created it first
            await LoginThrottle.filter(key=key).update(failures=F("failures") + 1, last_failure_at=now)
    row = await LoginThrottle.get(key=key)
    if row.failures >= allowed:
        delay = min(BASE_DELAY * 2 ** (row.failures - allowed), MAX_DELAY)
        await LoginThrottle.filter(key=key).update(locked_until=now + delay)


def _spend_hash_time(password: str) -> None:
    # An unknown email costs the same argon2 work as a known one, so timing does not tell which emails exist.
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    verify_password(_dummy_hash, password)


async def login(settings: Settings, email: str, password: str, *, address: str = "", user_agent: str = "") -> SignedIn:
    """Check a password and open a session; Unauthorized for any wrong detail, Throttled when trying too often."""
    email = email.strip().lower()
    now = _now()
    keys = _throttle_keys(email, address, settings)
    await _check_throttle(keys, now)
    user = await User.get_or_none(email=email)
    if user is None:
        _spend_hash_time(password)
    if user is None or not (verify_password(user.password_hash, password) and user.active):
        for key, allowed in keys:
            await _record_failure(key, allowed, now)
        raise Unauthorized("wrong email or password (or the account is disabled)")
    # The account's failures are forgiven, the address's are not: one good password must not unlock guessing
    # at every other account from the same place.
    await LoginThrottle.filter(key=keys[0][0]).delete()
    await UserSession.filter(user_id=user.id, expires_at__lte=now).delete()
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(hours=settings.session_hours)
    await UserSession.create(
        user=user,
        token_hash=_hash(token),
        expires_at=expires,
        last_seen_at=now,
        address=address[:64],
        user_agent=user_agent[:300],
    )
    return SignedIn(token, csrf_token_for(token), expires, await principal_for(user))


async def session_principal(settings: Settings, token: str) -> Principal:
    """The principal of a session cookie; Unauthorized when it is unknown, expired, idle too long or disabled."""
    now = _now()
    row = await UserSession.get_or_none(token_hash=_hash(token)).select_related("user")
    idle = timedelta(minutes=settings.session_idle_minutes)
    if row is None or row.expires_at <= now or row.last_seen_at <= now - idle or not row.user.active:
        if row is not None:
            await row.delete()
        raise Unauthorized("your session has ended; sign in again (POST /api/auth/login)")
    if now - row.last_seen_at >= TOUCH_EVERY:
        await UserSession.filter(id=row.id).update(last_seen_at=now)
    return await principal_for(row.user)


async def logout(token: str) -> None:
    """End a session (nothing happens for an unknown token)."""
    await UserSession.filter(token_hash=_hash(token)).delete()


async def end_user_sessions(user_id: int) -> int:
    """End every session of a user (after a password change or deactivation); returns how many ended."""
    return await UserSession.filter(user_id=user_id).delete()


async def purge_expired(settings: Settings) -> int:
    """Delete ended sessions and forgotten failure counts; returns how many rows went. Safe to run anytime."""
    now = _now()
    idle = timedelta(minutes=settings.session_idle_minutes)
    gone = await UserSession.filter(expires_at__lte=now).delete()
    gone += await UserSession.filter(last_seen_at__lte=now - idle).delete()
    stale = now - FORGET_AFTER
    gone += await LoginThrottle.filter(last_failure_at__lt=stale, locked_until__isnull=True).delete()
    gone += await LoginThrottle.filter(last_failure_at__lt=stale, locked_until__lt=now).delete()
    return gone


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind host or client address) is this machine only."""
    host = host.strip("[]").lower()
    return host in {"localhost", "::1"} or host.startswith("127.")
