"""The export pipeline end to end against in-test plugins: delta, removals, failures, retries."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from pathlib import Path

import pytest
from conftest import ListSource, RecordingDestination, make_job, make_rows

from grocerysync.agent.pipeline import READ_BATCH
from grocerysync.core import Rejection


def _lines(path: str | None) -> list[str]:
    assert path is not None
    return Path(path).read_text().splitlines()


async def test_first_run_sends_everything(export, dest: RecordingDestination) -> None:
    summary = await export()
    assert summary.status == "succeeded", summary.error
    assert (summary.read, summary.sent, summary.unchanged) == (50, 50, 0)
    assert sorted(dest.items) == [f"I{i:05d}" for i in range(1, 51)]
    assert all(len(batch) <= 10 for batch in dest.writes)
    assert summary.commit == "committed 50 changes"


async def test_second_run_sends_nothing(export, dest: RecordingDestination) -> None:
    await export()
    dest.writes.clear()
    summary = await export()
    assert summary.status == "succeeded"
    assert (summary.sent, summary.unchanged, summary.removed) == (0, 50, 0)
    assert dest.writes == []


async def test_one_percent_changed_sends_exactly_those(export, source: ListSource, dest: RecordingDestination) -> None:
    source.rows = make_rows(400)
    await export()
    dest.writes.clear()
    changed = {4, 150, 399, 222}
    for i in changed:
        source.rows[i]["price"] = "0.49"
    summary = await export()
    assert sorted(dest.sent_ids) == sorted(source.rows[i]["item_id"] for i in changed)
    assert (summary.sent, summary.unchanged) == (4, 396)
    assert str(dest.items[source.rows[4]["item_id"]].price) == "0.49"
    # The few changed items go out as one batch, not one write per POS batch.
    assert len(dest.writes) == 1


async def test_key_order_does_not_count_as_a_change(export, source: ListSource, dest: RecordingDestination) -> None:
    await export()
    source.rows = [dict(reversed(list(r.items()))) for r in source.rows]
    summary = await export()
    assert (summary.sent, summary.unchanged) == (0, 50)


async def test_removal_is_detected_and_sent(export, source: ListSource, dest: RecordingDestination) -> None:
    await export()
    gone = source.rows.pop(7)["item_id"]
    summary = await export()
    assert summary.status == "succeeded"
    assert summary.removed == 1
    assert dest.deletes == [[gone]]
    assert gone not in dest.items
    # Once removed, it is not removed again.
    dest.deletes.clear()
    assert (await export()).removed == 0
    assert dest.deletes == []


async def test_removal_guard_trips_on_an_emptied_source(export, source: ListSource, dest: RecordingDestination) -> None:
    await export()
    source.rows = []
    summary = await export()
    assert summary.status == "partially_failed"
    assert summary.removed == 0
    assert dest.deletes == []
    assert "refused to remove 50 of the 50 items" in (summary.removals_skipped or "")
    assert "max_removal_ratio" in summary.removals_skipped
    assert len(dest.items) == 50
    # The POS export comes back: nothing was forgotten, nothing needs sending.
    source.rows = make_rows(50)
    again = await export()
    assert (again.status, again.sent, again.unchanged) == ("succeeded", 0, 50)


async def test_removals_allowed_when_the_ratio_permits(export, source: ListSource, dest: RecordingDestination) -> None:
    await export()
    source.rows = source.rows[:10]
    summary = await export(make_job(options={"batch_size": 10, "max_removal_ratio": 0.9}))
    assert summary.removed == 40
    assert len(dest.items) == 10


async def test_removals_skipped_when_destination_cannot_delete(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    dest.supports_delete = False
    await export()
    source.rows.pop()
    summary = await export()
    assert summary.status == "succeeded"
    assert "cannot delete" in (summary.removals_skipped or "")
    assert dest.deletes == []


async def test_failed_commit_leaves_state_so_next_run_resends(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    await export()
    source.rows[3]["name"] = "Renamed"
    dest.fail_commit = True
    failed = await export()
    assert failed.status == "failed"
    assert "disk quota exceeded" in (failed.error or "")
    assert dest.items[source.rows[3]["item_id"]].name == "Item 4"
    dest.fail_commit = False
    dest.writes.clear()
    summary = await export()
    assert summary.status == "succeeded"
    assert dest.sent_ids == [source.rows[3]["item_id"]]
    assert dest.items[source.rows[3]["item_id"]].name == "Renamed"


@pytest.mark.parametrize("spools", [False, True], ids=["buffered", "spooling"])
async def test_item_failures_are_counted_and_resent_next_run(export, dest: RecordingDestination, spools: bool) -> None:
    dest.spools = spools
    dest.fail_items = {"I00005": ["price below the platform minimum", False, 1], "I00006": ["no image", False, 1]}
    summary = await export()
    assert summary.status == "partially_failed"
    assert (summary.sent, summary.failed) == (48, 2)
    reasons = {f["item_id"]: f["reason"] for f in summary.failures}
    assert reasons == {"I00005": "price below the platform minimum", "I00006": "no image"}
    assert {f["ref"] for f in summary.failures} == {"row 6", "row 7"}
    dest.writes.clear()
    again = await export()
    assert again.status == "succeeded"
    assert sorted(dest.sent_ids) == ["I00005", "I00006"]


async def test_every_item_failing_is_a_failed_run(export, dest: RecordingDestination) -> None:
    dest.fail_items = {f"I{i:05d}": ["shop is closed", False, -1] for i in range(1, 51)}
    summary = await export()
    assert summary.status == "failed"
    assert summary.failed == 50


async def test_retryable_failures_are_retried_then_succeed(export, dest: RecordingDestination) -> None:
    dest.fail_items = {"I00003": ["timeout", True, 2]}
    dest.fail_batches = 2
    summary = await export()
    assert summary.status == "succeeded", summary.failures
    assert (summary.sent, summary.failed) == (50, 0)
    assert dest.sent_ids.count("I00003") == 3
    assert "I00003" in dest.items


async def test_retryable_failures_give_up_after_max_attempts(export, dest: RecordingDestination) -> None:
    dest.fail_items = {"I00003": ["timeout", True, -1]}
    summary = await export(make_job(options={"batch_size": 10, "max_attempts": 3}))
    assert dest.sent_ids.count("I00003") == 3
    assert summary.failed == 1
    assert "after 3 attempts" in summary.failures[0]["reason"]


async def test_batch_errors_that_never_clear_fail_the_run(export, dest: RecordingDestination) -> None:
    dest.fail_batches = 100
    summary = await export(make_job(options={"batch_size": 10, "max_attempts": 2}))
    assert summary.status == "failed"
    assert "rate limited" in summary.error
    assert "gave up after 2 attempts" in summary.error
    assert dest.items == {}


async def test_rejections_carry_refs_and_reasons_and_good_items_go(
    export, source: ListSource, dest: RecordingDestination, tmp_path: Path
) -> None:
    source.rows[2]["price"] = "abc"
    source.rows[5]["name"] = ""
    del source.rows[8]["item_id"]
    source.bad_lines = [Rejection("line 99", "wrong number of columns (7, expected 9)", "read")]
    summary = await export()
    assert summary.status == "partially_failed"
    assert summary.rejected == 4
    assert summary.sent == 47
    assert summary.read == 51
    by_ref = {r["ref"]: r for r in summary.rejections}
    assert "price" in by_ref["row 4"]["reason"]
    assert by_ref["row 4"]["item_id"] == "I00003"
    assert "name" in by_ref["row 7"]["reason"]
    assert "item_id" in by_ref["row 10"]["reason"]
    assert by_ref["line 99"]["reason"].startswith("wrong number of columns")
    lines = _lines(summary.rejections_path)
    assert len(lines) == 4
    assert json.loads(lines[0])["ref"]
    assert len(dest.items) == 47


async def test_duplicate_item_ids_reject_the_later_row_naming_both(export, source: ListSource) -> None:
    source.rows[3]["item_id"] = source.rows[1]["item_id"]  # same batch
    source.rows[25]["item_id"] = source.rows[0]["item_id"]  # a later batch
    summary = await export()
    reasons = {r["ref"]: r["reason"] for r in summary.rejections}
    assert "row 3" in reasons["row 5"]
    assert "duplicate item_id 'I00002'" in reasons["row 5"]
    assert "row 2" in reasons["row 27"]
    assert "I00001" in reasons["row 27"]
    assert summary.rejected == 2
    assert summary.sent == 48


async def test_reads_are_capped_but_the_destination_gets_whole_batches(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    source.rows = make_rows(2500)
    summary = await export(make_job(options={"batch_size": 1200}))
    assert summary.sent == 2500
    assert {r.batch_size for r in source.requests} == {READ_BATCH}
    assert [len(batch) for batch in dest.writes] == [1200, 1200, 100]


async def test_a_spooling_destination_gets_each_batch_as_it_comes(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    # Holding items back to make whole batches only costs memory when writes go to a local file.
    dest.spools = True
    source.rows = make_rows(2500)
    source.rows[3]["price"] = "-1"  # rejected: its batch is one short
    summary = await export(make_job(options={"batch_size": 1200}))
    assert (summary.sent, summary.rejected) == (2499, 1)
    assert [len(batch) for batch in dest.writes] == [READ_BATCH - 1] + [READ_BATCH] * 9
    assert dest.sent_ids == [row["item_id"] for n, row in enumerate(source.rows) if n != 3]


async def test_a_spooling_destination_still_gets_at_most_batch_size_items_a_write(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    dest.spools = True
    source.rows = make_rows(600)
    source.batch = 250  # more than the 100 asked for
    summary = await export(make_job(options={"batch_size": 100}))
    assert summary.sent == 600
    # Each batch read in writes of at most 100.
    assert [len(batch) for batch in dest.writes] == [100, 100, 50, 100, 100, 50, 100]
    assert dest.sent_ids == [row["item_id"] for row in source.rows]


async def test_keys_are_stripped_and_may_be_numbers_or_missing(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    # Off the batch fast path (text keys, all distinct): a padded, a numeric and a blank item id.
    source.rows[2]["item_id"] = "  I00003 "
    source.rows[4]["item_id"] = 12345
    source.rows[6]["item_id"] = "   "
    summary = await export()
    assert (summary.sent, summary.rejected) == (48, 2)
    reasons = {r["ref"]: r["reason"] for r in summary.rejections}
    assert reasons.keys() == {"row 6", "row 8"}
    assert all(reason.startswith("item_id") for reason in reasons.values())
    assert "I00003" in dest.items
    source.rows[2]["item_id"] = "I00003"  # another raw value of the same key: a change of that item
    summary = await export()
    assert (summary.sent, summary.unchanged, summary.rejected) == (1, 47, 2)


async def test_transforms_apply_in_order_and_may_drop(export, source: ListSource, dest: RecordingDestination) -> None:
    transforms = [
        {"plugin": "suffix", "config": {"suffix": " X"}},
        {"plugin": "drop", "config": {"contains": "7 X"}},
        {"plugin": "suffix", "config": {"suffix": "!"}},
    ]
    summary = await export(make_job(transforms=transforms))
    assert dest.items["I00001"].name == "Item 1 X!"
    assert "I00007" not in dest.items
    assert "I00017" not in dest.items
    assert summary.filtered == 5  # 7, 17, 27, 37, 47
    assert summary.sent == 45


async def test_fingerprint_change_forces_resend(export, dest: RecordingDestination) -> None:
    await export()
    dest.writes.clear()
    summary = await export(make_job(mapping={"overrides": {"brand": "Acme"}}))
    assert summary.sent == 50
    assert any("changed since the last run" in w for w in summary.warnings)
    assert dest.items["I00001"].brand == "Acme"
    dest.writes.clear()
    assert (await export(make_job(mapping={"overrides": {"brand": "Acme"}}))).sent == 0


async def test_full_run_resends_everything(export, dest: RecordingDestination) -> None:
    await export()
    dest.writes.clear()
    summary = await export(full=True)
    assert (summary.mode, summary.sent, summary.unchanged) == ("full", 50, 0)
    assert dest.contexts[-1].mode == "full"
    dest.writes.clear()
    assert (await export()).sent == 0


async def test_dry_run_writes_preview_and_changes_nothing(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    preview_first = await export(dry_run=True)
    assert preview_first.status == "succeeded"
    assert preview_first.sent == 50
    assert dest.writes == []
    assert dest.contexts == []
    await export()
    source.rows[0]["price"] = "9.99"
    gone = source.rows.pop()["item_id"]
    dest.writes.clear()
    summary = await export(dry_run=True)
    assert (summary.sent, summary.removed) == (1, 1)
    ops = [json.loads(line) for line in _lines(summary.preview_path)]
    assert ops == [
        {"op": "upsert", "item_id": "I00001", "item": ops[0]["item"]},
        {"op": "delete", "item_id": gone},
    ]
    assert ops[0]["item"]["price"] == "9.99"
    assert dest.writes == []
    assert dest.deletes == []
    # The dry run left the state alone: the real run still sends the change and the removal.
    real = await export()
    assert (real.sent, real.removed) == (1, 1)


async def test_invalid_plugin_config_fails_before_reading(export, source: ListSource) -> None:
    job = make_job(source={"plugin": "list", "config": {}})
    summary = await export(job)
    assert summary.status == "failed"
    assert summary.error == "invalid source.config: path: Field required"
    assert source.requests == []


async def test_unknown_plugin_names_installed_ones(export) -> None:
    summary = await export(make_job(destination={"plugin": "shopify", "config": {}}))
    assert summary.status == "failed"
    assert "no destination called 'shopify'" in summary.error
    assert "recorder" in summary.error


async def test_secrets_never_in_summary(export, dest: RecordingDestination) -> None:
    summary = await export(make_job(destination={"plugin": "recorder", "config": {}, "secrets": {"token": "zz9"}}))
    assert summary.status == "failed"
    assert "invalid destination.config: shop: Field required" in summary.error
    dest.open_error = ConnectionRefusedError("connection refused by demo.example:22")
    summary = await export()
    assert "could not be opened" in summary.error
    assert "ConnectionRefusedError" in summary.error
    assert "s3cr3t" not in summary.to_json()
    assert "zz9" not in summary.to_json()


async def test_source_failure_is_reported_with_plugin_name(export) -> None:
    summary = await export(make_job(source={"plugin": "list", "config": {"path": "x.csv", "fail": True}}))
    assert summary.status == "failed"
    assert summary.error == "POS connector 'list' failed while reading: OSError: cannot open x.csv"


async def test_progress_reports_counts(export) -> None:
    seen = []
    await export(progress=seen.append)
    assert [p.read for p in seen if p.phase == "reading"] == [10, 20, 30, 40, 50]
    assert seen[-1].phase == "done"
    assert seen[-1].sent == 50


async def test_summary_json_round_trips(export) -> None:
    summary = await export()
    doc = json.loads(summary.to_json())
    assert doc["status"] == "succeeded"
    assert doc["sent"] == 50
    assert doc["items_per_s"] > 0
    assert "exception" not in doc


async def test_a_failed_task_a_plugin_leaves_unread_is_one_line_not_a_traceback(
    export, dest: RecordingDestination, caplog: pytest.LogCaptureFixture
) -> None:
    # What asyncssh's parallel SFTP writes do when the connection drops mid-upload.
    async def leave_a_failed_task() -> None:
        async def parallel_write() -> None:
            raise ConnectionError("connection lost")

        task = asyncio.ensure_future(parallel_write())
        await asyncio.sleep(0)  # it runs and fails, and nobody reads its exception
        del task
        gc.collect()

    dest.on_write = leave_a_failed_task
    loop = asyncio.get_running_loop()
    handler_before = loop.get_exception_handler()
    with caplog.at_level(logging.INFO):
        summary = await export()
    assert summary.status == "succeeded"
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    lines = [r.getMessage() for r in caplog.records if "background task" in r.getMessage()]
    assert lines
    assert "parallel_write" in lines[0]
    assert "ConnectionError: connection lost" in lines[0]
    assert all(r.exc_info is None for r in caplog.records)
    assert loop.get_exception_handler() is handler_before  # the run's handler is gone with the run
