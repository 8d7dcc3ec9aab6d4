"""What the API accepts and returns for export jobs, runs, rejections and logs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from grocerysync.core.jobs import Filter, JobOptions, Mapping, TransformSpec
from grocerysync.hub.models import RunStatus
from grocerysync.hub.schemas import Name, Page, PageArgs

#: A row id: positive and within a 32-bit integer column, so a huge number answers 404/422, never a database error.
Id = Annotated[int, Field(ge=1, le=2_147_483_647)]
#: Largest filter and transform lists a job may hold: a form, not a program.
MAX_FILTERS = 100
MAX_TRANSFORMS = 20
MANUAL = "manual"


def check_schedule(value: str) -> str:
    """``manual`` (or empty), or a five-field cron expression croniter understands; raise ValueError otherwise."""
    text = " ".join(value.split())
    if text in ("", MANUAL):
        return MANUAL
    if len(text.split(" ")) != 5 or not croniter.is_valid(text):
        raise ValueError(
            f"{value!r} is not a schedule: use 'manual' or five cron fields (minute hour day-of-month month "
            "day-of-week), e.g. '30 6 * * *' for 6:30 every day in the store's time zone"
        )
    try:
        # Valid fields can still name a day that never comes ("0 6 30 2 *": February 30th).
        croniter(text, datetime(2024, 1, 1)).get_next(datetime)
    except (ValueError, KeyError, OverflowError):
        raise ValueError(f"the schedule {value!r} never fires: check its day-of-month and month") from None
    return text


Schedule = Annotated[str, Field(max_length=100), AfterValidator(check_schedule)]
MaxRetries = Annotated[int, Field(ge=0, le=10)]
RetryDelay = Annotated[int, Field(ge=0, le=86_400)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobIn(_In):
    """A new export job of a store: its POS connection to one of its destinations, and how items are shaped.

    ``mapping``, ``filters``, ``transforms`` and ``options`` are those of the job spec the store's agent runs
    (``grocerysync.core.jobs``). ``schedule`` is ``manual`` or a cron expression in the store's time zone.
    A failed run is queued again up to ``max_retries`` times, ``retry_delay_seconds`` apart.
    """

    name: Name
    source_id: Id
    destination_id: Id
    mapping: Mapping = Field(default_factory=Mapping)
    filters: list[Filter] = Field(default_factory=list, max_length=MAX_FILTERS)
    transforms: list[TransformSpec] = Field(default_factory=list, max_length=MAX_TRANSFORMS)
    options: JobOptions = Field(default_factory=JobOptions)
    schedule: Schedule = MANUAL
    enabled: bool = True
    max_retries: MaxRetries = 0
    retry_delay_seconds: RetryDelay = 300


class JobPatch(_In):
    """Changes to an export job; fields left out stay as they are. Lists and objects given replace the old ones."""

    name: Name | None = None
    source_id: Id | None = None
    destination_id: Id | None = None
    mapping: Mapping | None = None
    filters: list[Filter] | None = Field(default=None, max_length=MAX_FILTERS)
    transforms: list[TransformSpec] | None = Field(default=None, max_length=MAX_TRANSFORMS)
    options: JobOptions | None = None
    schedule: Schedule | None = None
    enabled: bool | None = None
    max_retries: MaxRetries | None = None
    retry_delay_seconds: RetryDelay | None = None


class JobOut(_Out):
    """An export job. ``next_run_at`` (UTC) is when its schedule fires next, if it is enabled and scheduled."""

    id: int
    retailer_id: int
    store_id: int
    name: str
    source_id: int
    destination_id: int
    mapping: dict[str, Any]
    filters: list[dict[str, Any]]
    transforms: list[dict[str, Any]]
    options: dict[str, Any]
    schedule: str
    enabled: bool
    max_retries: int
    retry_delay_seconds: int
    next_run_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @field_validator("schedule", mode="before")
    @classmethod
    def _manual(cls, value: str) -> str:
        # Stored empty for manual jobs (the column's original meaning).
        return value or MANUAL


class JobPage(Page[JobOut]):
    """A page of export jobs."""


class JobFilter(PageArgs):
    """Filters of the job list."""

    retailer_id: Id | None = None
    store_id: Id | None = None
    enabled: bool | None = None


class RunOut(_Out):
    """One run of an export job and its counts. ``job_id`` is null once the job was deleted."""

    id: int
    retailer_id: int
    store_id: int
    job_id: int | None
    job_name: str
    status: RunStatus
    trigger: str
    triggered_by: str
    attempt: int
    agent_id: int | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    items_read: int
    items_written: int
    items_removed: int
    items_rejected: int
    items_unchanged: int
    items_filtered: int
    items_failed: int
    error: str
    #: Every item is re-sent, not only what changed.
    full: bool
    #: A retry waits until then before an agent may take it.
    not_before: datetime | None
    #: Until when the run stays its agent's without another acknowledgement or progress report.
    lease_expires_at: datetime | None
    #: A technician asked to cancel the run; its agent stops after its current batch.
    cancel_requested_at: datetime | None
    #: The agent's last progress report: its phase (reading, removing, committing, done) and when it came.
    phase: str
    progress_at: datetime | None
    #: The agent's result beyond the counts: warnings, the destination's commit line, duration, rejections sent
    #: (``rejections_total``) and stored (``rejections_kept``).
    details: dict[str, Any] | None


class TriggerIn(_In):
    """Options of a manual run (the body of a trigger is optional)."""

    #: Re-send every item instead of only what changed since the last successful run.
    full: bool = False


class TriggerArgs(BaseModel):
    """Query options of a trigger (the same as the body's)."""

    full: bool = False


class RunPage(Page[RunOut]):
    """A page of runs, newest first."""


class RunFilter(PageArgs):
    """Filters of the run list; ``since``/``until`` bound the time the run was queued."""

    retailer_id: Id | None = None
    store_id: Id | None = None
    job_id: Id | None = None
    status: RunStatus | None = None
    since: datetime | None = None
    until: datetime | None = None


class RejectionOut(_Out):
    """An item a run could not send: where it came from (``ref``), the stage and the reason."""

    id: int
    run_id: int
    ref: str
    item_id: str | None
    stage: str
    reason: str


class RejectionPage(Page[RejectionOut]):
    """A page of a run's rejections."""


LogLevel = Literal["debug", "info", "warning", "error", "critical"]
#: Level names and the numbers of Python's logging module, which agents and plugins log with.
LEVELS: dict[str, int] = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class LogOut(_Out):
    """One log entry. ``fields`` holds its structured data."""

    id: int
    retailer_id: int
    store_id: int | None
    agent_id: int | None
    run_id: int | None
    at: datetime
    level: str
    logger: str
    message: str
    fields: dict[str, Any] = Field(validation_alias="extra")


class LogPage(Page[LogOut]):
    """A page of log entries, newest first."""


class LogFilter(PageArgs):
    """Filters of the log list.

    ``level`` keeps one level, ``min_level`` that level and above; ``q`` finds text in the message
    (case-insensitive); ``since``/``until`` bound the entry's time.
    """

    retailer_id: Id | None = None
    store_id: Id | None = None
    agent_id: Id | None = None
    run_id: Id | None = None
    level: LogLevel | None = None
    min_level: LogLevel | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class LogIn(BaseModel):
    """A log entry to store (from an agent, or the hub itself)."""

    model_config = ConfigDict(extra="forbid")

    at: datetime
    level: LogLevel = "info"
    message: Annotated[str, Field(max_length=20_000)]
    logger: Annotated[str, Field(max_length=200)] = ""
    store_id: Id | None = None
    agent_id: Id | None = None
    run_id: Id | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
