"""The CSV connector's configuration: where the export is, how it is written, and which column holds what.

Its JSON Schema is the hub's form for a CSV POS source, so every field carries a description.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grocerysync.core.codes import GtinStyle
from grocerysync.core.items import ITEM_FIELDS

#: Item fields a mapping must name: without them no item can be built.
REQUIRED_FIELDS = ("item_id", "name", "price")

#: Sub-fields of the structured item fields, as ``<field>.<sub-field>`` column keys.
SUB_FIELDS: dict[str, tuple[str, ...]] = {
    "size": ("value", "unit"),
    "sale": ("price", "start", "end"),
    "multi_price": ("quantity", "price"),
}

Encoding = Literal["auto", "utf-8", "utf-8-sig", "cp1252", "latin-1"]
Delimiter = Literal[",", ";", "\t", "tab", "|", "auto"]


def _field_list() -> str:
    names = sorted(ITEM_FIELDS - {"extras", *SUB_FIELDS}) + [
        f"{head}.{sub}" for head, subs in SUB_FIELDS.items() for sub in subs
    ]
    return ", ".join([*names, "size", "multi_price", "extras.<name>"])


def check_field_name(name: str) -> str | None:
    """Return why ``name`` is not a mappable item field, or None when it is."""
    head, dot, sub = name.partition(".")
    if head not in ITEM_FIELDS:
        return f"{name!r} is not an item field; use one of: {_field_list()}"
    if head == "extras":
        if not dot or not sub.strip():
            return "map extra columns as 'extras.<name>', for example 'extras.aisle'"
        return None
    if head == "sale" and not dot:
        return "'sale' is made of parts: map 'sale.price' (and optionally 'sale.start', 'sale.end')"
    if dot:
        if head not in SUB_FIELDS:
            return f"{name!r}: only size, sale, multi_price and extras have sub-fields"
        if sub not in SUB_FIELDS[head]:
            return f"{name!r}: {head} has the sub-fields {', '.join(SUB_FIELDS[head])}"
    return None


class CsvConfig(BaseModel):
    """How to read one store's POS item export (a CSV file the POS writes on a schedule)."""

    model_config = ConfigDict(extra="forbid", title="CSV item export")

    path: str = Field(
        min_length=1,
        description="Full path of the export file on the store machine, for example C:\\exports\\items.csv.",
        examples=["C:\\exports\\items.csv", "/var/pos/export/items.csv"],
    )
    encoding: Encoding = Field(
        default="auto",
        description=(
            "Text encoding of the file. 'auto' skips a UTF-8 byte-order mark and reads UTF-8, falling back "
            "to Windows cp1252 when the file is not valid UTF-8 (most Windows POS systems write cp1252)."
        ),
    )
    delimiter: Delimiter = Field(
        default=",",
        description="Character between columns: ',', ';', tab ('\\t' or 'tab'), '|', or 'auto' to detect it.",
    )
    quotechar: str = Field(
        default='"',
        min_length=1,
        max_length=1,
        description="Character that quotes values containing the delimiter or line breaks.",
    )
    has_header: bool = Field(
        default=True,
        description="The first line (after skip_rows) holds column names. If not, map columns by number.",
    )
    skip_rows: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Lines to skip before the header (report titles or dates some POS write first).",
    )
    columns: dict[str, str | int] = Field(
        description=(
            "Item field -> column: a header name (matched ignoring case and surrounding spaces) or a "
            "1-based column number. item_id, name and price are required. Sub-fields: size (text like "
            "'12 oz') or size.value + size.unit; sale.price, sale.start, sale.end; multi_price ('2/5.00') "
            "or multi_price.quantity + multi_price.price; extras.<name> for any other column to carry along."
        ),
        examples=[{"item_id": "ItemNo", "gtin": "UPC", "name": "Description", "price": "Retail", "size": "Size"}],
    )
    decimal_comma: bool = Field(
        default=False,
        description="Numbers use a decimal comma, as in '1,99' or '1.234,50' (European POS systems).",
    )
    currency_symbols: list[str] = Field(
        default_factory=lambda: ["$", "€", "£"],
        description="Symbols removed from money values before they are read as numbers ('$1.99' -> 1.99).",
    )
    true_values: list[str] = Field(
        default_factory=lambda: ["Y", "Yes", "1", "T", "TRUE", "X"],
        description="Values that mean yes in flag columns (taxable, snap_ebt, ...); case is ignored.",
    )
    false_values: list[str] = Field(
        default_factory=lambda: ["N", "No", "0", "F", "FALSE", ""],
        description="Values that mean no in flag columns; case is ignored; '' makes a blank cell mean no.",
    )
    date_format: str | None = Field(
        default=None,
        description=(
            "strptime format of sale dates and last_changed, for example '%m/%d/%Y' or '%d.%m.%Y %H:%M'. "
            "Leave empty for ISO dates such as 2024-05-31 or 2024-05-31T23:59:00."
        ),
        examples=["%m/%d/%Y", "%Y%m%d"],
    )
    gtin_style: GtinStyle = Field(
        default=GtinStyle.STRICT,
        description=(
            "How the POS stores barcodes: 'strict' (complete, with check digit), 'zero_padded' (complete but "
            "padded with leading zeros), or 'no_check_digit' (UPC without its last digit)."
        ),
    )
    empty_values: list[str] = Field(
        default_factory=lambda: ["", "NULL", "N/A"],
        description="Cell values that mean 'no value' (the field is then left unset).",
    )

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, columns: dict[str, str | int]) -> dict[str, str | int]:
        problems = [reason for name in columns if (reason := check_field_name(name))]
        missing = [name for name in REQUIRED_FIELDS if name not in columns]
        if missing:
            problems.append(f"map a column for the required field(s) {', '.join(missing)}")
        for head, parts in (("size", ("size.value", "size.unit")), ("multi_price", ("multi_price.quantity",))):
            if head in columns and any(p in columns for p in parts):
                problems.append(f"map either {head!r} (one text column) or its sub-fields, not both")
        for name, column in columns.items():
            if isinstance(column, int) and column < 1:
                problems.append(f"{name!r}: column numbers start at 1 (got {column})")
            elif isinstance(column, str) and not column.strip():
                problems.append(f"{name!r}: the column name is empty")
        if problems:
            raise ValueError("; ".join(problems))
        return columns

    @field_validator("currency_symbols")
    @classmethod
    def _symbols_not_empty(cls, symbols: list[str]) -> list[str]:
        if any(not s for s in symbols):
            raise ValueError("a currency symbol cannot be empty")
        return symbols

    @field_validator("date_format")
    @classmethod
    def _format_has_directive(cls, fmt: str | None) -> str | None:
        if fmt is not None and "%" not in fmt:
            raise ValueError(f"{fmt!r} has no % directives; use a strptime format such as '%m/%d/%Y'")
        return fmt or None

    @model_validator(mode="after")
    def _numbers_without_header(self) -> CsvConfig:
        if not self.has_header:
            named = []
            for name, column in self.columns.items():
                if isinstance(column, str):
                    if column.strip().isdigit():
                        self.columns[name] = int(column)
                    else:
                        named.append(f"{name}={column!r}")
            if named:
                raise ValueError(
                    "has_header is false, so columns must be 1-based column numbers; these are names: "
                    + ", ".join(named)
                )
        return self

    @property
    def delimiter_char(self) -> str | None:
        """The delimiter as one character, or None when it is to be detected."""
        if self.delimiter == "auto":
            return None
        return "\t" if self.delimiter == "tab" else self.delimiter
