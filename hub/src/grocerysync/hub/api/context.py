"""What a request handler needs from the app and the request: the hub's state and the caller's scope."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app, g, request

from grocerysync.core.manager import PluginManager
from grocerysync.hub.api.cookies import cookie_principal
from grocerysync.hub.crypto import SecretBox
from grocerysync.hub.domain.users import authenticate_token
from grocerysync.hub.errors import Unauthorized
from grocerysync.hub.scope import Scope
from grocerysync.hub.settings import Settings

EXTENSION = "grocerysync"


@dataclass(frozen=True)
class HubState:
    """The app-wide objects every handler may use."""

    settings: Settings
    plugins: PluginManager
    box: SecretBox


def hub() -> HubState:
    """The app's :class:`HubState`."""
    state: HubState = current_app.extensions[EXTENSION]
    return state


async def authenticate() -> None:
    """``before_request`` of every API blueprint: a valid bearer token or session cookie (with CSRF), or 401."""
    header = request.headers.get("Authorization", "")
    if not header:
        principal = await cookie_principal(hub().settings)
        if principal is not None:
            g.scope = Scope(principal)
            return
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "send an API token as 'Authorization: Bearer <token>' (see 'grocerysync-hub create-token'), "
            "or sign in with POST /api/auth/login"
        )
    g.scope = Scope(await authenticate_token(token.strip()))


def scope() -> Scope:
    """The authenticated caller's scope (set by :func:`authenticate`)."""
    current: Scope = g.scope
    return current
