"""Contract support for destinations that deliver feed files made with :mod:`grocerysync.core.feeds`.

:class:`FeedDestinationContract` is :class:`~grocerysync.core.testing.DestinationContract` with ``read_back``
done for you: the author points the ``feed_folder`` fixture at the folder where committed files land (a
local folder, or the directory a test SFTP server serves) and sets ``feed_format``. What the destination
"holds" is what a platform would hold after taking in every committed feed file, oldest first: a full file
replaces the catalogue, a delta file upserts and deletes. ``.part`` files are not feed files and are ignored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest

from grocerysync.core.feeds import FeedFormat, parse_feed_file_name
from grocerysync.core.items import Item, WeightUnit
from grocerysync.core.testing.destination import DestinationContract

__all__ = ["CSV_FIELDS", "FeedDestinationContract", "expected_in_csv_feed", "held_in_feed_folder"]

#: The csv feed's columns -> the item field each carries (``lookup_code``, ``cost_unit`` and ``available``
#: have no single item field and keep their names).
CSV_FIELDS: dict[str, str] = {
    "retailer_reference_code": "item_id",
    "lookup_code": "lookup_code",
    "item_name": "name",
    "brand_name": "brand",
    "size": "size.value",
    "size_uom": "size.unit",
    "price": "price",
    "cost_unit": "cost_unit",
    "sale_price": "sale.price",
    "sale_start_at": "sale.start",
    "sale_end_at": "sale.end",
    "multi_buy_quantity": "multi_price.quantity",
    "multi_buy_price": "multi_price.price",
    "department": "department",
    "category": "category",
    "available": "available",
    "min_age": "min_age",
    "snap_eligible": "snap_ebt",
    "wic_eligible": "wic",
    "taxable": "taxable",
    "bottle_deposit": "bottle_deposit",
    "remote_image_url": "image_url",
    "stock": "stock",
    "last_changed_at": "last_changed",
}

# The csv feed prices weighed goods per lb or kg; per-oz and per-g prices are converted and rounded to cents.
_PER_UNIT = {WeightUnit.OZ: ("lb", Decimal(16)), WeightUnit.G: ("kg", Decimal(1000))}


def expected_in_csv_feed(item: Item) -> dict[str, Any]:
    """What the csv feed's row for ``item`` says, keyed as :func:`held_in_feed_folder` returns it."""
    factor: Decimal | None = None
    unit = item.weight_unit.value if item.weight_unit else "each"
    if item.weight_unit is not None and item.weight_unit in _PER_UNIT:
        unit, factor = _PER_UNIT[item.weight_unit]

    def per_unit(value: Decimal | None) -> Decimal | None:
        return value if value is None or factor is None else (value * factor).quantize(Decimal("0.01"))

    sale, size, multi = item.sale, item.size, item.multi_price
    return {
        "lookup_code": item.gtin or item.plu,
        "name": item.name,
        "brand": item.brand,
        "size.value": size.value if size else None,
        "size.unit": size.unit if size else None,
        "price": per_unit(item.price),
        "cost_unit": unit,
        "sale.price": per_unit(sale.price) if sale else None,
        "sale.start": sale.start if sale else None,
        "sale.end": sale.end if sale else None,
        "multi_price.quantity": multi.quantity if multi else None,
        "multi_price.price": multi.price if multi else None,
        "department": item.department,
        "category": item.category,
        "available": "TRUE" if item.active and item.online else "FALSE",
        "min_age": item.min_age,
        "snap_ebt": item.snap_ebt,
        "wic": item.wic,
        "taxable": item.taxable,
        "bottle_deposit": item.bottle_deposit,
        "image_url": item.image_url,
        "stock": item.stock,
        "last_changed": item.last_changed,
    }


def _fold_csv(path: Path, held: dict[str, dict[str, Any]]) -> None:
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            key = row["retailer_reference_code"]
            if row["deleted"] == "TRUE":
                held.pop(key, None)
            else:
                held[key] = {field: row[column] for column, field in CSV_FIELDS.items()}


def _fold_jsonl(path: Path, held: dict[str, dict[str, Any]]) -> None:
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["op"] == "delete":
            held.pop(entry["item_id"], None)
        else:
            held[entry["item"]["item_id"]] = entry["item"]


def held_in_feed_folder(folder: Path, fmt: FeedFormat | str) -> dict[str, dict[str, Any]]:
    """What a platform holds after taking in every committed feed file in ``folder``, oldest first.

    Records are keyed by item field names (csv columns are renamed with :data:`CSV_FIELDS`).
    """
    fold = _fold_csv if FeedFormat(fmt) is FeedFormat.CSV else _fold_jsonl
    feeds = [parsed for p in folder.iterdir() if (parsed := parse_feed_file_name(p.name)) is not None]
    # Names sort by the second they were made in; the suite runs several jobs a second, and within a
    # second the file finished last belongs to the later run.
    feeds.sort(key=lambda f: (f.stamp, (folder / f.name).stat().st_mtime_ns))
    held: dict[str, dict[str, Any]] = {}
    for feed in feeds:
        if feed.mode == "full":
            held = {}
        fold(folder / feed.name, held)
    return held


class FeedDestinationContract(DestinationContract):
    """The destination contract for feed-file destinations: override ``feed_folder`` and set ``feed_format``.

    With ``csv`` the suite checks every column of the Instacart-style format; with ``jsonl`` every item field.
    """

    feed_format: ClassVar[FeedFormat] = FeedFormat.CSV

    @pytest.fixture
    def feed_folder(self) -> Path:
        """The local folder where the destination's committed feed files appear."""
        pytest.fail(f"{type(self).__name__} must override the feed_folder fixture")

    def expected(self, item: Item) -> dict[str, Any]:
        if self.feed_format is FeedFormat.CSV:
            return expected_in_csv_feed(item)
        # The JSON Lines feed carries the whole item.
        return {name: getattr(item, name) for name in Item.model_fields if name != "item_id"}

    @pytest.fixture
    def read_back(self, feed_folder: Path) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def held() -> dict[str, Any]:
            return held_in_feed_folder(feed_folder, self.feed_format)

        return held
