"""The connector's configuration model.

CHANGE: describe your POS's settings. This model's JSON Schema becomes the form a technician fills in on the
hub, so every field has a ``description`` (the form's help text) and a sensible default where one exists;
``extra="forbid"`` makes a misspelt setting an error instead of being ignored.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from grocerysync.core.codes import GtinStyle
from grocerysync.core.items import ITEM_FIELDS

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,62}$")

#: Item fields that take one column each; ``sale.*`` and ``extras.<name>`` are the dotted sub-fields.
SIMPLE_FIELDS = frozenset(ITEM_FIELDS - {"sale", "extras"})
SUB_FIELDS = frozenset({"sale.price", "sale.start", "sale.end"})

#: The column names of a typical POS item table, by item field.
DEFAULT_COLUMNS: dict[str, str] = {
    "item_id": "item_no",
    "gtin": "upc",
    "plu": "plu",
    "name": "description",
    "brand": "brand",
    "size": "size",
    "department": "department",
    "price": "price",
    "sale.price": "sale_price",
    "sale.start": "sale_start",
    "sale.end": "sale_end",
    "sold_by_weight": "weighed",
    "stock": "qty_on_hand",
    "taxable": "taxable",
    "snap_ebt": "food_stamp",
    "min_age": "min_age",
    "active": "active",
    "last_changed": "modified_at",
}


def _identifier(value: str) -> str:
    # Table and column names are quoted into SQL, so only plain names are allowed.
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{value!r} is not a plain table or column name (letters, digits, '_' and spaces)")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


class SqliteTableConfig(BaseModel):
    """Where the POS keeps its items and how its columns map to item fields."""

    model_config = ConfigDict(extra="forbid", title="SQLite item table")

    path: str = Field(
        description="Path of the POS database file on the store computer, e.g. C:\\POS\\Data\\store.db",
        min_length=1,
    )
    table: Identifier = Field("items", description="The table that holds one row per item.")
    columns: dict[str, Identifier] = Field(
        default_factory=lambda: dict(DEFAULT_COLUMNS),
        description=(
            "Which column holds each item field: item field -> column name. Fields: the item fields "
            "(item_id, name and price are required), sale.price / sale.start / sale.end, and "
            "extras.<name> for anything else worth sending."
        ),
    )
    modified_column: Identifier | None = Field(
        "modified_at",
        description=(
            "Column the POS sets to the time a row last changed (ISO text, so that it sorts). With it, each run "
            "reads only the rows changed since the last one; leave empty to read the whole table every time."
        ),
    )
    gtin_style: GtinStyle = Field(
        GtinStyle.STRICT,
        description=(
            "How the POS stores barcodes: strict (complete, with check digit), zero_padded (also for numeric "
            "columns, which drop leading zeros) or no_check_digit."
        ),
    )

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for item_field in value:
            if item_field in SIMPLE_FIELDS or item_field in SUB_FIELDS:
                continue
            if item_field.startswith("extras.") and len(item_field) > len("extras."):
                continue
            raise ValueError(
                f"{item_field!r} is not an item field; use one of {', '.join(sorted(SIMPLE_FIELDS | SUB_FIELDS))} "
                "or extras.<name>"
            )
        missing = [f for f in ("item_id", "name", "price") if f not in value]
        if missing:
            raise ValueError(f"columns must map the required item fields {', '.join(missing)}")
        return value
