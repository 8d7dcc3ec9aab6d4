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


class UserSession(Model):
    """A browser session: only the SHA-256 of its cookie value is stored, so a database copy signs nobody in."""

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="sessions", on_delete=fields.CASCADE
    )
    user_id: int
    token_hash = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    # The absolute end, and the last use (for the idle timeout).
    expires_at = fields.DatetimeField(db_index=True)
    last_seen_at = fields.DatetimeField()
    address = fields.CharField(max_length=64, default="")
    user_agent = fields.CharField(max_length=300, default="")

    class Meta:
        table = "user_session"


class LoginThrottle(Model):
    """Failed sign-ins of one account or one client address, shared by every hub process."""

    id = fields.IntField(primary_key=True)
    # "account:<email>" or "address:<client address>".
    key = fields.CharField(max_length=400, unique=True)
    failures = fields.IntField(default=0)
    last_failure_at = fields.DatetimeField(null=True)
    locked_until = fields.DatetimeField(null=True)

    class Meta:
        table = "login_throttle"


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
    # Cron text (five fields, read in the store's time zone) or empty for manual runs only.
    schedule = fields.CharField(max_length=100, default="")
    enabled = fields.BooleanField(default=True)
    # Retry policy of a failed run: how many more runs to queue, and how long to wait before each.
    max_retries = fields.IntField(default=0, db_default=0)
    retry_delay_seconds = fields.IntField(default=300, db_default=300)
    # When the schedule fires next (UTC), kept up to date on every change so a scheduler only compares times.
    next_run_at = fields.DatetimeField(null=True, db_index=True)
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


class RunStatus(StrEnum):
    """Where a run is: waiting for its agent, running, or finished (the last four)."""

    QUEUED = "queued"
    # Handed to an agent by a poll, not yet acknowledged.
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Runs in these states are over, and the retention purge may delete them.
FINISHED_STATUSES: tuple[RunStatus, ...] = (
    RunStatus.SUCCEEDED,
    RunStatus.PARTIALLY_FAILED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
)


class Run(Model):
    """One execution of an export job, with its counts and outcome."""

    id = fields.IntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="runs", on_delete=fields.CASCADE
    )
    retailer_id: int
    store: fields.ForeignKeyRelation[Store] = fields.ForeignKeyField(
        "models.Store", related_name="runs", on_delete=fields.CASCADE
    )
    store_id: int
    # A deleted job keeps its run history: the link is cleared and the name stays.
    job: fields.ForeignKeyNullableRelation[ExportJob] = fields.ForeignKeyField(
        "models.ExportJob", related_name="runs", on_delete=fields.SET_NULL, null=True
    )
    job_id: int | None
    job_name = fields.CharField(max_length=200)
    status = fields.CharEnumField(RunStatus, max_length=20, default=RunStatus.QUEUED, db_index=True)
    # What started it: manual (a person or a token), schedule, or retry.
    trigger = fields.CharField(max_length=20, default="manual")
    triggered_by = fields.CharField(max_length=320, default="")
    attempt = fields.IntField(default=1)
    # The agent that ran it, once one claims it.
    agent_id = fields.IntField(null=True)
    queued_at = fields.DatetimeField(auto_now_add=True, db_index=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True, db_index=True)
    items_read = fields.IntField(default=0)
    items_written = fields.IntField(default=0)
    items_removed = fields.IntField(default=0)
    items_rejected = fields.IntField(default=0)
    items_unchanged = fields.IntField(default=0, db_default=0)
    items_filtered = fields.IntField(default=0, db_default=0)
    items_failed = fields.IntField(default=0, db_default=0)
    error = fields.TextField(default="")
    # Dispatch: a retry waits until not_before; a dispatched or running run belongs to its agent until its lease
    # runs out (grocerysync.hub.domain.dispatch).
    full = fields.BooleanField(default=False, db_default=False)
    not_before = fields.DatetimeField(null=True)
    lease_expires_at = fields.DatetimeField(null=True, db_index=True)
    cancel_requested_at = fields.DatetimeField(null=True)
    # The agent's last progress report: its phase and when it came.
    phase = fields.CharField(max_length=20, default="", db_default="")
    progress_at = fields.DatetimeField(null=True)
    # The rest of the agent's result: warnings, the destination's commit line, duration, rejections sent.
    details: dict[str, Any] | None = fields.JSONField(null=True)

    class Meta:
        table = "run"


class RunRejection(Model):
    """An item a run could not send, and why (``grocerysync.core.results.Rejection``)."""

    id = fields.IntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="rejections", on_delete=fields.CASCADE
    )
    retailer_id: int
    run: fields.ForeignKeyRelation[Run] = fields.ForeignKeyField(
        "models.Run", related_name="rejections", on_delete=fields.CASCADE
    )
    run_id: int
    ref = fields.CharField(max_length=500)
    item_id = fields.CharField(max_length=200, null=True)
    stage = fields.CharField(max_length=20)
    reason = fields.TextField()
    # The rejection's number in its run, as the agent sent it: a batch sent twice is stored once.
    seq = fields.IntField(null=True)

    class Meta:
        table = "run_rejection"
        unique_together = (("run", "seq"),)


class LogEntry(Model):
    """One log record from an agent or from the hub about a retailer, store or run."""

    id = fields.BigIntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="logs", on_delete=fields.CASCADE
    )
    retailer_id: int
    store: fields.ForeignKeyNullableRelation[Store] = fields.ForeignKeyField(
        "models.Store", related_name="logs", on_delete=fields.CASCADE, null=True
    )
    store_id: int | None
    agent_id = fields.IntField(null=True, db_index=True)
    # Purging a run keeps the log lines, which the retention purge removes by their own time.
    run: fields.ForeignKeyNullableRelation[Run] = fields.ForeignKeyField(
        "models.Run", related_name="logs", on_delete=fields.SET_NULL, null=True
    )
    run_id: int | None
    at = fields.DatetimeField(db_index=True)
    # The level name (debug, info, warning, error, critical) and its number, for "this level and above".
    level = fields.CharField(max_length=10)
    levelno = fields.IntField()
    logger = fields.CharField(max_length=200, default="")
    message = fields.TextField()
    # Structured fields of the record. Not named "fields", which would hide the tortoise module here.
    extra: dict[str, Any] = fields.JSONField(default=dict)
    # The agent's id of the record: a record shipped twice is stored once. None for the hub's own records.
    uid = fields.UUIDField(null=True, unique=True)

    class Meta:
        table = "log_entry"
        # One retailer's newest lines (the default listing, its count, and the retention purge); a run's lines
        # (and deleting a run, whose lines' run_id is set to NULL). "This level and above" filters within these.
        indexes = (("retailer_id", "at"), ("run_id",))


class Agent(Model):
    """A store's agent: it authenticates with its own credential, of which only the SHA-256 is stored.

    Its status (online, stale, offline, revoked) is derived from ``last_seen_at`` and ``revoked_at``, never
    stored, so it cannot go out of date (see :func:`grocerysync.hub.domain.agents.agent_status`).
    """

    id = fields.IntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="agents", on_delete=fields.CASCADE
    )
    retailer_id: int
    store: fields.ForeignKeyRelation[Store] = fields.ForeignKeyField(
        "models.Store", related_name="agents", on_delete=fields.CASCADE
    )
    store_id: int
    # The machine's host name at enrollment.
    name = fields.CharField(max_length=200)
    credential_hash = fields.CharField(max_length=64, unique=True)
    credential_prefix = fields.CharField(max_length=16)
    created_at = fields.DatetimeField(auto_now_add=True)
    # Written by heartbeats (in batches), hence nullable until the first one.
    last_seen_at = fields.DatetimeField(null=True, db_index=True)
    version = fields.CharField(max_length=100, null=True)
    os = fields.CharField(max_length=200, null=True)
    plugins: list[dict[str, Any]] | None = fields.JSONField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    # The health of the last heartbeat (spool size, what it runs, a message when degraded).
    health: dict[str, Any] | None = fields.JSONField(null=True)

    class Meta:
        table = "agent"


class EnrollmentToken(Model):
    """A one-time, expiring token that an agent trades for its credential: only its SHA-256 is stored."""

    id = fields.IntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="enrollment_tokens", on_delete=fields.CASCADE
    )
    retailer_id: int
    store: fields.ForeignKeyRelation[Store] = fields.ForeignKeyField(
        "models.Store", related_name="enrollment_tokens", on_delete=fields.CASCADE
    )
    store_id: int
    token_hash = fields.CharField(max_length=64, unique=True)
    prefix = fields.CharField(max_length=16)
    # A deleted user's tokens stay valid until they expire: the store may be waiting to enroll.
    created_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="enrollment_tokens", on_delete=fields.SET_NULL, null=True
    )
    created_by_id: int | None
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    used_by: fields.ForeignKeyNullableRelation[Agent] = fields.ForeignKeyField(
        "models.Agent", related_name="enrollment_tokens", on_delete=fields.SET_NULL, null=True
    )
    used_by_id: int | None

    class Meta:
        table = "enrollment_token"


class CommandStatus(StrEnum):
    """Where a command to an agent is: waiting for its next poll, handed to it, or answered."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DONE = "done"
    FAILED = "failed"


class AgentCommand(Model):
    """Something a technician asked of an agent (``grocerysync.core.wire.CommandType``), and the agent's answer."""

    id = fields.IntField(primary_key=True)
    retailer: fields.ForeignKeyRelation[Retailer] = fields.ForeignKeyField(
        "models.Retailer", related_name="agent_commands", on_delete=fields.CASCADE
    )
    retailer_id: int
    agent: fields.ForeignKeyRelation[Agent] = fields.ForeignKeyField(
        "models.Agent", related_name="commands", on_delete=fields.CASCADE
    )
    agent_id: int
    type = fields.CharField(max_length=20)
    run: fields.ForeignKeyNullableRelation[Run] = fields.ForeignKeyField(
        "models.Run", related_name="commands", on_delete=fields.SET_NULL, null=True
    )
    run_id: int | None
    status = fields.CharEnumField(CommandStatus, max_length=20, default=CommandStatus.PENDING, db_index=True)
    created_by = fields.CharField(max_length=320, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    delivered_at = fields.DatetimeField(null=True)
    completed_at = fields.DatetimeField(null=True)
    message = fields.TextField(default="")
    # The agent's report (diagnostics).
    result: dict[str, Any] | None = fields.JSONField(null=True)

    class Meta:
        table = "agent_command"


# Tables owned by a tenant: every query for them goes through the scoping layer.
TENANT_MODELS: tuple[type[Model], ...] = (
    Retailer,
    Store,
    PosConnection,
    DestinationConfig,
    ExportJob,
    AuditEntry,
    Run,
    RunRejection,
    LogEntry,
    Agent,
    EnrollmentToken,
    AgentCommand,
)
