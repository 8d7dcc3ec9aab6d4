"""The session cookie: its name and attributes, and authenticating a request by it (with the CSRF check)."""

from __future__ import annotations

from quart import g, request

from grocerysync.hub.errors import Forbidden
from grocerysync.hub.scope import Principal
from grocerysync.hub.sessions import CSRF_HEADER, SAFE_METHODS, csrf_ok, is_loopback, session_principal
from grocerysync.hub.settings import Settings

#: The ``__Host-`` prefix makes browsers refuse the cookie unless it is Secure, for this host only, on path /.
SECURE_COOKIE = "__Host-grocerysync_session"
#: Without TLS on loopback (development), browsers would drop a ``__Host-`` cookie: a plain name then.
PLAIN_COOKIE = "grocerysync_session"


def secure_cookie(settings: Settings) -> bool:
    """Whether the cookie is marked Secure: always, except when switched off for a loopback client."""
    return settings.cookie_secure or not is_loopback(request.remote_addr or "")


def cookie_name(settings: Settings) -> str:
    """The session cookie's name for this request."""
    return SECURE_COOKIE if secure_cookie(settings) else PLAIN_COOKIE


async def cookie_principal(settings: Settings) -> Principal | None:
    """The principal of the request's session cookie, or None without one.

    Unsafe methods must also carry the session's CSRF token in ``X-CSRF-Token``, else Forbidden.
    """
    token = request.cookies.get(cookie_name(settings), "")
    if not token:
        return None
    principal = await session_principal(settings, token)
    if request.method not in SAFE_METHODS and not csrf_ok(token, request.headers.get(CSRF_HEADER)):
        raise Forbidden(
            f"this change needs the session's CSRF token in the {CSRF_HEADER} header "
            "(it is in the answer of POST /api/auth/login and GET /api/auth/me)"
        )
    g.session_token = token
    return principal
