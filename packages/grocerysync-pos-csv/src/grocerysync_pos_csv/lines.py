"""Decoded lines of an export file, read in fixed-size chunks so memory stays bounded whatever the size.

The file is read as bytes and split into lines before decoding, so a line with bytes the encoding cannot
decode costs only that line (its row is rejected) instead of stopping the whole read. All supported encodings
are ASCII-compatible, so a line break byte is a line break whatever the encoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import BinaryIO

#: Bytes read from the file at a time.
CHUNK_SIZE = 256 * 1024
#: A "line" longer than this is handed on in pieces (the CSV parser then rejects it as malformed)
#: instead of growing without bound, as it would for a file that has no line breaks at all.
MAX_LINE_BYTES = 8 * 1024 * 1024
UTF8_BOM = b"\xef\xbb\xbf"


def _decoder(encoding: str) -> tuple[str, ...]:
    # utf-8-sig only differs from utf-8 by the BOM, which is removed before decoding.
    return ("utf-8",) if encoding in ("utf-8", "utf-8-sig") else (encoding,)


class LineSource:
    """Iterate the decoded lines of ``stream`` (a binary file), line endings kept, as ``csv.reader`` wants.

    ``encoding`` is ``auto`` or a Python codec name. In ``auto`` mode the text is UTF-8 until a chunk turns
    out not to be, and cp1252 from then on (latin-1 for the five bytes cp1252 leaves undefined); nothing is
    ever rejected. With an explicit encoding, lines that do not decode are recorded in :attr:`bad_lines`
    (1-based line number -> reason) and handed on with the bad bytes replaced.

    A UTF-8 byte-order mark at the very start is skipped in every mode: POS systems write one even in front
    of cp1252 text, and it is never part of the data.
    """

    def __init__(self, stream: BinaryIO, encoding: str, *, chunk_size: int = CHUNK_SIZE) -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self.encoding = encoding
        self._auto = encoding == "auto"
        self._codec = "utf-8" if self._auto else _decoder(encoding)[0]
        self.bad_lines: dict[int, str] = {}
        self._lines_before_chunk = 0
        #: Bytes taken from the file so far (a chunk ahead of what has been parsed, at most).
        self.bytes_read = 0

    def __iter__(self) -> Iterator[str]:
        return chain.from_iterable(self._chunks())

    def _chunks(self) -> Iterator[list[str]]:
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
                    yield self._decode(carry.splitlines(keepends=True))
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
            yield self._decode(buf[: cut + 1].splitlines(keepends=True))

    def _decode(self, lines: list[bytes]) -> list[str]:
        base = self._lines_before_chunk
        self._lines_before_chunk += len(lines)
        try:
            return [line.decode(self._codec) for line in lines]
        except UnicodeDecodeError:
            pass
        if self._auto:
            if self._codec == "utf-8":
                # Not UTF-8, so (by the rule for auto) a Windows code page export.
                self._codec = "cp1252"
                try:
                    return [line.decode("cp1252") for line in lines]
                except UnicodeDecodeError:
                    pass
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
