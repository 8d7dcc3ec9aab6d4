"""Commands to agents (reload, diagnostics, cancel a run) and cancelling runs.

A technician's command waits as ``pending`` until the agent's next poll hands it out (``delivered``,
:func:`grocerysync.hub.domain.dispatch.claim_commands`); the agent answers with its result (``done`` or
``failed``, :func:`command_result`). Cancelling a queued run ends it at once; cancelling a dispatched or running
one marks it (its agent's progress reports then answer ``cancel: true``) and sends its agent a ``cancel``
command, so the agent hears of it with its next poll rather than its next progress report.

The callers wake the agent's poll (:data:`grocerysync.hub.domain.wake.WAKEUPS`) after the change is committed:
:class:`Cancelled` and :class:`~grocerysync.hub.schemas_agents.CommandOut` say which agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from grocerysync.core.wire import CommandResult, Receipt
from grocerysync.hub.db import transaction
from grocerysync.hub.domain.common import audit, paginate, snapshot
from grocerysync.hub.domain.dispatch import ACTIVE, SYS, hub_log
from grocerysync.hub.errors import Conflict, NotFound
from grocerysync.hub.models import Agent, AgentCommand, CommandStatus, Run, RunStatus
from grocerysync.hub.schemas_agents import CommandFilter, CommandIn, CommandOut, CommandPage
from grocerysync.hub.schemas_jobs import RunOut
from grocerysync.hub.scope import Scope

#: What audit entries record of a run whose cancel was asked for.
_RUN_AUDIT_FIELDS = {"status", "agent_id", "cancel_requested_at", "finished_at"}
_ANSWERED = (CommandStatus.DONE, CommandStatus.FAILED)


def _now() -> datetime:
    return datetime.now(UTC)


# --- technicians ------------------------------------------------------------------------------------------------


async def create_command(scope: Scope, agent_id: int, data: CommandIn) -> CommandOut:
    """Queue a command for the agent's next poll; 409 for a revoked agent, which never polls again."""
    agent = await scope.get(Agent, agent_id)
    scope.require_write()
    if agent.revoked_at is not None:
        raise Conflict(
            f"agent {agent.id} ({agent.name}) is revoked and will not poll again; enroll the store's agent again "
            "and send the command to the new agent"
        )
    row = await AgentCommand.create(
        retailer_id=agent.retailer_id, agent_id=agent.id, type=data.type, created_by=scope.principal.email
    )
    await audit(scope, "create", row, retailer_id=agent.retailer_id, after=snapshot(CommandOut, row))
    return CommandOut.model_validate(row)


async def list_commands(scope: Scope, agent_id: int, args: CommandFilter) -> CommandPage:
    """An agent's commands, newest first; filter by status."""
    agent = await scope.get(Agent, agent_id)
    qs = scope.query(AgentCommand).filter(agent_id=agent.id)
    if args.status is not None:
        qs = qs.filter(status=args.status)
    return await paginate(qs, args, CommandPage, order=("-id",))


async def get_command(scope: Scope, agent_id: int, command_id: int) -> CommandOut:
    """One of the agent's commands, with the agent's answer once it came."""
    agent = await scope.get(Agent, agent_id)
    row = await scope.query(AgentCommand).get_or_none(id=command_id, agent_id=agent.id)
    if row is None:
        raise NotFound(f"agent {agent.id} has no command {command_id}")
    return CommandOut.model_validate(row)


@dataclass(frozen=True)
class Cancelled:
    """A cancelled run, and the agent to wake (None when the run was only queued)."""

    run: RunOut
    agent_id: int | None


def _audited(run: Run) -> dict[str, object]:
    view = RunOut.model_validate(run).model_dump(mode="json")
    return {k: v for k, v in view.items() if k in _RUN_AUDIT_FIELDS}


async def cancel_run(scope: Scope, run_id: int) -> Cancelled:
    """Cancel a run: a queued one at once; a dispatched or running one through its agent. 409 once it finished.

    Cancelling twice is the same as once (one ``cancel`` command per run).
    """
    run = await scope.get(Run, run_id)
    scope.require_write()
    before = _audited(run)
    now = _now()
    who = scope.principal.email
    if run.status == RunStatus.QUEUED:
        cancelled = await (
            scope.query(Run)
            .filter(id=run.id, status=RunStatus.QUEUED)
            .update(
                status=RunStatus.CANCELLED,
                cancel_requested_at=now,
                finished_at=now,
                error=f"cancelled by {who} before an agent started it",
            )
        )
        run = await scope.get(Run, run_id)
        if cancelled:
            await audit(scope, "cancel", run, retailer_id=run.retailer_id, before=before, after=_audited(run))
            await hub_log(run, "warning", f"run {run.id} ({run.job_name}) was cancelled by {who} before it started")
            return Cancelled(RunOut.model_validate(run), None)
        # An agent's poll claimed it meanwhile: cancel it through that agent.
    if run.status not in ACTIVE:
        raise Conflict(
            f"run {run.id} is already {run.status}; only queued, dispatched or running runs can be cancelled"
        )
    if run.cancel_requested_at is None and run.agent_id is not None:
        async with transaction(Run._meta.default_connection):
            asked = await (
                scope.query(Run)
                .filter(id=run.id, status__in=list(ACTIVE), cancel_requested_at__isnull=True)
                .update(cancel_requested_at=now)
            )
            if asked:
                await AgentCommand.create(
                    retailer_id=run.retailer_id, agent_id=run.agent_id, type="cancel", run_id=run.id, created_by=who
                )
        run = await scope.get(Run, run_id)
        if not asked and run.status not in ACTIVE:
            raise Conflict(f"run {run.id} finished ({run.status}) before it could be cancelled")
        if asked:
            await audit(scope, "cancel", run, retailer_id=run.retailer_id, before=before, after=_audited(run))
            await hub_log(run, "warning", f"{who} asked agent {run.agent_id} to cancel run {run.id} ({run.job_name})")
    return Cancelled(RunOut.model_validate(run), run.agent_id)


# --- the agent's side -------------------------------------------------------------------------------------------


async def command_result(agent: Agent, command_id: int, data: CommandResult) -> Receipt:
    """Record what came of one of the agent's commands; a second answer changes nothing (``duplicates: 1``).

    Another agent's command answers 404, as if it did not exist.
    """
    row = await SYS.query(AgentCommand).get_or_none(id=command_id, retailer_id=agent.retailer_id, agent_id=agent.id)
    if row is None:
        raise NotFound(f"command {command_id} not found for agent {agent.id}: it is not one of this agent's commands")
    if row.status in _ANSWERED:
        return Receipt(duplicates=1)
    now = _now()
    updated = await (
        SYS.query(AgentCommand)
        .filter(id=row.id, status__in=[CommandStatus.PENDING, CommandStatus.DELIVERED])
        .update(
            status=CommandStatus.DONE if data.ok else CommandStatus.FAILED,
            message=data.message,
            result=data.data,
            delivered_at=row.delivered_at or now,
            completed_at=now,
        )
    )
    return Receipt(recorded=1) if updated else Receipt(duplicates=1)
