"""Item feed files: the formats, the file names and a streaming writer, shared by file-based destinations.

Two formats:

``csv``
    An Instacart-style catalogue file, one row per item, with a header row. Columns, in order:

    ========================  =================================================================
    ``lookup_code``           the item's UPC/EAN (GTIN) or, when it has none, its PLU
    ``retailer_reference_code``  the POS item id (the key the platform upserts by)
    ``item_name``             name
    ``brand_name``            brand
    ``size``                  package size number (``12``), empty when unknown
    ``size_uom``              package size unit (``oz``, ``fl oz``, ``lb``, ``ct``, ...)
    ``price``                 regular price, per ``cost_unit``
    ``cost_unit``             ``each``, or ``lb`` / ``kg`` for weighed items (per-oz and per-g
                              prices are converted to per-lb and per-kg)
    ``sale_price``            temporary sale price, per ``cost_unit``
    ``sale_start_at``         sale start, ISO 8601 (store local time unless the POS gave a zone)
    ``sale_end_at``           sale end, ISO 8601
    ``multi_buy_quantity``    quantity of a "2 for $5" price (``2``)
    ``multi_buy_price``       total price of a "2 for $5" price (``5.00``)
    ``department``            department
    ``category``              category
    ``available``             ``TRUE`` when the item is active and sold online
    ``alcoholic``             ``TRUE`` when the minimum age is 21 or more
    ``min_age``               minimum buyer age, empty when none
    ``snap_eligible``         SNAP/EBT eligible
    ``wic_eligible``          WIC eligible
    ``taxable``               taxable
    ``bottle_deposit``        bottle deposit amount
    ``remote_image_url``      image URL
    ``stock``                 quantity on hand
    ``last_changed_at``       when the POS last changed the item, ISO 8601
    ``deleted``               ``TRUE`` on a deletion row (only ``retailer_reference_code`` is set)
    ========================  =================================================================

    Booleans are ``TRUE`` / ``FALSE``. The item's cost is deliberately not written: a feed goes to
    a third party and the retailer's wholesale cost is not theirs to see. An item with neither GTIN
    nor PLU cannot be carried (the platform matches items by lookup code) and fails with a reason.

``jsonl``
    One JSON object per line: ``{"op": "upsert", "item": {...}}`` where ``item`` is the
    :class:`~grocerysync.core.items.Item` in JSON (``Item.model_validate`` reads it back), or
    ``{"op": "delete", "item_id": "..."}``.

Feed file names are unique and sort by time: see :func:`feed_file_name`.

Speed matters here (it is on the hot path of every file export): a batch is serialised in bulk
and written with one system call, and a batch is atomic in the file (see :class:`FeedWriter`).
"""

from __future__ import annotations

import csv
import enum
import hashlib
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, TypeAdapter

from grocerysync.core.errors import DestinationError
from grocerysync.core.items import Item, WeightUnit
from grocerysync.core.results import ItemResult

# orjson is optional (the file destinations depend on it): about twice as fast as pydantic's own
# JSON for a batch of items. Typed Any so the fallback path type-checks where orjson is installed.
orjson: Any
try:
    import orjson
except ImportError:  # pragma: no cover - exercised by forcing the fallback in the tests
    orjson = None

__all__ = [
    "CSV_COLUMNS",
    "FeedFileName",
    "FeedFormat",
    "FeedWriter",
    "feed_file_name",
    "job_slug",
    "parse_feed_file_name",
]


class FeedFormat(enum.StrEnum):
    """The formats a feed file can be written in."""

    CSV = "csv"
    JSONL = "jsonl"

    @property
    def extension(self) -> str:
        """The file name extension, without the dot."""
        return self.value


CSV_COLUMNS: tuple[str, ...] = (
    "lookup_code",
    "retailer_reference_code",
    "item_name",
    "brand_name",
    "size",
    "size_uom",
    "price",
    "cost_unit",
    "sale_price",
    "sale_start_at",
    "sale_end_at",
    "multi_buy_quantity",
    "multi_buy_price",
    "department",
    "category",
    "available",
    "alcoholic",
    "min_age",
    "snap_eligible",
    "wic_eligible",
    "taxable",
    "bottle_deposit",
    "remote_image_url",
    "stock",
    "last_changed_at",
    "deleted",
)
"""The ``csv`` format's columns, in order (the header row)."""

NO_LOOKUP_CODE = "no UPC/EAN or PLU: an Instacart-style feed needs a lookup code"

# ---------------------------------------------------------------------------------------------
# File names
# ---------------------------------------------------------------------------------------------

_SLUG_DROP = re.compile(r"[^a-z0-9]+")
_PREFIX_OK = re.compile(r"^[A-Za-z0-9._-]*$")
_NAME_RE = re.compile(
    r"^(?P<stem>.*?)_(?P<mode>full|delta)_(?P<stamp>\d{8}T\d{9}Z)_(?P<run>[a-z0-9]{1,8})\.(?P<ext>csv|jsonl)$"
)
_SLUG_MAX = 48


def job_slug(job_name: str) -> str:
    """A job name as it appears in file names: lowercase letters, digits and ``-`` (``"job"`` if none)."""
    slug = _SLUG_DROP.sub("-", job_name.lower()).strip("-")[:_SLUG_MAX].strip("-")
    return slug or "job"


def check_file_prefix(prefix: str) -> str:
    """Validate a feed file prefix (letters, digits, ``.``, ``_``, ``-``; at most 64); for config models."""
    if len(prefix) > 64 or not _PREFIX_OK.match(prefix):
        raise ValueError(
            f"file_prefix {prefix!r} may only hold letters, digits, '.', '_' and '-' (at most 64 characters)"
        )
    return prefix


def feed_file_name(
    prefix: str,
    job_name: str,
    mode: str,
    run_id: str,
    fmt: FeedFormat | str,
    *,
    when: datetime | None = None,
) -> str:
    """The feed file name for one run: ``<prefix><job-slug>_<full|delta>_<yyyymmddThhmmssmmmZ>_<run8>.<ext>``.

    The time is UTC to the millisecond (``when``, default now), so names sort by time within a job; 8 hex
    digits of a hash of ``run_id`` keep names of different runs apart whatever shape run ids take (the
    agent's start with a timestamp, so their first letters alone would not).
    """
    if mode not in ("full", "delta"):
        raise ValueError(f"feed mode {mode!r} must be 'full' or 'delta'")
    check_file_prefix(prefix)
    if not run_id.strip():
        raise ValueError("run id is empty: a feed file name needs one")
    run = hashlib.blake2b(run_id.encode("utf-8"), digest_size=4).hexdigest()
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    # Milliseconds: runs of one job never overlap (the agent locks the job), so names sort in run
    # order, which is the order a platform must apply delta files in.
    stamp = f"{moment:%Y%m%dT%H%M%S}{moment.microsecond // 1000:03d}Z"
    return f"{prefix}{job_slug(job_name)}_{mode}_{stamp}_{run}.{FeedFormat(fmt).extension}"


@dataclass(frozen=True, slots=True)
class FeedFileName:
    """A parsed feed file name (see :func:`parse_feed_file_name`)."""

    name: str
    stem: str
    mode: str
    stamp: str
    run: str
    format: FeedFormat

    @property
    def sort_key(self) -> tuple[str, str]:
        """Oldest first, whatever the mode."""
        return (self.stamp, self.run)


def parse_feed_file_name(name: str, *, prefix: str | None = None, job_name: str | None = None) -> FeedFileName | None:
    """Parse a name made by :func:`feed_file_name`; None when it is not one (or not this job's).

    With ``prefix`` and ``job_name``, only that job's files match: slugs hold no ``_``, so
    ``store-2`` files never match job ``store``.
    """
    match = _NAME_RE.match(name)
    if not match:
        return None
    stem = match["stem"]
    if prefix is not None and job_name is not None and stem != prefix + job_slug(job_name):
        return None
    return FeedFileName(name, stem, match["mode"], match["stamp"], match["run"], FeedFormat(match["ext"]))


# ---------------------------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------------------------

_ITEMS = TypeAdapter(list[Item])
_DELETE = TypeAdapter(dict[str, str])
_T, _F = "TRUE", "FALSE"
# Per-ounce and per-gram prices become per-pound and per-kilogram: platforms price weighed goods so.
_WEIGHT = {
    None: ("each", None),
    WeightUnit.LB: ("lb", None),
    WeightUnit.KG: ("kg", None),
    WeightUnit.OZ: ("lb", Decimal(16)),
    WeightUnit.G: ("kg", Decimal(1000)),
}
_CENT = Decimal("0.01")


def _scaled(value: Decimal | None, factor: Decimal | None) -> Decimal | None:
    if value is None or factor is None:
        return value
    return (value * factor).quantize(_CENT)


def _csv_row(it: Item) -> tuple[Any, ...]:
    """One item's row as the csv module writes it (``None`` is an empty field); the item has a lookup code."""
    size, sale, multi, min_age = it.size, it.sale, it.multi_price, it.min_age
    unit, factor = _WEIGHT[it.weight_unit]
    price = it.price if factor is None else _scaled(it.price, factor)
    sale_price = None if sale is None else (sale.price if factor is None else _scaled(sale.price, factor))
    changed = it.last_changed
    return (
        it.gtin or it.plu,
        it.item_id,
        it.name,
        it.brand,
        None if size is None else size.value,
        None if size is None else size.unit,  # a StrEnum: csv writes its value
        price,
        unit,
        sale_price,
        None if sale is None or sale.start is None else sale.start.isoformat(),
        None if sale is None or sale.end is None else sale.end.isoformat(),
        None if multi is None else multi.quantity,
        None if multi is None else multi.price,
        it.department,
        it.category,
        _T if it.active and it.online else _F,
        _T if min_age is not None and min_age >= 21 else _F,
        min_age,
        _T if it.snap_ebt else _F,
        _T if it.wic else _F,
        _T if it.taxable else _F,
        it.bottle_deposit,
        it.image_url,
        it.stock,
        None if changed is None else changed.isoformat(),
        _F,
    )


# Every field a row reads, in one C call on vars(item), the dict where pydantic keeps field values:
# reading 22 attributes one by one costs more than formatting the row, and attrgetter twice this.
_ROW_FIELDS = itemgetter(
    "item_id",
    "gtin",
    "plu",
    "name",
    "brand",
    "size",
    "department",
    "category",
    "price",
    "sale",
    "multi_price",
    "weight_unit",
    "stock",
    "taxable",
    "snap_ebt",
    "wic",
    "min_age",
    "bottle_deposit",
    "online",
    "active",
    "image_url",
    "last_changed",
)
_SEPARATORS = len(CSV_COLUMNS) - 1


def _csv_batch(items: Sequence[Item]) -> tuple[bytes, int, list[ItemResult]]:
    """The csv text of the items the format can carry, how many rows it holds, and one result per item.

    Each row is formatted straight into one line of text: the same text the csv module writes for
    :func:`_csv_row` (``str()`` of each value, ``None`` empty) as long as no field needs quoting, and
    only free text (ids, names, URLs) ever can. One scan of the batch finds out; the rare rows that
    do need quotes are written by the csv module (:func:`_csv_quoted`).
    """
    lines: list[str] = []
    ids: list[str] = []
    failed: list[tuple[int, ItemResult]] = []
    for (
        item_id,
        gtin,
        plu,
        name,
        brand,
        size,
        department,
        category,
        price,
        sale,
        multi,
        weight,
        stock,
        taxable,
        snap,
        wic,
        min_age,
        deposit,
        online,
        active,
        image,
        changed,
    ) in map(_ROW_FIELDS, map(vars, items)):
        code = gtin or plu
        if code is None:
            failed.append((len(ids) + len(failed), ItemResult.failure(item_id, NO_LOOKUP_CODE)))
            continue
        unit, factor = _WEIGHT[weight]
        if factor is not None:
            price = _scaled(price, factor)
        if sale is None:
            sale_price = sale_start = sale_end = ""
        else:
            start, end = sale.start, sale.end
            sale_price = str(sale.price if factor is None else _scaled(sale.price, factor))
            sale_start = "" if start is None else start.isoformat()
            sale_end = "" if end is None else end.isoformat()
        # The csv module's text for each value is str() of it, "" for None; a str as it is.
        row = (
            code,
            item_id,
            name,
            "" if brand is None else brand,
            "" if size is None else str(size.value),
            "" if size is None else size.unit,  # a StrEnum: join takes its value
            str(price),
            unit,
            sale_price,
            sale_start,
            sale_end,
            "" if multi is None else str(multi.quantity),
            "" if multi is None else str(multi.price),
            "" if department is None else department,
            "" if category is None else category,
            _T if active and online else _F,
            _T if min_age is not None and min_age >= 21 else _F,
            "" if min_age is None else str(min_age),
            _T if snap else _F,
            _T if wic else _F,
            _T if taxable else _F,
            "" if deposit is None else str(deposit),
            "" if image is None else image,
            "" if stock is None else str(stock),
            "" if changed is None else changed.isoformat(),
            _F,
        )
        try:
            lines.append(",".join(row))
        except TypeError:
            # A text field that is not a str (an item built without validation): the csv module
            # writes str() of it, so send the row there as one that needs quoting.
            lines.append('"')
        ids.append(item_id)
    results = _successes(ids)
    for index, failure in failed:  # in order, so each lands at its item's position
        results.insert(index, failure)
    rows = len(lines)
    if not rows:
        return b"", 0, results
    # A field needs quotes when it holds a quote, a line break or a comma (then the row has too many).
    # "in" is a memchr; counting commas is the one full pass.
    bare = "".join(lines)
    if '"' in bare or "\n" in bare or "\r" in bare or bare.count(",") != rows * _SEPARATORS:
        text = _csv_quoted(lines, [it for it in items if (it.gtin or it.plu) is not None])
    else:
        lines.append("")  # so the join ends the last row too, without copying the text once more
        text = "\r\n".join(lines)
    return text.encode("utf-8"), rows, results


def _csv_quoted(lines: Sequence[str], items: Sequence[Item]) -> str:
    """The batch's text, with the rows that need quoting written by the csv module.

    ``lines[i]`` is the unquoted line of ``items[i]``; the other lines are kept as they are.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for line, it in zip(lines, items, strict=True):
        if '"' in line or "\n" in line or "\r" in line or line.count(",") != _SEPARATORS:
            writer.writerow(_csv_row(it))
        else:
            buf.write(line + "\r\n")
    return buf.getvalue()


# The fields of a success after its item id, as ItemResult makes them.
_SUCCESS_TAIL = ItemResult("", True)[1:]
_new_result = partial(tuple.__new__, ItemResult)


def _successes(item_ids: Iterable[str]) -> list[ItemResult]:
    """``[ItemResult(i, True) for i in item_ids]``, without the named tuple's Python-level ``__new__`` per item."""
    return list(map(_new_result, zip(item_ids, *map(repeat, _SUCCESS_TAIL), strict=False)))


_EMPTY_ROW_BEFORE_DELETED = ("",) * (len(CSV_COLUMNS) - 1)


def _csv_text(rows: Iterable[Sequence[Any]], header: bool = False) -> bytes:
    buf = io.StringIO()
    # "\r\n" is what RFC 4180 and spreadsheet tools expect; csv writes None as an empty field.
    writer = csv.writer(buf, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _orjson_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return value.__dict__
    raise TypeError(f"cannot serialise {type(value).__name__}")


# Each item's JSON object starts with "item_id" (the model's first field), and a "},{" outside a
# string can only sit between two list elements (an item holds no lists of objects; quotes inside
# strings are escaped): so one bulk dump of the batch is split into lines by one bytes.replace.
_ITEM_SEP = b'},{"item_id":'
_UPSERT_SEP = b'}}\n{"op":"upsert","item":{"item_id":'
_UPSERT_HEAD = b'{"op":"upsert","item":'


def _jsonl_upserts(items: Sequence[Item]) -> bytes:
    if not items:
        return b""
    blob: bytes | None = None
    if orjson is not None:
        try:
            blob = orjson.dumps([it.__dict__ for it in items], default=_orjson_default)
        except (TypeError, orjson.JSONEncodeError):
            blob = None  # e.g. an extras integer beyond 64 bits: pydantic handles it
    if blob is None:
        blob = _ITEMS.dump_json(list(items), exclude_none=True)
    out = _UPSERT_HEAD + blob[1:-1].replace(_ITEM_SEP, _UPSERT_SEP) + b"}\n"
    if out.count(b"\n") != len(items):  # a guard should the item model ever grow lists of objects
        out = b"".join(
            _UPSERT_HEAD + Item.__pydantic_serializer__.to_json(it, exclude_none=True) + b"}\n" for it in items
        )
    return out


def _jsonl_deletes(item_ids: Sequence[str]) -> bytes:
    if orjson is not None:
        return b"".join(orjson.dumps({"op": "delete", "item_id": i}) + b"\n" for i in item_ids)
    return b"".join(_DELETE.dump_json({"op": "delete", "item_id": i}) + b"\n" for i in item_ids)


# ---------------------------------------------------------------------------------------------
# The writer
# ---------------------------------------------------------------------------------------------


class FeedWriter:
    """Streams batches of items and deletions into one local feed file.

    Memory stays bounded by one batch. Each :meth:`write` / :meth:`delete` serialises its batch in
    memory first and appends it with one write: if that fails (a full disk), the file is truncated
    back to where the batch started and :class:`DestinationError` is raised (retryable), so a retry
    of the batch never duplicates rows. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path, fmt: FeedFormat | str) -> None:
        self.path = Path(path)
        self.format = FeedFormat(fmt)
        #: Items written, deletions written, and the file's size in bytes.
        self.items_written = 0
        self.deletions_written = 0
        self.bytes_written = 0
        try:
            # Unbuffered: each batch is one write we can undo; nothing waits in a buffer.
            self._file: io.FileIO | None = io.FileIO(self.path, "w")
        except OSError as exc:
            raise DestinationError(
                f"cannot create feed file {self.path}: {exc.strerror or exc}; check the directory exists "
                "and this service may write to it"
            ) from None
        if self.format is FeedFormat.CSV:
            self._append(_csv_text((), header=True))

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._file is None

    def _append(self, data: bytes) -> None:
        if self._file is None:
            raise DestinationError(f"feed file {self.path} is already closed; open a new writer for another run")
        start = self.bytes_written
        view = memoryview(data)
        try:
            while view:
                written = self._file.write(view)
                if not written:
                    raise OSError("the file system accepted no more bytes")
                view = view[written:]
        except OSError as exc:
            try:
                self._file.truncate(start)
                self._file.seek(start)
            except OSError:
                # The batch cannot be undone, so the file is not trustworthy: close it for good.
                self.close()
            raise DestinationError(
                f"writing feed file {self.path} failed: {exc.strerror or exc}; free disk space or check the "
                "directory, then retry",
                retryable=True,
            ) from None
        self.bytes_written = start + len(data)

    def write(self, items: Sequence[Item]) -> list[ItemResult]:
        """Append upserts for ``items``; one result per item (an item the format cannot carry fails)."""
        if self.format is FeedFormat.CSV:
            data, rows, results = _csv_batch(items)
            if rows:
                self._append(data)
            self.items_written += rows
            return results
        self._append(_jsonl_upserts(items))
        self.items_written += len(items)
        return _successes([it.item_id for it in items])

    def delete(self, item_ids: Sequence[str]) -> list[ItemResult]:
        """Append deletions for ``item_ids`` (a ``deleted`` row in csv, a delete op in jsonl)."""
        if not item_ids:
            return []
        if self.format is FeedFormat.CSV:
            # Deletion rows carry the key and the flag only: the retailer reference code is column 2.
            blank = _EMPTY_ROW_BEFORE_DELETED
            data = _csv_text(("", i, *blank[2:], _T) for i in item_ids)
        else:
            data = _jsonl_deletes(item_ids)
        self._append(data)
        self.deletions_written += len(item_ids)
        return [ItemResult(i, True) for i in item_ids]

    def close(self, *, fsync: bool = False) -> None:
        """Close the file (it stays on disk). Safe to call twice.

        ``fsync=True`` forces the bytes to disk first: do so before renaming a finished feed into
        place, so a power cut cannot leave a complete-looking name on an incomplete file.
        """
        if self._file is not None:
            file, self._file = self._file, None
            try:
                if fsync:
                    os.fsync(file.fileno())
            finally:
                file.close()

    def discard(self) -> None:
        """Close and delete the file: the run is abandoned."""
        self.close()
        self.path.unlink(missing_ok=True)

    def summary(self) -> str:
        """``"200,000 items, 3 deletions, 31.2 MB"`` for a commit line."""
        parts = [f"{self.items_written:,} item{'s' if self.items_written != 1 else ''}"]
        if self.deletions_written:
            parts.append(f"{self.deletions_written:,} deletion{'s' if self.deletions_written != 1 else ''}")
        parts.append(human_size(self.bytes_written))
        return ", ".join(parts)

    def __enter__(self) -> FeedWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def human_size(size: int) -> str:
    """``"31.2 MB"``: decimal units, as file managers show them."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def empty_feed_message(mode: str) -> str:
    """The commit line of a file destination that had nothing to write, so wrote no file.

    A delta with no changes needs no file; an empty *full* feed would tell the platform the store sells
    nothing at all, which is never what an empty read means, so it is not delivered either.
    """
    if mode == "full":
        return "no items to send: an empty full feed was not delivered (it would empty the catalogue online)"
    return "nothing changed since the last run: no feed file was needed"
