"""What the agent reports about a finished run or command, put in the spool for the shipper to send.

A spooled report (kind ``result``) is ``{"path": ..., "what": ..., "body": ...}``: the agent channel route it
goes to, a phrase for log lines about it, and the wire body. Keys make spooling idempotent: a run's rejection
batches are ``rej:<run>:<attempt>:<first_seq>``, its result ``result:<run>:<attempt>``, a command's result
``cmd:<id>``.

A run's rejections go first, in batches of at most :data:`~grocerysync.core.wire.MAX_BATCH` numbered
0, 1, 2 ..., then its result: the shipper sends the spool in order, so the hub has every rejection when the
result arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from grocerysync.agent.runner.logship import cut
from grocerysync.agent.spool import Spool
from grocerysync.agent.summary import RunSummary
from grocerysync.core.wire import MAX_BATCH, MAX_MESSAGE, CommandResult, RejectionIn, RunResult

#: The largest JSON body the agent sends in one report (the hub accepts 1 MB; leave room for the envelope).
MAX_BODY_BYTES = 800_000
#: Rejection batches spooled per transaction: bounds the memory a run with very many rejections needs.
BATCHES_PER_TRANSACTION = 20

Redact = Callable[[str], str]


def result_key(run_id: int, attempt: int) -> str:
    """The spool key of a run's result."""
    return f"result:{run_id}:{attempt}"


def _rejection(entry: dict[str, Any], redact: Redact) -> dict[str, Any]:
    item_id = entry.get("item_id")
    return RejectionIn(
        ref=cut(redact(str(entry.get("ref") or "?"))),
        reason=cut(redact(str(entry.get("reason") or "no reason given"))),
        stage=str(entry.get("stage") or "?")[:20],
        item_id=cut(str(item_id)) if item_id not in (None, "") else None,
    ).model_dump(mode="json")


def rejection_batches(path: Path, redact: Redact) -> Iterator[list[dict[str, Any]]]:
    """The rejections and failures in a run's ``rejections.jsonl``, in batches the hub accepts (count and size)."""
    batch: list[dict[str, Any]] = []
    size = 0
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                entry = {"ref": "?", "reason": "unreadable line in the run's rejections file", "stage": "?"}
            item = _rejection(entry, redact)
            item_size = len(orjson.dumps(item)) + 1
            if batch and (len(batch) >= MAX_BATCH or size + item_size > MAX_BODY_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += item_size
    if batch:
        yield batch


def run_result(summary: RunSummary, attempt: int, rejections_total: int, redact: Redact) -> dict[str, Any]:
    """The wire body of a run's result, with every text redacted and cut to what the hub keeps."""
    warnings = list(summary.warnings)
    if summary.removals_skipped and summary.removals_skipped not in warnings:
        warnings.append(summary.removals_skipped)
    return RunResult(
        attempt=attempt,
        status=summary.status,
        read=summary.read,
        sent=summary.sent,
        unchanged=summary.unchanged,
        rejected=summary.rejected,
        filtered=summary.filtered,
        failed=summary.failed,
        removed=summary.removed,
        error=cut(redact(summary.error or "")),
        warnings=[cut(redact(w)) for w in warnings[:100]],
        rejections_total=rejections_total,
        duration_s=max(0.0, summary.duration_s),
        commit=cut(redact(summary.commit)) if summary.commit else None,
    ).model_dump(mode="json")


def spool_run_report(spool: Spool, run_id: int, attempt: int, summary: RunSummary, redact: Redact) -> int:
    """Spool a finished run's rejections, then its result; return how many rejections there were.

    Blocking (SQLite with fsync): call it in a worker thread. The result goes in the same transaction as the
    last rejection batches. If the agent dies half-way, the batches already spooled are sent and the run's
    lease runs out on the hub, which then fails the attempt (and retries the job if its policy says so).
    """
    total = 0
    group: list[dict[str, Any]] = []
    keys: list[str | None] = []
    path = Path(summary.rejections_path) if summary.rejections_path else None
    if path is not None and path.is_file():
        for batch in rejection_batches(path, redact):
            last = total + len(batch) - 1
            group.append(
                {
                    "path": f"runs/{run_id}/rejections",
                    "what": f"rejections {total}-{last} of run {run_id}",
                    "body": {"attempt": attempt, "first_seq": total, "rejections": batch},
                }
            )
            keys.append(f"rej:{run_id}:{attempt}:{total}")
            total += len(batch)
            if len(group) >= BATCHES_PER_TRANSACTION:
                spool.append_many("result", group, keys=keys)
                group, keys = [], []
    group.append(
        {
            "path": f"runs/{run_id}/result",
            "what": f"the result of run {run_id} (attempt {attempt}, {summary.status})",
            "body": run_result(summary, attempt, total, redact),
        }
    )
    keys.append(result_key(run_id, attempt))
    spool.append_many("result", group, keys=keys)
    return total


def failed_result(run_id: int, attempt: int, error: str) -> tuple[dict[str, Any], str]:
    """A ``failed`` result (payload, key) for a run the agent could not start at all."""
    body = RunResult(attempt=attempt, status="failed", error=cut(error, MAX_MESSAGE)).model_dump(mode="json")
    payload = {"path": f"runs/{run_id}/result", "what": f"the result of run {run_id} (attempt {attempt})", "body": body}
    return payload, result_key(run_id, attempt)


def command_result(
    command_id: int, kind: str, *, ok: bool, message: str, data: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """A command's result (payload, key) for the spool."""
    body = CommandResult(ok=ok, message=cut(message), data=data or {}).model_dump(mode="json")
    payload = {
        "path": f"commands/{command_id}/result",
        "what": f"the result of command {command_id} ({kind})",
        "body": body,
    }
    return payload, f"cmd:{command_id}"
