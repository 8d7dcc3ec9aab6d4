"""Decoded lines of an export file, read in fixed-size chunks so memory stays bounded whatever the size.

The file is read as bytes and split into lines before decoding, so a line with bytes the encoding cannot
decode costs only that line (its row is rejected) instead of stopping the whole read. All supported encodings
are ASCII-compatible, so a line break byte is a line break whatever the encoding.

A chunk of whole lines is decoded in one call, which costs a fraction of decoding it line by line; only a
chunk that does not decode, or whose text would split into other lines than its bytes, goes line by line.
"""

from __future__ import annotations

import csv
import re
from collections import deque
from collections.abc import Iterator
from itertools import chain
from typing import BinaryIO, NamedTuple, Protocol

#: Bytes read from the file at a time. A chunk is decoded into one string of about its size; at 64 KiB
#: those strings reuse the same memory chunk after chunk, where 256 KiB ones left the resident memory of
#: the process growing for as long as the file lasted.
CHUNK_SIZE = 64 * 1024
#: A "line" longer than this is handed on in pieces (the CSV parser then rejects it as malformed)
#: instead of growing without bound, as it would for a file that has no line breaks at all.
MAX_LINE_BYTES = 8 * 1024 * 1024
UTF8_BOM = b"\xef\xbb\xbf"
#: Characters ``str.splitlines`` breaks lines at but ``bytes.splitlines`` does not (\v \f, the three ASCII
#: separators, NEL and the two Unicode separators): decoded text holding any of them is split line by line.
TEXT_ONLY_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
#: A chunk with quote characters is cut into runs of lines with and without one while lines with a quote
#: come at most about once per this many bytes; past that, the whole chunk goes to the CSV reader.
QUOTED_LINE_BYTES = 2048
_LINE_BREAK = re.compile("\r\n|\r|\n")


class Readable(Protocol):
    """What :class:`LineSource` reads from: a binary file, or a :class:`ReadAhead` over one."""

    def read(self, size: int, /) -> bytes: ...


class ReadAhead:
    """A binary file read ahead a few chunks at a time by :meth:`fill`, which blocks (call it where that is
    fine, such as a worker thread), and handed out by :meth:`read`, which reads the file itself only when
    nothing was read ahead. The two must not be called at the same time.

    A batch of rows takes about half a chunk, so with three chunks ahead and a fill whenever one is left
    (:attr:`low`), the thread is asked once every four batches or so: each round trip to it costs several
    hundred microseconds on a busy machine."""

    def __init__(self, stream: BinaryIO, chunk_size: int = CHUNK_SIZE, chunks: int = 3) -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self._chunks = chunks
        self._ahead: deque[bytes] = deque()
        self._eof = False

    @property
    def low(self) -> bool:
        """Whether fewer than half the chunks wait (and the file goes on): time to :meth:`fill`."""
        return not self._eof and 2 * len(self._ahead) < self._chunks

    def fill(self) -> None:
        """Read until ``chunks`` chunks wait (or the file ends)."""
        while len(self._ahead) < self._chunks and not self._eof:
            data = self._stream.read(self._chunk_size)
            if data:
                self._ahead.append(data)
            else:
                self._eof = True

    def read(self, size: int, /) -> bytes:
        """The next chunk read ahead; else up to ``size`` bytes from the file."""
        if self._ahead:
            return self._ahead.popleft()
        if self._eof:
            return b""
        return self._stream.read(size)

    def close(self) -> None:
        self._ahead.clear()
        self._stream.close()


class Plain(NamedTuple):
    """A block of whole lines without a single quote character, so the CSV reader would read each line
    as one row of plain cells (and none is longer than its field limit)."""

    #: The decoded text, line breaks included.
    text: str
    #: ``text.splitlines()``: the lines without their line breaks.
    lines: list[str]


#: What :meth:`LineSource.blocks` yields: lines with their line breaks, or a :class:`Plain` block.
Block = list[str] | Plain


def _decoder(encoding: str) -> tuple[str, ...]:
    # utf-8-sig only differs from utf-8 by the BOM, which is removed before decoding.
    return ("utf-8",) if encoding in ("utf-8", "utf-8-sig") else (encoding,)


def block_lines(block: Block) -> list[str]:
    """The lines of ``block`` with their line breaks, as ``csv.reader`` wants them."""
    return block.text.splitlines(keepends=True) if isinstance(block, Plain) else block


class LineSource:
    """Iterate the decoded lines of ``stream`` (a binary file), line endings kept, as ``csv.reader`` wants;
    or take them a chunk at a time from :meth:`blocks`.

    ``encoding`` is ``auto`` or a Python codec name. In ``auto`` mode the text is UTF-8 until a chunk turns
    out not to be, and cp1252 from then on (latin-1 for the five bytes cp1252 leaves undefined); nothing is
    ever rejected. With an explicit encoding, lines that do not decode are recorded in :attr:`bad_lines`
    (1-based line number -> reason) and handed on with the bad bytes replaced.

    A UTF-8 byte-order mark at the very start is skipped in every mode: POS systems write one even in front
    of cp1252 text, and it is never part of the data.
    """

    def __init__(
        self, stream: Readable, encoding: str, *, chunk_size: int = CHUNK_SIZE, quotechar: str | None = None
    ) -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self.encoding = encoding
        self._auto = encoding == "auto"
        self._codec = "utf-8" if self._auto else _decoder(encoding)[0]
        self._quotechar = quotechar
        self.bad_lines: dict[int, str] = {}
        self._lines_before_chunk = 0
        #: Bytes taken from the file so far (a chunk ahead of what has been parsed, at most).
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        return chain.from_iterable(map(block_lines, self.blocks()))

    def blocks(self) -> Iterator[Block]:
        """The lines chunk by chunk, each as a list of lines with their line breaks. With a ``quotechar``,
        a chunk that decoded in one go comes as :class:`Plain` when it holds no quote character, and as
        Plain runs of lines between the lines that hold one when those are few."""
        read = self._stream.read
        size = self._chunk_size
        carry = b""
        first = True
        while True:
            block = read(size)
            self.bytes_read += len(block)
            if first:
                first = False
                if block.startswith(UTF8_BOM):
                    block = block[len(UTF8_BOM) :]
            if not block:
                if carry:
                    yield from self._decode(carry)
                return
            buf = carry + block if carry else block
            # Cut after the last complete line. A trailing "\r" may be half of "\r\n", so it waits.
            cut = max(buf.rfind(b"\n"), buf.rfind(b"\r", 0, len(buf) - 1))
            if cut < 0:
                if len(buf) <= MAX_LINE_BYTES:
                    carry = buf
                    continue
                cut = len(buf) - 1
            carry = buf[cut + 1 :]
            yield from self._decode(buf[: cut + 1])

    def _decode(self, data: bytes) -> list[Block]:
        codec = self._codec
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            if self._auto and codec == "utf-8":
                # Not UTF-8, so (by the rule for auto) a Windows code page export.
                self._codec = "cp1252"
                return self._decode(data)
            return [self._decode_lines(data.splitlines(keepends=True))]
        if any(c in text for c in TEXT_ONLY_BREAKS):
            # The text would split at more places than the bytes: split the bytes, then decode each line.
            return [self._counted([line.decode(codec) for line in data.splitlines(keepends=True)])]
        quote = self._quotechar
        if quote is None:
            return [self._counted(text.splitlines(keepends=True))]
        if quote not in text:
            return [self._plain(text)]
        return self._split_at_quotes(text, quote) or [self._counted(text.splitlines(keepends=True))]

    def _counted(self, lines: list[str]) -> list[str]:
        self._lines_before_chunk += len(lines)
        return lines

    def _plain(self, text: str) -> Block:
        lines = text.splitlines()
        limit = csv.field_size_limit()
        if len(text) > limit and max(map(len, lines)) > limit:
            return self._counted(text.splitlines(keepends=True))
        self._lines_before_chunk += len(lines)
        return Plain(text, lines)

    def _split_at_quotes(self, text: str, quote: str) -> list[Block] | None:
        """``text`` as runs of lines without ``quote`` (Plain) between runs of lines with it (line lists);
        None when lines with a quote are too many for that to pay (a file that quotes every value)."""
        find, rfind, next_break = text.find, text.rfind, _LINE_BREAK.search
        size = len(text)
        budget = size // QUOTED_LINE_BYTES + 2
        runs: list[tuple[int, int]] = []  # [start, end) of the runs of lines with a quote
        done = 0
        at = find(quote)
        while at >= 0:
            budget -= 1
            if budget < 0:
                return None
            # Searches never go back past the last run, nor further than the next line break.
            start = max(rfind("\n", done, at), rfind("\r", done, at), done - 1) + 1
            found = next_break(text, at)
            end = size if found is None else found.end()
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
            done = end
            at = find(quote, end)
        blocks: list[Block] = []
        done = 0
        for start, end in runs:
            if start > done:
                blocks.append(self._plain(text[done:start]))
            blocks.append(self._counted(text[start:end].splitlines(keepends=True)))
            done = end
        if done < size:
            blocks.append(self._plain(text[done:]))
        return blocks

    def _decode_lines(self, lines: list[bytes]) -> list[str]:
        """A chunk that does not decode as a whole, line by line."""
        base = self._lines_before_chunk
        self._lines_before_chunk += len(lines)
        if self._auto:
            # cp1252 by now; latin-1 for the five bytes cp1252 leaves undefined.
            return [_cp1252_or_latin1(line) for line in lines]
        out = []
        for number, line in enumerate(lines, base + 1):
            try:
                out.append(line.decode(self._codec))
            except UnicodeDecodeError as exc:
                bad = line[exc.start : exc.end]
                self.bad_lines[number] = (
                    f"line {number} has bytes that are not valid {self.encoding} ({bad.hex(' ')} at byte "
                    f"{exc.start + 1}) — set the connector's encoding to the one the POS writes "
                    "(often cp1252), or 'auto'"
                )
                out.append(line.decode(self._codec, "replace"))
        return out


def _cp1252_or_latin1(line: bytes) -> str:
    try:
        return line.decode("cp1252")
    except UnicodeDecodeError:
        return line.decode("latin-1")
