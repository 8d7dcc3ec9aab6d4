"""The connector as the agent sees it: loaded through its entry point, its config form and check()."""

from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path

import pytest
from csvpos_helpers import COLUMNS
from grocerysync_pos_csv import CsvConfig, check
from grocerysync_pos_csv.config import CsvConfig as ConfigModel

from grocerysync.core.config import parse_config
from grocerysync.core.errors import ConfigError
from grocerysync.core.manager import PluginManager


def test_loads_through_its_entry_point() -> None:
    manager = PluginManager(autoload=True, disabled=[], strict=True)
    connector = manager.pos_connector("csv")
    assert connector.config_model is ConfigModel
    assert connector.supports_incremental is False
    assert connector.plugin == "grocerysync-pos-csv"
    assert any(info.name == "csv" and info.kind == "pos" for info in manager.infos())


async def test_loaded_connector_reads(export) -> None:
    connector = PluginManager(strict=True).pos_connector("csv")
    config = export("ItemNo,UPC,Description,Price\n1,,Milk,1.99\n")
    from grocerysync.core.records import ReadRequest

    batches = [b async for b in connector.read(config, ReadRequest())]
    assert [r.data for b in batches for r in b.records] == [{"item_id": "1", "name": "Milk", "price": Decimal("1.99")}]


def test_every_config_field_is_documented_for_the_form() -> None:
    schema = CsvConfig.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) >= {"path", "encoding", "delimiter", "columns", "gtin_style", "empty_values"}
    undocumented = [name for name, prop in schema["properties"].items() if not prop.get("description")]
    assert undocumented == []


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"item_id": "A", "name": "B"}, "required field(s) price"),
        ({**COLUMNS, "prise": "P"}, "'prise' is not an item field"),
        ({**COLUMNS, "size.weight": "S"}, "size has the sub-fields value, unit"),
        ({**COLUMNS, "extras": "S"}, "extras.<name>"),
        ({**COLUMNS, "sale": "S"}, "sale.price"),
        ({**COLUMNS, "brand.x": "S"}, "only size, sale, multi_price and extras have sub-fields"),
        ({**COLUMNS, "size": "S", "size.unit": "U"}, "not both"),
        ({**COLUMNS, "brand": 0}, "column numbers start at 1"),
    ],
)
def test_column_mapping_is_checked(columns: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CsvConfig, {"path": "items.csv", "columns": columns}, where="csv source config")
    assert expected in str(info.value)
    assert info.value.errors[0]["field"] == "csv source config.columns"


def test_names_need_a_header() -> None:
    with pytest.raises(ConfigError, match="must be 1-based column numbers; these are names: name='Desc'"):
        parse_config(
            CsvConfig,
            {"path": "x.csv", "has_header": False, "columns": {"item_id": 1, "name": "Desc", "price": "3"}},
            where="config",
        )


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="colums"):
        parse_config(CsvConfig, {"path": "x.csv", "columns": COLUMNS, "colums": {}}, where="config")


async def test_check_reports_size_and_age_without_reading_the_file(export) -> None:
    config = export("ItemNo,UPC,Description,Price\n" + "1,,Milk,1.99\n" * 2000)
    result = await check(config)
    assert result.ok
    assert result.message.startswith("items.csv: 25.4 KB, modified ")
    assert "(just now)" in result.message
    assert "the header (row 1) has all 4 mapped columns" in result.message


async def test_check_warns_about_a_stale_file(export) -> None:
    config = export("ItemNo,UPC,Description,Price\n1,,Milk,1.99\n")
    old = time.time() - 3 * 86400
    os.utime(config.path, (old, old))
    result = await check(config)
    assert result.ok
    assert "(3 days ago)" in result.message
    assert "more than a day old" in result.message


async def test_check_fails_with_the_reason(export, tmp_path: Path) -> None:
    missing = await check(CsvConfig(path=str(tmp_path / "nope.csv"), columns=COLUMNS))
    assert not missing.ok
    assert "POS export file not found" in missing.message
    bad_header = await check(export("ItemNo,UPC,Description\n"))
    assert not bad_header.ok
    assert "column 'Price' (mapped to price) not in the header" in bad_header.message
