"""Batch validation gives exactly what validating each record on its own gives.

``validate_records`` validates a batch with Item's schema less the per-item barcode check and the refusal of
unknown fields, then makes those two checks for the whole batch and sends the records that do not pass them
plainly through the full schema. These tests hold it to ``Item.model_validate`` record by record: the same
items (values and the set of fields given) and the same rejection, word for word.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from grocerysync.core import validation
from grocerysync.core.codes import all_valid_gtins, check_digit, is_valid_gtin
from grocerysync.core.items import Item
from grocerysync.core.results import RawRecord, Rejection
from grocerysync.core.testing.strategies import gtins, items
from grocerysync.core.validation import describe_errors, validate_records

BASE = {"item_id": "1001", "name": "Whole Milk", "price": "3.99"}


def _one_by_one(records: list[RawRecord]) -> tuple[list[Item], list[Rejection]]:
    good, bad = [], []
    for record in records:
        try:
            good.append(Item.model_validate(record.data))
        except ValidationError as exc:
            item_id = record.data.get("item_id")
            bad.append(
                Rejection(
                    record.ref,
                    describe_errors(exc.errors(include_url=False)),
                    "validate",
                    str(item_id) if item_id not in (None, "") else None,
                )
            )
    return good, bad


def _same(batch: tuple[list[Item], list[Rejection]], reference: tuple[list[Item], list[Rejection]]) -> None:
    (items_a, rejections_a), (items_b, rejections_b) = batch, reference
    assert [type(i) for i in items_a] == [Item] * len(items_a)
    assert [i.model_dump() for i in items_a] == [i.model_dump() for i in items_b]
    assert [i.model_fields_set for i in items_a] == [i.model_fields_set for i in items_b]
    assert items_a == items_b  # pydantic's equality: values, extra and private attributes, and the class
    assert rejections_a == rejections_b


# Barcodes as POS exports hold them: right, wrong, padded, separated, short, UPC-E, not digits at all.
_ODD_CODES = [
    "036000291452",  # UPC-A, valid
    "036000291453",  # bad check digit
    " 036000291452 ",  # padded: the model strips it
    "0360-0029-1452",  # separators
    "01234565",  # UPC-E (not a valid EAN-8): expanded to UPC-A
    "96385074",  # EAN-8, valid
    "03600029145",  # 11 digits
    "",
    "abc",
    "٠٣٦٠٠٠٢٩١٤٥٢",  # Arabic-Indic digits: isdigit() but not ASCII
    "+36000291452",
    "00000036000291452",  # 17 digits
]


# Sizes as connectors give them: text the item model parses (or refuses), a dict, something else.
_ODD_SIZES: list[Any] = [
    "12 oz",
    "1.5L",
    " 6 ct ",
    "2,5 kg",
    "12 parsecs",
    "oz",
    "",
    b"12 oz",
    {"value": "2", "unit": "lb"},
    {"value": "-2", "unit": "lb"},
    12,
]


@st.composite
def _raw_batches(draw: st.DrawFn) -> list[RawRecord]:
    records = []
    for n, item in enumerate(draw(st.lists(items(), min_size=1, max_size=12))):
        data: dict[str, Any] = item.model_dump(exclude_unset=True)
        twist = draw(st.sampled_from(["none", "none", "gtin", "size", "unknown", "price", "weight", "item_id"]))
        if twist == "gtin":
            data["gtin"] = draw(st.sampled_from(_ODD_CODES) | gtins())
        elif twist == "size":
            data["size"] = draw(st.sampled_from(_ODD_SIZES))
        elif twist == "unknown":
            data[draw(st.sampled_from(["upc", "Price", "sale_price", "extras.x"]))] = "1"
        elif twist == "price":
            data["price"] = draw(st.sampled_from(["-1", "abc", "1e9", Decimal("NaN")]))
        elif twist == "weight":
            data["weight_unit"] = "lb"
            data["sold_by_weight"] = draw(st.booleans())
        elif twist == "item_id":
            data["item_id"] = draw(st.sampled_from(["", "   ", 12345]))
        records.append(RawRecord(f"row {n + 2}", data))
    return records


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_raw_batches())
def test_a_batch_validates_as_its_records_do_one_by_one(records: list[RawRecord]) -> None:
    _same(validate_records(records), _one_by_one(records))


@pytest.mark.parametrize("code", _ODD_CODES)
def test_each_kind_of_barcode_in_a_batch_of_good_ones(code: str) -> None:
    records = [RawRecord(f"row {n}", {**BASE, "item_id": str(n), "gtin": "036000291452"}) for n in range(5)]
    records.insert(2, RawRecord("row odd", {**BASE, "item_id": "odd", "gtin": code}))
    _same(validate_records(records), _one_by_one(records))


@pytest.mark.parametrize("size", _ODD_SIZES)
def test_each_kind_of_size_in_a_batch_of_good_ones(size: Any) -> None:
    records = [RawRecord(f"row {n}", {**BASE, "item_id": str(n), "size": "16 fl oz"}) for n in range(5)]
    records.insert(3, RawRecord("row odd", {**BASE, "item_id": "odd", "size": size}))
    _same(validate_records(records), _one_by_one(records))


def test_an_unknown_field_is_refused_in_a_batch_too() -> None:
    records = [RawRecord("row 2", BASE), RawRecord("row 3", {**BASE, "item_id": "1002", "upc": "036000291452"})]
    items_, rejections = validate_records(records)
    assert [i.item_id for i in items_] == ["1001"]
    assert len(rejections) == 1
    assert rejections[0].ref == "row 3"
    assert "upc" in rejections[0].reason


@pytest.fixture
def no_known_sizes():
    """The size table empty for the test, and as it was afterwards (the batch schema holds that very dict)."""
    kept = dict(validation._SIZE_TEXTS)
    validation._SIZE_TEXTS.clear()
    yield validation._SIZE_TEXTS
    validation._SIZE_TEXTS.clear()
    validation._SIZE_TEXTS.update(kept)


def _sized(size: Any, n: int = 6) -> list[RawRecord]:
    return [RawRecord(f"row {i + 2}", {**BASE, "item_id": str(i), "size": size}) for i in range(n)]


def test_a_size_text_is_read_by_the_item_model_once_then_looked_up(no_known_sizes, monkeypatch) -> None:
    _same(validate_records(_sized("12 fl. oz")), _one_by_one(_sized("12 fl. oz")))
    assert no_known_sizes == {"12 fl. oz": Item.model_validate({**BASE, "size": "12 fl. oz"}).size}
    full = []
    real = validation._validate_full
    monkeypatch.setattr(validation, "_validate_full", lambda records, data: full.append(records) or real(records, data))
    records = [*_sized("12 fl. oz"), RawRecord("row 9", {**BASE, "item_id": "new", "size": "2 lb"})]
    _same(validate_records(records), _one_by_one(records))
    assert [[r.ref for r in batch] for batch in full] == [["row 9"]]  # only the text not met before
    assert set(no_known_sizes) == {"12 fl. oz", "2 lb"}


def test_a_size_the_table_does_not_know_is_never_taken_for_no_size(no_known_sizes) -> None:
    for size in ["3 ct", "12 parsecs", "", " 3 ct", b"3 ct", 3, {"value": "3", "unit": "ct"}]:
        records = [*_sized("3 ct", 3), RawRecord("row 9", {**BASE, "item_id": "odd", "size": size}), *_sized(None, 2)]
        _same(validate_records(records), _one_by_one(records))
    assert "12 parsecs" not in no_known_sizes  # refused texts are not remembered
    assert "" not in no_known_sizes


def test_the_size_table_stops_growing_at_its_limit(no_known_sizes, monkeypatch) -> None:
    monkeypatch.setattr(validation, "_SIZE_TEXTS_MAX", 2)
    records = [RawRecord(f"row {n}", {**BASE, "item_id": str(n), "size": f"{n + 1} oz"}) for n in range(4)]
    _same(validate_records(records), _one_by_one(records))
    assert list(no_known_sizes) == ["1 oz", "2 oz"]
    _same(validate_records(records), _one_by_one(records))  # the others still read right, every time
    assert list(no_known_sizes) == ["1 oz", "2 oz"]


def test_the_batch_schema_is_in_use() -> None:
    # Built from Item's own schema; None would mean pydantic laid it out differently and every batch pays
    # for the per-item checks again (still correct, only slower).
    assert validation._BATCH is not None
    assert validation._BATCH_SIZED is not None
    with pytest.raises(ValidationError):
        validation._BATCH.validate_python([{**BASE, "price": "-1"}])
    lenient = validation._BATCH.validate_python([{**BASE, "gtin": "036000291453", "upc": "x"}])
    assert lenient[0].gtin == "036000291453"  # left to the batch checks: the schema itself passed it


def test_all_valid_gtins_agrees_with_checking_each_code() -> None:
    rnd = random.Random(7)
    for _ in range(3000):
        batch = []
        for _ in range(rnd.randint(1, 6)):
            length = rnd.choice([7, 8, 11, 12, 13, 14, 15])
            body = "".join(rnd.choice("0123456789") for _ in range(length - 1))
            last = str(check_digit(body)) if body and rnd.random() < 0.8 else rnd.choice("0123456789")
            batch.append(body + last)
        assert all_valid_gtins(batch) == all(map(is_valid_gtin, batch)), batch


@pytest.mark.parametrize("odd", ["", "abc", " 036000291452", "٠٣٦٠٠٠٢٩١٤٥٢", "99999999999999999", "+3600029145"])
def test_all_valid_gtins_refuses_what_is_not_a_code(odd: str) -> None:
    assert all_valid_gtins(["036000291452"])
    assert not all_valid_gtins(["036000291452", odd])
    assert all_valid_gtins([])


def test_the_largest_weighted_sums_do_not_carry() -> None:
    # 14 nines but the check digit: every byte of the sum at its largest, next to codes whose sums are small.
    body = "9" * 13
    heavy = body + str(check_digit(body))
    light = "00000000000000"
    assert all_valid_gtins([heavy, light, heavy, "036000291452", heavy])
    assert not all_valid_gtins([heavy, light, body + str((check_digit(body) + 1) % 10), heavy])
