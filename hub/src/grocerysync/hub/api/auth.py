"""Routes for browser sign-in: login, logout, and who am I (the session machinery is in ``sessions``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, g, request
from quart_schema import security_scheme, validate_request, validate_response
from werkzeug.http import dump_cookie

from grocerysync.hub import sessions
from grocerysync.hub.api.context import authenticate, hub, scope
from grocerysync.hub.api.cookies import cookie_name, secure_cookie

bp = Blueprint("auth", __name__, url_prefix="/api/auth")


class LoginIn(BaseModel):
    """An email and password."""

    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, Field(min_length=1, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=1000, json_schema_extra={"writeOnly": True})]


class SessionOut(BaseModel):
    """Who is signed in. ``csrf_token`` goes in ``X-CSRF-Token`` on every unsafe request made with the cookie."""

    user_id: int
    email: str
    role: str
    retailer_ids: list[int] | None = Field(description="The retailers this user sees, or null for all of them.")
    auth: Literal["session", "token"]
    csrf_token: str | None = None
    expires_at: datetime | None = None


@bp.post("/login")
@security_scheme([])
@validate_request(LoginIn)
@validate_response(SessionOut, 200)
async def login(data: LoginIn) -> tuple[SessionOut, int, dict[str, str]]:
    """Sign in: sets the HttpOnly session cookie and answers the CSRF token. Too many failures answer 429."""
    settings = hub().settings
    signed = await sessions.login(
        settings,
        data.email,
        data.password,
        address=request.remote_addr or "",
        user_agent=request.headers.get("User-Agent", ""),
    )
    p = signed.principal
    body = SessionOut(
        user_id=p.user_id,
        email=p.email,
        role=p.role.value,
        retailer_ids=sorted(p.retailer_ids) if p.retailer_ids is not None else None,
        auth="session",
        csrf_token=signed.csrf_token,
        expires_at=signed.expires_at,
    )
    cookie = dump_cookie(
        cookie_name(settings),
        signed.token,
        max_age=int(settings.session_hours * 3600),
        path="/",
        secure=secure_cookie(settings),
        httponly=True,
        # Lax, not Strict: a technician following a link to the hub from a ticket arrives signed in, while other
        # sites still cannot make the browser send the cookie with their POSTs, and the CSRF token covers the rest.
        samesite="Lax",
    )
    return body, 200, {"Set-Cookie": cookie, "Cache-Control": "no-store"}


@bp.post("/logout")
async def logout() -> Response:
    """Sign out: ends the session (a cookie-authenticated call needs its CSRF token)."""
    await authenticate()
    token = g.get("session_token")
    if token:
        await sessions.logout(token)
    response = Response("", status=204)
    settings = hub().settings
    response.delete_cookie(cookie_name(settings), path="/", secure=secure_cookie(settings), httponly=True)
    return response


@bp.get("/me")
@validate_response(SessionOut)
async def me() -> SessionOut:
    """Who you are, with the CSRF token when you are signed in with the session cookie."""
    await authenticate()
    p = scope().principal
    token = g.get("session_token")
    return SessionOut(
        user_id=p.user_id,
        email=p.email,
        role=p.role.value,
        retailer_ids=sorted(p.retailer_ids) if p.retailer_ids is not None else None,
        auth="session" if token else "token",
        csrf_token=sessions.csrf_token_for(token) if token else None,
    )
