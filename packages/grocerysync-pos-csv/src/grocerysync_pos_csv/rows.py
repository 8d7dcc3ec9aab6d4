"""Turning one parsed CSV row into the data of a :class:`~grocerysync.core.results.RawRecord`.

The plan is worked out once per file (column positions, and a converter only for the fields the
configuration asks to convert), so each row costs a few dictionary stores. Values are otherwise passed on
as the text the POS wrote: checking them (check digits, negative prices, missing values) is the pipeline's
job, and its errors then name the item field. The one exception is a plain number in a price, cost, deposit
or stock column (digits, at most one point): it is handed over as the Decimal the item model would make of
it, one per different text in the file (see :class:`DecimalTexts`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import xxhash

from grocerysync.core.codes import GtinStyle, normalize_gtin
from grocerysync.core.items import Item
from grocerysync.core.results import RawRecord
from grocerysync_pos_csv.config import CsvConfig

Converter = Callable[[str], Any]

MONEY_FIELDS = frozenset({"price", "cost", "bottle_deposit", "sale.price", "multi_price.price"})
NUMBER_FIELDS = frozenset({"stock", "size.value"})
#: Fields the item model holds as Decimal and a column gives on its own (a size's value goes to the item
#: model inside the size text, with its unit).
DECIMAL_FIELDS = frozenset({"price", "cost", "bottle_deposit", "sale.price", "multi_price.price", "stock"})
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


# ASCII digits with at most one point: text that Decimal() and the item model read the same way, always.
_PLAIN_NUMBER = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?").fullmatch


class DecimalTexts:
    """Plain number texts (``6.39``, ``12``) as Decimals, made once per file and shared by the rows that have
    them.

    A catalogue repeats a few hundred prices and stock counts over and over, and a Decimal the item model is
    handed costs it a type check where a text costs a parse: sharing one per text took 0.45 us an item off
    validation for a few hundred KB. Only plain texts are converted (``Decimal("1_000")`` or
    ``Decimal(" 5 ")`` would be read where the item model might not, and a value it refuses is better shown
    as the POS wrote it); anything else stays text, for the item model to read or refuse as ever. Decimals
    are immutable, so sharing one changes nothing for the items.

    The first ``size`` different texts are remembered and no more, so memory stays bounded; the most frequent
    values come early in any catalogue.
    """

    def __init__(self, size: int = 1024) -> None:
        self._known: dict[str, Decimal | str] = {}
        #: What :meth:`convert` gave for a text as it is in the file (a Decimal or the converted text), or None.
        self.get = self._known.get
        self._room = size

    def convert(self, raw: str, text: str) -> Decimal | str:
        """``text`` (``raw`` after the column's conversion: currency symbols, decimal commas) as a Decimal when
        it is a plain number, else ``text`` itself; remembered under ``raw`` while there is room."""
        value: Decimal | str = text
        if _PLAIN_NUMBER(text) is not None:
            number = Decimal(text)
            # "007" or "0.0000001" print as 7 and 1E-7: a message about the value would not show what the POS
            # wrote, so the item model gets the text, as for anything else.
            if str(number) == text:
                value = number
        if self._room > 0:
            self._known[raw] = value
            self._room -= 1
        return value


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


#: Bump when the same row read with the same settings would give other record data, or when the digest is
#: worked out another way: each record's digest (see :meth:`RowBuilder.digest`) then changes, and every item
#: is sent again once. 2: XXH3 instead of BLAKE2b.
ROW_FORMAT = 2

_DIGITS = frozenset("0123456789")
#: Up to this many empty values are tested with ``!=`` (no hashing of the cell), more with a set.
_EMPTY_COMPARISONS = 4

#: ``tuple.__new__(RawRecord, (ref, data, digest))`` is a ``RawRecord(ref, data, digest)`` without the
#: Python-level ``__new__`` that named tuples have, which costs more than the tuple itself.
_new_tuple = tuple.__new__

#: Called with the row (the line split at the delimiter) and its line number.
Misfit = Callable[[list[str], int], None]
#: Called with the row, its line number and what stopped it.
Reject = Callable[[list[str], int, RowError], None]
#: See :meth:`RowBuilder.plain_reader`.
PlainReader = Callable[[Sequence[str], int, list[RawRecord], Misfit, Reject], None]


class RowBuilder:
    """Builds record data from a row: ``build(row)`` -> dict keyed by item field names (nested for
    size, sale, multi_price and extras). Empty cells are left out. Raises :class:`RowError`.

    ``positions`` maps each column key of the configuration to its 0-based column index; ``delimiter`` is
    the one the file is read with (the configured one, or the one detected).

    Each record carries a digest of its row (see :meth:`digest`), which the delta check compares instead of
    hashing the record's data.

    ``build`` is generated once per file as straight-line code, one statement per mapped column, because
    a loop over column specs costs several times more per row than the dictionary stores themselves; so is
    the loop of :meth:`plain_reader`. Only integers are written into the generated source; names and
    converters are passed in as values.
    """

    def __init__(self, config: CsvConfig, positions: Mapping[str, int], delimiter: str = ",") -> None:
        self.config = config
        self.positions = dict(positions)
        self.delimiter = delimiter
        self.needed_columns = max(positions.values()) + 1
        self.item_id_index = positions["item_id"]
        self.decimals = DecimalTexts()
        empties = list(dict.fromkeys(config.empty_values))
        self._namespace: dict[str, Any] = {
            "EMPTY": frozenset(empties),
            "DIGITS": _DIGITS,
            "BOOL": _bool(config),
            "BOOL_TABLE": _bool_table(config),
            "RowError": RowError,
            "RawRecord": RawRecord,
            "NEW": _new_tuple,
            "HASH": xxhash.xxh3_64_hexdigest,
            # Per builder, so per file: what it remembers goes with the read.
            "DGET": self.decimals.get,
            "DEC": self.decimals.convert,
            "SEED": _digest_seed(config, self.positions, delimiter),
        }
        self._empties = empties
        for i, value in enumerate(empties):
            self._namespace[f"E{i}"] = value
        body = [*self._body("    ", named=False), "    return data"]
        build, self.source = self._compile("build(row)", body)
        self.build: Callable[[Sequence[str]], dict[str, Any]] = build

    def digest(self, row: Sequence[str]) -> str | None:
        """The digest of a row's cells: their 64-bit XXH3 hash (16 hex digits), seeded with a hash of
        everything that turns cells into record data (the settings but the file's path, the column positions,
        :data:`ROW_FORMAT`). Equal digests mean equal cells, so equal data: two different rows share one with
        odds of 2^-64. None when a cell holds the delimiter: the cells joined at the delimiter would then not
        tell such a row from another one.

        XXH3 rather than BLAKE2b: it only has to tell a row's new text from its last, not resist someone crafting
        collisions (whoever could do that writes the POS export anyway), and it costs 60 ns a row where BLAKE2b
        cost 400."""
        delimiter = self.delimiter
        text = delimiter.join(row)
        if text.count(delimiter) != len(row) - 1:
            return None
        return str(xxhash.xxh3_64_hexdigest(text.encode(), self._namespace["SEED"]))

    def plain_reader(self, width: int) -> PlainReader:
        """``read(lines, number, records, misfit, reject)``: the records of lines that hold no quote
        character, split at ``delimiter``; ``number`` is the line number before the first line.

        A line without ``width`` cells goes to ``misfit`` (a blank line to nobody, as the CSV reader
        skips it), a row the build rejects to ``reject``. The loop and the build are one generated
        function, so a line costs no call.
        """
        namespace = self._namespace
        namespace["DELIMITER"] = self.delimiter
        used = set(self.positions.values())
        # Unpacking checks the width and fetches every cell in one step; past a few unused cells per
        # mapped one, indexing the list costs less.
        unpack = width <= 3 * len(used) + 8
        body = [
            "    append = records.append",
            "    for line in lines:",
            "        number += 1",
        ]
        if width == 1:
            body.append("        if not line: continue")  # a blank line, which the CSV reader skips
        if unpack:
            cells = ", ".join(f"c{i}" if i in used else "_" for i in range(width))
            comma = "," if width == 1 else ""
            body += [
                "        try:",
                f"            {cells}{comma} = line.split(DELIMITER)",
                "        except ValueError:",
                "            if line: misfit(line.split(DELIMITER), number)",
                "            continue",
            ]
        else:
            body += [
                "        row = line.split(DELIMITER)",
                f"        if len(row) != {int(width)}:",
                "            if line: misfit(row, number)",
                "            continue",
            ]
        body += [
            "        try:",
            *self._body("            ", named=unpack),
            "        except RowError as exc:",
            "            reject(line.split(DELIMITER), number, exc)",
            "            continue",
            # A line without a quote character is its cells joined at the delimiter: its digest is theirs.
            "        if data:",
            "            append(NEW(RawRecord, (f'row {number}', data, HASH(line.encode(), SEED))))",
        ]
        read: PlainReader = self._compile("read(lines, number, records, misfit, reject)", body)[0]
        return read

    def _compile(self, signature: str, body: list[str]) -> tuple[Any, str]:
        """The function ``signature`` with ``body``, and its source. Every name of the namespace is bound
        as a keyword-only default, because loading a local costs less than loading a global."""
        namespace = dict(self._namespace)
        bound = ", ".join(f"{name}={name}" for name in namespace)
        source = "\n".join([f"def {signature[:-1]}, *, {bound}):", *body])
        exec(compile(source, f"<csv row builder for {self.config.path}>", "exec"), namespace)  # noqa: S102
        return namespace[signature.partition("(")[0]], source

    def _body(self, indent: str, *, named: bool) -> list[str]:
        """Statements that leave the record data in ``data``, taking cell i from the local ``c<i>`` when
        ``named``, else from ``row[i]``."""
        config, namespace = self.config, self._namespace
        heads = list(dict.fromkeys(key.partition(".")[0] for key in self.positions if "." in key))
        top: list[str] = []
        groups: dict[str, list[str]] = {head: [] for head in heads}
        cells: dict[str, list[str]] = {head: [] for head in heads}
        for n, (key, index) in enumerate(self.positions.items()):
            head, dot, sub = key.partition(".")
            namespace[f"K{n}"] = sub if dot else key
            target = f"part_{heads.index(head)}" if dot else "data"
            if named:
                statements = self._statements(n, key, config, target, f"c{int(index)}")
            else:
                statements = [f"v = row[{int(index)}]", *self._statements(n, key, config, target, "v")]
            (groups[head] if dot else top).extend(statements)
            if dot:
                cells[head].append(f"c{int(index)}")
        body = ["data = {}", *top]
        for g, (head, lines) in enumerate(groups.items()):
            namespace[f"G{g}"] = head
            part = [f"part_{g} = {{}}", *lines, f"if part_{g}:"]
            if head == "size":
                # As text, the size goes through the item model's unit names ("LBS", "fl. oz").
                part += [
                    f"    if len(part_{g}) == 2:",
                    f"        part_{g} = part_{g}['value'] + ' ' + part_{g}['unit']",
                ]
            part.append(f"    data[G{g}] = part_{g}")
            if named and self._empties:
                # Groups such as sale are mostly empty: one test of their cells saves making a dict.
                tests = " or ".join(f"({self._not_empty(cell)})" for cell in cells[head])
                part = [f"if {tests}:", *("    " + line for line in part)]
            body += part
        return [indent + line for line in body]

    def _not_empty(self, v: str) -> str | None:
        """The test that ``v`` is not an empty value (None: nothing is empty)."""
        empties = self._empties
        if not empties:
            return None
        if len(empties) > _EMPTY_COMPARISONS:
            return f"{v} not in EMPTY"
        # Comparing with a few strings costs less than hashing the cell; "" goes first, as a truth test.
        tests = [v if value == "" else f"{v} != E{i}" for i, value in enumerate(empties)]
        return " and ".join(sorted(tests, key=lambda test: test != v))

    def _statements(self, n: int, key: str, config: CsvConfig, target: str, v: str) -> list[str]:
        """The statements for column key ``key`` (number ``n``), whose cell is in the local ``v``."""
        store = f"{target}[K{n}]"
        if key in BOOL_FIELDS:
            # A known flag value is stored as a bool; unknown text goes on for the item model to name.
            return [
                "try:",
                f"    {store} = BOOL_TABLE[{v}]",
                "except KeyError:",
                f"    b = BOOL({v})",
                f"    if b is not {v} or {v} not in EMPTY: {store} = b",
            ]
        convert = converter_for(key, config)
        value = v
        if convert is not None:
            self._namespace[f"C{n}"] = convert
            value = f"C{n}({v})"
            if key in MONEY_FIELDS and not config.decimal_comma:
                # Plain numbers (first and last character digits) need no currency stripping. An empty
                # value never gets here when "" is one of the empty values, so indexing is safe.
                first, last = (f"{v}[0]", f"{v}[-1]") if "" in self._empties else (f"{v}[:1]", f"{v}[-1:]")
                value = f"{v} if {first} in DIGITS and {last} in DIGITS else C{n}({v})"
        if key in DECIMAL_FIELDS:
            # One dictionary lookup for a number met before; DEC (the conversion's result) the first time.
            value = f"d if (d := DGET({v})) is not None else DEC({v}, {value})"
        test = self._not_empty(v)
        if test is None:
            return [f"{store} = {value}"]
        return [f"if {test}:", f"    {store} = {value}"]


def _digest_seed(config: CsvConfig, positions: Mapping[str, int], delimiter: str) -> int:
    """The seed of each row's digest: 64 bits of a hash of what turns cells into data."""
    shape = {
        "format": ROW_FORMAT,
        # The path is left out: the same export read from a new place is the same items.
        "settings": config.model_dump(mode="json", exclude={"path"}),
        "positions": dict(positions),
        "delimiter": delimiter,
    }
    return int.from_bytes(hashlib.blake2b(json.dumps(shape, sort_keys=True).encode(), digest_size=8).digest(), "big")
