"""How POS systems write CSV: delimiters, quoting, headers, junk lines, number and date conventions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from csvpos_helpers import read_all

from grocerysync.core.codes import check_digit
from grocerysync.core.items import Item, SizeUnit
from grocerysync.core.validation import validate_records

# Every test here also runs with chunks small enough to cut rows and quoted values apart.
pytestmark = pytest.mark.usefixtures("chunk_size")


def upc(body: str) -> str:
    return body + str(check_digit(body))


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("configured", ["explicit", "auto"])
async def test_delimiters(export, delimiter: str, configured: str) -> None:
    lines = [["ItemNo", "UPC", "Description", "Price"]]
    lines += [[str(n), upc(f"0360002914{n}"), f"Item {n}", f"{n}.99"] for n in range(5)]
    text = "".join(delimiter.join(line) + "\r\n" for line in lines)
    setting = delimiter if configured == "explicit" else "auto"
    records, rejected = await read_all(export(text, delimiter=setting))
    assert rejected == []
    assert [r.data["price"] for r in records] == [Decimal(f"{n}.99") for n in range(5)]


async def test_tab_can_be_written_as_a_word(export) -> None:
    records, _ = await read_all(export("ItemNo\tUPC\tDescription\tPrice\n1\t\tMilk\t1.00\n", delimiter="tab"))
    assert records[0].data == {"item_id": "1", "name": "Milk", "price": Decimal("1.00")}


async def test_auto_delimiter_with_commas_inside_quoted_values(export) -> None:
    text = 'ItemNo;UPC;Description;Price\n1;;"Apples, red; 3 lb";1,99\n2;;"Pears, green";2,49\n'
    records, rejected = await read_all(export(text, delimiter="auto", decimal_comma=True))
    assert rejected == []
    assert [r.data["name"] for r in records] == ["Apples, red; 3 lb", "Pears, green"]


async def test_quoted_newlines_keep_the_row_numbers_right(export) -> None:
    text = (
        "ItemNo,UPC,Description,Price\r\n"
        '1,,"Two-line\r\nname",1.00\r\n'
        '2,,"Three\r\nline\r\nname",2.00\r\n'
        "3,,Plain,3.00\r\n"
        "\r\n"
        "4,,After a blank line,4.00\r\n"
    )
    records, rejected = await read_all(export(text))
    assert rejected == []
    assert [(r.ref, r.data["item_id"]) for r in records] == [
        ("row 2", "1"),
        ("row 4", "2"),
        ("row 7", "3"),
        ("row 9", "4"),
    ]
    assert records[1].data["name"] == "Three\r\nline\r\nname"


async def test_custom_quotechar(export) -> None:
    records, _ = await read_all(export("ItemNo,UPC,Description,Price\n1,,'Milk, 2%',1.00\n", quotechar="'"))
    assert records[0].data["name"] == "Milk, 2%"


async def test_no_header_and_numbered_columns(export) -> None:
    text = "1,Milk,1.99\n2,Bread,2.49\n"
    config = export(text, has_header=False, columns={"item_id": 1, "name": "2", "price": 3})
    records, rejected = await read_all(config)
    assert rejected == []
    assert [(r.ref, r.data) for r in records] == [
        ("row 1", {"item_id": "1", "name": "Milk", "price": Decimal("1.99")}),
        ("row 2", {"item_id": "2", "name": "Bread", "price": Decimal("2.49")}),
    ]


async def test_skip_rows_counts_in_row_numbers(export) -> None:
    text = 'Item export "STORE 12\nprinted 05/01/2024\nItemNo,UPC,Description,Price\n1,,Milk,1.99\n'
    records, rejected = await read_all(export(text, skip_rows=2))
    assert rejected == []
    assert [(r.ref, r.data["name"]) for r in records] == [("row 4", "Milk")]


async def test_header_names_match_ignoring_case_and_spaces(export) -> None:
    text = " itemno , upc,DESCRIPTION ,price\n1,,Milk,1.99\n"
    records, _ = await read_all(export(text))
    assert records[0].data == {"item_id": "1", "name": "Milk", "price": Decimal("1.99")}


async def test_classic_mac_line_endings(export) -> None:
    records, rejected = await read_all(export("ItemNo,UPC,Description,Price\r1,,Milk,1.99\r2,,Eggs,2.99\r"))
    assert rejected == []
    assert [(r.ref, r.data["name"]) for r in records] == [("row 2", "Milk"), ("row 3", "Eggs")]


async def test_decimal_comma_and_currency(export) -> None:
    text = "ItemNo;UPC;Description;Price;Cost;Stock\n1;;Käse;1,99 €;€0,80;1.234,5\n2;;Wein;1.234,50€;1 000,00;-3\n"
    columns = {"item_id": "ItemNo", "name": "Description", "price": "Price", "cost": "Cost", "stock": "Stock"}
    records, _ = await read_all(export(text, delimiter=";", decimal_comma=True, columns=columns))
    assert [(r.data["price"], r.data["cost"], r.data["stock"]) for r in records] == [
        (Decimal("1.99"), Decimal("0.80"), Decimal("1234.5")),
        # A sign is left for the item model to read (or, for a price, to refuse).
        (Decimal("1234.50"), Decimal("1000.00"), "-3"),
    ]
    items, rejected = validate_records(records)
    assert rejected == []
    assert str(items[1].price) == "1234.50"


async def test_currency_symbols_are_stripped_by_default_and_configurable(export) -> None:
    text = "ItemNo,UPC,Description,Price\n1,,Milk,$1.99\n2,,Tea,£ 2.50\n3,,Rum,CHF 12.00\n"
    records, _ = await read_all(export(text))
    assert [r.data["price"] for r in records] == [Decimal("1.99"), Decimal("2.50"), "CHF 12.00"]
    records, _ = await read_all(export(text, currency_symbols=["CHF", "$", "£"]))
    assert [r.data["price"] for r in records] == [Decimal("1.99"), Decimal("2.50"), Decimal("12.00")]


async def test_date_format_for_sale_dates_and_last_changed(export) -> None:
    text = (
        "ItemNo,UPC,Description,Price,Sale,From,To,Changed\n"
        "1,,Milk,1.99,1.49,05/01/2024,05/31/2024,04/30/2024\n"
        "2,,Eggs,2.99,,,,\n"
    )
    columns = {
        "item_id": "ItemNo",
        "name": "Description",
        "price": "Price",
        "sale.price": "Sale",
        "sale.start": "From",
        "sale.end": "To",
        "last_changed": "Changed",
    }
    records, rejected = await read_all(export(text, columns=columns, date_format="%m/%d/%Y"))
    assert rejected == []
    assert records[0].data["sale"] == {
        "price": Decimal("1.49"),
        "start": datetime(2024, 5, 1),
        "end": datetime(2024, 5, 31),
    }
    assert records[0].data["last_changed"] == datetime(2024, 4, 30)
    assert "sale" not in records[1].data
    items, _ = validate_records(records)
    assert items[0].sale is not None
    assert items[0].sale.end == datetime(2024, 5, 31)


async def test_iso_dates_pass_through_to_the_item_model(export) -> None:
    text = "ItemNo,UPC,Description,Price,Sale,From\n1,,Milk,1.99,1.49,2024-05-01T08:00:00\n"
    columns = {"item_id": "ItemNo", "name": "Description", "price": "Price", "sale.price": "Sale", "sale.start": "From"}
    records, _ = await read_all(export(text, columns=columns))
    items, rejected = validate_records(records)
    assert rejected == []
    assert items[0].sale is not None
    assert items[0].sale.start == datetime(2024, 5, 1, 8)


async def test_bad_date_under_date_format_rejects_the_row(export) -> None:
    text = "ItemNo,UPC,Description,Price,Changed\n1,,Milk,1.99,2024-05-01\n2,,Eggs,2.99,05/02/2024\n"
    columns = {"item_id": "ItemNo", "name": "Description", "price": "Price", "last_changed": "Changed"}
    records, rejected = await read_all(export(text, columns=columns, date_format="%m/%d/%Y"))
    assert [r.data["item_id"] for r in records] == ["2"]
    assert [(r.ref, r.item_id, r.stage) for r in rejected] == [("row 2", "1", "read")]
    assert "last_changed" in rejected[0].reason
    assert "'2024-05-01'" in rejected[0].reason
    assert "%m/%d/%Y" in rejected[0].reason


@pytest.mark.parametrize(
    ("style", "stored", "expected"),
    [
        ("strict", "036000291452", "036000291452"),
        ("zero_padded", "00000036000291452", "036000291452"),
        ("zero_padded", "0000004006381333931", "4006381333931"),
        ("no_check_digit", "03600029145", "036000291452"),
        ("no_check_digit", "0000003600029145", "036000291452"),
    ],
)
async def test_gtin_styles(export, style: str, stored: str, expected: str) -> None:
    records, rejected = await read_all(
        export(f"ItemNo,UPC,Description,Price\n1,{stored},Milk,1.99\n", gtin_style=style)
    )
    assert rejected == []
    items, invalid = validate_records(records)
    assert invalid == []
    assert items[0].gtin == expected


async def test_bad_barcode_under_a_non_strict_style_rejects_the_row(export) -> None:
    text = "ItemNo,UPC,Description,Price\n1,00000036000291453,Milk,1.99\n2,ABC,Eggs,2.99\n3,00000036000291452,Tea,1\n"
    records, rejected = await read_all(export(text, gtin_style="zero_padded"))
    assert [r.data["item_id"] for r in records] == ["3"]
    assert [(r.ref, r.item_id) for r in rejected] == [("row 2", "1"), ("row 3", "2")]
    assert "check digit" in rejected[0].reason
    assert "digits only" in rejected[1].reason
    assert all(r.reason.startswith("gtin:") for r in rejected)


async def test_flags_use_true_and_false_values(export) -> None:
    text = (
        "ItemNo,UPC,Description,Price,Tax,EBT,Web,Weighed\n"
        "1,,Milk,1.99,Y,x,yes,N\n"
        "2,,Eggs,2.99,n,,No,TRUE\n"
        "3,,Odd,2.99,maybe,,,\n"
    )
    columns = {
        "item_id": "ItemNo",
        "name": "Description",
        "price": "Price",
        "taxable": "Tax",
        "snap_ebt": "EBT",
        "online": "Web",
        "sold_by_weight": "Weighed",
    }
    records, _ = await read_all(export(text, columns=columns))
    flags = [{k: r.data.get(k) for k in ("taxable", "snap_ebt", "online", "sold_by_weight")} for r in records]
    assert flags[0] == {"taxable": True, "snap_ebt": True, "online": True, "sold_by_weight": False}
    assert flags[1] == {"taxable": False, "snap_ebt": False, "online": False, "sold_by_weight": True}
    # Unknown text goes on, and validation names the field.
    assert flags[2]["taxable"] == "maybe"
    _, rejected = validate_records(records)
    assert [r.ref for r in rejected] == ["row 4"]
    assert "taxable" in rejected[0].reason


async def test_custom_flag_values(export) -> None:
    text = "ItemNo,UPC,Description,Price,Tax\n1,,Milk,1.99,J\n2,,Eggs,2.99,-\n"
    columns = {"item_id": "ItemNo", "name": "Description", "price": "Price", "taxable": "Tax"}
    config = export(text, columns=columns, true_values=["J"], false_values=["-"])
    records, _ = await read_all(config)
    assert [r.data["taxable"] for r in records] == [True, False]


async def test_empty_values_leave_the_field_unset(export) -> None:
    text = "ItemNo,UPC,Description,Price,Brand\n1,NULL,Milk,1.99,N/A\n2,,Eggs,2.99,-\n"
    columns = {"item_id": "ItemNo", "gtin": "UPC", "name": "Description", "price": "Price", "brand": "Brand"}
    records, _ = await read_all(export(text, columns=columns))
    assert records[0].data == {"item_id": "1", "name": "Milk", "price": Decimal("1.99")}
    records, _ = await read_all(export(text, columns=columns, empty_values=["", "-", "NULL", "N/A"]))
    assert "brand" not in records[1].data


async def test_structured_fields_and_extras(export) -> None:
    text = (
        "ItemNo,Description,Price,Qty,Value,Unit,Multi,MultiQty,MultiPrice,Aisle,Shelf,Unit Of Sale\n"
        "1,Milk,1.99,10,1,GAL,,2,$5.00,A3,,LB\n"
        "2,Eggs,2.99,,12,,2/5.00,,,,top,\n"
    )
    columns = {
        "item_id": "ItemNo",
        "name": "Description",
        "price": "Price",
        "stock": "Qty",
        "size.value": "Value",
        "size.unit": "Unit",
        "multi_price.quantity": "MultiQty",
        "multi_price.price": "MultiPrice",
        "extras.aisle": "Aisle",
        "extras.shelf": "Shelf",
    }
    records, _ = await read_all(export(text, columns=columns))
    first, second = records[0].data, records[1].data
    assert first["size"] == "1 GAL"
    assert first["multi_price"] == {"quantity": "2", "price": Decimal("5.00")}
    assert first["extras"] == {"aisle": "A3"}
    # Half a size stays a dict, so validation says which part is missing.
    assert second["size"] == {"value": "12"}
    assert second["extras"] == {"shelf": "top"}
    assert "multi_price" not in second
    items, rejected = validate_records(records)
    assert items[0].size is not None
    assert items[0].size.unit is SizeUnit.GAL
    assert [r.ref for r in rejected] == ["row 3"]
    assert "size.unit" in rejected[0].reason


async def test_multi_price_text_and_weight_unit(export) -> None:
    text = 'ItemNo,Description,Price,Deal,Weighed,Per\n1,Bananas,0.59,"3/1,00",Y,LB\n'
    columns = {
        "item_id": "ItemNo",
        "name": "Description",
        "price": "Price",
        "multi_price": "Deal",
        "sold_by_weight": "Weighed",
        "weight_unit": "Per",
    }
    records, _ = await read_all(export(text, columns=columns, decimal_comma=True))
    assert records[0].data["multi_price"] == "3/1.00"
    items, rejected = validate_records(records)
    assert rejected == []
    assert isinstance(items[0], Item)
    assert items[0].multi_price is not None
    assert items[0].multi_price.quantity == 3
    assert items[0].weight_unit is not None
    assert items[0].weight_unit.value == "lb"
