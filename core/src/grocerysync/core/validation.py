"""Batch validation of raw POS records into :class:`Item` objects.

A whole batch goes through pydantic-core in one call; only when that fails are the bad records
picked out (by the index in each error) and the rest validated again, so one bad row costs little
and never takes good rows down with it.

The one call uses :class:`Item`'s own schema less two checks that cost more item by item than for a
whole batch at once: the barcode's check digit (a Python function called for every item) and the
refusal of unknown fields. Both are then made for the batch (:func:`_batch_checked`); a record that
does not pass them plainly is validated again with the full schema, so every item and every error
message is exactly what ``Item.model_validate`` gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import partial
from operator import attrgetter, is_not
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import SchemaValidator

from grocerysync.core.codes import all_valid_gtins, is_valid_gtin
from grocerysync.core.items import ITEM_FIELDS, Item, _gtin
from grocerysync.core.results import RawRecord, Rejection

_ITEMS = TypeAdapter(list[Item])
_DATA = attrgetter("data")
_GTIN = attrgetter("gtin")
_FIELDS_SET = attrgetter("__pydantic_fields_set__")
_not_none = partial(is_not, None)


def _batch_schema() -> SchemaValidator | None:
    """``list[Item]`` without the per-item barcode check and with unknown fields let through, or None when
    Item's schema is not laid out as expected (then every batch takes the full schema)."""
    schema = Item.__pydantic_core_schema__
    model = schema["schema"] if schema.get("type") == "function-after" else schema
    if model.get("type") != "model" or model.get("cls") is not Item:
        return None
    fields = model["schema"].get("fields", {})
    try:
        default = fields["gtin"]["schema"]
        nullable = default["schema"]
        check = nullable["schema"]
    except (KeyError, TypeError):
        return None
    if (default.get("type"), nullable.get("type"), check.get("type")) != ("default", "nullable", "function-after"):
        return None
    if check.get("function", {}).get("function") is not _gtin:
        return None
    # Copies of the parts that change; everything else is shared with Item's own schema.
    gtin = {**fields["gtin"], "schema": {**default, "schema": {**nullable, "schema": check["schema"]}}}
    config = {**model.get("config", {}), "extra_fields_behavior": "ignore"}
    batch_model = {**model, "config": config, "schema": {**model["schema"], "fields": {**fields, "gtin": gtin}}}
    batch = {**schema, "schema": batch_model} if model is not schema else batch_model
    return SchemaValidator({"type": "list", "items_schema": batch})


_BATCH = _batch_schema()


def describe_errors(errors: Sequence[Any]) -> str:
    """Turn pydantic error dicts for one item into one line: ``price: Input should be ...; gtin: ...``."""
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"]) or "item"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        value = err.get("input")
        if isinstance(value, Decimal):  # a connector's plain number (see the CSV connector): shown as its text
            value = str(value)
        if err["type"] == "missing":
            parts.append(f"{loc}: required value is missing")
        elif isinstance(value, str | int | float) and loc not in msg and str(value) not in msg:
            parts.append(f"{loc}: {msg} (got {value!r})")
        else:
            parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def validate_records(records: Sequence[RawRecord]) -> tuple[list[Item], list[Rejection]]:
    """Validate a batch; return the good items (in order) and one rejection per bad record."""
    if not records:
        return [], []
    data = list(map(_DATA, records))
    if _BATCH is not None:
        try:
            items: list[Item] = _BATCH.validate_python(data)
        except ValidationError:
            pass  # the full schema says what is wrong, in its own words
        else:
            again = _batch_checked(data, items)
            if not again:
                return items, []
            slots, rejections = _validate_full([records[i] for i in again], [data[i] for i in again])
            merged: list[Item | None] = list(items)
            for i, item in zip(again, slots, strict=True):
                merged[i] = item
            return [item for item in merged if item is not None], rejections
    slots, rejections = _validate_full(records, data)
    return [item for item in slots if item is not None], rejections


def _batch_checked(data: list[Mapping[str, Any]], items: list[Item]) -> list[int]:
    """The indices of the records the batch schema's items may not stand for: those with a field the item model
    does not have, or a barcode that is not a valid GTIN as it stands (the item model would normalise it or
    refuse it). The rest are the items the full schema makes."""
    again: set[int] = set()
    # An item's fields set holds the record's keys that are item fields (Item has no aliases): as many as the
    # record has keys unless one of them is not. Two lengths an item, rather than a look-up a key.
    if list(map(len, data)) != list(map(len, map(_FIELDS_SET, items))):
        again.update(i for i, record in enumerate(data) if not ITEM_FIELDS.issuperset(record))
    codes = list(filter(_not_none, map(_GTIN, items)))
    if not all_valid_gtins(codes):
        again.update(i for i, item in enumerate(items) if item.gtin is not None and not is_valid_gtin(item.gtin))
    return sorted(again)


def _validate_full(
    records: Sequence[RawRecord], data: list[Mapping[str, Any]]
) -> tuple[list[Item | None], list[Rejection]]:
    """Validate with the full schema: one slot per record (its item, or None when it was rejected) and the
    rejections."""
    try:
        return list(_ITEMS.validate_python(data)), []
    except ValidationError as exc:
        by_index: dict[int, list[Any]] = {}
        for err in exc.errors(include_url=False):
            index = err["loc"][0]
            by_index.setdefault(int(index), []).append({**err, "loc": err["loc"][1:]})
    rejections = []
    good = []
    for i, record in enumerate(records):
        if i in by_index:
            item_id = record.data.get("item_id")
            rejections.append(
                Rejection(
                    ref=record.ref,
                    reason=describe_errors(by_index[i]),
                    stage="validate",
                    item_id=str(item_id) if item_id not in (None, "") else None,
                )
            )
        else:
            good.append(data[i])
    validated = iter(_ITEMS.validate_python(good) if good else [])
    return [None if i in by_index else next(validated) for i in range(len(records))], rejections
