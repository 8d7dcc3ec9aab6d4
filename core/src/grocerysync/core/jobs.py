"""The job spec: one export, source -> mapping/filters -> destination, as JSON.

The agent's ``export`` command reads exactly this, and the hub sends exactly this to agents.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, field_validator, model_validator
from pydantic_core.core_schema import SerializationInfo

from grocerysync.core.items import ITEM_FIELDS

Name = Annotated[str, Field(min_length=1, max_length=200)]


def _check_path(path: str) -> str:
    head, _, rest = path.partition(".")
    if head not in ITEM_FIELDS:
        raise ValueError(f"{path!r} is not an item field (fields: {', '.join(sorted(ITEM_FIELDS))})")
    if rest and head not in ("extras", "size", "sale", "multi_price"):
        raise ValueError(f"{path!r}: only extras, size, sale and multi_price have sub-fields")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    """The POS connector and its configuration."""

    plugin: Name
    config: dict[str, Any] = Field(default_factory=dict)


class DestinationSpec(_Strict):
    """The destination, its configuration and its secrets (which never print)."""

    plugin: Name
    config: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(default_factory=dict)

    @field_serializer("secrets")
    def _dump_secrets(self, value: dict[str, SecretStr], info: SerializationInfo) -> dict[str, str]:
        # Secrets are revealed only when the caller asks explicitly (the hub building an assignment).
        reveal = bool(info.context and info.context.get("reveal_secrets"))
        return {k: (v.get_secret_value() if reveal else "**********") for k, v in value.items()}

    def secret_values(self) -> dict[str, str]:
        """The secrets in clear, for validating against the destination's secrets model."""
        return {k: v.get_secret_value() for k, v in self.secrets.items()}


class Filter(_Strict):
    """Keep only items for which ``field`` ``op`` ``value`` holds.

    ``field`` is an item field, or ``extras.NAME`` / ``size.unit`` / ``sale.price``. Operators:
    ``eq``, ``ne``, ``in``, ``not_in``, ``gt``, ``ge``, ``lt``, ``le`` (numbers), ``contains``
    (text, case-insensitive), ``exists``, ``missing``.
    """

    field: str
    op: Literal["eq", "ne", "in", "not_in", "gt", "ge", "lt", "le", "contains", "exists", "missing"]
    value: Any = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        return _check_path(value)

    @model_validator(mode="after")
    def _value_fits(self) -> Filter:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"filter on {self.field!r}: op {self.op!r} needs a list value")
        if self.op in ("gt", "ge", "lt", "le"):
            try:
                Decimal(str(self.value))
            except (InvalidOperation, ValueError):
                raise ValueError(
                    f"filter on {self.field!r}: op {self.op!r} needs a number, got {self.value!r}"
                ) from None
        if self.op not in ("exists", "missing") and self.value is None:
            raise ValueError(f"filter on {self.field!r}: op {self.op!r} needs a value")
        return self


class Mapping(_Strict):
    """Field mapping applied to every item after validation.

    - ``value_maps``: per field, POS value -> platform value (e.g. department codes to names);
      values not in the map are kept as they are.
    - ``defaults``: values for fields the POS left empty.
    - ``overrides``: values set on every item whatever the POS says.
    """

    value_maps: dict[str, dict[str, str]] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("value_maps", "defaults", "overrides")
    @classmethod
    def _fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key == "item_id":
                raise ValueError("item_id cannot be mapped: it is the key destinations upsert by")
            _check_path(key)
        return value

    @property
    def is_empty(self) -> bool:
        return not (self.value_maps or self.defaults or self.overrides)


class TransformSpec(_Strict):
    """A plugin transform to apply, by name, with its configuration."""

    plugin: Name
    config: dict[str, Any] = Field(default_factory=dict)


class JobOptions(_Strict):
    """How the export runs."""

    batch_size: Annotated[int, Field(ge=1, le=50_000)] = 1000
    #: ``delta`` sends only new, changed and removed items; ``full`` re-sends everything.
    mode: Literal["delta", "full"] = "delta"
    dry_run: bool = False
    #: Attempts per destination batch for transient failures, with exponential backoff.
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    #: Send removals for items that disappeared from the POS (full catalogue reads only).
    send_removals: bool = True
    #: Refuse to send removals for more than this share of the known catalogue in one run,
    #: which protects a store from an empty or truncated POS export wiping its online catalogue.
    max_removal_ratio: Annotated[float, Field(ge=0, le=1)] = 0.2


class JobSpec(_Strict):
    """One export job."""

    schema_version: Literal[1] = 1
    name: Name
    source: SourceSpec
    destination: DestinationSpec
    mapping: Mapping = Field(default_factory=Mapping)
    filters: list[Filter] = Field(default_factory=list)
    transforms: list[TransformSpec] = Field(default_factory=list)
    options: JobOptions = Field(default_factory=JobOptions)
