"""What the API accepts and returns for agents and enrollment tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

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


class AgentPage(Page[AgentOut]):
    """A page of agents."""


class AgentFilter(PageArgs):
    """Filters of the agent list."""

    retailer_id: IdFilter | None = None
    store_id: IdFilter | None = None
    status: AgentStatus | None = None
