"""The two halves of a poll that are plain data: the heartbeat's health, and the hub's answer taken apart.

A poll answer is read piece by piece: a run or a command this agent cannot read (a newer hub's job option, a
new command type) is answered as such (failed, with the reason; "upgrade the agent") instead of making the
whole answer unreadable, which would stop the agent from taking any work at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from grocerysync.agent.runner.diagnostics import agent_version
from grocerysync.agent.runner.logship import cut
from grocerysync.agent.runner.redact import Redactor
from grocerysync.agent.spool import Dropped, SpoolStats
from grocerysync.core.config import field_errors
from grocerysync.core.manager import LoadFailure
from grocerysync.core.wire import Command, Health, PollAnswer, RunAssignment

#: Seconds the agent reports itself degraded after its spool had to drop records.
DROPS_SHOWN = 3600.0


class Polled:
    """A poll answer taken apart: what could be read, and the runs and commands that could not."""

    def __init__(self, answer: PollAnswer, *, received: float) -> None:
        self.answer = answer
        #: Local monotonic time of the answer (leases are turned into this machine's clock with it).
        self.received = received
        self.runs: list[RunAssignment] = []
        self.commands: list[Command] = []
        self.unreadable_runs: list[tuple[dict[str, Any], ValidationError]] = []
        self.unknown_commands: list[dict[str, Any]] = []


def read_answer(data: Any, *, received: float) -> Polled:
    """Take a poll answer's JSON apart; ValidationError only when its own fields (config, times) are wrong."""
    body = data if isinstance(data, dict) else {}
    polled = Polled(
        PollAnswer.model_validate({k: v for k, v in body.items() if k not in ("runs", "commands")}),
        received=received,
    )
    for raw in _dicts(body.get("runs")):
        try:
            polled.runs.append(RunAssignment.model_validate(raw))
        except ValidationError as exc:
            polled.unreadable_runs.append((raw, exc))
    for raw in _dicts(body.get("commands")):
        try:
            polled.commands.append(Command.model_validate(raw))
        except ValidationError:
            polled.unknown_commands.append(raw)
    return polled


def describe(exc: ValidationError) -> str:
    """A validation error as ``field: message; ...`` (never echoing values: they may be secrets)."""
    return "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(exc))


def unreadable_run(raw: dict[str, Any], exc: ValidationError) -> tuple[int, int, str] | None:
    """(run id, attempt, error for its result) of an assignment this agent cannot read; None without an id."""
    run_id, attempt = raw.get("run_id"), raw.get("attempt", 1)
    if not isinstance(run_id, int) or not isinstance(attempt, int):
        return None
    error = (
        f"this agent (version {agent_version() or 'unknown'}) cannot read run {run_id}'s job ({describe(exc)}); "
        "upgrade the agent"
    )
    # Field messages never echo values, but a validator's own text might: mask the secrets it came with anyway.
    redact = Redactor()
    redact.add(_secret_values(raw))
    return run_id, attempt, redact(error)


def _secret_values(raw: dict[str, Any]) -> list[str]:
    spec = raw.get("spec")
    destination = spec.get("destination") if isinstance(spec, dict) else None
    secrets = destination.get("secrets") if isinstance(destination, dict) else None
    return [v for v in secrets.values() if isinstance(v, str)] if isinstance(secrets, dict) else []


def unknown_command(raw: dict[str, Any]) -> tuple[int, str, str] | None:
    """(command id, type, message for its result) of a command this agent does not know; None without an id."""
    command_id = raw.get("id")
    if not isinstance(command_id, int):
        return None
    kind = str(raw.get("type"))[:50]
    message = (
        f"this agent (version {agent_version() or 'unknown'}) does not know the command {kind!r}; upgrade the agent"
    )
    return command_id, kind, message


class HealthTracker:
    """What the agent says about its health with every poll."""

    def __init__(self) -> None:
        # Drops the hub has already been told of: still shown for DROPS_SHOWN seconds.
        self._drops: dict[str, int] = {}
        self._dropped_at = -DROPS_SHOWN

    def reported(self, notices: Iterable[Dropped]) -> None:
        """The shipper told the hub of these drops."""
        for notice in notices:
            self._drops[notice.kind] = self._drops.get(notice.kind, 0) + notice.count
        self._dropped_at = time.monotonic()

    def health(self, stats: SpoolStats, failures: list[LoadFailure], running: list[int]) -> Health:
        """``ok``, or ``degraded`` with what is wrong: spool drops or overflow, plugins that failed to load."""
        problems = []
        drops = dict(stats.dropped)
        if drops:
            self._dropped_at = time.monotonic()
        if time.monotonic() - self._dropped_at < DROPS_SHOWN:
            for kind, count in self._drops.items():
                drops[kind] = drops.get(kind, 0) + count
        else:
            self._drops.clear()
        if drops:
            lost = ", ".join(f"{count} {kind} records" for kind, count in sorted(drops.items()))
            problems.append(f"the spool was full and dropped {lost} (see the agent's log)")
        if stats.over_bound:
            problems.append("the spool is over its limit with results waiting for the hub")
        if failures:
            names = ", ".join(f"{f.entry_point} ({f.distribution})" for f in failures)
            problems.append(f"plugins failed to load: {names}")
        return Health(
            status="degraded" if problems else "ok",
            message=cut("; ".join(problems)),
            spool_records=stats.total_records,
            spool_bytes=stats.total_bytes,
            running=running,
        )


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
