"""The agent channel: routes the store agents call (``/agent/v1/...``), not people.

Enrollment needs no user: the one-time enrollment token in the body is the authentication.

Status codes of a refused enrollment: 401 for a token the hub does not know (mistyped or revoked: the request
carries no credential the hub accepts), 410 Gone for a token that existed but is used or expired (it will never
work again, so the agent must not retry it; the technician has to create a new one).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import validate_request

from grocerysync.core.wire import AGENT_API_PREFIX, EnrollRequest
from grocerysync.hub.domain import agent_channel as domain
from grocerysync.hub.domain.agents import EnrollmentRefused
from grocerysync.hub.errors import ApiError

bp = Blueprint("agent_channel", __name__, url_prefix=AGENT_API_PREFIX)

#: What the agent's user can do about any refused token.
NEXT_STEP = "ask your technician for a new enrollment token for this store"
_STATUS = {"unknown": 401, "used": 410, "expired": 410}


@bp.post("/enroll")
@validate_request(EnrollRequest)
async def enroll(data: EnrollRequest) -> tuple[dict[str, Any], int]:
    """Trade a one-time enrollment token for this agent's credential (answered this once: store it now).

    401 for an unknown token, 410 for a used or expired one; each answer says what to do.
    """
    try:
        answer = await domain.enroll(data)
    except EnrollmentRefused as exc:
        # The domain's messages end with advice for the technician at the hub; the agent's user gets their own.
        what = exc.message.split("; ", 1)[0]
        raise ApiError(f"enrollment refused: {what}; {NEXT_STEP}", status=_STATUS.get(exc.reason, 401)) from None
    return answer.wire(), 201
