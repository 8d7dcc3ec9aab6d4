"""Chunks without a quote character are read by splitting lines at the delimiter instead of through the
CSV reader. Whatever a file holds, the records and rejections are the ones the CSV reader gives."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grocerysync_pos_csv import CsvConfig
from grocerysync_pos_csv import reader as reader_module
from grocerysync_pos_csv.lines import LineSource, Plain
from grocerysync_pos_csv.reader import CsvExportReader
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from grocerysync.core.errors import SourceError
from grocerysync.core.results import RawRecord, Rejection

HEADER = "ItemNo,UPC,Description,Price,Sale,From,Tax,Value,Unit\r\n"
COLUMNS: dict[str, str | int] = {
    "item_id": "ItemNo",
    "gtin": "UPC",
    "name": "Description",
    "price": "Price",
    "sale.price": "Sale",
    "sale.start": "From",
    "taxable": "Tax",
    "size.value": "Value",
    "size.unit": "Unit",
}


class CsvOnly(LineSource):
    """A LineSource that never hands out Plain blocks, so that everything goes through the CSV reader."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["quotechar"] = None
        super().__init__(*args, **kwargs)


def read_file(config: CsvConfig) -> tuple[list[RawRecord], list[Rejection]]:
    records: list[RawRecord] = []
    rejected: list[Rejection] = []
    reader = CsvExportReader.open(config)
    try:
        while (batch := reader.next_batch(7)) is not None:
            assert len(batch.records) + len(batch.rejected) <= 7
            records += batch.records
            rejected += batch.rejected
    finally:
        reader.close()
    return records, rejected


def outcome(config: CsvConfig) -> Any:
    """The records (key order and digest included) and rejections, or the whole-file error."""
    try:
        records, rejected = read_file(config)
    except SourceError as exc:
        return str(exc)
    assert all(type(r) is RawRecord for r in records)
    return [(r.ref, list(r.data.items()), r.digest) for r in records], rejected


def read_both_ways(config: CsvConfig, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    plain = outcome(config)
    with monkeypatch.context() as patch:
        patch.setattr(reader_module, "LineSource", CsvOnly)
        through_csv = outcome(config)
    return plain, through_csv


def blocks(raw: bytes, encoding: str = "auto", chunk_size: int = 1 << 20) -> list[Any]:
    return list(LineSource(io.BytesIO(raw), encoding, chunk_size=chunk_size, quotechar='"').blocks())


# Cells built from the characters that matter: delimiters, quotes, line breaks, the characters that
# str.splitlines breaks at but the CSV reader does not, spaces, empty and flag values, non-ASCII text.
piece = st.sampled_from(
    [
        *("1", "2.50", "$3", "Y", "n", "NULL", "N/A", "", " ", ",", '"', '""', "\r\n", "\n", "\r", "\t", "|", ";"),
        *("\x0c", "\x1e", "\x85", "\u2028", "é", "Café", "012345678905", "2024-05-01", "oz", "LB", "x" * 30),
    ]
)
cell = st.lists(piece, max_size=4).map("".join)
quoted = cell.map(lambda text: '"' + text.replace('"', '""') + '"')
line_end = st.sampled_from(["\r\n", "\n", "\r"])


@st.composite
def export_file(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """An export and its settings: junk lines to skip, maybe a header, then rows (mostly well formed, some
    quoted, short, long, blank or malformed), each line written in UTF-8 or, sometimes, cp1252."""
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    has_header = draw(st.booleans())
    skip_rows = draw(st.integers(0, 2))
    lines = [draw(cell) + draw(line_end) for _ in range(skip_rows)]
    if has_header:
        lines.append(HEADER.replace(",", delimiter))
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["plain"] * 6 + ["quoted", "short", "long", "blank", "raw"]))
        width = {"short": draw(st.integers(1, 8)), "long": draw(st.integers(10, 12))}.get(kind, 9)
        if kind == "blank":
            lines.append(draw(st.sampled_from(["", " ", delimiter * 8])) + draw(line_end))
        elif kind == "raw":  # anything at all, stray quotes included
            lines.append(draw(cell) + draw(line_end))
        else:
            cells = [draw(quoted if kind == "quoted" and draw(st.booleans()) else cell) for _ in range(width)]
            lines.append(delimiter.join(cells) + draw(line_end))
    cp1252 = draw(st.sampled_from(["never", "sometimes", "always"]))
    raw = b"".join(
        line.encode("cp1252", errors="replace")
        if cp1252 == "always" or (cp1252 == "sometimes" and draw(st.booleans()))
        else line.encode("utf-8")
        for line in lines
    )
    raw = raw[: len(raw) - draw(st.integers(0, 3))]  # sometimes cut off, as an export that did not finish
    settings = {
        "delimiter": draw(st.sampled_from([delimiter, "auto"])),
        "has_header": has_header,
        "skip_rows": skip_rows,
        "columns": COLUMNS if has_header else {key: n for n, key in enumerate(COLUMNS, 1)},
    }
    return raw, settings


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    export=export_file(),
    encoding=st.sampled_from(["auto", "utf-8", "cp1252", "latin-1"]),
    chunk_size=st.sampled_from([8, 16, 40, 100, 4096]),
    options=st.fixed_dictionaries(
        {},
        optional={
            "empty_values": st.sampled_from([[], [""], ["NULL"], ["", "NULL", "N/A", "-", "?", "n/a"]]),
            "decimal_comma": st.booleans(),
            "date_format": st.just("%Y-%m-%d"),
            "gtin_style": st.just("zero_padded"),
        },
    ),
)
@example(
    export=((HEADER + "1,,Milk,1.99,,,Y,1,gal\n" * 3).encode(), {"columns": COLUMNS}),
    encoding="auto",
    chunk_size=4096,
    options={},
)
def test_plain_lines_read_as_the_csv_reader_reads_them(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    export: tuple[bytes, dict[str, Any]],
    encoding: str,
    chunk_size: int,
    options: dict[str, Any],
) -> None:
    raw, file_settings = export
    path = tmp_path / "items.csv"
    path.write_bytes(raw)
    config = CsvConfig(path=str(path), encoding=encoding, **file_settings, **options)
    monkeypatch.setattr(CsvExportReader, "chunk_size", chunk_size)
    plain, through_csv = read_both_ways(config, monkeypatch)
    assert plain == through_csv


class LineByLine(LineSource):
    """Decodes every line on its own, as the lines were decoded before chunks were decoded whole."""

    def _decode(self, data: bytes) -> list[Any]:
        lines = data.splitlines(keepends=True)
        try:
            return [self._counted([line.decode(self._codec) for line in lines])]
        except UnicodeDecodeError:
            pass
        if self._auto and self._codec == "utf-8":
            self._codec = "cp1252"
            try:
                return [self._counted([line.decode("cp1252") for line in lines])]
            except UnicodeDecodeError:
                pass
        return [self._decode_lines(lines)]


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.tuples(cell, st.sampled_from(["utf-8", "cp1252", "bad"]), line_end).map(
            lambda t: (
                (t[0] + t[2]).encode(t[1] if t[1] != "bad" else "utf-8", errors="replace")
                + (b"\xff" if t[1] == "bad" else b"")
            )
        ),
        max_size=40,
    ),
    encoding=st.sampled_from(["auto", "utf-8", "cp1252", "latin-1"]),
    chunk_size=st.sampled_from([8, 16, 40, 100, 4096]),
)
def test_chunks_decode_to_the_lines_of_decoding_line_by_line(
    lines: list[bytes], encoding: str, chunk_size: int
) -> None:
    raw = b"".join(lines)
    whole = LineSource(io.BytesIO(raw), encoding, chunk_size=chunk_size, quotechar='"')
    one_by_one = LineByLine(io.BytesIO(raw), encoding, chunk_size=chunk_size)
    assert list(whole) == list(one_by_one)
    assert whole.bad_lines == one_by_one.bad_lines


@pytest.mark.parametrize("width", [1, 2, 40], ids=lambda w: f"{w} columns")
def test_blank_lines_and_width(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    """A blank line is no row even when a lone empty cell would be a value; wide files index the row."""
    monkeypatch.setattr(CsvExportReader, "chunk_size", 8)  # the header's chunk goes through the csv reader
    names = [f"C{i}" for i in range(width)]
    lines = [names, *[[str(n)] * width for n in range(6)], [], ["   "] * width, ["2"] * width, ["\t"] * width]
    text = "".join(",".join(cells) + "\n" for cells in lines)
    path = tmp_path / "items.csv"
    path.write_text(text, encoding="utf-8")
    columns: dict[str, str | int] = {"item_id": "C0", "name": names[-1], "price": names[width // 2]}
    config = CsvConfig(path=str(path), columns=columns, empty_values=["NULL"])
    plain, through_csv = read_both_ways(config, monkeypatch)
    assert plain == through_csv
    assert [ref for ref, _, _ in plain[0]] == [f"row {n}" for n in (2, 3, 4, 5, 6, 7, 9, 10, 11)]  # not the empty line


def test_a_quote_free_chunk_is_plain() -> None:
    text = "ItemNo,Description\r\n1,Milk\r\n2,Crème brûlée\r\n"
    assert blocks(text.encode()) == [Plain(text, text.splitlines())]
    # An unfinished last line waits for the end of the file, then comes on its own.
    assert blocks(text.encode() + b"3,Tea") == [Plain(text, text.splitlines()), Plain("3,Tea", ["3,Tea"])]


def test_quoted_lines_are_cut_out_of_the_chunk() -> None:
    text = "".join(f"{n},Item {n}\r\n" for n in range(200)) + '200,"Milk, 2%\r\nfresh"\r\n' + "201,Tea\r\n"
    found = blocks(text.encode())
    assert [type(b) for b in found] == [Plain, list, Plain]
    assert found[0].lines[-1] == "199,Item 199"
    assert found[1] == ['200,"Milk, 2%\r\n', 'fresh"\r\n']
    assert found[2].lines == ["201,Tea"]


def test_a_chunk_quoting_every_value_goes_to_the_csv_reader_whole() -> None:
    text = "".join(f'"{n}","Item {n}"\n' for n in range(500))
    assert blocks(text.encode()) == [text.splitlines(keepends=True)]


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (b"1,Form\x0cfeed\n2,Tea\n", "utf-8"),
        ("1,Line\u2028separator\n2,Tea\n".encode(), "utf-8"),
        (b"1,Next\x85line\n2,Tea\n", "latin-1"),
    ],
    ids=["form feed", "line separator", "NEL"],
)
def test_text_that_str_would_split_elsewhere_is_split_as_bytes(raw: bytes, encoding: str) -> None:
    [block] = blocks(raw, encoding)
    assert isinstance(block, list)
    assert len(block) == 2


def test_a_line_longer_than_the_field_limit_is_left_to_the_csv_reader(
    export: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = csv.field_size_limit(40)
    try:
        text = "ItemNo,UPC,Description,Price\n1,,Milk,1.99\n2,," + "x" * 50 + ",2.99\n3,,Tea,1.00\n"
        assert isinstance(blocks(text.encode())[0], list)
        records, rejected = read_file(export(text))
    finally:
        csv.field_size_limit(old)
    assert [r.ref for r in records] == ["row 2", "row 4"]
    assert [r.ref for r in rejected] == ["row 3"]
    assert "longer than 40 characters" in rejected[0].reason


def test_an_undecodable_line_after_plain_chunks_is_named_by_its_line(
    export: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CsvExportReader, "chunk_size", 64)
    good = "".join(f"{n},,Item {n},1.00\n" for n in range(2, 40))
    raw = ("ItemNo,UPC,Description,Price\n" + good).encode() + "40,,Café,2.00\n".encode("cp1252") + b"41,,Tea,1.00\n"
    records, rejected = read_file(export(raw, encoding="utf-8"))
    assert [(r.ref, r.item_id) for r in rejected] == [("row 40", "40")]
    assert "line 40 " in rejected[0].reason
    assert records[-1].ref == "row 41"
    assert len(records) == 39


def test_plain_chunks_do_not_go_through_the_csv_reader(export: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CsvExportReader, "chunk_size", 64)
    made: list[Any] = []
    real = reader_module.csv.reader

    def counting(lines: Iterator[str], **kwargs: Any) -> Any:
        made.append(lines)
        return real(lines, **kwargs)

    monkeypatch.setattr(reader_module.csv, "reader", counting)
    text = "ItemNo,UPC,Description,Price\n" + "".join(f"{n},,Item {n},1.00\n" for n in range(2, 200))
    records, rejected = read_file(export(text))
    assert len(records) == 198
    assert rejected == []
    assert len(made) == 1  # the one that read the header
