"""Bad rows are rejected with their row number and a reason while the good rows go through; problems
with the whole file raise SourceError with one clear line."""

from __future__ import annotations

import os
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from csvpos_helpers import COLUMNS, read_all
from grocerysync_pos_csv import CsvConfig
from grocerysync_pos_csv.reader import CsvExportReader

from grocerysync.core.errors import SourceError
from grocerysync.core.validation import validate_records

# Every test here also runs with chunks small enough to cut rows and quoted values apart.
pytestmark = pytest.mark.usefixtures("chunk_size")

BOM = b"\xef\xbb\xbf"


async def test_the_bad_export_file(export) -> None:
    """cp1252 with a BOM, bad check digits, a negative price, a missing name and a truncated last line."""
    text = (
        "ItemNo,UPC,Description,Brand,Size,Dept,Price,Taxable,EBT\r\n"  # row 1
        "1001,012345678905,Café molido,Goya,12 oz,GROCERY,4.99,Y,Y\r\n"  # row 2: good
        "1002,012345678906,Bad check digit,Goya,12 oz,GROCERY,4.99,Y,Y\r\n"  # row 3: bad UPC
        "1003,036000291452,Jalapeños,La Costeña,7 oz,GROCERY,-1.29,N,Y\r\n"  # row 4: negative price
        "1004,036000291452,,Dole,3 lb,PRODUCE,2.99,N,Y\r\n"  # row 5: no name
        '1005,,"Crème brûlée, 2 pack",Président,2 ct,DAIRY,$5.49,Y,N\r\n'  # row 6: good
        "1006,036000291452,Trunc"  # row 7: the export was cut off
    )
    raw = BOM + text.encode("cp1252")
    columns = {
        "item_id": "ItemNo",
        "gtin": "UPC",
        "name": "Description",
        "brand": "Brand",
        "size": "Size",
        "department": "Dept",
        "price": "Price",
        "taxable": "Taxable",
        "snap_ebt": "EBT",
    }
    records, read_rejections = await read_all(export(raw, columns=columns))
    items, invalid = validate_records(records)

    assert [(i.item_id, i.name) for i in items] == [("1001", "Café molido"), ("1005", "Crème brûlée, 2 pack")]
    assert str(items[1].price) == "5.49"
    assert items[1].brand == "Président"

    rejections = {r.ref: r for r in [*read_rejections, *invalid]}
    assert set(rejections) == {"row 3", "row 4", "row 5", "row 7"}
    assert rejections["row 3"].item_id == "1002"
    assert "gtin" in rejections["row 3"].reason
    assert "check digit" in rejections["row 3"].reason
    assert "price" in rejections["row 4"].reason
    assert "greater than or equal to 0" in rejections["row 4"].reason
    assert rejections["row 5"].reason == "name: required value is missing"
    assert rejections["row 7"].stage == "read"
    assert rejections["row 7"].item_id == "1006"
    assert rejections["row 7"].reason == "has 3 of 9 columns — the line looks truncated"


async def test_truncated_row_in_the_middle(export) -> None:
    text = "ItemNo,UPC,Description,Price\n1,,Milk,1.99\n2,,Eg\n3,,Tea,2.00\n"
    records, rejected = await read_all(export(text))
    assert [r.data["item_id"] for r in records] == ["1", "3"]
    assert [str(r) for r in rejected] == ["row 3 (item 2): has 3 of 4 columns — the line looks truncated"]


async def test_short_row_that_still_has_every_mapped_column_goes_through(export) -> None:
    text = "ItemNo,Description,Price,Unused\n1,Milk,1.99\n"
    records, rejected = await read_all(
        export(text, columns={"item_id": "ItemNo", "name": "Description", "price": "Price"})
    )
    assert rejected == []
    assert records[0].data == {"item_id": "1", "name": "Milk", "price": Decimal("1.99")}


async def test_row_with_an_unquoted_delimiter_is_rejected(export) -> None:
    text = "ItemNo,UPC,Description,Price\n1,,Apples, red,1.99\n2,,Pears,2.49,,\n"
    records, rejected = await read_all(export(text))
    # Trailing empty cells are harmless; a shifted row is not.
    assert [r.data["item_id"] for r in records] == ["2"]
    assert rejected[0].ref == "row 2"
    assert "has 5 columns but the header has 4" in rejected[0].reason
    assert "unquoted ','" in rejected[0].reason


async def test_unterminated_quote_at_end_of_file(export) -> None:
    text = 'ItemNo,UPC,Description,Price\n1,,Milk,1.99\n2,,"Eggs,2.99\n3,,Tea,1.00\n'
    records, rejected = await read_all(export(text))
    assert [r.data["item_id"] for r in records] == ["1"]
    assert len(rejected) == 1
    assert rejected[0].ref == "row 3"
    assert "never closed" in rejected[0].reason
    assert "lines 3–4" in rejected[0].reason


async def test_malformed_quoting_rejects_only_that_row(export) -> None:
    text = 'ItemNo,UPC,Description,Price\n1,,"Pizza 12" round",1.99\n2,,Tea,1.00\n'
    records, rejected = await read_all(export(text))
    assert [(r.ref, r.data["item_id"]) for r in records] == [("row 3", "2")]
    assert [r.ref for r in rejected] == ["row 2"]
    assert "quot" in rejected[0].reason


async def test_rows_of_empty_cells_and_whitespace_lines_are_skipped(export) -> None:
    text = "ItemNo,UPC,Description,Price\n,,,\n   \n1,,Milk,1.99\n\n"
    records, rejected = await read_all(export(text))
    assert rejected == []
    assert [r.ref for r in records] == ["row 4"]


async def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "exports" / "items.csv"
    config = CsvConfig(path=str(path), columns=COLUMNS)
    with pytest.raises(SourceError) as info:
        await read_all(config)
    message = str(info.value)
    assert message == f"POS export file not found: {path} — check the path in the store's POS connection"


async def test_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a folder, not a file"):
        await read_all(CsvConfig(path=str(tmp_path), columns=COLUMNS))


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_unreadable_file(export) -> None:
    config = export("ItemNo,UPC,Description,Price\n")
    Path(config.path).chmod(0)
    with pytest.raises(SourceError, match="permission denied"):
        CsvExportReader.open(config)


@pytest.mark.parametrize("content", [b"", BOM, b"\r\n\r\n"])
async def test_empty_file(export, content: bytes) -> None:
    config = export(content)
    with pytest.raises(SourceError) as info:
        await read_all(config)
    assert str(info.value) == (f"POS export file is empty: {config.path} — check that the POS export ran and finished")


async def test_mapped_column_missing_from_the_header(export) -> None:
    config = export("ItemNo,UPC,Description,Retail\n1,,Milk,1.99\n", columns={**COLUMNS, "department": "Dept"})
    with pytest.raises(SourceError) as info:
        await read_all(config)
    message = str(info.value)
    assert config.path in message
    assert "column 'Price' (mapped to price)" in message
    assert "column 'Dept' (mapped to department)" in message
    assert "'ItemNo', 'UPC', 'Description', 'Retail'" in message
    assert "\n" not in message


async def test_wrong_delimiter_is_hinted(export) -> None:
    config = export("ItemNo;UPC;Description;Price\n1;;Milk;1,99\n")
    with pytest.raises(SourceError, match="the delimiter is probably not ','"):
        await read_all(config)


async def test_column_number_beyond_the_file_without_header(export) -> None:
    config = export("1,Milk,1.99\n", has_header=False, columns={"item_id": 1, "name": 2, "price": 7})
    with pytest.raises(SourceError, match=r"has 3 column\(s\) in its first row .* price=7"):
        await read_all(config)


async def test_skip_rows_beyond_the_end(export) -> None:
    with pytest.raises(SourceError, match="skip_rows is 5"):
        await read_all(export("junk\nItemNo,UPC,Description,Price\n", skip_rows=5))
