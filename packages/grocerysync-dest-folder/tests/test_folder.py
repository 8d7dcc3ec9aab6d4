"""The folder destination: atomic feed files in a real folder, check messages, keep_files."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from grocerysync_dest_folder import DESTINATION, FolderConfig

from grocerysync.core.config import parse_config
from grocerysync.core.errors import ConfigError, DestinationError
from grocerysync.core.items import Item
from grocerysync.core.manager import PluginManager
from grocerysync.core.records import NoSecrets, WriteContext

ITEMS = [
    Item(item_id="A1", gtin="012345678905", name="Cola", price="1.25"),
    Item(item_id="B2", plu="4011", name="Bananas", price="0.59", sold_by_weight=True),
]


def ctx(tmp_path: Path, run_id: str = "aaaaaaaa", mode: str = "full") -> WriteContext:
    return WriteContext(job_name="Main St", run_id=run_id, mode=mode, work_dir=str(tmp_path))  # type: ignore[arg-type]


def test_registered_through_the_entry_point():
    assert PluginManager(autoload=True).destination("folder").config_model is FolderConfig


async def test_feed_lands_atomically(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cfg = FolderConfig(path=str(out), file_prefix="s12_")
    async with DESTINATION.open(cfg, NoSecrets(), ctx(tmp_path)) as writer:
        await writer.write(ITEMS)
        await writer.delete(["Z9"])
        # Until commit only a hidden .part file exists: a reader polling the folder sees no feed.
        assert [p.name for p in out.iterdir()] == [f".{writer.name}.part"]
        line = await writer.commit()
    (feed,) = out.iterdir()
    assert feed.name.startswith("s12_main-st_full_")
    assert feed.suffix == ".csv"
    assert line == f"wrote {feed} (2 items, 1 deletion, {line.split(', ')[-1]}"
    rows = list(csv.DictReader(io.StringIO(feed.read_bytes().decode(), newline="")))
    assert [(r["retailer_reference_code"], r["deleted"]) for r in rows] == [
        ("A1", "FALSE"),
        ("B2", "FALSE"),
        ("Z9", "TRUE"),
    ]


async def test_leaving_without_commit_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    async def cancelled_run() -> None:
        async with DESTINATION.open(FolderConfig(path=str(out)), NoSecrets(), ctx(tmp_path)) as writer:
            await writer.write(ITEMS)
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        await cancelled_run()
    assert list(out.iterdir()) == []


async def test_keep_files_prunes_only_this_jobs_older_feeds(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "main-st-2_full_20000101T000000000Z_zzzzzzzz.csv").write_text("another job")
    (out / "readme.txt").write_text("not a feed")
    cfg = FolderConfig(path=str(out), keep_files=2, format="jsonl")
    old = [out / f"main-st_delta_2000010{i}T000000000Z_0000000{i}.jsonl" for i in range(1, 4)]
    for path in old:
        path.write_text("")
    async with DESTINATION.open(cfg, NoSecrets(), ctx(tmp_path, mode="delta")) as writer:
        await writer.write(ITEMS)
        line = await writer.commit()
    assert "removed 2 older feed files" in line
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["main-st-2_full_20000101T000000000Z_zzzzzzzz.csv", "readme.txt", old[2].name, writer.name])


async def test_check_ok_and_leaves_no_probe(tmp_path):
    result = await DESTINATION.check(FolderConfig(path=str(tmp_path)), NoSecrets())
    assert result.ok
    assert str(tmp_path) in result.message
    assert list(tmp_path.iterdir()) == []


async def test_check_missing_folder(tmp_path):
    result = await DESTINATION.check(FolderConfig(path=str(tmp_path / "nope")), NoSecrets())
    assert not result.ok
    assert "does not exist" in result.message
    assert "nope" in result.message


async def test_check_file_instead_of_folder(tmp_path):
    (tmp_path / "f").write_text("")
    result = await DESTINATION.check(FolderConfig(path=str(tmp_path / "f")), NoSecrets())
    assert not result.ok
    assert "not a folder" in result.message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write to read-only folders")
async def test_check_read_only_folder(tmp_path):
    tmp_path.chmod(0o500)
    try:
        result = await DESTINATION.check(FolderConfig(path=str(tmp_path)), NoSecrets())
    finally:
        tmp_path.chmod(0o700)
    assert not result.ok
    assert "cannot write" in result.message


async def test_open_on_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DestinationError, match="does not exist"):
        async with DESTINATION.open(FolderConfig(path=str(tmp_path / "gone")), NoSecrets(), ctx(tmp_path)):
            pass


def test_config_refuses_bad_prefix_and_keep_files():
    with pytest.raises(ConfigError) as err:
        parse_config(FolderConfig, {"path": "/x", "file_prefix": "../up", "keep_files": 0}, where="config")
    assert {e["field"] for e in err.value.errors} == {"config.file_prefix", "config.keep_files"}


@pytest.mark.parametrize(("mode", "words"), [("delta", "nothing changed"), ("full", "empty full feed")])
async def test_a_run_with_nothing_to_send_delivers_no_file(tmp_path, mode, words):
    out = tmp_path / "out"
    out.mkdir()
    async with DESTINATION.open(FolderConfig(path=str(out)), NoSecrets(), ctx(tmp_path, mode=mode)) as writer:
        line = await writer.commit()
    assert words in line
    assert list(out.iterdir()) == []
