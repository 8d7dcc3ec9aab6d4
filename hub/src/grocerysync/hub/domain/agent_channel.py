"""The agent channel's domain side: what the routes under ``/agent/v1`` do, in terms of the shared wire models."""

from __future__ import annotations

from pydantic import SecretStr

from grocerysync.core.wire import EnrollRequest, EnrollResponse
from grocerysync.hub.domain.agents import redeem_enrollment_token
from grocerysync.hub.models import Store
from grocerysync.hub.scope import SYSTEM, Scope


async def enroll(request: EnrollRequest) -> EnrollResponse:
    """Redeem the request's enrollment token for a new agent; the answer carries its credential this once.

    Raises :class:`~grocerysync.hub.domain.agents.EnrollmentRefused` for an unknown, used or expired token.
    """
    agent, credential = await redeem_enrollment_token(
        request.token.get_secret_value(),
        request.hostname,
        version=request.agent_version or None,
        os=request.os or None,
        plugins=[p.model_dump() for p in request.plugins],
    )
    store = await Scope(SYSTEM).get(Store, agent.store_id)
    return EnrollResponse(
        agent_id=agent.id,
        credential=SecretStr(credential),
        retailer_id=agent.retailer_id,
        store_id=agent.store_id,
        store_name=store.name,
    )
