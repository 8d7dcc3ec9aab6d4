"""Plain numbers in price, cost, deposit and stock columns come as shared Decimals; nothing else changes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from csvpos_helpers import read_all
from grocerysync_pos_csv import CsvConfig
from grocerysync_pos_csv.rows import DecimalTexts
from hypothesis import example, given
from hypothesis import strategies as st

from grocerysync.core.results import RawRecord
from grocerysync.core.validation import validate_records

PLAIN = ["0", "0.0", "6.39", "1.50", "999999.9999", "1000000.00", "123456789", "0.000001", "12345678901234567890"]
# Plain, but their Decimal prints otherwise (7, 1E-7): they stay text, so that messages show what the POS wrote.
PRINTED_OTHERWISE = ["007", "01000000", "0.0000001", "00.5"]
NOT_PLAIN = ["", " 5", "5 ", "1_000", "1e3", "-1", "+1", "NaN", "Infinity", ".5", "5.", "1.2.3", "\u0661\u0662", "1,5"]


def test_a_plain_number_becomes_its_decimal_and_anything_else_stays_the_same_text() -> None:
    texts = DecimalTexts()
    for text in PLAIN:
        value = texts.convert(text, text)
        assert isinstance(value, Decimal)
        assert value == Decimal(text)
        assert str(value) == str(Decimal(text))  # the same exponent: "1.50" stays 1.50
    for text in NOT_PLAIN + PRINTED_OTHERWISE:
        assert texts.convert(text, text) is text
        assert texts.get(text) is text  # remembered as it is, so the next row with it costs a look-up


def test_each_text_is_converted_once_and_remembered_under_the_text_in_the_file() -> None:
    texts = DecimalTexts()
    first = texts.convert("$6.39", "6.39")
    assert texts.get("$6.39") is first
    assert texts.get("6.39") is None  # remembered as the file has it, which is what the next row looks up
    assert texts.convert("1.234,50 €", "1234.50") == Decimal("1234.50")
    assert texts.convert("$-1", "-1") == "-1"
    assert texts.get("$-1") == "-1"  # the converted text: what the item model got the first time


def test_only_the_first_texts_are_remembered() -> None:
    texts = DecimalTexts(size=3)
    for n in range(5):
        assert texts.convert(str(n), str(n)) == n
    assert [texts.get(str(n)) for n in range(5)] == [0, 1, 2, None, None]
    assert texts.convert("4", "4") == 4  # still converted, only not kept


async def test_rows_with_the_same_number_share_one_decimal(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("Id,Name,Price,Stock\n1,Milk,$2.49,12\n2,Tea,$2.49,12\n3,Rum,2.49,-1\n4,Gin,abc,\n")
    config = CsvConfig(path=str(path), columns={"item_id": "Id", "name": "Name", "price": "Price", "stock": "Stock"})
    records, rejected = await read_all(config)
    assert rejected == []
    milk, tea, rum, gin = (r.data for r in records)
    assert milk["price"] == Decimal("2.49")
    assert tea["price"] is milk["price"]
    assert tea["stock"] is milk["stock"] == Decimal(12)
    assert rum["price"] == milk["price"]
    assert rum["stock"] == "-1"  # signed: the item model reads it
    assert gin["price"] == "abc"  # the item model refuses it, in its own words
    items, rejections = validate_records(records)
    assert [i.item_id for i in items] == ["1", "2", "3"]
    assert items[2].stock == Decimal(-1)
    assert [r.ref for r in rejections] == ["row 5"]
    assert "price" in rejections[0].reason


number_texts = st.one_of(
    st.sampled_from(PLAIN + NOT_PLAIN + PRINTED_OTHERWISE),
    st.from_regex(r"\A[0-9]{1,12}(\.[0-9]{1,6})?\Z"),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    st.text(alphabet="0123456789.,-+_ eE$\u0661", max_size=10),
)


@given(price=number_texts, cost=number_texts, stock=number_texts, sale=number_texts)
@example(price="1000000.00", cost="6.39", stock="123456789", sale="0")
@example(price="0", cost="0", stock="0", sale="01000000")
def test_items_and_reasons_are_those_the_text_would_give(price: str, cost: str, stock: str, sale: str) -> None:
    """Validating the converted values gives the very items and rejection reasons the text gives."""
    texts = DecimalTexts()
    raw = {"item_id": "1", "name": "Milk", "price": price, "cost": cost, "stock": stock, "sale": {"price": sale}}
    converted = {
        **raw,
        "price": texts.convert(price, price),
        "cost": texts.convert(cost, cost),
        "stock": texts.convert(stock, stock),
        "sale": {"price": texts.convert(sale, sale)},
    }
    from_text = validate_records([RawRecord("row 2", raw)])
    from_decimals = validate_records([RawRecord("row 2", converted)])
    assert from_decimals == from_text
