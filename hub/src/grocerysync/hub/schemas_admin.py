"""What the API accepts and returns for users, API tokens and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from grocerysync.hub.models import Role
from grocerysync.hub.schemas import Page, PageArgs
from grocerysync.hub.schemas_jobs import Id

Email = Annotated[str, Field(min_length=3, max_length=320)]
Password = Annotated[SecretStr, Field(min_length=1, max_length=1000, json_schema_extra={"writeOnly": True})]
RetailerIds = Annotated[list[Id], Field(max_length=1000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class UserIn(_In):
    """A new user (admins only). Technicians and viewers see ``retailer_ids``, or every retailer."""

    email: Email
    role: Role
    password: Password
    all_retailers: bool = False
    retailer_ids: RetailerIds = Field(default_factory=list)


class UserPatch(_In):
    """Changes to a user (admins only); ``active: false`` disables the account and all its tokens."""

    role: Role | None = None
    all_retailers: bool | None = None
    retailer_ids: RetailerIds | None = None
    active: bool | None = None
    password: Password | None = None


class UserOut(_Out):
    """A user, without any password material."""

    id: int
    email: str
    role: Role
    all_retailers: bool
    retailer_ids: list[int]
    active: bool
    created_at: datetime


class UserPage(Page[UserOut]):
    """A page of users."""


class UserFilter(PageArgs):
    """Filters of the user list."""

    role: Role | None = None
    active: bool | None = None


class TokenIn(_In):
    """A new API token for yourself; ``name`` says what it is for."""

    name: Annotated[str, Field(max_length=200)] = ""


class TokenOut(_Out):
    """One of your API tokens: only its first characters are kept in clear."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


class TokenCreated(TokenOut):
    """A new token: ``token`` is shown this once and cannot be read back."""

    token: str


class TokenPage(Page[TokenOut]):
    """A page of your API tokens."""


class AuditOut(_Out):
    """One recorded change: who, what, when, before and after (secrets are never in them)."""

    id: int
    retailer_id: int | None
    user_id: int | None
    actor: str
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime


class AuditPage(Page[AuditOut]):
    """A page of audit entries, newest first."""


class AuditFilter(PageArgs):
    """Filters of the audit log; ``since``/``until`` bound the time of the change."""

    retailer_id: Id | None = None
    user_id: Id | None = None
    actor: Annotated[str, Field(max_length=320)] | None = None
    action: Annotated[str, Field(max_length=50)] | None = None
    object_type: Annotated[str, Field(max_length=50)] | None = None
    object_id: Annotated[str, Field(max_length=50)] | None = None
    since: datetime | None = None
    until: datetime | None = None
