"""Authentication of the agent channel: every call after enrollment carries the agent's own credential."""

from __future__ import annotations

from quart import g, request

from grocerysync.hub.domain.agents import Agent, authenticate_agent
from grocerysync.hub.errors import Unauthorized


async def require_agent() -> Agent:
    """The agent whose credential is in ``Authorization: Bearer ...``, also kept as ``g.agent``; else 401.

    A revoked agent or an unknown credential is refused with a message that says to enroll again.
    """
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized(
            "send this agent's credential as 'Authorization: Bearer <credential>' "
            "(the agent keeps it in its state directory after 'grocerysync-agent enroll')"
        )
    # Lean: the row without the heartbeat's JSON, which a held poll would otherwise keep for its whole wait.
    agent = await authenticate_agent(credential, lean=True)
    g.agent = agent
    return agent


def current_agent() -> Agent:
    """The agent authenticated by :func:`require_agent` for this request."""
    agent: Agent = g.agent
    return agent
