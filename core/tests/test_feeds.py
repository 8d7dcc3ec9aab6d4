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
from grocerysync.core.testing import strategies as gs

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


def reference_csv(items: list[Item]) -> tuple[bytes, list[tuple[str, bool]]]:
    """The csv feed as the format's documentation reads, written plainly with the csv module."""
    per_unit = {None: ("each", None), "lb": ("lb", None), "kg": ("kg", None), "oz": ("lb", 16), "g": ("kg", 1000)}
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    out.writerow(CSV_COLUMNS)
    results = []
    for it in items:
        code = it.gtin or it.plu
        results.append((it.item_id, code is not None))
        if code is None:
            continue
        unit, factor = per_unit[it.weight_unit.value if it.weight_unit else None]

        def money(value: Decimal | None, factor: int | None = factor) -> Decimal | None:
            return value if value is None or factor is None else (value * factor).quantize(Decimal("0.01"))

        sale, size, multi = it.sale, it.size, it.multi_price
        flag = {True: "TRUE", False: "FALSE"}
        out.writerow(
            [
                code,
                it.item_id,
                it.name,
                it.brand,
                size.value if size else None,
                size.unit.value if size else None,
                money(it.price),
                unit,
                money(sale.price) if sale else None,
                sale.start.isoformat() if sale and sale.start else None,
                sale.end.isoformat() if sale and sale.end else None,
                multi.quantity if multi else None,
                multi.price if multi else None,
                it.department,
                it.category,
                flag[it.active and it.online],
                flag[it.min_age is not None and it.min_age >= 21],
                it.min_age,
                flag[it.snap_ebt],
                flag[it.wic],
                flag[it.taxable],
                it.bottle_deposit,
                it.image_url,
                it.stock,
                it.last_changed.isoformat() if it.last_changed else None,
                "FALSE",
            ]
        )
    return buf.getvalue().encode("utf-8"), results


def written(tmp_path: Path, *batches: list[Item]) -> tuple[bytes, list[tuple[str, bool]]]:
    path = tmp_path / "f.csv"
    with FeedWriter(path, "csv") as writer:
        results = [(r.item_id, r.ok) for batch in batches for r in writer.write(batch)]
    assert writer.items_written == sum(ok for _, ok in results)
    return path.read_bytes(), results


def _with_text(item: Item, field: str, text: str) -> Item:
    return Item.model_validate({**item.model_dump(exclude_none=True), field: text})


# Text that makes a csv field need quotes, in every free-text field an item has.
_QUOTED = st.builds(
    _with_text,
    gs.items(codes="required"),
    st.sampled_from(["name", "brand", "department", "category", "item_id"]),
    st.sampled_from(['a"b', "a,b", "a\nb", "a\rb", "a\r\nb", '"', ",x,", 'x "y", z']),
)


@settings(max_examples=150)
@given(st.lists(st.one_of(gs.items(), gs.items(codes="required"), _QUOTED), max_size=25))
def test_csv_rows_are_what_the_csv_module_writes(tmp_path_factory, items):
    # Most rows are formatted directly for speed; any row with a field that needs quoting goes through
    # the csv module: either way the bytes are those of a plain csv.writer over the documented columns.
    assert written(tmp_path_factory.mktemp("feed"), items) == reference_csv(items)


@pytest.mark.parametrize(
    ("field", "column", "text"),
    [
        ("name", "item_name", 'Cola, "classic"'),
        ("brand", "brand_name", "Ben & Jerry's, Inc."),
        ("department", "department", "Beer\r\nWine"),
        ("category", "category", "Snacks\nChips"),
        ("category", "category", "Snacks\rChips"),
        ("item_id", "retailer_reference_code", "A,1"),
        ("image_url", "remote_image_url", "https://img.example/a,b.jpg"),
        ("image_url", "remote_image_url", 'https://img.example/"a".jpg'),
    ],
)
def test_a_field_that_needs_quotes_is_quoted_and_its_neighbours_are_not(tmp_path, field, column, text):
    plain = Item(item_id="Q1", gtin="012345678905", name="Oats", brand="Mill", department="Grocery", price="3.49")
    odd = _with_text(plain, field, text)
    data, results = written(tmp_path, [BANANAS, odd, PER_OZ], [BEER])
    assert (data, results) == reference_csv([BANANAS, odd, PER_OZ, BEER])
    got = rows(tmp_path / "f.csv")
    assert got[1][column] == text
    assert [r["retailer_reference_code"] for r in got] == ["B2", odd.item_id, "E5", "C3"]


def test_items_built_without_validation_are_written_as_the_csv_module_would(tmp_path):
    # model_construct skips validation: a number where a name belongs still comes out as str() of it.
    odd = Item.model_construct(**{**BANANAS.__dict__, "item_id": "N1", "name": 42, "brand": 7})
    assert written(tmp_path, [COLA, odd, BEER]) == reference_csv([COLA, odd, BEER])


def test_results_keep_the_order_of_the_items_around_failures(tmp_path):
    no_code = [NO_CODE.model_copy(update={"item_id": f"D{i}"}) for i in range(3)]
    batch = [no_code[0], COLA, no_code[1], no_code[2], BANANAS, BEER]
    data, results = written(tmp_path, batch, no_code, [])
    assert results == [
        ("D0", False),
        ("A1", True),
        ("D1", False),
        ("D2", False),
        ("B2", True),
        ("C3", True),
        ("D0", False),
        ("D1", False),
        ("D2", False),
    ]
    assert data == reference_csv(batch)[0]


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
