"""A job's field mapping and filters, applied to validated items.

Values set by the mapping go through the item model's own validation (``validate_assignment``), so a
mapping that would make an item invalid rejects that item with a reason naming the field, instead of
handing the destination something it cannot take.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from grocerysync.core.items import Item
from grocerysync.core.jobs import Filter, Mapping
from grocerysync.core.validation import describe_errors

_ASSIGN = Item.__pydantic_validator__.validate_assignment
_SUB_MODELS = ("size", "sale", "multi_price")
_MISSING = object()


def get_path(item: Item, path: str) -> Any:
    """The value at ``path`` (``department``, ``size.unit``, ``extras.aisle``); None when absent."""
    head, _, rest = path.partition(".")
    value = getattr(item, head)
    if not rest or value is None:
        return value
    if head == "extras":
        return value.get(rest)
    return getattr(value, rest, None)


def set_path(item: Item, path: str, value: Any) -> None:
    """Set ``path`` on ``item`` in place, validated by the item model; raises ValidationError."""
    head, _, rest = path.partition(".")
    if not rest:
        _ASSIGN(item, head, value)
        return
    current = getattr(item, head)
    if head == "extras":
        _ASSIGN(item, head, {**current, rest: value})
        return
    data = current.model_dump() if current is not None else {}
    data[rest] = value
    _ASSIGN(item, head, data)


def as_text(value: Any) -> str:
    """How a value is written in a value map's keys: enums by value, booleans as true/false."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _equal(actual: Any, wanted: Any) -> bool:
    if actual is None or wanted is None:
        return actual is None and wanted is None
    if isinstance(actual, bool):
        return as_text(actual) == as_text(wanted).strip().lower()
    if isinstance(actual, int | float | Decimal):
        number = _as_decimal(wanted)
        return number is not None and number == _as_decimal(actual)
    return as_text(actual) == as_text(wanted)


def _compare(op: str, limit: Decimal) -> Callable[[Any], bool]:
    def check(actual: Any) -> bool:
        number = _as_decimal(actual)
        if number is None:
            return False
        if op == "gt":
            return number > limit
        if op == "ge":
            return number >= limit
        if op == "lt":
            return number < limit
        return number <= limit

    return check


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def build_predicate(spec: Filter) -> Callable[[Item], bool]:
    """A function telling whether an item passes one filter."""
    path, op, wanted = spec.field, spec.op, spec.value
    test: Callable[[Any], bool]
    if op == "eq":
        test = lambda v: _equal(v, wanted)  # noqa: E731
    elif op == "ne":
        test = lambda v: not _equal(v, wanted)  # noqa: E731
    elif op in ("in", "not_in"):
        choices = list(wanted)
        inside = op == "in"
        test = lambda v: any(_equal(v, c) for c in choices) == inside  # noqa: E731
    elif op in ("gt", "ge", "lt", "le"):
        test = _compare(op, Decimal(str(wanted)))
    elif op == "contains":
        needle = as_text(wanted).lower()
        test = lambda v: v is not None and needle in as_text(v).lower()  # noqa: E731
    elif op == "exists":
        test = lambda v: not _empty(v)  # noqa: E731
    else:  # missing
        test = _empty
    return lambda item: test(get_path(item, path))


class ItemShaper:
    """Applies one job's mapping (value maps, then defaults, then overrides) and filters, in place."""

    def __init__(self, mapping: Mapping, filters: list[Filter]) -> None:
        self._value_maps = list(mapping.value_maps.items())
        self._defaults = list(mapping.defaults.items())
        self._overrides = list(mapping.overrides.items())
        self._filters = [build_predicate(f) for f in filters]
        self._sub_paths = {p for p, _ in self._defaults if p.split(".")[0] in _SUB_MODELS}
        self.active = bool(self._value_maps or self._defaults or self._overrides or self._filters)

    def _map(self, item: Item) -> None:
        for path, table in self._value_maps:
            current = get_path(item, path)
            if current is not None:
                target = table.get(as_text(current), _MISSING)
                if target is not _MISSING:
                    self._set(item, path, target, "value_maps")
        for path, value in self._defaults:
            # A default for size.unit fills a size's unit; it does not invent a size the POS did not give.
            if _empty(get_path(item, path)) and not (
                path in self._sub_paths and getattr(item, path.split(".")[0]) is None
            ):
                self._set(item, path, value, "defaults")
        for path, value in self._overrides:
            self._set(item, path, value, "overrides")

    @staticmethod
    def _set(item: Item, path: str, value: Any, where: str) -> None:
        try:
            set_path(item, path, value)
        except ValidationError as exc:
            raise MappingFailed(
                f"mapping.{where}.{path} gives an invalid item: {describe_errors(exc.errors())}"
            ) from None

    def apply(self, items: list[Item]) -> tuple[list[Item], list[Item], list[tuple[Item, str]]]:
        """Map then filter ``items``; return ``(kept, filtered_out, [(item, why the mapping failed)])``."""
        if not self.active:
            return items, [], []
        kept: list[Item] = []
        dropped: list[Item] = []
        failed: list[tuple[Item, str]] = []
        mapping = bool(self._value_maps or self._defaults or self._overrides)
        filters = self._filters
        for item in items:
            if mapping:
                try:
                    self._map(item)
                except MappingFailed as exc:
                    failed.append((item, str(exc)))
                    continue
            if all(passes(item) for passes in filters):
                kept.append(item)
            else:
                dropped.append(item)
        return kept, dropped, failed


class MappingFailed(Exception):
    """A mapping value did not fit the item model (internal: becomes a rejection)."""
