"""Helpers shared by the contract suites: settings, plain sample items, value comparison, secret scanning."""

from __future__ import annotations

import inspect
import itertools
import os
import types
import typing
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from pydantic import BaseModel, SecretBytes, SecretStr, TypeAdapter, ValidationError

from grocerysync.core.items import Item, MultiPrice, Sale, Size

T = TypeVar("T")


def _examples() -> int:
    raw = os.environ.get("GROCERYSYNC_CONTRACT_EXAMPLES", "10").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"GROCERYSYNC_CONTRACT_EXAMPLES={raw!r} must be a whole number of examples, 1 or more")
    return int(raw)


#: Examples per property test; ``GROCERYSYNC_CONTRACT_EXAMPLES`` raises or lowers it for a whole run.
EXAMPLES = _examples()


def contract_settings() -> settings:
    """Hypothesis settings of the property tests: few examples, no deadline (real servers are slow to start).

    Fixtures are function-scoped on purpose: each example makes its own source through the factory fixtures.
    The same test function runs for every contract subclass (several plugins, or a plugin with two connectors,
    in one session), which is what ``differing_executors`` warns of; here it only means that an example saved
    for one plugin is replayed for another, which is harmless.
    """
    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.differing_executors,
        ],
    )


async def maybe_await(value: T | typing.Awaitable[T]) -> T:
    """Await ``value`` if it is awaitable: factory fixtures may be plain or async functions."""
    if inspect.isawaitable(value):
        return await value
    return value


_RUNS = itertools.count(1)


def new_run_id() -> str:
    """A run id whose first 8 characters count up, so feed files of one test sort in run order."""
    return f"{next(_RUNS):08d}{uuid.uuid4().hex[:16]}"


def plain_items(count: int = 6) -> list[Item]:
    """Ordinary items any POS holds and any destination must accept: GTIN or PLU, cents, ASCII-ish names.

    Deterministic (no randomness), for tests that need a fixed catalogue.
    """
    from grocerysync.core.codes import check_digit

    out = []
    for n in range(count):
        body = f"0{41_000_000 + n * 7919:010d}"
        data: dict[str, Any] = {
            "item_id": f"{1000 + n}",
            "gtin": body + str(check_digit(body)),
            "name": f"Plain Item {n} Café",
            "brand": "House Brand",
            "size": "12 oz",
            "department": "Grocery",
            "price": Decimal(199 + n * 100) / 100,
            "taxable": n % 2 == 0,
            "snap_ebt": True,
        }
        if n % 3 == 2:
            # A weighed produce item known by its PLU only.
            data.update(gtin=None, plu=f"{4011 + n}", sold_by_weight=True, weight_unit="lb", size=None)
        if n % 4 == 1:
            data["sale"] = {"price": Decimal("0.99"), "start": datetime(2030, 1, 1), "end": datetime(2030, 1, 8)}
        out.append(Item.model_validate(data))
    return out


# ---------------------------------------------------------------------------
# Comparing items with what a plugin gives back
# ---------------------------------------------------------------------------

_MISSING = object()
_SUBMODELS: dict[str, type[BaseModel]] = {"size": Size, "sale": Sale, "multi_price": MultiPrice}
_MONEY_FIELDS = {"price", "cost", "bottle_deposit", "sale.price", "multi_price.price"}


def field_value(obj: Any, path: str) -> Any:
    """The value at a dotted ``path`` of an Item, a model or a mapping; ``_MISSING`` when a mapping lacks it.

    A mapping may hold the dotted key itself (``{"sale.price": ...}``) or nest (``{"sale": {"price": ...}}``).
    """
    if isinstance(obj, Mapping) and path in obj:
        return obj[path]
    head, _, rest = path.partition(".")
    if isinstance(obj, Mapping):
        if head not in obj:
            return _MISSING
        value = obj[head]
    else:
        value = getattr(obj, head, None)
    if not rest:
        return value
    if value is None:
        return None
    return field_value(value, rest)


def _field_type(path: str) -> Any | None:
    head, _, rest = path.partition(".")
    if rest:
        model = _SUBMODELS.get(head)
        info = model.model_fields.get(rest) if model else None
        if head == "extras":
            return None
    else:
        info = Item.model_fields.get(head)
    return info.annotation if info is not None else None


_ADAPTERS: dict[str, TypeAdapter[Any] | None] = {}


def normalise(path: str, value: Any, *, money_places: int | None = None) -> Any:
    """Bring a value to a comparable form: the item field's type, GTINs padded to 14, money rounded if asked."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if path not in _ADAPTERS:
        annotation = _field_type(path)
        _ADAPTERS[path] = TypeAdapter(annotation) if annotation is not None else None
    adapter = _ADAPTERS[path]
    if adapter is not None:
        try:
            value = adapter.validate_python(value)
        except ValidationError as exc:
            return f"<unreadable {value!r}: {exc.errors()[0]['msg']}>"
    if isinstance(value, Enum):
        value = value.value
    if path == "gtin" and isinstance(value, str):
        # GS1: a GTIN keeps its meaning when padded with leading zeros to 14 digits.
        return value.zfill(14)
    if isinstance(value, Decimal) and money_places is not None and path in _MONEY_FIELDS:
        return value.quantize(Decimal(1).scaleb(-money_places), rounding=ROUND_HALF_UP)
    return value


def differences(
    expected: Mapping[str, Any], actual: Any, *, money_places: int | None = None, where: str = ""
) -> list[str]:
    """Lines naming each field whose value differs between ``expected`` and ``actual`` (an Item or a mapping)."""
    problems = []
    for path, want in expected.items():
        got = field_value(actual, path)
        if got is _MISSING:
            problems.append(f"{where}{path}: missing (expected {want!r})")
            continue
        a = normalise(path, want, money_places=money_places)
        b = normalise(path, got, money_places=money_places)
        if a != b:
            problems.append(f"{where}{path}: expected {want!r}, got {got!r}")
    return problems


def expected_fields(item: Item, fields: Iterable[str]) -> dict[str, Any]:
    """``{field: value}`` of ``item`` for the dotted field paths ``fields``."""
    return {path: field_value(item, path) for path in fields}


def as_item_map(held: Any, *, where: str) -> dict[str, Any]:
    """Turn what ``read_back`` returned into ``{item_id: record}``, failing on an item held twice.

    ``held`` is a mapping ``{item_id: record}`` or a sequence of ``(item_id, record)`` pairs or of records
    carrying ``item_id``; the sequence form lets the suite see duplicates that a mapping would hide.
    """
    if isinstance(held, Mapping):
        return {str(k): v for k, v in held.items()}
    out: dict[str, Any] = {}
    for entry in held:
        if isinstance(entry, tuple) and len(entry) == 2:
            key, record = entry
        else:
            key, record = field_value(entry, "item_id"), entry
        key = str(key)
        assert key not in out, f"{where}: item {key!r} is held more than once; writes must upsert by item_id"
        out[key] = record
    return out


# ---------------------------------------------------------------------------
# Config models and secrets
# ---------------------------------------------------------------------------


def undocumented_fields(model: type[BaseModel]) -> list[str]:
    """Names of the fields without a description: the hub shows a form field nobody explained."""
    missing = []
    for name, info in model.model_fields.items():
        if not (info.description and info.description.strip()):
            missing.append(name)
    return missing


def is_secret_annotation(annotation: Any) -> bool:
    """True when a field's type is SecretStr/SecretBytes, optionally in a union with None."""
    if annotation in (SecretStr, SecretBytes):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return is_secret_annotation(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(is_secret_annotation(a) for a in args)
    return False


def secret_fragments(secrets: Mapping[str, Any]) -> list[str]:
    """The secret values to look for in output: each whole value, and each long line of multi-line ones (keys).

    PEM armour lines (``-----BEGIN ...``) are public and left out.
    """
    out = []
    for value in secrets.values():
        if isinstance(value, SecretStr | SecretBytes):
            value = value.get_secret_value()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str) or not value:
            continue
        out.append(value)
        for line in value.splitlines():
            line = line.strip()
            if len(line) >= 16 and not line.startswith("-----") and line != value:
                out.append(line)
    return out


def leaks(texts: Sequence[tuple[str, str]], fragments: Sequence[str]) -> list[str]:
    """``"<where>"`` for each text (``(where, text)``) that contains a secret fragment."""
    return [where for where, text in texts if any(f in text for f in fragments)]
