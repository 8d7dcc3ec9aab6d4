"""Test helpers: write items into a SQLite item table the way a POS keeps them.

CHANGE: replace with whatever creates a real data source for your POS (a database file, an export folder,
a local server process). The contract suite calls it through the ``make_source`` fixture.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from grocerysync.core import Item

SCHEMA = """
CREATE TABLE items (
    item_no TEXT PRIMARY KEY,
    upc TEXT,
    plu TEXT,
    description TEXT NOT NULL,
    brand TEXT,
    size TEXT,
    department TEXT,
    price TEXT NOT NULL,
    sale_price TEXT,
    sale_start TEXT,
    sale_end TEXT,
    weighed INTEGER NOT NULL DEFAULT 0,
    qty_on_hand TEXT,
    taxable INTEGER NOT NULL DEFAULT 0,
    food_stamp INTEGER NOT NULL DEFAULT 0,
    min_age INTEGER,
    active INTEGER NOT NULL DEFAULT 1,
    modified_at TEXT
)
"""
COLUMNS = (
    "item_no", "upc", "plu", "description", "brand", "size", "department", "price", "sale_price", "sale_start",
    "sale_end", "weighed", "qty_on_hand", "taxable", "food_stamp", "min_age", "active", "modified_at",
)  # fmt: skip
# Fixed names only, no outside input: building the statement from them is safe.
INSERT = f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608
BASE_TIME = datetime(2026, 1, 5, 8, 30)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def item_row(item: Item, modified: datetime) -> tuple[Any, ...]:
    """One table row for ``item``, as the POS would store it."""
    size = f"{item.size.value} {item.size.unit.value}" if item.size else None
    sale = item.sale
    return (
        item.item_id,
        item.gtin,
        item.plu,
        item.name,
        item.brand,
        size,
        item.department,
        str(item.price),
        _text(sale.price) if sale else None,
        sale.start.isoformat() if sale and sale.start else None,
        sale.end.isoformat() if sale and sale.end else None,
        int(item.sold_by_weight),
        _text(item.stock),
        int(item.taxable),
        int(item.snap_ebt),
        item.min_age,
        int(item.active),
        modified.isoformat(timespec="microseconds"),
    )


def write_items(path: Path, items: Sequence[Item], modified: datetime = BASE_TIME) -> None:
    """Create the item table at ``path`` holding exactly ``items``."""
    with sqlite3.connect(path) as conn:
        conn.execute(SCHEMA)
        conn.executemany(
            INSERT,
            [item_row(i, modified) for i in items],
        )
    conn.close()


def upsert_items(path: Path, items: Sequence[Item]) -> None:
    """Change ``items`` as the POS would: new values and a modified time later than any in the table."""
    with sqlite3.connect(path) as conn:
        latest = conn.execute("SELECT MAX(modified_at) FROM items").fetchone()[0]
        modified = (datetime.fromisoformat(latest) if latest else BASE_TIME) + timedelta(seconds=1)
        conn.executemany(
            INSERT.replace("INSERT", "INSERT OR REPLACE", 1),
            [item_row(i, modified) for i in items],
        )
    conn.close()


@pytest.fixture
def pos_database(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Sequence[Item]], Path]:
    """A factory: a new POS database file holding the given items."""

    def make(items: Sequence[Item]) -> Path:
        path = tmp_path_factory.mktemp("pos") / "store.db"
        write_items(path, items)
        return path

    return make


@pytest.fixture
def pos_update() -> Callable[[Path, Sequence[Item]], None]:
    """Change items in a POS database as the POS would (see :func:`upsert_items`)."""
    return upsert_items
