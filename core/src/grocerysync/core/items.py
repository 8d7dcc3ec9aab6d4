"""The grocery item: what every POS connector produces and every destination consumes.

Money and quantities are :class:`~decimal.Decimal`, never float. Barcodes are verified by check digit
(see :mod:`grocerysync.core.codes`); connectors normalise their POS's barcode style before validation.
"""

from __future__ import annotations

import enum
import functools
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StringConstraints,
    model_validator,
)

from grocerysync.core.codes import GTIN_CHECK_OFFSETS, normalize_gtin, validate_plu

# No decimal_places constraint: pydantic checks it through Decimal.as_tuple(), which costs more than
# the rest of an item's validation; destinations round to what their platform takes.
Money = Annotated[Decimal, Field(ge=0, le=Decimal("999999.9999"))]
Quantity = Annotated[Decimal, Field(ge=Decimal("-99999999"), le=Decimal("99999999"))]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
OptionalText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)]
ExtraValue = str | int | float | bool | None


def _gtin(value: str) -> str:
    # Every item with a barcode comes through here, so the common case (a complete code whose check digit is
    # right) is checked inline: the weighted digit sum, less what the ASCII '0's add, must end in 0.
    offset = GTIN_CHECK_OFFSETS.get(len(value))
    if offset is not None and value.isascii() and value.isdigit():
        digits = value.encode()
        if (sum(digits[::-2]) + 3 * sum(digits[-2::-2]) - offset) % 10 == 0:
            return value
    return normalize_gtin(value)  # anything else: UPC-E, separators, or a clear error


class SizeUnit(enum.StrEnum):
    """Units a package size is given in."""

    OZ = "oz"
    FL_OZ = "fl oz"
    LB = "lb"
    G = "g"
    KG = "kg"
    ML = "ml"
    L = "l"
    GAL = "gal"
    QT = "qt"
    PT = "pt"
    CT = "ct"
    EACH = "each"


class WeightUnit(enum.StrEnum):
    """Units a weighed item is sold by."""

    LB = "lb"
    KG = "kg"
    OZ = "oz"
    G = "g"


_UNIT_ALIASES: dict[str, SizeUnit] = {
    "oz": SizeUnit.OZ,
    "ounce": SizeUnit.OZ,
    "ounces": SizeUnit.OZ,
    "floz": SizeUnit.FL_OZ,
    "fl oz": SizeUnit.FL_OZ,
    "fl. oz": SizeUnit.FL_OZ,
    "fl.oz": SizeUnit.FL_OZ,
    "fl oz.": SizeUnit.FL_OZ,
    "fluid ounce": SizeUnit.FL_OZ,
    "fluid ounces": SizeUnit.FL_OZ,
    "lb": SizeUnit.LB,
    "lbs": SizeUnit.LB,
    "pound": SizeUnit.LB,
    "pounds": SizeUnit.LB,
    "#": SizeUnit.LB,
    "g": SizeUnit.G,
    "gr": SizeUnit.G,
    "gram": SizeUnit.G,
    "grams": SizeUnit.G,
    "kg": SizeUnit.KG,
    "kilo": SizeUnit.KG,
    "kilogram": SizeUnit.KG,
    "kilograms": SizeUnit.KG,
    "ml": SizeUnit.ML,
    "milliliter": SizeUnit.ML,
    "millilitre": SizeUnit.ML,
    "l": SizeUnit.L,
    "lt": SizeUnit.L,
    "ltr": SizeUnit.L,
    "liter": SizeUnit.L,
    "litre": SizeUnit.L,
    "gal": SizeUnit.GAL,
    "gallon": SizeUnit.GAL,
    "gallons": SizeUnit.GAL,
    "qt": SizeUnit.QT,
    "quart": SizeUnit.QT,
    "quarts": SizeUnit.QT,
    "pt": SizeUnit.PT,
    "pint": SizeUnit.PT,
    "pints": SizeUnit.PT,
    "ct": SizeUnit.CT,
    "count": SizeUnit.CT,
    "pk": SizeUnit.CT,
    "pack": SizeUnit.CT,
    "pc": SizeUnit.CT,
    "pcs": SizeUnit.CT,
    "each": SizeUnit.EACH,
    "ea": SizeUnit.EACH,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*([a-zA-Z#][a-zA-Z. #]*)?\s*$")
_MULTI_RE = re.compile(r"^\s*(\d+)\s*(?:/|for)\s*\$?\s*(\d+(?:\.\d+)?)\s*$", re.IGNORECASE)


class Size(BaseModel):
    """A package size such as 12 oz or 6 ct. Accepts a string like ``"12 fl oz"`` or ``"1.5L"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: Annotated[Decimal, Field(gt=0, le=Decimal("1000000"))]
    unit: SizeUnit

    @model_validator(mode="wrap")
    @classmethod
    def _parse_text(cls, data: Any, handler: ModelWrapValidatorHandler[Size]) -> Size:
        if isinstance(data, str):
            # A catalogue repeats a few hundred sizes over and over; Size is frozen, so one instance per text
            # can be shared by every item that has it.
            return _size_from_text(data)
        return handler(data)


@functools.lru_cache(maxsize=4096)
def _size_from_text(text: str) -> Size:
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"size {text!r} is not a number followed by a unit, like '12 oz'")
    value, unit_text = match.groups()
    unit = _UNIT_ALIASES.get((unit_text or "each").strip().lower().rstrip("."))
    if unit is None:
        unit = _UNIT_ALIASES.get((unit_text or "").strip().lower())
    if unit is None:
        raise ValueError(f"size unit {unit_text!r} is not known; use one of {', '.join(u.value for u in SizeUnit)}")
    return Size(value=Decimal(value.replace(",", ".")), unit=unit)


class Sale(BaseModel):
    """A temporary sale price, optionally bounded by start and end times (store local time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    price: Money
    start: datetime | None = None
    end: datetime | None = None

    @model_validator(mode="after")
    def _window(self) -> Sale:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"sale ends ({self.end}) before it starts ({self.start})")
        return self


class MultiPrice(BaseModel):
    """A quantity price such as "2 for $5". Accepts a string like ``"2/5.00"`` or ``"2 for 5"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantity: Annotated[int, Field(ge=2, le=1000)]
    price: Money

    @model_validator(mode="before")
    @classmethod
    def _parse_text(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        match = _MULTI_RE.match(data)
        if not match:
            raise ValueError(f"multi-price {data!r} must look like '2/5.00' or '2 for 5'")
        return {"quantity": match.group(1), "price": match.group(2)}


class Item(BaseModel):
    """One sellable item as the POS knows it.

    ``item_id`` is the POS's own key and the key destinations upsert by. At least one of ``gtin``,
    ``plu`` or ``item_id`` identifies the item at the till; destinations that need a barcode say so
    per item when they reject it.
    """

    # Every text field strips its own whitespace (StringConstraints or its validator); a model-wide
    # str_strip_whitespace would do it twice, on the hot path.
    model_config = ConfigDict(extra="forbid", validate_default=False)

    item_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    gtin: Annotated[str, AfterValidator(_gtin)] | None = None
    plu: Annotated[str, AfterValidator(validate_plu)] | None = None
    name: Text
    brand: OptionalText | None = None
    size: Size | None = None
    department: OptionalText | None = None
    category: OptionalText | None = None
    price: Money
    cost: Money | None = None
    sale: Sale | None = None
    multi_price: MultiPrice | None = None
    sold_by_weight: bool = False
    weight_unit: WeightUnit | None = None
    stock: Quantity | None = None
    taxable: bool = False
    snap_ebt: bool = False
    wic: bool = False
    min_age: Annotated[int, Field(ge=0, le=99)] | None = None
    bottle_deposit: Money | None = None
    online: bool = True
    active: bool = True
    image_url: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=2048, pattern=r"^https?://\S+$")] | None
    ) = None
    last_changed: datetime | None = None
    extras: dict[str, ExtraValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Item:
        if self.sold_by_weight and self.weight_unit is None:
            # A weighed item without a unit is almost always priced per pound in US POS systems.
            object.__setattr__(self, "weight_unit", WeightUnit.LB)
        if self.weight_unit is not None and not self.sold_by_weight:
            raise ValueError("weight_unit is set but sold_by_weight is false")
        return self

    @property
    def key(self) -> str:
        """The key destinations upsert by."""
        return self.item_id


ITEM_FIELDS: frozenset[str] = frozenset(Item.model_fields)
