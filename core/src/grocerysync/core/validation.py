"""Batch validation of raw POS records into :class:`Item` objects.

A whole batch goes through pydantic-core in one call; only when that fails are the bad records
picked out (by the index in each error) and the rest validated again, so one bad row costs little
and never takes good rows down with it.

The one call uses :class:`Item`'s own schema less two checks that cost more item by item than for a
whole batch at once: the barcode's check digit (a Python function called for every item) and the
refusal of unknown fields. Both are then made for the batch (:func:`_batch_checked`); a record that
does not pass them plainly is validated again with the full schema, so every item and every error
message is exactly what ``Item.model_validate`` gives.

Size texts (``"12 oz"``) are looked up in a table of the texts met before, instead of going through
:class:`Size`'s own validator (a Python function called for every item with a size); a text the table does
not know yet takes the full schema, which reads it (or refuses it) as ever, and the table learns it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import partial
from operator import attrgetter, is_not, methodcaller
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import SchemaValidator

from grocerysync.core.codes import all_valid_gtins, is_valid_gtin
from grocerysync.core.items import ITEM_FIELDS, Item, Size, _gtin
from grocerysync.core.results import RawRecord, Rejection

_ITEMS = TypeAdapter(list[Item])
_DATA = attrgetter("data")
_GTIN = attrgetter("gtin")
_FIELDS_SET = attrgetter("__pydantic_fields_set__")
_not_none = partial(is_not, None)
_SIZE = attrgetter("size")
_GIVEN_SIZE = methodcaller("get", "size")

#: Size texts met so far, each with the :class:`Size` the item model makes of it (the very instance:
#: ``Size`` keeps one per text). A catalogue has a few dozen to a few hundred; the first ones are kept.
_SIZE_TEXTS: dict[str, Size] = {}
_SIZE_TEXTS_MAX = 1024


def _batch_schema(*, sized: bool = False) -> SchemaValidator | None:
    """``list[Item]`` without the per-item barcode check and with unknown fields let through (and, if ``sized``,
    size texts looked up in :data:`_SIZE_TEXTS`), or None when Item's schema is not laid out as expected (then
    every batch takes the full schema)."""
    schema = Item.__pydantic_core_schema__
    model = schema["schema"] if schema.get("type") == "function-after" else schema
    if model.get("type") != "model" or model.get("cls") is not Item:
        return None
    fields = model["schema"].get("fields", {})
    check = _optional_validator(fields.get("gtin"), "function-after")
    if check is None or check.get("function", {}).get("function") is not _gtin:
        return None
    # Copies of the parts that change; everything else is shared with Item's own schema.
    gtin = _with_optional_validator(fields["gtin"], check["schema"])
    config = {**model.get("config", {}), "extra_fields_behavior": "ignore"}
    batch_fields = {**fields, "gtin": gtin}
    if sized:
        size = _size_lookup(fields.get("size"))
        if size is None:
            return None
        batch_fields["size"] = size
    batch_model = {**model, "config": config, "schema": {**model["schema"], "fields": batch_fields}}
    batch = {**schema, "schema": batch_model} if model is not schema else batch_model
    return SchemaValidator({"type": "list", "items_schema": batch})


def _size_lookup(field: Any) -> dict[str, Any] | None:
    """A copy of the size field's schema that takes a size text's :class:`Size` from :data:`_SIZE_TEXTS`
    (None, as if no size were given, when the table does not know the text; a TypeError when the value cannot
    be looked up, such as a dict), or None when the field is not laid out as expected."""
    wrap = _optional_validator(field, "function-wrap")
    if wrap is None:
        return None
    function = wrap.get("function", {}).get("function")
    if getattr(function, "__func__", None) is not getattr(Size._parse_text, "__func__", Size._parse_text):
        return None
    return _with_optional_validator(
        field, {"type": "function-plain", "function": {"type": "no-info", "function": _SIZE_TEXTS.get}}
    )


def _optional_validator(field: Any, kind: str) -> dict[str, Any] | None:
    """The validator of an optional model field (``default`` -> ``nullable`` -> a schema of type ``kind``), or
    None when the field is not laid out so."""
    try:
        default = field["schema"]
        nullable = default["schema"]
        inner = nullable["schema"]
    except (KeyError, TypeError):
        return None
    if (default.get("type"), nullable.get("type"), inner.get("type")) != ("default", "nullable", kind):
        return None
    return dict(inner)


def _with_optional_validator(field: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    """A copy of an optional model field (as :func:`_optional_validator` reads it) with ``inner`` in place of
    its validator; the rest is shared with the field."""
    default = field["schema"]
    nullable = default["schema"]
    return {**field, "schema": {**default, "schema": {**nullable, "schema": inner}}}


_BATCH = _batch_schema()
#: The batch schema with size texts looked up (None if Item's size field is not laid out as expected).
_BATCH_SIZED = _batch_schema(sized=True) if _BATCH is not None else None


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
        sized = _BATCH_SIZED is not None
        try:
            try:
                items: list[Item] = (_BATCH_SIZED if _BATCH_SIZED is not None else _BATCH).validate_python(data)
            except TypeError:
                if not sized:
                    raise
                # A size that is not text (a dict of value and unit): this batch takes Size's own validator.
                # A TypeError of another making comes again from the plain batch schema.
                sized = False
                items = _BATCH.validate_python(data)
        except ValidationError:
            pass  # the full schema says what is wrong, in its own words
        else:
            again = _batch_checked(data, items, sized=sized)
            if not again:
                return items, []
            slots, rejections = _validate_full([records[i] for i in again], [data[i] for i in again])
            merged: list[Item | None] = list(items)
            for i, item in zip(again, slots, strict=True):
                merged[i] = item
                if item is not None:
                    _learn_size(data[i], item)
            return [item for item in merged if item is not None], rejections
    slots, rejections = _validate_full(records, data)
    return [item for item in slots if item is not None], rejections


def _batch_checked(data: list[Mapping[str, Any]], items: list[Item], *, sized: bool = False) -> list[int]:
    """The indices of the records the batch schema's items may not stand for: those with a field the item model
    does not have, a barcode that is not a valid GTIN as it stands (the item model would normalise it or
    refuse it), or (``sized``: the schema looked size texts up) a size the table does not know. The rest are
    the items the full schema makes."""
    again: set[int] = set()
    if sized:
        # An item has no size exactly where its record gave none, unless the table did not know the text.
        given = list(map(_GIVEN_SIZE, data))
        if given.count(None) != list(map(_SIZE, items)).count(None):
            again.update(i for i, item in enumerate(items) if item.size is None and given[i] is not None)
    # An item's fields set holds the record's keys that are item fields (Item has no aliases): as many as the
    # record has keys unless one of them is not. Two lengths an item, rather than a look-up a key.
    if list(map(len, data)) != list(map(len, map(_FIELDS_SET, items))):
        again.update(i for i, record in enumerate(data) if not ITEM_FIELDS.issuperset(record))
    codes = list(filter(_not_none, map(_GTIN, items)))
    if not all_valid_gtins(codes):
        again.update(i for i, item in enumerate(items) if item.gtin is not None and not is_valid_gtin(item.gtin))
    return sorted(again)


def _learn_size(record: Mapping[str, Any], item: Item) -> None:
    """Remember the size a record gave as text, as the full schema read it (while the table has room)."""
    text = record.get("size")
    if item.size is not None and type(text) is str and text not in _SIZE_TEXTS and len(_SIZE_TEXTS) < _SIZE_TEXTS_MAX:
        _SIZE_TEXTS[text] = item.size


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
