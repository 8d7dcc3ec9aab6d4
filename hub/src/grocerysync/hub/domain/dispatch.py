"""Dispatch: answering agents' long polls with the runs and commands waiting for them.

A poll (:func:`poll`) records the agent's heartbeat in memory (:mod:`grocerysync.hub.domain.heartbeats`),
registers a wake-up (:data:`grocerysync.hub.domain.wake.WAKEUPS`) and only then looks in the database, so work
committed while it looks either shows up in that look or wakes it. It hands out:

- the agent's pending commands (marked delivered), and
- if the agent has capacity, the oldest queued runs of its store that may start now (``not_before`` past),
  each claimed for this agent alone: on PostgreSQL the candidates are locked with ``FOR UPDATE SKIP LOCKED``
  (two hubs' polls skip each other's rows instead of queueing behind them), and on every database the claim is
  a conditional ``UPDATE ... WHERE status = 'queued'`` that only one poll can win. A claimed run is
  ``dispatched``, with a short lease (``GROCERYSYNC_RUN_ACK_SECONDS``) within which the agent must acknowledge
  it (:mod:`grocerysync.hub.domain.reports`).

When there is nothing, the poll waits for a wake-up up to the shorter of the agent's ``wait`` and
``GROCERYSYNC_AGENT_POLL_MAX_WAIT_SECONDS``, looks again when woken, and otherwise answers empty. A run whose job
cannot be turned into a job spec any more (the job was deleted, a secret no longer decrypts) is failed with a
message for the technician instead of being sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pydantic import ValidationError
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.queryset import QuerySet

from grocerysync.core.wire import AgentConfig, Command, Heartbeat, PollAnswer, RunAssignment
from grocerysync.hub.crypto import SecretBox, SecretsError
from grocerysync.hub.db import transaction
from grocerysync.hub.domain.common import store_log
from grocerysync.hub.domain.heartbeats import HeartbeatBuffer
from grocerysync.hub.domain.jobs import job_spec
from grocerysync.hub.domain.wake import WAKEUPS, Wakeups
from grocerysync.hub.errors import NotFound, Unauthorized
from grocerysync.hub.models import Agent, AgentCommand, CommandStatus, Run, RunStatus
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.settings import Settings

log = logging.getLogger(__name__)

#: The agent channel acts for the system, and every query below also names the agent's own retailer and store.
SYS = Scope(SYSTEM)
#: A run in one of these states belongs to its agent (until its lease runs out).
ACTIVE: tuple[RunStatus, ...] = (RunStatus.DISPATCHED, RunStatus.RUNNING)
#: The most commands handed out in one poll answer (the rest go with the next poll).
MAX_COMMANDS = 50
#: The logger name of the hub's own log entries about runs.
HUB_LOGGER = "grocerysync.hub.dispatch"

M = TypeVar("M", bound=Model)


def _now() -> datetime:
    return datetime.now(UTC)


def agent_config(settings: Settings) -> AgentConfig:
    """What every poll answer tells the agent to apply (from the hub's settings)."""
    return AgentConfig(
        log_level=settings.agent_log_level,
        poll_wait=settings.agent_poll_wait_seconds,
        progress_interval=settings.agent_progress_interval_seconds,
    )


async def agent_run(agent: Agent, run_id: int) -> Run:
    """A run of the agent's own store, or NotFound: another store's or retailer's run looks like no run at all."""
    run = await SYS.query(Run).get_or_none(id=run_id, retailer_id=agent.retailer_id, store_id=agent.store_id)
    if run is None:
        raise NotFound(f"run {run_id} not found for agent {agent.id}: it is not a run of this agent's store")
    return run


async def hub_log(run: Run, level: str, message: str, *, agent_id: int | None = None) -> None:
    """One log entry of the hub's own about a run, shown with the agent's log lines in the hub."""
    await store_log(
        level,
        message,
        logger=HUB_LOGGER,
        retailer_id=run.retailer_id,
        store_id=run.store_id,
        run_id=run.id,
        agent_id=agent_id if agent_id is not None else run.agent_id,
    )


# --- the poll ---------------------------------------------------------------------------------------------------


async def poll(
    agent: Agent,
    heartbeat: Heartbeat,
    settings: Settings,
    box: SecretBox,
    heartbeats: HeartbeatBuffer,
    *,
    wakeups: Wakeups = WAKEUPS,
) -> PollAnswer:
    """Answer one poll: the agent's commands and runs as soon as there are any, else an empty answer at the end
    of the wait. Cancelling it (the agent hung up) leaves no waiter behind.

    Raises Unauthorized when the agent was revoked while its poll waited.
    """
    heartbeats.record(agent.id, heartbeat)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(heartbeat.wait, settings.agent_poll_max_wait_seconds)
    runs: list[RunAssignment] = []
    commands: list[Command] = []
    capacity = heartbeat.capacity
    # Not kept through the wait (its plugin list and health, times thousands of held polls).
    del heartbeat
    with wakeups.waiter(agent.id, agent.store_id) as woken:
        while True:
            # Cleared before looking: a wake-up that comes during the look is kept for the wait below.
            woken.clear()
            # One cheap query first: most looks find nothing, and the claims cost several queries each.
            any_commands, any_runs = await has_work(agent, settings)
            if any_commands:
                commands = await claim_commands(agent, settings)
            if any_runs and capacity > 0:
                runs = await dispatch_runs(agent, capacity, settings, box)
            remaining = deadline - loop.time()
            if runs or commands or remaining <= 0:
                break
            try:
                # asyncio.timeout, not wait_for: no extra task per held poll.
                async with asyncio.timeout(remaining):
                    await woken.wait()
            except TimeoutError:
                break
            await _refuse_if_revoked(agent)
    return PollAnswer(runs=runs, commands=commands, config=agent_config(settings), server_time=_now())


async def _refuse_if_revoked(agent: Agent) -> None:
    # The credential was checked when the poll came in; a revocation during a long wait must not hand out work.
    current = await SYS.query(Agent).filter(id=agent.id).only("id", "revoked_at").first()
    if current is None or current.revoked_at is not None:
        raise Unauthorized(
            f"agent {agent.id} ({agent.name}) was revoked (or deleted) while its poll waited; "
            "enroll it again with a new enrollment token"
        )


_HAS_WORK = (
    "SELECT EXISTS (SELECT 1 FROM agent_command WHERE retailer_id = $1 AND agent_id = $2 "
    "AND (status = $3 OR (status = $4 AND delivered_at < $5))) AS commands, "
    "EXISTS (SELECT 1 FROM run WHERE retailer_id = $1 AND store_id = $6 AND status = $7 "
    "AND (not_before IS NULL OR not_before <= $8)) AS runs"
)


async def has_work(agent: Agent, settings: Settings) -> tuple[bool, bool]:
    """Whether the agent has commands to deliver, and whether its store has runs that may start now, in one query.

    The same conditions as :func:`claim_commands` and :func:`claim_runs`, without their claims: a poll that finds
    nothing (nearly every one) costs one round trip, not two, and no ORM query building. Both conditions name the
    agent's own retailer, as every query of the agent channel does.
    """
    now = _now()
    stale = now - timedelta(seconds=settings.command_redeliver_seconds)
    db: BaseDBAsyncClient = Run._meta.db
    values = [
        agent.retailer_id,
        agent.id,
        CommandStatus.PENDING.value,
        CommandStatus.DELIVERED.value,
        stale,
        agent.store_id,
        RunStatus.QUEUED.value,
        now,
    ]
    # SQLite numbers its parameters ?1, ?2, ...; PostgreSQL $1, $2, ...
    sql = _HAS_WORK if db.capabilities.dialect == "postgres" else _HAS_WORK.replace("$", "?")
    [row] = await db.execute_query_dict(sql, values)
    return bool(row["commands"]), bool(row["runs"])


async def _claim(candidates: QuerySet[M], limit: int, take: Callable[[M], Awaitable[bool]]) -> list[M]:
    """Up to ``limit`` rows of ``candidates`` that ``take`` (a conditional update) wins, oldest first.

    A plain read first: most polls find nothing and should not open a transaction for it. Rows another poll
    wins meanwhile are skipped and the next candidates tried, so a lost race never leaves work waiting.
    """
    won: list[M] = []
    tried: set[int] = set()
    while len(won) < limit:
        pending = candidates.exclude(id__in=list(tried)) if tried else candidates
        if not await pending.exists():
            break
        async with transaction(candidates.model._meta.default_connection) as tx:
            # PostgreSQL: lock the rows, skipping those another transaction holds. SQLite ignores this (one
            # writer at a time); there the conditional update alone decides. ``using_db(tx)``: a queryset made
            # before the transaction is bound to the pool, and would lock nothing while holding a second
            # connection (with every pool connection held so, the hub deadlocks).
            rows = await pending.select_for_update(skip_locked=True).limit(limit - len(won)).using_db(tx)
            if not rows:
                break
            for row in rows:
                tried.add(int(row.pk))
                if await take(row):
                    won.append(row)
    return won


async def claim_commands(agent: Agent, settings: Settings) -> list[Command]:
    """The agent's pending commands, oldest first, now marked delivered (each to exactly one poll).

    A command delivered but not answered within ``command_redeliver_seconds`` is delivered again: the poll's
    answer may have been lost (the agent hung up, or died before it answered). The agent ignores a command id it
    already handled, and the hub records a command's answer once.
    """
    now = _now()
    stale = now - timedelta(seconds=settings.command_redeliver_seconds)
    undelivered = Q(status=CommandStatus.PENDING) | Q(status=CommandStatus.DELIVERED, delivered_at__lt=stale)
    candidates = (
        SYS.query(AgentCommand)
        .filter(retailer_id=agent.retailer_id, agent_id=agent.id)
        .filter(undelivered)
        .order_by("id")
    )

    async def take(row: AgentCommand) -> bool:
        # Conditional on what was read: of two polls taking one command, one wins.
        won = await (
            SYS.query(AgentCommand)
            .filter(id=row.id, status=row.status, delivered_at=row.delivered_at)
            .update(status=CommandStatus.DELIVERED, delivered_at=now)
        )
        return bool(won)

    rows = await _claim(candidates, MAX_COMMANDS, take)
    return [Command.model_validate({"id": row.id, "type": row.type, "run_id": row.run_id}) for row in rows]


async def claim_runs(agent: Agent, limit: int, settings: Settings) -> list[Run]:
    """Up to ``limit`` queued runs of the agent's store that may start now, oldest first, dispatched to it."""
    now = _now()
    lease = now + timedelta(seconds=settings.run_ack_seconds)
    candidates = (
        SYS.query(Run)
        .filter(retailer_id=agent.retailer_id, store_id=agent.store_id, status=RunStatus.QUEUED)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .order_by("queued_at", "id")
    )

    async def take(run: Run) -> bool:
        won = await (
            SYS.query(Run)
            .filter(id=run.id, status=RunStatus.QUEUED)
            .update(status=RunStatus.DISPATCHED, agent_id=agent.id, lease_expires_at=lease)
        )
        if won:
            run.status, run.agent_id, run.lease_expires_at = RunStatus.DISPATCHED, agent.id, lease
        return bool(won)

    return await _claim(candidates, limit, take)


async def dispatch_runs(agent: Agent, limit: int, settings: Settings, box: SecretBox) -> list[RunAssignment]:
    """Claim runs for the agent and build their assignments; runs that cannot be built are failed, not sent."""
    assignments = []
    for run in await claim_runs(agent, limit, settings):
        assignment = await _assignment(agent, run, settings, box)
        if assignment is not None:
            assignments.append(assignment)
    return assignments


async def _assignment(agent: Agent, run: Run, settings: Settings, box: SecretBox) -> RunAssignment | None:
    problem = ""
    if run.job_id is None:
        problem = f"its export job ({run.job_name}) was deleted before an agent picked the run up"
    else:
        try:
            spec = await job_spec(SYS, box, run.job_id)
        except NotFound as exc:
            problem = f"its export job is incomplete ({exc.message}); check the job's POS connection and destination"
        except SecretsError as exc:
            problem = (
                f"the destination's secrets cannot be decrypted ({exc}); save the destination's secrets again "
                "(or put the missing key back in the hub's key ring)"
            )
        except ValidationError as exc:
            problem = (
                f"the job's stored settings are no longer valid ({exc.error_count()} problem(s), first: "
                f"{exc.errors()[0]['msg']}); open the job in the hub and save it again"
            )
    if problem:
        await fail_undispatchable(agent, run, problem)
        return None
    assert run.lease_expires_at is not None  # set by the claim
    return RunAssignment(
        run_id=run.id,
        attempt=run.attempt,
        job_id=run.job_id,
        trigger=run.trigger,
        full=run.full,
        lease_expires_at=run.lease_expires_at,
        lease_seconds=settings.run_lease_seconds,
        spec=spec,
    )


async def fail_undispatchable(agent: Agent, run: Run, problem: str) -> None:
    """Fail a run just claimed for ``agent`` that cannot be sent, saying why and what to do."""
    message = f"run {run.id} was not started: {problem}; then trigger the job again"
    updated = await (
        SYS.query(Run)
        .filter(id=run.id, agent_id=agent.id, status=RunStatus.DISPATCHED)
        .update(status=RunStatus.FAILED, error=message, finished_at=_now(), lease_expires_at=None)
    )
    if updated:
        log.warning("%s (retailer %s, store %s)", message, run.retailer_id, run.store_id)
        await hub_log(run, "error", message, agent_id=agent.id)
