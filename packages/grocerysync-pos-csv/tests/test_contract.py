"""The POS connector contract (grocerysync.core.testing) run against the ``csv`` connector.

The source is a real export file written with the csv module, one column per item field, quoted as a POS
export quotes it; names with commas, quotes, emoji and right-to-left text go through it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from grocerysync.core.items import Item
from grocerysync.core.testing import PosConnectorContract

# Item field -> export column. Every field the connector can read, except extras (whose keys vary by item).
EXPORT_COLUMNS: dict[str, str] = {
    "item_id": "Item No",
    "gtin": "UPC",
    "plu": "PLU",
    "name": "Description",
    "brand": "Brand",
    "size": "Size",
    "department": "Dept",
    "category": "Category",
    "price": "Retail",
    "cost": "Cost",
    "sale.price": "Sale Price",
    "sale.start": "Sale Start",
    "sale.end": "Sale End",
    "multi_price": "Mix Match",
    "sold_by_weight": "Scale",
    "weight_unit": "Scale Unit",
    "stock": "On Hand",
    "taxable": "Tax",
    "snap_ebt": "Food Stamp",
    "wic": "WIC",
    "min_age": "Min Age",
    "bottle_deposit": "Deposit",
    "online": "Web",
    "active": "Active",
    "image_url": "Image",
    "last_changed": "Changed",
}


def _cell(item: Item, field: str) -> str:
    head, _, sub = field.partition(".")
    value: Any = getattr(item, head)
    if sub and value is not None:
        value = getattr(value, sub)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if head == "size":
        return f"{value.value} {value.unit.value}"
    if head == "multi_price":
        return f"{value.quantity}/{value.price}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "value"):  # enums
        return str(value.value)
    return str(value)


def write_export(path: Path, items: Sequence[Item]) -> None:
    """Write ``items`` as a POS export: header row, CRLF line ends, quotes where needed."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(EXPORT_COLUMNS.values())
        for item in items:
            writer.writerow(_cell(item, field) for field in EXPORT_COLUMNS)


class TestCsvConnectorContract(PosConnectorContract):
    connector_name = "csv"
    supports_incremental = False
    compared_fields = tuple(f for f in EXPORT_COLUMNS if f != "item_id")

    @pytest.fixture
    def make_source(self, tmp_path_factory: pytest.TempPathFactory) -> Callable[[Sequence[Item]], dict[str, Any]]:
        def make(items: Sequence[Item]) -> dict[str, Any]:
            path = tmp_path_factory.mktemp("export") / "items.csv"
            write_export(path, items)
            # Only a blank cell means "no value": item names such as "NULL" or "N/A" are real names here.
            return {"path": str(path), "columns": EXPORT_COLUMNS, "empty_values": [""]}

        return make

    @pytest.fixture
    def unreachable_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "no-export-today.csv"), "columns": EXPORT_COLUMNS}
