"""Agents and their enrollment: one-time enrollment tokens traded for per-agent credentials.

A technician creates an enrollment token for a store; the store's agent trades it once for its own credential
(:func:`redeem_enrollment_token`) and then authenticates with that credential (:func:`authenticate_agent`).
The hub stores only SHA-256 hashes of both (they are long and random, so a plain hash suffices), and shows
their first characters so people can tell them apart.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from grocerysync.hub.db import transaction
from grocerysync.hub.domain.common import audit, paginate, snapshot
from grocerysync.hub.errors import Conflict, Invalid, Unauthorized
from grocerysync.hub.models import Agent as Agent  # re-exported: the agent channel's blueprints name the type
from grocerysync.hub.models import AuditEntry, EnrollmentToken, Store
from grocerysync.hub.schemas import PageArgs
from grocerysync.hub.schemas_agents import (
    AgentFilter,
    AgentOut,
    AgentPage,
    AgentStatus,
    EnrollmentTokenIn,
    EnrollmentTokenOut,
    EnrollmentTokenPage,
    NewEnrollmentToken,
)
from grocerysync.hub.scope import SYSTEM, Scope
from grocerysync.hub.security import SHOWN_CHARS, token_hash
from grocerysync.hub.settings import Settings

ENROLLMENT_PREFIX = "gse_"
CREDENTIAL_PREFIX = "gsa_"
MAX_NAME = 200


class EnrollmentRefused(Unauthorized):
    """An enrollment token the hub does not accept; ``reason`` is ``unknown``, ``used`` or ``expired``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _new_secret(prefix: str) -> tuple[str, str, str]:
    """``(value, shown prefix, hash to store)`` of a fresh random token."""
    value = prefix + secrets.token_urlsafe(32)
    return value, value[:SHOWN_CHARS], token_hash(value)


def _now() -> datetime:
    return datetime.now(UTC)


# --- status ---------------------------------------------------------------------------------------------------


def agent_status(agent: Agent, settings: Settings, now: datetime | None = None) -> AgentStatus:
    """Revoked, or online/stale/offline by how long ago the agent was last seen (thresholds in ``settings``)."""
    if agent.revoked_at is not None:
        return AgentStatus.REVOKED
    if agent.last_seen_at is None:
        return AgentStatus.OFFLINE
    age = ((now or _now()) - agent.last_seen_at).total_seconds()
    if age < settings.agent_online_seconds:
        return AgentStatus.ONLINE
    if age < settings.agent_stale_seconds:
        return AgentStatus.STALE
    return AgentStatus.OFFLINE


def _with_status(qs: QuerySet[Agent], status: AgentStatus, settings: Settings, now: datetime) -> QuerySet[Agent]:
    """The same rule as :func:`agent_status`, as a query, so filtered lists paginate in the database."""
    if status is AgentStatus.REVOKED:
        return qs.filter(revoked_at__isnull=False)
    online_since = now - timedelta(seconds=settings.agent_online_seconds)
    stale_since = now - timedelta(seconds=settings.agent_stale_seconds)
    qs = qs.filter(revoked_at__isnull=True)
    if status is AgentStatus.ONLINE:
        return qs.filter(last_seen_at__gt=online_since)
    if status is AgentStatus.STALE:
        return qs.filter(last_seen_at__lte=online_since, last_seen_at__gt=stale_since)
    return qs.filter(Q(last_seen_at__isnull=True) | Q(last_seen_at__lte=stale_since))


def agent_view(agent: Agent, settings: Settings, now: datetime | None = None) -> AgentOut:
    """The API's view of an agent, with its derived status."""
    values: dict[str, Any] = {name: getattr(agent, name) for name in AgentOut.model_fields if name != "status"}
    return AgentOut.model_validate({**values, "status": agent_status(agent, settings, now)})


# --- agents (technicians) --------------------------------------------------------------------------------------


async def list_agents(scope: Scope, args: AgentFilter, settings: Settings) -> AgentPage:
    """The agents the principal may see, by id; filter by retailer, store and status."""
    now = _now()
    qs = scope.query(Agent)
    if args.retailer_id is not None:
        qs = qs.filter(retailer_id=args.retailer_id)
    if args.store_id is not None:
        qs = qs.filter(store_id=args.store_id)
    if args.status is not None:
        qs = _with_status(qs, args.status, settings, now)
    total = await qs.count()
    rows = await qs.order_by("id").offset(args.offset).limit(args.limit)
    return AgentPage(
        items=[agent_view(a, settings, now) for a in rows], total=total, limit=args.limit, offset=args.offset
    )


async def get_agent(scope: Scope, agent_id: int, settings: Settings) -> AgentOut:
    """One agent."""
    return agent_view(await scope.get(Agent, agent_id), settings)


async def revoke_agent(scope: Scope, agent_id: int, settings: Settings) -> AgentOut:
    """Refuse the agent's credential from now on. Revoking a revoked agent changes nothing."""
    agent = await scope.get(Agent, agent_id)
    scope.require_write()
    if agent.revoked_at is None:
        before = agent_view(agent, settings).model_dump(mode="json", exclude={"created_at"})
        agent.revoked_at = _now()
        await agent.save(update_fields=["revoked_at"])
        after = agent_view(agent, settings).model_dump(mode="json", exclude={"created_at"})
        await audit(scope, "revoke", agent, retailer_id=agent.retailer_id, before=before, after=after)
    return agent_view(agent, settings)


# --- enrollment tokens (technicians) ---------------------------------------------------------------------------


async def create_enrollment_token(scope: Scope, store_id: int, data: EnrollmentTokenIn) -> NewEnrollmentToken:
    """A one-time token an agent of the store enrolls with; its value is returned this once."""
    store = await scope.get(Store, store_id)
    scope.require_write()
    value, prefix, digest = _new_secret(ENROLLMENT_PREFIX)
    row = await EnrollmentToken.create(
        retailer_id=store.retailer_id,
        store=store,
        token_hash=digest,
        prefix=prefix,
        # The command line acts as no particular user.
        created_by_id=scope.principal.user_id or None,
        expires_at=_now() + timedelta(hours=data.expires_in_hours),
    )
    await audit(scope, "create", row, retailer_id=store.retailer_id, after=snapshot(EnrollmentTokenOut, row))
    return NewEnrollmentToken.model_validate({**EnrollmentTokenOut.model_validate(row).model_dump(), "token": value})


async def list_enrollment_tokens(scope: Scope, store_id: int, args: PageArgs) -> EnrollmentTokenPage:
    """A store's enrollment tokens, newest first, without their values."""
    store = await scope.get(Store, store_id)
    qs = scope.query(EnrollmentToken).filter(store_id=store.id)
    return await paginate(qs, args, EnrollmentTokenPage, order=("-id",))


async def delete_enrollment_token(scope: Scope, token_id: int) -> None:
    """Revoke an unused enrollment token by deleting it; a used one answers 409 (revoke its agent instead)."""
    row = await scope.get(EnrollmentToken, token_id)
    scope.require_write()
    if row.used_at is not None:
        raise Conflict(
            f"enrollment token {token_id} ({row.prefix}…) was already used by agent {row.used_by_id}; "
            f"to cut that agent off, revoke it (POST /api/agents/{row.used_by_id}/revoke)"
        )
    before = snapshot(EnrollmentTokenOut, row)
    await row.delete()
    await audit(scope, "delete", row, retailer_id=row.retailer_id, before=before)


# --- the agent's side ------------------------------------------------------------------------------------------


async def redeem_enrollment_token(
    token: str,
    hostname: str,
    *,
    version: str | None = None,
    os: str | None = None,
    plugins: list[dict[str, Any]] | None = None,
) -> tuple[Agent, str]:
    """Trade a one-time enrollment token for a new agent of its store and that agent's credential.

    The credential is returned this once (the hub keeps its hash). Raises :class:`EnrollmentRefused` for an
    unknown, used or expired token (each with its own message), and Invalid for an empty or overlong host name.
    The token is marked used in the same transaction that creates the agent, by a conditional update, so of
    two agents redeeming one token at the same time exactly one wins.
    """
    name = hostname.strip()
    if not name or len(name) > MAX_NAME:
        raise Invalid(
            f"the host name must have 1 to {MAX_NAME} characters",
            [{"field": "hostname", "message": f"1 to {MAX_NAME} characters"}],
        )
    system = Scope(SYSTEM)
    row = await system.query(EnrollmentToken).get_or_none(token_hash=token_hash(token.strip()))
    if row is None:
        raise EnrollmentRefused(
            "unknown",
            "the enrollment token is unknown (mistyped, or revoked); create a new one for the store in the hub",
        )
    now = _now()
    _refuse_spent(row, now)
    credential, prefix, digest = _new_secret(CREDENTIAL_PREFIX)
    async with transaction(EnrollmentToken._meta.default_connection):
        claimed = (
            await system.query(EnrollmentToken)
            .filter(id=row.id, used_at__isnull=True, expires_at__gt=now)
            .update(used_at=now)
        )
        if not claimed:
            # Another agent redeemed it (or it expired) since it was read.
            await row.refresh_from_db()
            _refuse_spent(row, now)
            raise EnrollmentRefused("used", f"enrollment token {row.prefix}… was already used; create a new one")
        agent = await Agent.create(
            retailer_id=row.retailer_id,
            store_id=row.store_id,
            name=name,
            credential_hash=digest,
            credential_prefix=prefix,
            version=version,
            os=os,
            plugins=plugins,
        )
        await system.query(EnrollmentToken).filter(id=row.id).update(used_by_id=agent.id)
        await AuditEntry.create(
            retailer_id=row.retailer_id,
            user_id=None,
            actor=f"agent {name} (enrollment token {row.prefix}…)",
            action="enroll",
            object_type="Agent",
            object_id=str(agent.id),
            after={"id": agent.id, "store_id": row.store_id, "name": name, "credential_prefix": prefix},
        )
    return agent, credential


def _refuse_spent(row: EnrollmentToken, now: datetime) -> None:
    if row.used_at is not None:
        raise EnrollmentRefused(
            "used",
            f"enrollment token {row.prefix}… was already used at {row.used_at.isoformat(timespec='seconds')} "
            f"(by agent {row.used_by_id}); each token enrolls one agent: create a new one for the store",
        )
    if row.expires_at <= now:
        raise EnrollmentRefused(
            "expired",
            f"enrollment token {row.prefix}… expired at {row.expires_at.isoformat(timespec='seconds')}; "
            "create a new one for the store in the hub",
        )


_BY_CREDENTIAL = "SELECT * FROM agent WHERE credential_hash = $1"
#: What an agent's own requests need of it: not the heartbeat's JSON (plugins, health), which would be decoded and
#: kept for every held poll.
_BY_CREDENTIAL_LEAN = (
    "SELECT id, retailer_id, store_id, name, credential_prefix, created_at, revoked_at FROM agent "
    "WHERE credential_hash = $1"
)


async def authenticate_agent(credential: str, *, lean: bool = False) -> Agent:
    """The agent a credential belongs to; Unauthorized for an unknown credential or a revoked agent.

    ``lean``: read only its ids, name, credential prefix and times (what the agent channel uses); the agent is
    then a partial model, and reading its other fields fails loudly instead of showing nothing.

    Every agent request starts here (thousands of long polls a minute), so it is one plain statement (prepared
    and cached by the driver) rather than an ORM query, whose building costs several times the round trip. It
    reads the row every time, never a cache: a revoked agent is refused at its very next request, whichever hub
    process revoked it. The lookup is by the credential's hash alone, which names one agent; the agent's
    retailer scopes everything after it.
    """
    db: BaseDBAsyncClient = Agent._meta.db
    sql = _BY_CREDENTIAL_LEAN if lean else _BY_CREDENTIAL
    if db.capabilities.dialect != "postgres":
        sql = sql.replace("$", "?")  # SQLite numbers its parameters ?1, ?2, ...
    rows = await db.execute_query_dict(sql, [token_hash(credential.strip())])
    agent = Agent._init_from_db(**rows[0]) if rows else None
    if agent is None:
        raise Unauthorized("the agent credential is unknown; enroll the agent again with a new enrollment token")
    if agent.revoked_at is not None:
        raise Unauthorized(
            f"agent {agent.id} ({agent.name}) was revoked at {agent.revoked_at.isoformat(timespec='seconds')}; "
            "enroll it again with a new enrollment token"
        )
    return agent
