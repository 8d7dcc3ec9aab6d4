"""Job mapping (value maps, defaults, overrides) and every filter operator, through the pipeline."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ListSource, RecordingDestination, make_job

from grocerysync.agent.mapping import ItemShaper
from grocerysync.core import Item
from grocerysync.core.jobs import Filter, Mapping

ROWS: list[dict[str, Any]] = [
    {"item_id": "A", "name": "Gala Apples", "price": "1.49", "department": "10", "sold_by_weight": True},
    {"item_id": "B", "name": "Whole Milk", "price": "3.99", "department": "20", "size": "1 gal", "brand": "Dairyco"},
    {"item_id": "C", "name": "Lager 6pk", "price": "9.99", "department": "30", "min_age": 21, "extras": {"aisle": 7}},
    {"item_id": "D", "name": "Bananas", "price": "0.59", "department": "10", "active": False},
]


def _items() -> list[Item]:
    return [Item.model_validate(r) for r in ROWS]


async def test_value_maps_defaults_and_overrides(export, source: ListSource, dest: RecordingDestination) -> None:
    source.rows = [dict(r) for r in ROWS]
    mapping = {
        "value_maps": {"department": {"10": "Produce", "20": "Dairy"}, "weight_unit": {"lb": "kg"}},
        "defaults": {"brand": "Store Brand", "size.unit": "each", "extras.aisle": 1},
        "overrides": {"online": False, "taxable": True},
    }
    summary = await export(make_job(mapping=mapping))
    assert summary.status == "succeeded", summary.rejections
    a, b, c = dest.items["A"], dest.items["B"], dest.items["C"]
    assert (a.department, b.department, c.department) == ("Produce", "Dairy", "30")  # unmapped kept
    assert a.weight_unit is not None
    assert a.weight_unit.value == "kg"
    assert (a.brand, b.brand) == ("Store Brand", "Dairyco")
    assert a.size is None
    assert b.size is not None
    assert b.size.unit.value == "gal"
    assert (a.extras["aisle"], c.extras["aisle"]) == (1, 7)
    assert all(not i.online and i.taxable for i in dest.items.values())


async def test_mapping_that_breaks_an_item_rejects_it_naming_the_field(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    source.rows = [dict(r) for r in ROWS]
    summary = await export(make_job(mapping={"value_maps": {"department": {"30": "x" * 300}}}))
    assert summary.rejected == 1
    assert summary.sent == 3
    rejection = summary.rejections[0]
    assert rejection["item_id"] == "C"
    assert rejection["stage"] == "map"
    assert rejection["ref"] == "row 4"
    assert "mapping.value_maps.department" in rejection["reason"]
    assert "255" in rejection["reason"]


@pytest.mark.parametrize(
    ("spec", "kept"),
    [
        ({"field": "department", "op": "eq", "value": "10"}, "AD"),
        ({"field": "active", "op": "eq", "value": True}, "ABC"),
        ({"field": "price", "op": "eq", "value": 3.99}, "B"),
        ({"field": "department", "op": "ne", "value": "10"}, "BC"),
        ({"field": "department", "op": "in", "value": ["20", "30"]}, "BC"),
        ({"field": "department", "op": "not_in", "value": ["20", "30"]}, "AD"),
        ({"field": "price", "op": "gt", "value": "3.99"}, "C"),
        ({"field": "price", "op": "ge", "value": "3.99"}, "BC"),
        ({"field": "price", "op": "lt", "value": 1.49}, "D"),
        ({"field": "price", "op": "le", "value": 1.49}, "AD"),
        ({"field": "min_age", "op": "ge", "value": 18}, "C"),
        ({"field": "name", "op": "contains", "value": "APPLE"}, "A"),
        ({"field": "brand", "op": "exists"}, "B"),
        ({"field": "brand", "op": "missing"}, "ACD"),
        ({"field": "size.unit", "op": "eq", "value": "gal"}, "B"),
        ({"field": "extras.aisle", "op": "eq", "value": 7}, "C"),
        ({"field": "extras.aisle", "op": "missing"}, "ABD"),
    ],
)
def test_filter_ops(spec: dict[str, Any], kept: str) -> None:
    shaper = ItemShaper(Mapping(), [Filter.model_validate(spec)])
    passed, dropped, failed = shaper.apply(_items())
    assert "".join(i.item_id for i in passed) == kept
    assert len(passed) + len(dropped) == 4
    assert failed == []


async def test_filters_count_and_newly_filtered_items_are_removed(
    export, source: ListSource, dest: RecordingDestination
) -> None:
    source.rows = [dict(r) for r in ROWS]
    job = make_job(filters=[{"field": "active", "op": "eq", "value": True}], options={"max_removal_ratio": 0.5})
    summary = await export(job)
    assert (summary.sent, summary.filtered) == (3, 1)
    assert sorted(dest.items) == ["A", "B", "C"]
    again = await export(job)
    assert (again.sent, again.filtered, again.unchanged) == (0, 1, 3)
    # An item that stops passing the filters comes off the platform.
    source.rows[1]["active"] = False
    third = await export(job)
    assert third.removed == 1
    assert sorted(dest.items) == ["A", "C"]
