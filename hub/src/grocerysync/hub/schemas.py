"""What the API accepts and returns (pydantic models, shared by the blueprints and the domain functions)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

T = TypeVar("T")

Name = Annotated[str, Field(min_length=1, max_length=200)]
PluginName = Annotated[str, Field(min_length=1, max_length=63)]
ShortText = Annotated[str, Field(max_length=500)]
LongText = Annotated[str, Field(max_length=20_000)]
RetentionDays = Annotated[int, Field(ge=1, le=3650)]
#: An id in a filter: the databases' integer range (larger numbers would fail in the driver, not answer "none").
IdFilter = Annotated[int, Field(ge=1, le=2_147_483_647)]


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a known time zone; use an IANA name such as America/Chicago") from None
    return value


TimeZone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_time_zone)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageArgs(BaseModel):
    """Pagination of every list: ``?limit=50&offset=0``."""

    limit: Annotated[int, Field(ge=1, le=500)] = 50
    offset: Annotated[int, Field(ge=0, le=2_147_483_647)] = 0


class Page(BaseModel, Generic[T]):
    """One page of a list, with the total count."""

    items: list[T]
    total: int
    limit: int
    offset: int


class RetailerIn(_In):
    """A new retailer (tenant)."""

    name: Name
    contact: ShortText = ""
    notes: LongText = ""
    log_retention_days: RetentionDays = 30


class RetailerPatch(_In):
    """Changes to a retailer; fields left out stay as they are."""

    name: Name | None = None
    contact: ShortText | None = None
    notes: LongText | None = None
    log_retention_days: RetentionDays | None = None


class RetailerOut(_Out):
    """A retailer."""

    id: int
    name: str
    contact: str
    notes: str
    log_retention_days: int
    created_at: datetime
    updated_at: datetime


class StoreIn(_In):
    """A new store of a retailer."""

    name: Name
    time_zone: TimeZone = "UTC"
    pos_type: Annotated[str, Field(max_length=100)] = ""


class StorePatch(_In):
    """Changes to a store."""

    name: Name | None = None
    time_zone: TimeZone | None = None
    pos_type: Annotated[str, Field(max_length=100)] | None = None


class StoreOut(_Out):
    """A store."""

    id: int
    retailer_id: int
    name: str
    time_zone: str
    pos_type: str
    created_at: datetime
    updated_at: datetime


class ConnectionIn(_In):
    """A POS connection: which POS connector plugin reads the store's POS, and its configuration."""

    name: Name
    plugin: PluginName
    config: dict[str, Any] = Field(default_factory=dict)


class ConnectionPatch(_In):
    """Changes to a POS connection (the plugin cannot change: create a new connection instead)."""

    name: Name | None = None
    config: dict[str, Any] | None = None


class ConnectionOut(_Out):
    """A POS connection."""

    id: int
    retailer_id: int
    store_id: int
    name: str
    plugin: str
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class DestinationIn(_In):
    """A destination: plugin, configuration, and secrets (write-only: responses only say which are set)."""

    name: Name
    plugin: PluginName
    config: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(default_factory=dict, json_schema_extra={"writeOnly": True})


class DestinationPatch(_In):
    """Changes to a destination. Secrets given replace those of the same name; others are kept."""

    name: Name | None = None
    config: dict[str, Any] | None = None
    secrets: dict[str, SecretStr] | None = Field(default=None, json_schema_extra={"writeOnly": True})


class DestinationOut(_Out):
    """A destination, without its secrets: ``secrets_set`` names the secret fields that have a value."""

    id: int
    retailer_id: int
    store_id: int
    name: str
    plugin: str
    config: dict[str, Any]
    secrets_set: list[str] = Field(validation_alias="secret_fields")
    created_at: datetime
    updated_at: datetime


class RetailerPage(Page[RetailerOut]):
    """A page of retailers."""


class StorePage(Page[StoreOut]):
    """A page of stores."""


class ConnectionPage(Page[ConnectionOut]):
    """A page of POS connections."""


class DestinationPage(Page[DestinationOut]):
    """A page of destinations."""


class StoreFilter(PageArgs):
    """Filters of list endpoints below a retailer."""

    retailer_id: IdFilter | None = None


class StoreObjectsFilter(PageArgs):
    """Filters of the connection and destination lists."""

    retailer_id: IdFilter | None = None
    store_id: IdFilter | None = None
