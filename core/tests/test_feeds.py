"""Feed files: formats, names and the streaming writer (grocerysync.core.feeds)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grocerysync.core import feeds
from grocerysync.core.errors import DestinationError
from grocerysync.core.feeds import CSV_COLUMNS, FeedFormat, FeedWriter, feed_file_name, parse_feed_file_name
from grocerysync.core.items import Item

COLA = Item(
    item_id="A1",
    gtin="012345678905",
    name='Cola, "classic"',
    brand="Fizz",
    size="12 fl oz",
    department="Beverages",
    price="1.25",
    cost="0.40",
    sale={"price": "0.99", "start": "2024-05-01T00:00:00", "end": "2024-05-08T00:00:00"},
    multi_price="2/2.00",
    taxable=True,
    snap_ebt=True,
    bottle_deposit="0.05",
    stock="24",
    image_url="https://img.example/cola.jpg",
)
BANANAS = Item(item_id="B2", plu="4011", name="Bananas", price="0.59", sold_by_weight=True)
BEER = Item(item_id="C3", gtin="012345678905", name="Lager 6pk", price="9.99", min_age=21, online=False)
NO_CODE = Item(item_id="D4", name="Deli tray", price="12.00")
PER_OZ = Item(item_id="E5", plu="4012", name="Saffron", price="1.50", sold_by_weight=True, weight_unit="oz")


def rows(path: Path) -> list[dict[str, str]]:
    # Bytes, not read_text(): universal newlines would turn a "\r" inside a quoted field into "\n".
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))


def test_csv_columns_and_values(tmp_path):
    path = tmp_path / "f.csv"
    with FeedWriter(path, "csv") as writer:
        results = writer.write([COLA, BANANAS, BEER, PER_OZ])
    assert all(r.ok for r in results)
    assert path.read_text().splitlines()[0].split(",") == list(CSV_COLUMNS)
    cola, bananas, beer, per_oz = rows(path)
    assert cola["item_name"] == 'Cola, "classic"'  # quoted, read back intact
    assert (cola["lookup_code"], cola["retailer_reference_code"], cola["size"], cola["size_uom"]) == (
        "012345678905",
        "A1",
        "12",
        "fl oz",
    )
    assert (cola["sale_price"], cola["sale_start_at"], cola["multi_buy_quantity"], cola["multi_buy_price"]) == (
        "0.99",
        "2024-05-01T00:00:00",
        "2",
        "2.00",
    )
    assert (cola["snap_eligible"], cola["taxable"], cola["alcoholic"], cola["deleted"]) == (
        "TRUE",
        "TRUE",
        "FALSE",
        "FALSE",
    )
    assert "cost" not in cola
    assert "0.40" not in path.read_text()
    assert (bananas["lookup_code"], bananas["cost_unit"], bananas["size"]) == ("4011", "lb", "")
    assert (beer["alcoholic"], beer["available"], beer["min_age"]) == ("TRUE", "FALSE", "21")
    assert (per_oz["cost_unit"], per_oz["price"]) == ("lb", "24.00")  # 1.50/oz is 24.00/lb


def test_csv_item_without_lookup_code_fails_and_others_go_through(tmp_path):
    with FeedWriter(tmp_path / "f.csv", FeedFormat.CSV) as writer:
        results = writer.write([NO_CODE, COLA])
    assert [(r.item_id, r.ok) for r in results] == [("D4", False), ("A1", True)]
    assert results[0].error == "no UPC/EAN or PLU: an Instacart-style feed needs a lookup code"
    assert [r["retailer_reference_code"] for r in rows(tmp_path / "f.csv")] == ["A1"]
    assert writer.items_written == 1


def test_csv_deletions(tmp_path):
    with FeedWriter(tmp_path / "f.csv", "csv") as writer:
        assert [r.ok for r in writer.delete(["X1", "X2"])] == [True, True]
    deleted = rows(tmp_path / "f.csv")
    assert [(r["retailer_reference_code"], r["deleted"], r["lookup_code"], r["price"]) for r in deleted] == [
        ("X1", "TRUE", "", ""),
        ("X2", "TRUE", "", ""),
    ]


@pytest.mark.parametrize("fast", [True, False], ids=["orjson", "pydantic"])
def test_jsonl_round_trip(tmp_path, monkeypatch, fast):
    if not fast:
        monkeypatch.setattr(feeds, "orjson", None)
    path = tmp_path / "f.jsonl"
    with FeedWriter(path, "jsonl") as writer:
        assert all(r.ok for r in writer.write([COLA, BANANAS, NO_CODE, PER_OZ]))
        writer.delete(["Z9"])
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["op"] for x in lines] == ["upsert"] * 4 + ["delete"]
    assert [Item.model_validate(x["item"]) for x in lines[:4]] == [COLA, BANANAS, NO_CODE, PER_OZ]
    assert lines[4] == {"op": "delete", "item_id": "Z9"}


def test_jsonl_survives_text_that_looks_like_a_separator(tmp_path):
    tricky = Item(item_id="T", name='x},{"item_id":"y', price="1", extras={"op": "upsert", "n": 2**70})
    path = tmp_path / "f.jsonl"
    with FeedWriter(path, "jsonl") as writer:
        writer.write([tricky, COLA])
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert Item.model_validate(json.loads(lines[0])["item"]) == tricky


items_strategy = st.builds(
    Item,
    item_id=st.text("abcXYZ019-", min_size=1, max_size=12),
    name=st.text(min_size=1, max_size=30).filter(lambda s: s.strip()),
    price=st.decimals(min_value=0, max_value=9999, places=2),
    plu=st.sampled_from(["4011", "94011"]),
    brand=st.none() | st.text(max_size=20),
    extras=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5) | st.booleans(), max_size=3),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(items_strategy, min_size=1, max_size=8), st.sampled_from(["csv", "jsonl"]))
def test_any_batch_reads_back(tmp_path_factory, items, fmt):
    path = tmp_path_factory.mktemp("feed") / f"f.{fmt}"
    with FeedWriter(path, fmt) as writer:
        writer.write(items)
    if fmt == "jsonl":
        # Split on "\n" only, as JSON Lines says: str.splitlines() also splits on U+0085 and U+2028,
        # which JSON carries unescaped inside strings.
        lines = path.read_bytes().split(b"\n")[:-1]
        back = [Item.model_validate(json.loads(x)["item"]) for x in lines]
        assert back == items
    else:
        got = rows(path)
        assert [(r["retailer_reference_code"], r["item_name"], Decimal(r["price"])) for r in got] == [
            (i.item_id, i.name, i.price) for i in items
        ]


class _FailingFile:
    """Stands in for the OS file once disk space runs out half-way through a batch."""

    def __init__(self, real, fail_after: int) -> None:
        self.real, self.budget = real, fail_after

    def write(self, data):
        if self.budget <= 0:
            raise OSError(28, "No space left on device")
        n = self.real.write(bytes(data[: self.budget]))
        self.budget -= n
        return n

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_failed_batch_is_truncated_so_a_retry_does_not_duplicate(tmp_path):
    path = tmp_path / "f.csv"
    writer = FeedWriter(path, "csv")
    writer.write([COLA])
    size = path.stat().st_size
    writer._file = _FailingFile(writer._file, fail_after=10)
    with pytest.raises(DestinationError) as err:
        writer.write([BANANAS, BEER])
    assert err.value.retryable
    assert "No space left" in str(err.value)
    assert str(path) in str(err.value)
    assert path.stat().st_size == size
    writer._file = writer._file.real
    writer.write([BANANAS, BEER])
    writer.close()
    assert [r["retailer_reference_code"] for r in rows(path)] == ["A1", "B2", "C3"]


def test_writing_after_close_is_refused(tmp_path):
    writer = FeedWriter(tmp_path / "f.csv", "csv")
    writer.close()
    with pytest.raises(DestinationError, match="already closed"):
        writer.write([COLA])


def test_unwritable_location_is_a_clear_error(tmp_path):
    with pytest.raises(DestinationError, match="cannot create feed file"):
        FeedWriter(tmp_path / "missing" / "f.csv", "csv")


def test_discard_removes_the_file(tmp_path):
    writer = FeedWriter(tmp_path / "f.csv", "csv")
    writer.write([COLA])
    writer.discard()
    assert not (tmp_path / "f.csv").exists()


def test_summary_counts_items_and_size(tmp_path):
    with FeedWriter(tmp_path / "f.csv", "csv") as writer:
        writer.write([COLA, BANANAS])
        writer.delete(["X"])
    assert writer.summary() == f"2 items, 1 deletion, {feeds.human_size(writer.bytes_written)}"
    assert writer.bytes_written == (tmp_path / "f.csv").stat().st_size
    assert feeds.human_size(31_200_000) == "31.2 MB"


def test_file_names_are_unique_and_sortable():
    when = datetime(2024, 5, 1, 6, 30, 0, tzinfo=UTC)
    name = feed_file_name("s12_", "Main St. / Instacart!", "full", "3F9A1C2E-77aa", "csv", when=when)
    assert name == "s12_main-st-instacart_full_20240501T063000000Z_ef314882.csv"
    later = feed_file_name("s12_", "Main St. / Instacart!", "full", "00000000-1", "csv", when=when.replace(hour=7))
    assert sorted([later, name]) == [name, later]  # within a job and mode, names sort by time
    other_run = feed_file_name("s12_", "Main St. / Instacart!", "full", "3f9a1c2f", "csv", when=when)
    assert other_run != name
    parsed = parse_feed_file_name(name, prefix="s12_", job_name="Main St. / Instacart!")
    assert parsed is not None
    assert (parsed.mode, parsed.run, parsed.format) == ("full", "ef314882", FeedFormat.CSV)
    assert parse_feed_file_name(name, prefix="s12_", job_name="Main St") is None


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("bad/prefix", "job", "full", "r1"), "file_prefix"),
        (("", "job", "weekly", "r1"), "full' or 'delta"),
        (("", "job", "full", "  "), "run id"),
    ],
)
def test_bad_name_parts_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        feed_file_name(*args, "csv")
