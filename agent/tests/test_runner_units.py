"""The run loop's parts on their own: backoff, reachability lines, redaction, log records, report batches, and
the pipeline's cancellation hook."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import RecordingDestination

from grocerysync.agent.runner.hubclient import Backoff, Connectivity
from grocerysync.agent.runner.logship import LogCollector, current_run
from grocerysync.agent.runner.redact import Redactor
from grocerysync.agent.runner.reports import MAX_BODY_BYTES, rejection_batches
from grocerysync.agent.summary import Progress
from grocerysync.core.wire import MAX_BATCH, MAX_MESSAGE, LogRecord, RejectionBatch


def test_backoff_doubles_with_jitter_up_to_a_minute_and_resets() -> None:
    low, high = Backoff(rng=lambda: 0.0), Backoff(rng=lambda: 1.0)
    lows = [low.next() for _ in range(10)]
    highs = [high.next() for _ in range(10)]
    assert highs[:7] == [1, 2, 4, 8, 16, 32, 60]
    assert highs[7:] == [60, 60, 60]
    assert lows[:3] == [0.5, 1, 2]  # jitter draws from [delay/2, delay]
    assert lows[-1] == 30
    high.reset()
    assert high.next() == 1
    assert high.next(hint=45) == 45  # the hub's Retry-After wins when it is longer
    assert high.next(hint=10_000) == 300  # ... up to five minutes


def test_an_unreachable_hub_is_one_warning_and_its_return_one_line(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    hub = Connectivity("https://hub.example.com", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="grocerysync.agent.runner.hubclient"):
        for _ in range(5):
            hub.failed("cannot connect: Connection refused")
            now[0] += 30
        hub.succeeded()
        hub.succeeded()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "cannot reach the hub at https://hub.example.com (cannot connect: Connection refused); retrying with "
            "backoff (up to a minute apart), and keeping results and logs in the spool until it is back",
        ),
        ("INFO", "the hub at https://hub.example.com is reachable again (after 150 s)"),
    ]


def test_redaction_masks_the_secrets_in_use_only() -> None:
    redact = Redactor()
    assert redact("token hunter2-long") == "token hunter2-long"
    redact.add(["hunter2-long", "hunter2", "no"])
    redact.add(["hunter2"])  # a second run with the same secret
    assert redact("hunter2-long then hunter2, no") == "*** then ***, no"  # "no" is too short to mask
    redact.remove(["hunter2-long", "hunter2"])
    assert redact("hunter2 hunter2-long") == "*** ***-long"  # still in use by the second run
    redact.remove(["hunter2"])
    assert redact("hunter2") == "hunter2"


@pytest.fixture
def collector() -> Iterator[tuple[LogCollector, Redactor]]:
    redactor = Redactor()
    handler = LogCollector(redactor, plugin_modules=["acme_pos"])
    root = logging.getLogger()
    before = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler, redactor
    root.removeHandler(handler)
    root.setLevel(before)


def test_log_records_become_wire_records_tagged_with_their_run(collector: tuple[LogCollector, Redactor]) -> None:
    handler, redactor = collector
    redactor.add(["s3cr3t-value"])
    token = current_run.set(42)
    try:
        logging.getLogger("grocerysync.agent.pipeline").info("export %r started with %s", "web", "s3cr3t-value")
        try:
            raise OSError("disk full while writing s3cr3t-value")
        except OSError:
            logging.getLogger("acme_pos.reader").exception("reading the POS failed")
    finally:
        current_run.reset(token)
    logging.getLogger("grocerysync.agent.runner").debug("below the level: not shipped")
    logging.getLogger("aiohttp.client").warning("not the agent's logger: not shipped")
    logging.getLogger("acme_posx").warning("only acme_pos and its children are the plugin's")
    logging.getLogger("grocerysync.agent").info("x" * (MAX_MESSAGE + 50))

    records = handler.take()
    assert len(records) == 3
    shipped = [LogRecord.model_validate(r) for r in records]  # exactly what the hub accepts
    first, failure, long = shipped
    assert (first.level, first.logger, first.run_id) == ("info", "grocerysync.agent.pipeline", 42)
    assert first.message == "export 'web' started with ***"
    assert (failure.level, failure.logger, failure.run_id) == ("error", "acme_pos.reader", 42)
    assert failure.message == "reading the POS failed (OSError: disk full while writing ***)"
    assert "Traceback (most recent call last)" in failure.extra["traceback"]
    assert "s3cr3t-value" not in orjson.dumps(records).decode()
    assert long.run_id is None
    assert len(long.message) == MAX_MESSAGE
    assert long.message.endswith("more characters cut]")
    assert len({r.uid for r in shipped}) == 3
    assert handler.take() == []
    assert handler.recent_lines()[-1].startswith(f"{shipped[-1].at.isoformat()[:19]} INFO grocerysync.agent: xxx")


def test_a_full_buffer_asks_for_a_flush(collector: tuple[LogCollector, Redactor]) -> None:
    handler, _ = collector
    asked = threading.Event()
    handler.batch_size = 5
    handler.on_batch = asked.set
    for n in range(4):
        logging.getLogger("grocerysync.x").info("line %d", n)
    assert not asked.is_set()
    logging.getLogger("grocerysync.x").info("line 4")
    assert asked.is_set()


def test_rejections_are_batched_by_count_and_by_size(tmp_path: Path) -> None:
    path = tmp_path / "rejections.jsonl"
    with path.open("wb") as handle:
        for n in range(2500):
            reason = ("r" * 5000) if 1000 <= n < 1300 else f"bad row {n}"
            handle.write(orjson.dumps({"ref": f"row {n}", "item_id": str(n), "stage": "validate", "reason": reason}))
            handle.write(b"\n")
    batches = list(rejection_batches(path, Redactor()))
    assert [r["ref"] for b in batches for r in b] == [f"row {n}" for n in range(2500)]
    assert len(batches[0]) == MAX_BATCH
    first_seq = 0
    for batch in batches:
        body = orjson.dumps({"attempt": 1, "first_seq": first_seq, "rejections": batch})
        assert len(body) <= MAX_BODY_BYTES + 100
        RejectionBatch.model_validate_json(body)
        first_seq += len(batch)
    assert len(batches) > 3  # the 300 long reasons needed batches of their own


async def test_a_cancelled_export_commits_nothing_and_the_next_run_sends_everything(
    export, dest: RecordingDestination
) -> None:
    cancel = threading.Event()

    def progress(p: Progress) -> None:
        if p.read >= 20:
            cancel.set()  # as the runner does when the hub says cancel, from another thread

    summary = await export(progress=progress, cancel=cancel)
    assert summary.status == "cancelled"
    assert summary.read == 20  # stopped after the batch it was working on
    assert "nothing was committed" in summary.error
    assert dest.items == {}
    assert "CANCELLED" in summary.format_text()

    again = await export()
    assert again.status == "succeeded"
    assert again.sent == 50  # the delta state was not updated by the cancelled run
    assert len(dest.items) == 50
