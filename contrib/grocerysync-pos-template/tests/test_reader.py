"""Tests of what is particular to this connector (the contract suite covers the rest).

CHANGE: test your POS's quirks here: its odd encodings, number formats, barcode storage, error cases.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from grocerysync_pos_template.config import SqliteTableConfig
from grocerysync_pos_template.reader import check, read

from grocerysync.core import ReadRequest, SourceError
from grocerysync.core.items import Item
from grocerysync.core.validation import validate_records


async def read_all(config: SqliteTableConfig, cursor: str | None = None) -> list:
    return [batch async for batch in read(config, ReadRequest(batch_size=2, cursor=cursor))]


async def test_numeric_upc_column_with_zero_padded_style(tmp_path: Path) -> None:
    """Many POS keep UPCs in INTEGER columns, which drop the leading zero; zero_padded restores it."""
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE plu_file (code INTEGER, descr TEXT, retail REAL, upc INTEGER)")
        conn.executemany(
            "INSERT INTO plu_file VALUES (?, ?, ?, ?)",
            [(1, "Cola 12 oz", 1.25, 12345678905), (2, "Bad code", 2.5, 12345678900)],
        )
    conn.close()
    config = SqliteTableConfig(
        path=str(path),
        table="plu_file",
        columns={"item_id": "code", "name": "descr", "price": "retail", "gtin": "upc"},
        modified_column=None,
        gtin_style="zero_padded",
    )
    batches = await read_all(config)
    records = [r for b in batches for r in b.records]
    rejected = [r for b in batches for r in b.rejected]
    items, _ = validate_records(records)
    assert [(i.item_id, i.gtin, str(i.price)) for i in items] == [("1", "012345678905", "1.25")]
    assert len(rejected) == 1
    assert rejected[0].ref == "table plu_file, code 2"
    assert "check digit" in rejected[0].reason
    assert all(b.cursor is None for b in batches)  # no modified column: no cursor


async def test_missing_column_names_the_column_and_lists_the_table(
    pos_database: Callable[[Sequence[Item]], Path],
) -> None:
    path = pos_database([])
    config = SqliteTableConfig(path=str(path), columns={"item_id": "item_no", "name": "descr", "price": "price"})
    with pytest.raises(SourceError) as info:
        await read_all(config)
    message = str(info.value)
    assert "no column 'descr' (mapped to name)" in message
    assert "item_no, upc, plu, description" in message
    result = await check(config)
    assert not result.ok
    assert result.message == message


async def test_a_cursor_from_the_middle_resumes_after_the_last_row_passed_on(
    pos_database: Callable[[Sequence[Item]], Path],
) -> None:
    """Rows changed in the same instant still come back: the cursor holds the time and the key."""
    items = [Item(item_id=f"{n}", name=f"Item {n}", price="1.00", plu=f"{4000 + n}") for n in range(5)]
    config = SqliteTableConfig(path=str(pos_database(items)))  # every row has the same modified_at
    batches = await read_all(config)
    middle = batches[0].cursor  # after items 0 and 1
    rest = await read_all(config, cursor=middle)
    assert [r.data["item_id"] for b in rest for r in b.records] == ["2", "3", "4"]


def test_config_refuses_unknown_fields_and_unsafe_names() -> None:
    with pytest.raises(ValueError, match="'colour' is not an item field"):
        SqliteTableConfig(path="x.db", columns={"item_id": "a", "name": "b", "price": "c", "colour": "d"})
    with pytest.raises(ValueError, match="not a plain table or column name"):
        SqliteTableConfig(path="x.db", table='items"; DROP TABLE items; --')
