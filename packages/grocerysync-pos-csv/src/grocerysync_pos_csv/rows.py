"""Turning one parsed CSV row into the data of a :class:`~grocerysync.core.results.RawRecord`.

The plan is worked out once per file (column positions, and a converter only for the fields the
configuration asks to convert), so each row costs a few dictionary stores. Values are otherwise passed on
as the text the POS wrote: checking them (check digits, negative prices, missing values) is the pipeline's
job, and its errors then name the item field.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from grocerysync.core.codes import GtinStyle, normalize_gtin
from grocerysync.core.items import Item
from grocerysync_pos_csv.config import CsvConfig

Converter = Callable[[str], Any]

MONEY_FIELDS = frozenset({"price", "cost", "bottle_deposit", "sale.price", "multi_price.price"})
NUMBER_FIELDS = frozenset({"stock", "size.value"})
DATE_FIELDS = frozenset({"sale.start", "sale.end", "last_changed"})
# POS systems write units in capitals ("LB"); the item model's unit names are lower case.
LOWER_FIELDS = frozenset({"weight_unit"})


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return bool in typing.get_args(annotation)
    return False


BOOL_FIELDS = frozenset(name for name, info in Item.model_fields.items() if _is_bool(info.annotation))


class RowError(ValueError):
    """A value that stops a row at the read stage; the message names the field."""


def _money(config: CsvConfig) -> Converter | None:
    symbols = tuple(config.currency_symbols)
    decimal_comma = config.decimal_comma
    if not symbols and not decimal_comma:
        return None

    def convert(value: str) -> str:
        for symbol in symbols:
            if symbol in value:
                value = value.replace(symbol, "")
        if decimal_comma:
            value = _from_decimal_comma(value)
        return value.strip()

    return convert


def _from_decimal_comma(value: str) -> str:
    # "1.234,50" -> "1234.50": dots and spaces group thousands, the comma is the decimal point.
    return value.replace(".", "").replace(" ", "").replace("\xa0", "").replace(",", ".")


def _multi_price(config: CsvConfig) -> Converter | None:
    if not config.decimal_comma:
        return None  # the item model reads "2/$5.00" and "2 for 5" itself

    def convert(value: str) -> str:
        quantity, sep, price = value.partition("/")
        return quantity + sep + _from_decimal_comma(price) if sep else value.replace(",", ".")

    return convert


def _date(field: str, fmt: str | None) -> Converter | None:
    if fmt is None:
        return None  # ISO text: the item model parses it

    # Sale dates repeat across thousands of items; strptime is slow, so remember recent answers.
    @functools.lru_cache(maxsize=1024)
    def convert(value: str) -> datetime:
        try:
            return datetime.strptime(value.strip(), fmt)
        except ValueError:
            raise RowError(
                f"{field}: {value!r} does not match the date format {fmt!r} — fix the value in the POS "
                "or the connector's date_format"
            ) from None

    return convert


def _gtin(style: GtinStyle) -> Converter | None:
    if style is GtinStyle.STRICT:
        return None  # the item model checks strict barcodes itself

    def convert(value: str) -> str:
        try:
            return normalize_gtin(value, style)
        except ValueError as exc:
            raise RowError(f"gtin: {exc} (gtin_style is {style.value})") from None

    return convert


def _bool_table(config: CsvConfig) -> dict[str, bool]:
    table: dict[str, bool] = {}
    for values, meaning in ((config.false_values, False), (config.true_values, True)):
        for value in values:
            key = value.strip().casefold()
            for variant in {value, key, key.upper(), key.title()}:
                table[variant] = meaning
    return table


def _bool(config: CsvConfig) -> Converter:
    get = _bool_table(config).get

    def convert(value: str) -> bool | str:
        found = get(value)
        if found is None:
            found = get(value.strip().casefold())
        # Unknown text is returned as it is (the same object), for the item model to say what is wrong.
        return value if found is None else found

    return convert


def converter_for(field: str, config: CsvConfig) -> Converter | None:
    """The converter for one mapped field under ``config``, or None to pass the text on unchanged."""
    if field in MONEY_FIELDS:
        return _money(config)
    if field in NUMBER_FIELDS:
        return _from_decimal_comma if config.decimal_comma else None
    if field in DATE_FIELDS:
        return _date(field, config.date_format)
    if field == "gtin":
        return _gtin(config.gtin_style)
    if field == "multi_price":
        return _multi_price(config)
    if field in LOWER_FIELDS:
        return str.lower
    return None


_DIGITS = frozenset("0123456789")


class RowBuilder:
    """Builds record data from a row: ``build(row)`` -> dict keyed by item field names (nested for
    size, sale, multi_price and extras). Empty cells are left out. Raises :class:`RowError`.

    ``positions`` maps each column key of the configuration to its 0-based column index.

    ``build`` is generated once per file as straight-line code, one statement per mapped column, because
    a loop over column specs costs several times more per row than the dictionary stores themselves.
    Only integers are written into the generated source; names and converters are passed in as values.
    """

    def __init__(self, config: CsvConfig, positions: Mapping[str, int]) -> None:
        self.needed_columns = max(positions.values()) + 1
        self.item_id_index = positions["item_id"]
        namespace: dict[str, Any] = {
            "EMPTY": frozenset(config.empty_values),
            "DIGITS": _DIGITS,
            "BOOL": _bool(config),
            "BOOL_TABLE": _bool_table(config).get,
        }
        heads = list(dict.fromkeys(key.partition(".")[0] for key in positions if "." in key))
        top: list[str] = []
        groups: dict[str, list[str]] = {head: [] for head in heads}
        for n, (key, index) in enumerate(positions.items()):
            head, dot, sub = key.partition(".")
            namespace[f"K{n}"] = sub if dot else key
            if dot:
                groups[head] += self._statements(n, key, index, config, namespace, f"part_{heads.index(head)}")
            else:
                top += self._statements(n, key, index, config, namespace, "data")
        body = ["def build(row):", "    data = {}", *top]
        for g, (head, lines) in enumerate(groups.items()):
            namespace[f"G{g}"] = head
            body += [f"    part_{g} = {{}}", *lines, f"    if part_{g}:"]
            if head == "size":
                # As text, the size goes through the item model's unit names ("LBS", "fl. oz").
                body += [
                    f"        if len(part_{g}) == 2:",
                    f"            part_{g} = part_{g}['value'] + ' ' + part_{g}['unit']",
                ]
            body.append(f"        data[G{g}] = part_{g}")
        body.append("    return data")
        exec(compile("\n".join(body), f"<csv row builder for {config.path}>", "exec"), namespace)  # noqa: S102
        self.build: Callable[[Sequence[str]], dict[str, Any]] = namespace["build"]
        self.source = "\n".join(body)

    @staticmethod
    def _statements(
        n: int, key: str, index: int, config: CsvConfig, namespace: dict[str, Any], target: str
    ) -> list[str]:
        store = f"{target}[K{n}]"
        fetch = f"    v = row[{int(index)}]"
        if key in BOOL_FIELDS:
            # A known flag value is stored as a bool; unknown text goes on for the item model to name.
            return [
                fetch,
                "    b = BOOL_TABLE(v)",
                "    if b is None:",
                "        b = BOOL(v)",
                f"    if b is not v or v not in EMPTY: {store} = b",
            ]
        convert = converter_for(key, config)
        if convert is None:
            return [fetch, f"    if v not in EMPTY: {store} = v"]
        namespace[f"C{n}"] = convert
        if key in MONEY_FIELDS and not config.decimal_comma:
            # Plain numbers (first and last character digits) need no currency stripping.
            return [
                fetch,
                "    if v not in EMPTY:",
                f"        {store} = v if v[:1] in DIGITS and v[-1:] in DIGITS else C{n}(v)",
            ]
        return [fetch, f"    if v not in EMPTY: {store} = C{n}(v)"]
