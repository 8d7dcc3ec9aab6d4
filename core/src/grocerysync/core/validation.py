"""Batch validation of raw POS records into :class:`Item` objects.

A whole batch goes through pydantic-core in one call; only when that fails are the bad records
picked out (by the index in each error) and the rest validated again, so one bad row costs little
and never takes good rows down with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from pydantic import TypeAdapter, ValidationError

from grocerysync.core.items import Item
from grocerysync.core.results import RawRecord, Rejection

_ITEMS = TypeAdapter(list[Item])
_DATA = attrgetter("data")


def describe_errors(errors: Sequence[Any]) -> str:
    """Turn pydantic error dicts for one item into one line: ``price: Input should be ...; gtin: ...``."""
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"]) or "item"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        value = err.get("input")
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
    try:
        return _ITEMS.validate_python(data), []
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
            good.append(record.data)
    return (_ITEMS.validate_python(good) if good else []), rejections
