"""What the hub and the agent send each other over the agent channel (``/agent/v1/...``).

Both sides import these models, so a field renamed on one side cannot silently stop matching the other. They
carry no secrets except the enrollment token and the agent credential, which are :class:`~pydantic.SecretStr`
so they never show in a repr or a log line.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from grocerysync.core.jobs import JobSpec

#: The path prefix of every agent channel route on the hub.
AGENT_API_PREFIX = "/agent/v1"
#: Longest host name, OS description or version string accepted (matches the hub's agent name column).
MAX_TEXT = 200
#: Longest agent version accepted (the hub's column size).
MAX_VERSION = 100


class PluginVersion(BaseModel):
    """One plugin installed on the agent's machine, as reported to the hub."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_TEXT)
    distribution: str = Field(default="", max_length=MAX_TEXT)
    version: str = Field(default="", max_length=MAX_TEXT)


class EnrollRequest(BaseModel):
    """The agent's first call: trade a one-time enrollment token for its own credential.

    ``hostname``, ``os``, ``agent_version`` and ``plugins`` tell the technician which machine enrolled.
    """

    model_config = ConfigDict(extra="forbid")

    token: SecretStr = Field(description="The one-time enrollment token the technician created for the store.")
    hostname: str = Field(min_length=1, max_length=MAX_TEXT, description="The machine's name.")
    os: str = Field(default="", max_length=MAX_TEXT, description="The operating system, e.g. 'Windows 11'.")
    agent_version: str = Field(default="", max_length=MAX_VERSION, description="The agent's version.")
    plugins: list[PluginVersion] = Field(default_factory=list, max_length=500, description="Installed plugins.")

    def wire(self) -> dict[str, object]:
        """The JSON body to send, with the token revealed (only the hub sees it)."""
        body = self.model_dump(mode="json")
        body["token"] = self.token.get_secret_value()
        return body


class EnrollResponse(BaseModel):
    """The hub's answer to a successful enrollment: who the agent is and its credential (shown this once)."""

    agent_id: int
    credential: SecretStr = Field(description="The agent's credential; the hub keeps only its hash.")
    retailer_id: int
    store_id: int
    store_name: str
    hub_url: str | None = Field(default=None, description="Where the agent should reach the hub from now on.")

    def wire(self) -> dict[str, object]:
        """The JSON body to answer with, with the credential revealed (only the agent sees it)."""
        body = self.model_dump(mode="json")
        body["credential"] = self.credential.get_secret_value()
        return body


# --- the agent channel after enrollment ---------------------------------------------------------------------------
#
# Every call below authenticates with ``Authorization: Bearer <agent credential>``. The agent long-polls
# ``POST /agent/v1/poll`` (the body is its heartbeat); the hub holds the poll up to ``Heartbeat.wait`` seconds and
# answers at once when there is a run or a command for the agent. A run then goes:
#
#   queued --(poll hands it out: RunAssignment, short lease)--> dispatched
#          --(POST runs/{id}/ack)--> running --(POST runs/{id}/progress, which also extends the lease)--> ...
#          --(POST runs/{id}/rejections in batches, then POST runs/{id}/result)--> finished.
#
# A lease that runs out (the agent died or lost the hub for longer than the lease) fails the attempt, and the
# job's retry policy queues the next one. Every report is idempotent: rejections carry their sequence number in
# the run, log records their own UUID, and a run's result is recorded once (a repeat is answered as a duplicate).
# Answers the agent must not retry are 4xx with ``{"error": ...}``: 401 (credential unknown or agent revoked:
# stop and tell the technician), 404/409 (the run is not, or no longer, this agent's: drop the report).

RunOutcome = Literal["succeeded", "partially_failed", "failed", "cancelled"]
Phase = Literal["starting", "reading", "removing", "committing", "done"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
CommandType = Literal["cancel", "reload", "diagnostics"]

#: The longest a hub holds a poll, in seconds; agents ask for less (default 30).
MAX_POLL_WAIT = 60.0
#: The most log records, or rejections, in one report.
MAX_BATCH = 1000
#: Longest log message or rejection reason kept (longer ones are cut, with a marker, by the sender).
MAX_MESSAGE = 8000


class Health(BaseModel):
    """How the agent is doing, sent with every poll."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["ok", "degraded"] = "ok"
    #: What is wrong when degraded, for a technician (e.g. "the spool is full: dropped 120 log records").
    message: str = Field(default="", max_length=MAX_MESSAGE)
    spool_records: int = Field(default=0, ge=0)
    spool_bytes: int = Field(default=0, ge=0)
    #: The hub's ids of the runs the agent is working on right now.
    running: list[int] = Field(default_factory=list, max_length=100)


class Heartbeat(BaseModel):
    """The body of every poll: who the agent is, what it runs, how it is doing, and how long it will wait."""

    model_config = ConfigDict(extra="ignore")

    hostname: str = Field(default="", max_length=MAX_TEXT)
    os: str = Field(default="", max_length=MAX_TEXT)
    agent_version: str = Field(default="", max_length=MAX_VERSION)
    plugins: list[PluginVersion] = Field(default_factory=list, max_length=500)
    health: Health = Field(default_factory=Health)
    #: How many more runs the agent takes now (0 while it is busy): the hub hands out at most this many.
    capacity: int = Field(default=1, ge=0, le=16)
    #: Seconds the hub may hold the poll when there is nothing to say (0: answer at once).
    wait: float = Field(default=30.0, ge=0, le=MAX_POLL_WAIT)


class AgentConfig(BaseModel):
    """Settings the hub gives every agent with each poll answer (applied without a restart)."""

    model_config = ConfigDict(extra="ignore")

    #: The lowest level of the agent's own log records shipped to the hub.
    log_level: LogLevel = "info"
    #: Seconds the agent asks the hub to hold each poll.
    poll_wait: float = Field(default=30.0, ge=0, le=MAX_POLL_WAIT)
    #: Seconds between progress reports (each extends the run's lease) while a run is going.
    progress_interval: float = Field(default=10.0, gt=0)


class RunAssignment(BaseModel):
    """A run handed to the agent: the job to run, with its destination secrets (only ever sent here)."""

    run_id: int
    attempt: int = 1
    job_id: int | None = None
    trigger: str = "manual"
    #: Re-send every item instead of only what changed.
    full: bool = False
    #: Acknowledge before this, then extend it with progress reports (see ``lease_seconds``).
    lease_expires_at: datetime
    lease_seconds: float = Field(gt=0)
    spec: JobSpec

    def wire(self) -> dict[str, Any]:
        """The JSON body with the destination secrets revealed (the one place they leave the hub)."""
        return self.model_dump(mode="json", context={"reveal_secrets": True})


class Command(BaseModel):
    """Something a technician asked of this agent: cancel a run, reload its configuration, send diagnostics."""

    id: int
    type: CommandType
    run_id: int | None = None


class PollAnswer(BaseModel):
    """The hub's answer to a poll: work, commands and the current configuration."""

    runs: list[RunAssignment] = Field(default_factory=list)
    commands: list[Command] = Field(default_factory=list)
    config: AgentConfig = Field(default_factory=AgentConfig)
    #: The agent should wait this long before the next poll (the hub sheds load with it; usually 0).
    poll_after: float = Field(default=0.0, ge=0)
    server_time: datetime

    def wire(self) -> dict[str, Any]:
        """The JSON body (assignments with their secrets revealed)."""
        body = self.model_dump(mode="json", exclude={"runs"})
        body["runs"] = [run.wire() for run in self.runs]
        return body


class RunCounts(BaseModel):
    """A run's counts so far (progress) or in the end (result); see the agent's run summary."""

    model_config = ConfigDict(extra="ignore")

    read: int = Field(default=0, ge=0)
    sent: int = Field(default=0, ge=0)
    unchanged: int = Field(default=0, ge=0)
    rejected: int = Field(default=0, ge=0)
    filtered: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    removed: int = Field(default=0, ge=0)


class RunAck(BaseModel):
    """``POST runs/{id}/ack``: the agent has the assignment and starts it."""

    attempt: int = Field(ge=1)


class RunProgress(RunCounts):
    """``POST runs/{id}/progress``: counts so far; also extends the lease."""

    attempt: int = Field(ge=1)
    phase: Phase = "reading"


class LeaseAnswer(BaseModel):
    """The hub's answer to an ack or a progress report."""

    lease_expires_at: datetime
    #: A technician cancelled the run: stop after the current batch and report the result as ``cancelled``.
    cancel: bool = False


class RejectionIn(BaseModel):
    """One rejected or failed item of a run (see :class:`grocerysync.core.results.Rejection`)."""

    model_config = ConfigDict(extra="ignore")

    ref: str = Field(max_length=MAX_MESSAGE)
    reason: str = Field(max_length=MAX_MESSAGE)
    stage: str = Field(max_length=20)
    item_id: str | None = Field(default=None, max_length=MAX_MESSAGE)


class RejectionBatch(BaseModel):
    """``POST runs/{id}/rejections``: rejections ``first_seq``, ``first_seq + 1``, ... of the run (0-based)."""

    attempt: int = Field(ge=1)
    first_seq: int = Field(ge=0)
    rejections: list[RejectionIn] = Field(max_length=MAX_BATCH)


class RunResult(RunCounts):
    """``POST runs/{id}/result``: how the run ended. Send it after every rejection batch of the run."""

    attempt: int = Field(ge=1)
    status: RunOutcome
    #: What stopped the run (``failed``), for a technician.
    error: str = Field(default="", max_length=MAX_MESSAGE)
    warnings: list[str] = Field(default_factory=list, max_length=100)
    #: How many rejections the agent sent for the run (the hub may keep fewer, see its rejection limit).
    rejections_total: int = Field(default=0, ge=0)
    duration_s: float = Field(default=0.0, ge=0)
    #: The destination's own line about what it committed.
    commit: str | None = Field(default=None, max_length=MAX_MESSAGE)


class LogRecord(BaseModel):
    """One structured log record of the agent; ``uid`` makes a record shipped twice stored once."""

    model_config = ConfigDict(extra="ignore")

    uid: UUID
    at: datetime
    level: LogLevel
    logger: str = Field(default="", max_length=MAX_TEXT)
    message: str = Field(max_length=MAX_MESSAGE)
    run_id: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class LogBatch(BaseModel):
    """``POST logs``: a batch of log records, oldest first."""

    records: list[LogRecord] = Field(max_length=MAX_BATCH)


class CommandResult(BaseModel):
    """``POST commands/{id}/result``: what came of a command (diagnostics carry their report in ``data``)."""

    ok: bool = True
    message: str = Field(default="", max_length=MAX_MESSAGE)
    data: dict[str, Any] = Field(default_factory=dict)


class Receipt(BaseModel):
    """The hub's answer to a report: how many of its entries were new (the rest it already had)."""

    recorded: int = 0
    duplicates: int = 0
