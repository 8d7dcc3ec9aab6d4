"""What the API accepts and returns for agents and enrollment tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from grocerysync.hub.models import CommandStatus
from grocerysync.hub.schemas import IdFilter, Page, PageArgs

#: How long a new enrollment token is valid unless the request says otherwise, and the longest allowed.
DEFAULT_TOKEN_HOURS = 24
MAX_TOKEN_HOURS = 7 * 24


class AgentStatus(StrEnum):
    """An agent's status, derived from when it was last seen (thresholds in the hub settings) and revocation."""

    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"
    REVOKED = "revoked"


class EnrollmentTokenIn(BaseModel):
    """A new enrollment token of a store: how many hours it stays valid (default 24, at most a week)."""

    model_config = ConfigDict(extra="forbid")

    expires_in_hours: Annotated[float, Field(gt=0, le=MAX_TOKEN_HOURS)] = DEFAULT_TOKEN_HOURS


class EnrollmentTokenOut(BaseModel):
    """An enrollment token as listed: never its value, only its first characters."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    retailer_id: int
    store_id: int
    prefix: str
    created_by_id: int | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_id: int | None


class NewEnrollmentToken(EnrollmentTokenOut):
    """A token just created: ``token`` is shown this once, the hub keeps only its hash."""

    token: str


class EnrollmentTokenPage(Page[EnrollmentTokenOut]):
    """A page of enrollment tokens."""


class AgentOut(BaseModel):
    """An agent, with its derived status; never its credential, only the credential's first characters."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    retailer_id: int
    store_id: int
    name: str
    credential_prefix: str
    status: AgentStatus
    created_at: datetime
    last_seen_at: datetime | None
    version: str | None
    os: str | None
    plugins: list[dict[str, Any]] | None
    revoked_at: datetime | None
    #: The health the agent sent with its last heartbeat (spool size, runs in progress, what is wrong if degraded).
    health: dict[str, Any] | None = None


class AgentPage(Page[AgentOut]):
    """A page of agents."""


class AgentFilter(PageArgs):
    """Filters of the agent list."""

    retailer_id: IdFilter | None = None
    store_id: IdFilter | None = None
    status: AgentStatus | None = None


class CommandIn(BaseModel):
    """A command for an agent, delivered with its next poll: ``reload`` its configuration, or send ``diagnostics``.

    (Runs are cancelled with ``POST /api/runs/{id}/cancel``, which sends the run's agent a ``cancel`` command.)
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["reload", "diagnostics"]


class CommandOut(BaseModel):
    """A command to an agent and where it is: ``pending`` (waiting for a poll), ``delivered``, ``done`` or
    ``failed`` (with the agent's ``message``, and its report in ``result`` for diagnostics)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    retailer_id: int
    agent_id: int
    type: str
    run_id: int | None
    status: CommandStatus
    created_by: str
    created_at: datetime
    delivered_at: datetime | None
    completed_at: datetime | None
    message: str
    result: dict[str, Any] | None


class CommandPage(Page[CommandOut]):
    """A page of an agent's commands, newest first."""


class CommandFilter(PageArgs):
    """Filters of an agent's command list."""

    status: CommandStatus | None = None
