"""The agent channel: routes the store agents call (``/agent/v1/...``), not people.

Enrollment needs no user: the one-time enrollment token in the body is the authentication. Every other route
authenticates the agent's own credential (``Authorization: Bearer ...``) before anything else, so a revoked
agent gets 401 with what to do on whatever it calls.

Status codes of a refused enrollment: 401 for a token the hub does not know (mistyped or revoked: the request
carries no credential the hub accepts), 410 Gone for a token that existed but is used or expired (it will never
work again, so the agent must not retry it; the technician has to create a new one).

After enrollment, the agent long-polls ``/poll`` for runs and commands and reports on each run it was handed;
see :mod:`grocerysync.core.wire` for the run's life cycle, and :mod:`grocerysync.hub.domain.dispatch`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from quart import Blueprint, current_app, request
from quart_schema import (
    RequestSchemaValidationError,
    document_request,
    document_response,
    validate_request,
    validate_response,
)

from grocerysync.core.wire import (
    AGENT_API_PREFIX,
    CommandResult,
    EnrollRequest,
    Heartbeat,
    LeaseAnswer,
    PollAnswer,
    Receipt,
    RejectionBatch,
    RunAck,
    RunProgress,
    RunResult,
)
from grocerysync.hub.api.agent_auth import current_agent, require_agent
from grocerysync.hub.api.context import hub
from grocerysync.hub.domain import agent_channel as domain
from grocerysync.hub.domain import commands, dispatch, reports
from grocerysync.hub.domain.agents import EnrollmentRefused
from grocerysync.hub.domain.heartbeats import EXTENSION as HEARTBEATS
from grocerysync.hub.domain.heartbeats import HeartbeatBuffer
from grocerysync.hub.errors import ApiError

bp = Blueprint("agent_channel", __name__, url_prefix=AGENT_API_PREFIX)

#: What the agent's user can do about any refused token.
NEXT_STEP = "ask your technician for a new enrollment token for this store"
_STATUS = {"unknown": 401, "used": 410, "expired": 410}


@bp.before_request
async def _authenticate() -> None:
    """Every route but enrollment: the agent's credential, checked before the body is even read."""
    if request.endpoint != f"{bp.name}.enroll":
        await require_agent()


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


def _heartbeats() -> HeartbeatBuffer:
    buffer: HeartbeatBuffer = current_app.extensions[HEARTBEATS]
    return buffer


async def _heartbeat() -> Heartbeat:
    """The poll's body, validated as ``validate_request`` would (same errors), but kept by nobody: a poll is held
    for up to a minute, thousands at a time, and neither the parsed JSON (not cached on the request) nor the
    model (not held by a decorator's frame) should stay alive that long."""
    try:
        return Heartbeat.model_validate(await request.get_json(cache=False))
    except ValidationError as exc:
        raise RequestSchemaValidationError(exc) from None


@bp.post("/poll")
@document_request(Heartbeat)
@document_response(PollAnswer)
async def poll() -> dict[str, Any]:
    """The agent's heartbeat and long poll: answered at once with runs and commands for it, or empty after
    ``wait`` seconds (at most the hub's limit). Assignments carry the job's destination secrets."""
    state = hub()
    # The heartbeat goes straight into the call: dispatch.poll lets go of it before the wait.
    answer = await dispatch.poll(current_agent(), await _heartbeat(), state.settings, state.box, _heartbeats())
    return answer.wire()


@bp.post("/runs/<int:run_id>/ack")
@validate_request(RunAck)
@validate_response(LeaseAnswer)
async def ack_run(run_id: int, data: RunAck) -> LeaseAnswer:
    """The agent starts a run it was handed: it is running, with a lease to extend by progress reports.

    409 when the run is no longer this agent's (drop it); 404 for a run of another store.
    """
    return await reports.ack(current_agent(), run_id, data, hub().settings)


@bp.post("/runs/<int:run_id>/progress")
@validate_request(RunProgress)
@validate_response(LeaseAnswer)
async def run_progress(run_id: int, data: RunProgress) -> LeaseAnswer:
    """Counts so far; extends the lease. ``cancel: true`` asks the agent to stop and report ``cancelled``."""
    return await reports.progress(current_agent(), run_id, data, hub().settings)


@bp.post("/runs/<int:run_id>/rejections")
@validate_request(RejectionBatch)
@validate_response(Receipt)
async def run_rejections(run_id: int, data: RejectionBatch) -> Receipt:
    """A batch of the run's rejected items, numbered from ``first_seq``; a batch sent twice is stored once."""
    return await reports.add_rejections(current_agent(), run_id, data, hub().settings)


@bp.post("/runs/<int:run_id>/result")
@validate_request(RunResult)
@validate_response(Receipt)
async def run_result(run_id: int, data: RunResult) -> Receipt:
    """How the run ended. The same result again answers ``duplicates: 1``; 409 when the run is no longer this
    agent's (its lease ran out and the hub failed it): drop the result."""
    return await reports.record_result(current_agent(), run_id, data)


@bp.post("/commands/<int:command_id>/result")
@validate_request(CommandResult)
@validate_response(Receipt)
async def command_result(command_id: int, data: CommandResult) -> Receipt:
    """What came of one of this agent's commands (diagnostics carry their report in ``data``)."""
    return await commands.command_result(current_agent(), command_id, data)
