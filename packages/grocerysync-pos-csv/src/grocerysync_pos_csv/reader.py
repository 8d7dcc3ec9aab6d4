"""Reading an export file into batches of raw records (synchronous; the plugin runs it off the event loop).

Row numbers are the file's line numbers, counted from 1 at the first line of the file (the header, unless
``skip_rows`` skips lines before it); a record whose quoted values span several lines is numbered by its
first line.

A chunk of the file without a single quote character (see :class:`~grocerysync_pos_csv.lines.Plain`) is
read by splitting each line at the delimiter, which is what the CSV reader would do with it, at a fraction
of the cost. Every other chunk goes through ``csv.reader``, and so does a chunk that continues a record
whose quoted value is still open; the header is always read by it.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from grocerysync.core.errors import SourceError
from grocerysync.core.results import RawBatch, RawRecord, Rejection
from grocerysync_pos_csv.config import CsvConfig
from grocerysync_pos_csv.lines import CHUNK_SIZE, Block, LineSource, Plain, ReadAhead, block_lines
from grocerysync_pos_csv.rows import PlainReader, RowBuilder, RowError

#: ``RawRecord(ref, data, digest)`` without the named tuple's Python-level ``__new__`` (see grocerysync_pos_csv.rows).
_new_tuple = tuple.__new__

#: How much text the delimiter detection looks at.
SNIFF_BYTES = 16 * 1024
_CANDIDATES = ",;\t|"
_FIX_PATH = "check the path in the store's POS connection"


def _show(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def open_export(path: Path) -> BinaryIO:
    """Open ``path`` for reading; SourceError with what to do when that is not possible."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise SourceError(f"POS export file not found: {path} — {_FIX_PATH}") from None
    except IsADirectoryError:
        raise SourceError(f"POS export path is a folder, not a file: {path} — {_FIX_PATH}") from None
    except PermissionError:
        raise SourceError(
            f"POS export file cannot be read (permission denied): {path} — give the GrocerySync agent's "
            "service account read access to it"
        ) from None
    except OSError as exc:
        # Windows reports a folder or a file locked by the POS as a generic OSError.
        if path.is_dir():
            raise SourceError(f"POS export path is a folder, not a file: {path} — {_FIX_PATH}") from None
        raise SourceError(
            f"POS export file cannot be read: {path}: {exc.strerror or exc} — check that the file is not "
            "locked by the POS and that the agent may read it"
        ) from None


class CsvExportReader:
    """One pass over one export file. Use :meth:`open`, then :meth:`next_batch` until it returns None.

    Raises :class:`SourceError` (one line, naming the file) for problems with the whole file; problems
    with single rows become :class:`Rejection` records in the batches.
    """

    #: Bytes read from the file at a time.
    chunk_size: ClassVar[int] = CHUNK_SIZE

    def __init__(self, config: CsvConfig) -> None:
        self.config = config
        self.path = Path(config.path)
        self._stream: ReadAhead | None = None
        self._lines: LineSource | None = None
        self._blocks: Iterator[Block] = iter(())
        self._rows: Any = None  # the csv.reader of the lines being read, if they go through one
        self._row_end = 0  # the csv reader's line_num after its last row (or error)
        self._plain: list[str] | None = None  # else the lines of a Plain block
        self._plain_at = 0  # and the index of the next one to read
        self._read_plain: PlainReader | None = None
        self._offset = 0  # physical lines before the csv reader's first line, or before the Plain block
        self._done = False
        self._lock = threading.Lock()
        self.header: list[str] | None = None
        self.header_line = 0
        self.delimiter = ","
        self._builder: RowBuilder | None = None
        self._width = 0
        self._pending: tuple[list[str], int] | None = None  # the first data row when there is no header

    @classmethod
    def open(cls, config: CsvConfig) -> CsvExportReader:
        """Open the file, read the header and check the mapped columns exist."""
        reader = cls(config)
        try:
            reader._open()
        except BaseException:
            reader.close()
            raise
        return reader

    @property
    def bytes_read(self) -> int:
        """How many bytes of the file have been read so far (the reader reads ahead by one chunk)."""
        return self._lines.bytes_read if self._lines is not None else 0

    @property
    def column_count(self) -> int:
        """Columns in the header (or, without a header, in the first row)."""
        return self._width

    def _open(self) -> None:
        config = self.config
        self._stream = ReadAhead(open_export(self.path), self.chunk_size)
        self._lines = LineSource(self._stream, config.encoding, chunk_size=self.chunk_size, quotechar=config.quotechar)
        self._blocks = self._lines.blocks()
        lines = self._csv_lines(next(self._blocks, None))
        for _ in range(config.skip_rows):
            if next(lines, None) is None:
                raise SourceError(
                    f"POS export file {self.path} has only {self._offset} line(s), but skip_rows is "
                    f"{config.skip_rows} — check the file, or lower skip_rows"
                )
            self._offset += 1
        sample: list[str] = []
        if config.delimiter_char is None:
            size = 0
            for line in lines:
                sample.append(line)
                size += len(line)
                if size >= SNIFF_BYTES:
                    break
            self.delimiter = _sniff("".join(sample), config.quotechar)
        else:
            self.delimiter = config.delimiter_char
        self._rows = self._csv_reader(chain(sample, lines))
        first = self._first_row()
        if first is None:
            where = f" after the {config.skip_rows} skipped line(s)" if config.skip_rows else ""
            raise SourceError(
                f"POS export file is empty{where}: {self.path} — check that the POS export ran and finished"
            )
        if config.has_header:
            self.header, self.header_line = first
            positions = self._header_positions(self.header)
            self._width = len(self.header)
            self._pop_bad(1, self._rows.line_num + self._offset)
        else:
            positions = {key: int(column) - 1 for key, column in config.columns.items()}
            self._width = len(first[0])
            self._pending = first
            self._pop_bad(1, first[1] - 1)
            needed = max(positions.values()) + 1
            if needed > self._width:
                beyond = ", ".join(
                    f"{key}={column}" for key, column in config.columns.items() if int(column) > self._width
                )
                raise SourceError(
                    f"POS export file {self.path} has {self._width} column(s) in its first row (row {first[1]}), "
                    f"but the mapping uses columns beyond that: {beyond} — fix the column numbers"
                )
        self._builder = RowBuilder(config, positions, self.delimiter)
        self._read_plain = self._builder.plain_reader(self._width)

    def _csv_reader(self, lines: Iterator[str]) -> Any:
        return csv.reader(lines, delimiter=self.delimiter, quotechar=self.config.quotechar, strict=True)

    def _csv_lines(self, block: Block | None) -> Iterator[str]:
        """The input of a csv reader: ``block``'s lines, then the next blocks' as long as a record is still
        open at the end of one (before the reader exists, as long as lines are taken)."""
        if block is not None:
            yield from block_lines(block)
        while self._rows is None or self._rows.line_num != self._row_end:
            block = next(self._blocks, None)
            if block is None:
                return
            yield from block_lines(block)

    def _end_csv(self) -> None:
        """The csv reader has read its lines, ending at a record boundary."""
        self._offset += self._rows.line_num
        self._rows = None

    def _first_row(self) -> tuple[list[str], int] | None:
        """The first non-blank row and its line number (header problems are whole-file problems)."""
        while True:
            rows = self._rows
            start = rows.line_num + self._offset + 1
            try:
                row = next(rows)
            except StopIteration:
                self._end_csv()
                block = next(self._blocks, None)
                if block is None:
                    return None
                self._rows = self._csv_reader(self._csv_lines(block))
                self._row_end = 0
                continue
            except csv.Error as exc:
                raise SourceError(
                    f"POS export file {self.path}: row {start} (the first row) cannot be read: {exc} — check the "
                    "quotechar, delimiter and skip_rows settings"
                ) from None
            self._row_end = rows.line_num
            if any(cell.strip() for cell in row):
                return row, start

    def _header_positions(self, header: list[str]) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, name in enumerate(header):
            index.setdefault(name.strip().casefold(), i)
        positions: dict[str, int] = {}
        missing = []
        for key, column in self.config.columns.items():
            if isinstance(column, int):
                if column > len(header):
                    missing.append(f"column number {column} (mapped to {key})")
                positions[key] = column - 1
            elif (found := index.get(column.strip().casefold())) is None:
                missing.append(f"column {column!r} (mapped to {key})")
            else:
                positions[key] = found
        if missing:
            shown = ", ".join(repr(name) for name in header)
            hint = ""
            if len(header) == 1 and self.config.delimiter_char is not None:
                hint = f"; the header has a single column, so the delimiter is probably not {_show(self.delimiter)}"
            raise SourceError(
                f"POS export file {self.path}: {'; '.join(missing)} not in the header (row {self.header_line}); "
                f"the header has {len(header)} column(s): {shown}{hint} — fix the column mapping or the "
                "delimiter/skip_rows settings"
            )
        return positions

    @property
    def wants_read_ahead(self) -> bool:
        """Whether :meth:`read_ahead` has work to do: fewer than half of its chunks are left."""
        stream = self._stream
        return stream is not None and stream.low

    def read_ahead(self) -> None:
        """Read the next chunks of the file (this may block), so that :meth:`next_batch` finds them: the
        plugin calls it on a thread of its own, then parses on the event loop."""
        with self._lock:
            if self._stream is not None and not self._done:
                self._stream.fill()

    def next_batch(self, size: int) -> RawBatch | None:
        """Up to ``size`` records (and the rejections met on the way), or None at the end of the file."""
        with self._lock:
            if self._done or self._builder is None:
                return None
            return self._read(max(1, size))

    def _read(self, size: int) -> RawBatch | None:
        records: list[RawRecord] = []
        rejected: list[Rejection] = []
        room = size
        if self._pending is not None:
            row, line = self._pending
            self._pending = None
            room -= self._handle(row, line, self._rows.line_num + self._offset, records, rejected)
        while room > 0:
            if self._plain is not None:
                room -= self._plain_rows(room, records, rejected)
            elif self._rows is not None:
                room -= self._csv_rows(room, records, rejected)
            else:
                block = next(self._blocks, None)
                if block is None:
                    self._done = True
                    break
                if isinstance(block, Plain):
                    self._plain, self._plain_at = block.lines, 0
                else:
                    self._rows = self._csv_reader(self._csv_lines(block))
                    self._row_end = 0
        if not records and not rejected:
            return None
        return RawBatch(records=records, rejected=rejected)

    def _plain_rows(self, room: int, records: list[RawRecord], rejected: list[Rejection]) -> int:
        """Up to ``room`` records and rejections from the Plain block; returns how many were added."""
        assert self._plain is not None
        assert self._read_plain is not None
        lines, at = self._plain, self._plain_at
        end = min(at + room, len(lines))
        before = len(records) + len(rejected)

        def misfit(row: list[str], line: int) -> None:
            self._handle(row, line, line, records, rejected)

        def reject(row: list[str], line: int, exc: RowError) -> None:
            rejected.append(self._reject(row, line, str(exc)))

        # Each line makes at most one record or rejection, so ``room`` lines cannot overfill the batch.
        self._read_plain(lines[at:end], self._offset + at, records, misfit, reject)
        self._plain_at = end
        if end == len(lines):
            self._offset += len(lines)
            self._plain = None
        return len(records) + len(rejected) - before

    def _csv_rows(self, room: int, records: list[RawRecord], rejected: list[Rejection]) -> int:
        """Up to ``room`` records and rejections from the csv reader; returns how many were added."""
        assert self._lines is not None
        assert self._builder is not None
        wanted = room
        build = self._builder.build
        digest = self._builder.digest
        width = self._width
        bad_lines = self._lines.bad_lines
        rows = self._rows
        offset = self._offset
        append = records.append
        previous = rows.line_num
        while room > 0:
            try:
                for row in rows:
                    line = previous + offset + 1
                    # Stored for _csv_lines, which ends the reader's input at a record boundary.
                    self._row_end = previous = rows.line_num
                    # The hot path: a well-formed, decodable row. Everything else goes the slow way.
                    if len(row) == width and not bad_lines:
                        try:
                            data = build(row)
                        except RowError as exc:
                            rejected.append(self._reject(row, line, str(exc)))
                            room -= 1
                        else:
                            if data:  # a row of empty cells is a blank line
                                append(_new_tuple(RawRecord, (f"row {line}", data, digest(row))))
                                room -= 1
                    elif row:
                        room -= self._handle(row, line, previous + offset, records, rejected)
                    if room <= 0:
                        break
                else:
                    self._end_csv()
                break
            except csv.Error as exc:
                line = previous + offset + 1
                self._row_end = previous = rows.line_num
                self._pop_bad(line, previous + offset)
                rejected.append(self._malformed(exc, line, previous + offset))
                room -= 1
        return wanted - room

    def _handle(self, row: list[str], line: int, last: int, records: list[RawRecord], rejected: list[Rejection]) -> int:
        """Any row, the slow way (lines [line, last]); returns how many records or rejections it added."""
        assert self._builder is not None
        reasons = self._pop_bad(line, last)
        if reasons:
            rejected.append(self._reject(row, line, "; ".join(reasons)))
            return 1
        count = len(row)
        if count < self._builder.needed_columns or (count > self._width and self.config.has_header):
            if not any(cell.strip() for cell in row):
                return 0  # a blank or whitespace-only line
            rejection = self._misshapen(row, line)
            if rejection is not None:
                rejected.append(rejection)
                return 1
        try:
            data = self._builder.build(row)
        except RowError as exc:
            rejected.append(self._reject(row, line, str(exc)))
            return 1
        if not data:
            return 0
        records.append(_new_tuple(RawRecord, (f"row {line}", data, self._builder.digest(row))))
        return 1

    def _pop_bad(self, first: int, last: int) -> list[str]:
        """Reasons recorded for undecodable lines among lines [first, last], forgetting them."""
        bad = self._lines.bad_lines if self._lines is not None else {}
        if not bad:
            return []
        return [bad.pop(n) for n in range(first, last + 1) if n in bad]

    def _item_id(self, row: list[str]) -> str | None:
        assert self._builder is not None
        index = self._builder.item_id_index
        if index < len(row):
            value = row[index].strip()
            if value and value not in self.config.empty_values:
                return value
        return None

    def _reject(self, row: list[str], line: int, reason: str) -> Rejection:
        return Rejection(f"row {line}", reason, "read", self._item_id(row))

    def _misshapen(self, row: list[str], line: int) -> Rejection | None:
        count = len(row)
        if count > self._width:
            if not any(cell.strip() for cell in row[self._width :]):
                return None
            return self._reject(
                row,
                line,
                f"has {count} columns but the header has {self._width} — a value probably contains an unquoted "
                f"{_show(self.delimiter)}; the POS must quote such values",
            )
        of = f"{count} of {self._width}" if self.config.has_header else f"{count} of the {self._width}"
        return self._reject(row, line, f"has {of} columns — the line looks truncated")

    def _malformed(self, exc: csv.Error, first: int, last: int) -> Rejection:
        text = str(exc)
        if "unexpected end of data" in text:
            reason = (
                f"a quoted value that starts in this row is never closed — the file ends inside quotes, so lines "
                f"{first}–{last} were not read; look for a stray {self.config.quotechar} in that row"
            )
        elif "field larger than field limit" in text:
            reason = (
                f"a value is longer than {csv.field_size_limit():,} characters (lines {first}–{last}) — "
                f"probably a stray {self.config.quotechar} opened a quote that never closes"
            )
        else:
            reason = f"malformed quoting ({text}) — inside a quoted value a {self.config.quotechar} must be doubled"
        return Rejection(f"row {first}", reason, "read")

    def close(self) -> None:
        """Close the file (waiting for a batch or a read-ahead in another thread to finish)."""
        with self._lock:
            self._done = True
            if self._stream is not None:
                self._stream.close()
                self._stream = None


def _sniff(sample: str, quotechar: str) -> str:
    """The delimiter of ``sample``: csv.Sniffer's answer among , ; tab |, else the one most used in line 1."""
    if not sample.strip():
        return ","
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=_CANDIDATES)
    except csv.Error:
        first = sample.splitlines()[0] if sample.splitlines() else ""
        counts = {c: first.count(c) for c in _CANDIDATES}
        best = max(counts, key=lambda c: counts[c])
        return best if counts[best] else ","
    return str(dialect.delimiter)
