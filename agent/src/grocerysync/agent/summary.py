"""The run summary: what an export did, for a person (``format_text``) and for the hub (``to_json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from grocerysync.core.results import Rejection

Status = Literal["succeeded", "partially_failed", "failed", "cancelled"]

#: How many rejections and failures a summary carries; the full list is in the run's rejections file.
KEEP_IN_SUMMARY = 100


@dataclass(slots=True)
class Progress:
    """A snapshot of a run's counts, passed to the progress callback after every batch."""

    phase: Literal["reading", "removing", "committing", "done"]
    read: int
    sent: int
    unchanged: int
    rejected: int
    filtered: int
    failed: int
    removed: int


@dataclass(slots=True)
class RunSummary:
    """Counts and outcome of one export run.

    ``read`` = ``rejected`` + ``filtered`` + ``unchanged`` + ``sent`` + items that failed to write.
    In a dry run ``sent`` and ``removed`` count what *would* have been sent and removed.
    """

    job: str
    run_id: str
    mode: Literal["delta", "full"]
    dry_run: bool
    started_at: str
    status: Status = "failed"
    read: int = 0
    rejected: int = 0
    filtered: int = 0
    unchanged: int = 0
    sent: int = 0
    failed: int = 0
    removed: int = 0
    #: Why removals were not sent this run (None when they were, or there were none).
    removals_skipped: str | None = None
    duration_s: float = 0.0
    items_per_s: float = 0.0
    #: The destination's own line about what it committed.
    commit: str | None = None
    #: What stopped the run (status ``failed`` or ``cancelled``), in words meant for a technician.
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: The full list of rejections and failures, one JSON object per line (None when there were none).
    rejections_path: str | None = None
    #: Dry runs: every upsert and delete that would have been sent, one JSON object per line.
    preview_path: str | None = None
    run_dir: str | None = None
    #: The exception that stopped the run (never serialised; the CLI's --debug prints its traceback).
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-able data."""
        exception, self.exception = self.exception, None
        try:
            data = asdict(self)
        finally:
            self.exception = exception
        del data["exception"]
        return data

    def to_json(self) -> str:
        """The summary as a JSON document."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode()

    def progress(self, phase: Literal["reading", "removing", "committing", "done"]) -> Progress:
        """The current counts as a :class:`Progress` snapshot."""
        return Progress(
            phase, self.read, self.sent, self.unchanged, self.rejected, self.filtered, self.failed, self.removed
        )

    def format_text(self) -> str:
        """A readable multi-line summary for a terminal."""
        verb = "would send" if self.dry_run else "sent"
        removed = "would remove" if self.dry_run else "removed"
        title = {
            "succeeded": "succeeded",
            "partially_failed": "PARTIALLY FAILED",
            "failed": "FAILED",
            "cancelled": "CANCELLED",
        }[self.status]
        lines = [
            f"Export {self.job!r} ({self.mode}{', dry run' if self.dry_run else ''}) {title} - run {self.run_id}",
            f"  read {self.read}, unchanged {self.unchanged}, {verb} {self.sent}, rejected {self.rejected}, "
            f"filtered {self.filtered}, failed {self.failed}, {removed} {self.removed}",
            f"  {self.duration_s:.1f} s, {self.items_per_s:,.0f} items/s",
        ]
        if self.commit:
            lines.append(f"  destination: {self.commit}")
        if self.removals_skipped:
            lines.append(f"  removals not sent: {self.removals_skipped}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        if self.error:
            lines.append(f"  error: {self.error}")
        for title_, entries, total in (
            ("rejected", self.rejections, self.rejected),
            ("failed", self.failures, self.failed),
        ):
            if entries:
                lines.append(f"  {title_} (first {min(len(entries), 10)} of {total}):")
                lines.extend(f"    {_describe(e)}" for e in entries[:10])
        if self.rejections_path:
            lines.append(f"  all rejections and failures: {self.rejections_path}")
        if self.preview_path:
            lines.append(f"  preview of what would be sent: {self.preview_path}")
        return "\n".join(lines)


def _describe(entry: dict[str, Any]) -> str:
    who = f" (item {entry['item_id']})" if entry.get("item_id") else ""
    return f"{entry['ref']}{who}: {entry['reason']}"


class Problems:
    """Streams rejections and failures to ``rejections.jsonl`` in the run's directory, keeping the
    first :data:`KEEP_IN_SUMMARY` of each kind in the summary: memory stays flat however many there are.
    """

    def __init__(self, summary: RunSummary, run_dir: Path) -> None:
        self._summary = summary
        self._path = run_dir / "rejections.jsonl"
        self._file: IO[bytes] | None = None

    def _write(self, entry: dict[str, Any]) -> None:
        if self._file is None:
            # "wb": a run directory reused by a later attempt (or a hub whose run ids started over) must not
            # carry an earlier run's rejections into this run's report.
            self._file = self._path.open("wb")
            self._summary.rejections_path = str(self._path)
        self._file.write(orjson.dumps(entry) + b"\n")

    def reject(self, rejections: list[Rejection]) -> None:
        """Record rows that did not make it to the destination (bad data, duplicates, mapping)."""
        summary = self._summary
        summary.rejected += len(rejections)
        for r in rejections:
            entry = {"ref": r.ref, "item_id": r.item_id, "stage": r.stage, "reason": r.reason}
            if len(summary.rejections) < KEEP_IN_SUMMARY:
                summary.rejections.append(entry)
            self._write(entry)

    def fail(self, ref: str, item_id: str, stage: str, reason: str) -> None:
        """Record an item the destination did not accept (a write or a delete)."""
        summary = self._summary
        summary.failed += 1
        entry = {"ref": ref, "item_id": item_id, "stage": stage, "reason": reason}
        if len(summary.failures) < KEEP_IN_SUMMARY:
            summary.failures.append(entry)
        self._write(entry)

    def close(self) -> None:
        """Flush and close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
