from datetime import datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from grocerysync.core.items import Item, MultiPrice, Size, SizeUnit, WeightUnit
from grocerysync.core.results import RawRecord
from grocerysync.core.validation import validate_records

BASE = {"item_id": "1001", "name": "Whole Milk", "price": "3.99"}


def test_minimal_item_and_decimal_money() -> None:
    item = Item.model_validate(BASE)
    assert item.price == Decimal("3.99")
    assert isinstance(item.price, Decimal)
    assert item.key == "1001"
    assert item.online
    assert item.active
    assert not item.snap_ebt


def test_float_noise_never_enters_money() -> None:
    item = Item.model_validate({**BASE, "price": "0.10"})
    assert item.price * 3 == Decimal("0.30")


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("12 oz", "12", SizeUnit.OZ),
        ("1.5L", "1.5", SizeUnit.L),
        ("12 fl oz", "12", SizeUnit.FL_OZ),
        ("6 ct", "6", SizeUnit.CT),
        ("2,5 kg", "2.5", SizeUnit.KG),
        ("1 Gallon", "1", SizeUnit.GAL),
    ],
)
def test_size_from_text(text: str, value: str, unit: SizeUnit) -> None:
    size = Size.model_validate(text)
    assert size.value == Decimal(value)
    assert size.unit is unit


def test_size_unknown_unit_names_choices() -> None:
    with pytest.raises(ValidationError, match="not known"):
        Size.model_validate("3 furlongs")


def test_multi_price_from_text() -> None:
    assert MultiPrice.model_validate("2/5.00") == MultiPrice(quantity=2, price=Decimal("5.00"))
    assert MultiPrice.model_validate("3 for $10").quantity == 3
    with pytest.raises(ValidationError):
        MultiPrice.model_validate("1/5")


def test_sale_window_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="ends"):
        Item.model_validate({**BASE, "sale": {"price": "2.99", "start": "2026-11-27", "end": "2026-11-20"}})
    item = Item.model_validate({**BASE, "sale": {"price": "2.99", "start": "2026-11-20", "end": "2026-11-27"}})
    assert item.sale is not None
    assert item.sale.start == datetime(2026, 11, 20)


def test_weighed_item_defaults_to_pounds_and_unit_needs_weighing() -> None:
    assert Item.model_validate({**BASE, "sold_by_weight": "Y"}).weight_unit is WeightUnit.LB
    with pytest.raises(ValidationError, match="sold_by_weight is false"):
        Item.model_validate({**BASE, "weight_unit": "kg"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", "-1"),
        ("gtin", "036000291453"),
        ("plu", "12"),
        ("min_age", "150"),
        ("image_url", "ftp://x"),
        ("name", "   "),
        ("item_id", ""),
    ],
)
def test_bad_values_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        Item.model_validate({**BASE, field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="upc"):
        Item.model_validate({**BASE, "upc": "036000291452"})


def test_batch_validation_keeps_good_rows_and_explains_bad_ones() -> None:
    records = [
        RawRecord("row 2", BASE),
        RawRecord("row 3", {**BASE, "item_id": "1002", "price": "-2.00", "gtin": "036000291453"}),
        RawRecord("row 4", {**BASE, "item_id": "1003"}),
        RawRecord("row 5", {"item_id": "1004", "name": "No price"}),
    ]
    items, rejections = validate_records(records)
    assert [i.item_id for i in items] == ["1001", "1003"]
    assert [(r.ref, r.item_id) for r in rejections] == [("row 3", "1002"), ("row 5", "1004")]
    assert "price" in rejections[0].reason
    assert "check digit" in rejections[0].reason
    assert rejections[1].reason == "price: required value is missing"
    assert all(r.stage == "validate" for r in rejections)


def test_empty_batch() -> None:
    assert validate_records([]) == ([], [])


def test_text_fields_are_stripped() -> None:
    item = Item.model_validate(
        {
            "item_id": " 1 ",
            "name": " Milk ",
            "price": "1",
            "gtin": " 036000291452 ",
            "plu": " 4011 ",
            "brand": " Acme ",
            "department": " Dairy ",
            "image_url": " https://img.example/milk.jpg ",
        }
    )
    assert (item.item_id, item.name, item.gtin, item.plu, item.brand, item.department, item.image_url) == (
        "1",
        "Milk",
        "036000291452",
        "4011",
        "Acme",
        "Dairy",
        "https://img.example/milk.jpg",
    )
