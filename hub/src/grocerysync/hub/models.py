"""The hub's tables (tortoise-orm models).

Every tenant-owned table carries ``retailer_id`` so that one scoping layer (:mod:`grocerysync.hub.scope`)
can filter every query by the retailers a principal may see, without joins. :data:`TENANT_MODELS` lists them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tortoise import fields
from tortoise.models import Model


class Role(StrEnum):
    """What a user may do: admin everything; technician configure and run; viewer read only."""

    ADMIN = "admin"
    TECHNICIAN = "technician"
    VIEWER = "viewer"


class Retailer(Model):
    """A tenant: one independent grocery retailer."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200, unique=True)
    contact = fields.CharField(max_length=500, default="")
    notes = fields.TextField(default="")
    log_retention_days = fields.IntField(default=30)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "retailer"

    @property
    def retailer_id(self) -> int:
        """A retailer is its own tenant; the scoping layer reads this like any tenant-owned row's."""
        return int(self.id)


class Store(Model):
    """A store (site) of a retailer, with its POS type and time zone."""

    id = fields.IntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="stores", on_delete=fields.CASCADE
    )
    retailer_id: int
    name = fields.CharField(max_length=200)
    time_zone = fields.CharField(max_length=64, default="UTC")
    pos_type = fields.CharField(max_length=100, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "store"
        unique_together = (("retailer", "name"),)


class User(Model):
    """A person who signs in to the hub."""

    id = fields.IntField(primary_key=True)
    email = fields.CharField(max_length=320, unique=True)
    password_hash = fields.CharField(max_length=200, default="")
    role = fields.CharEnumField(Role, max_length=20, default=Role.VIEWER)
    # Technicians and viewers with this flag see every retailer; otherwise only their assignments.
    all_retailers = fields.BooleanField(default=False)
    active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "hub_user"


class UserRetailer(Model):
    """A user's assignment to a retailer."""

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="assignments", on_delete=fields.CASCADE
    )
    user_id: int
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="assignments", on_delete=fields.CASCADE
    )
    retailer_id: int

    class Meta:
        table = "user_retailer"
        unique_together = (("user", "retailer"),)


class ApiToken(Model):
    """A bearer token for the API: only its SHA-256 is stored, and its first characters are shown."""

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="tokens", on_delete=fields.CASCADE
    )
    user_id: int
    name = fields.CharField(max_length=200, default="")
    prefix = fields.CharField(max_length=16)
    token_hash = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_used_at = fields.DatetimeField(null=True)
    revoked = fields.BooleanField(default=False)

    class Meta:
        table = "api_token"


class PosConnection(Model):
    """How a store's POS is read: a POS connector plugin and its configuration."""

    id = fields.IntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="pos_connections", on_delete=fields.CASCADE
    )
    retailer_id: int
    store: fields.ForeignKeyRelation[Store] = fields.ForeignKeyField(
        "models.Store", related_name="pos_connections", on_delete=fields.CASCADE
    )
    store_id: int
    name = fields.CharField(max_length=200)
    plugin = fields.CharField(max_length=63)
    config: dict[str, Any] = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "pos_connection"


class DestinationConfig(Model):
    """Where a store's items go: a destination plugin, its configuration and its encrypted secrets."""

    id = fields.IntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="destinations", on_delete=fields.CASCADE
    )
    retailer_id: int
    store: fields.ForeignKeyRelation[Store] = fields.ForeignKeyField(
        "models.Store", related_name="destinations", on_delete=fields.CASCADE
    )
    store_id: int
    name = fields.CharField(max_length=200)
    plugin = fields.CharField(max_length=63)
    config: dict[str, Any] = fields.JSONField(default=dict)
    # AES-GCM blob from :mod:`grocerysync.hub.crypto`, never sent to API clients.
    secrets_blob = fields.TextField(default="")
    # Which secret fields are set (names only), so responses can say "set" without decrypting.
    secret_fields: list[str] = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "destination"


class ExportJob(Model):
    """One export: a POS connection to a destination, with the job spec's mapping, filters and options."""

    id = fields.IntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="jobs", on_delete=fields.CASCADE
    )
    retailer_id: int
    store: fields.ForeignKeyRelation[Store] = fields.ForeignKeyField(
        "models.Store", related_name="jobs", on_delete=fields.CASCADE
    )
    store_id: int
    name = fields.CharField(max_length=200)
    source: fields.ForeignKeyRelation[PosConnection] = fields.ForeignKeyField(
        "models.PosConnection", related_name="jobs", on_delete=fields.CASCADE
    )
    source_id: int
    destination: fields.ForeignKeyRelation[DestinationConfig] = fields.ForeignKeyField(
        "models.DestinationConfig", related_name="jobs", on_delete=fields.CASCADE
    )
    destination_id: int
    # ``grocerysync.core.jobs.Mapping``, ``list[Filter]``, ``list[TransformSpec]`` and ``JobOptions`` as JSON.
    mapping: dict[str, Any] = fields.JSONField(default=dict)
    filters: list[dict[str, Any]] = fields.JSONField(default=list)
    transforms: list[dict[str, Any]] = fields.JSONField(default=list)
    options: dict[str, Any] = fields.JSONField(default=dict)
    # Cron text (five fields) or empty for manual runs only.
    schedule = fields.CharField(max_length=100, default="")
    enabled = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "export_job"


class AuditEntry(Model):
    """One change: who, what, when, before/after with secrets redacted."""

    id = fields.IntField(primary_key=True)
    # Null for changes outside any tenant (users, tokens).
    retailer_id = fields.IntField(null=True, db_index=True)
    user_id = fields.IntField(null=True)
    actor = fields.CharField(max_length=320)
    action = fields.CharField(max_length=50)
    object_type = fields.CharField(max_length=50)
    object_id = fields.CharField(max_length=50)
    before: dict[str, Any] | None = fields.JSONField(null=True)
    after: dict[str, Any] | None = fields.JSONField(null=True)
    at = fields.DatetimeField(auto_now_add=True, db_index=True)

    class Meta:
        table = "audit_entry"


# Tables owned by a tenant: every query for them goes through the scoping layer.
TENANT_MODELS: tuple[type[Model], ...] = (Retailer, Store, PosConnection, DestinationConfig, ExportJob, AuditEntry)
