"""Routes for agents and the enrollment tokens they enroll with."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from grocerysync.hub.api.context import authenticate, hub, scope
from grocerysync.hub.api.jobs import wake_after_commit
from grocerysync.hub.domain import agents as domain
from grocerysync.hub.domain import commands
from grocerysync.hub.schemas import PageArgs
from grocerysync.hub.schemas_agents import (
    AgentFilter,
    AgentOut,
    AgentPage,
    CommandFilter,
    CommandIn,
    CommandOut,
    CommandPage,
    EnrollmentTokenIn,
    EnrollmentTokenPage,
    NewEnrollmentToken,
)

bp = Blueprint("agents", __name__, url_prefix="/api")
bp.before_request(authenticate)


@bp.post("/stores/<int:store_id>/enrollment-tokens")
@validate_request(EnrollmentTokenIn)
@validate_response(NewEnrollmentToken, 201)
async def create_enrollment_token(store_id: int, data: EnrollmentTokenIn) -> tuple[NewEnrollmentToken, int]:
    """A one-time enrollment token for an agent of the store. The token is in this answer only: copy it now."""
    return await domain.create_enrollment_token(scope(), store_id, data), 201


@bp.get("/stores/<int:store_id>/enrollment-tokens")
@validate_querystring(PageArgs)
@validate_response(EnrollmentTokenPage)
async def list_enrollment_tokens(store_id: int, query_args: PageArgs) -> EnrollmentTokenPage:
    """The store's enrollment tokens, newest first, with expiry and use (never their values)."""
    return await domain.list_enrollment_tokens(scope(), store_id, query_args)


@bp.delete("/enrollment-tokens/<int:token_id>")
async def delete_enrollment_token(token_id: int) -> tuple[str, int]:
    """Revoke an unused enrollment token."""
    await domain.delete_enrollment_token(scope(), token_id)
    return "", 204


@bp.get("/agents")
@validate_querystring(AgentFilter)
@validate_response(AgentPage)
async def list_agents(query_args: AgentFilter) -> AgentPage:
    """The agents you may see; filter by ``retailer_id``, ``store_id`` and ``status``."""
    return await domain.list_agents(scope(), query_args, hub().settings)


@bp.get("/agents/<int:agent_id>")
@validate_response(AgentOut)
async def get_agent(agent_id: int) -> AgentOut:
    """One agent, with its status, version and plugins."""
    return await domain.get_agent(scope(), agent_id, hub().settings)


@bp.post("/agents/<int:agent_id>/revoke")
@validate_response(AgentOut)
async def revoke_agent(agent_id: int) -> AgentOut:
    """Refuse the agent's credential from now on (the store enrolls again with a new token)."""
    revoked = await domain.revoke_agent(scope(), agent_id, hub().settings)
    # A waiting poll of the agent is refused now, not when its wait runs out.
    wake_after_commit(agent_id=revoked.id)
    return revoked


@bp.post("/agents/<int:agent_id>/commands")
@validate_request(CommandIn)
@validate_response(CommandOut, 201)
async def create_command(agent_id: int, data: CommandIn) -> tuple[CommandOut, int]:
    """Ask the agent to ``reload`` its configuration or send ``diagnostics``; it gets the command with its next
    poll (at once if it is polling), and its answer shows in the command."""
    command = await commands.create_command(scope(), agent_id, data)
    wake_after_commit(agent_id=command.agent_id)
    return command, 201


@bp.get("/agents/<int:agent_id>/commands")
@validate_querystring(CommandFilter)
@validate_response(CommandPage)
async def list_commands(agent_id: int, query_args: CommandFilter) -> CommandPage:
    """The agent's commands, newest first; filter by ``status``."""
    return await commands.list_commands(scope(), agent_id, query_args)


@bp.get("/agents/<int:agent_id>/commands/<int:command_id>")
@validate_response(CommandOut)
async def get_command(agent_id: int, command_id: int) -> CommandOut:
    """One of the agent's commands, with the agent's answer (``message``, ``result``) once it came."""
    return await commands.get_command(scope(), agent_id, command_id)
