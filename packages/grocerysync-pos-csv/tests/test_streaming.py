"""Batches respect batch_size, and a big file is streamed rather than loaded whole."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from csvpos_helpers import HEADER, read_batches
from grocerysync_pos_csv import read
from grocerysync_pos_csv.lines import CHUNK_SIZE, ReadAhead
from grocerysync_pos_csv.reader import CsvExportReader

from grocerysync.core.records import ReadRequest


def rows(start: int, stop: int) -> str:
    return "".join(f"{n},,Item number {n} with a longer name,{n % 100}.99\r\n" for n in range(start, stop))


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8", newline="") as out:
        out.write(text)


@pytest.mark.parametrize("batch_size", [1, 7, 100, 1000])
async def test_batch_sizes(export, batch_size: int) -> None:
    batches = await read_batches(export(HEADER + rows(0, 250)), batch_size)
    sizes = [len(b.records) for b in batches]
    assert sum(sizes) == 250
    assert all(size <= batch_size for size in sizes)
    assert all(size == batch_size for size in sizes[:-1])
    ids = [r.data["item_id"] for b in batches for r in b.records]
    assert ids == [str(n) for n in range(250)]
    assert all(b.cursor is None for b in batches)


async def test_rejections_count_towards_the_batch(export) -> None:
    text = HEADER + "".join(f"{n},,X\r\n" for n in range(25)) + rows(100, 105)
    batches = await read_batches(export(text), 10)
    assert all(len(b.records) + len(b.rejected) <= 10 for b in batches)
    assert sum(len(b.rejected) for b in batches) == 25
    assert sum(len(b.records) for b in batches) == 5


def test_first_batch_comes_before_the_file_is_read_whole(export) -> None:
    config = export(HEADER + rows(0, 100_000))
    size = Path(config.path).stat().st_size
    assert size > 8 * CHUNK_SIZE
    reader = CsvExportReader.open(config)
    try:
        batch = reader.next_batch(500)
        assert batch is not None
        assert len(batch.records) == 500
        assert reader.bytes_read <= 2 * CHUNK_SIZE < size
        total = len(batch.records)
        while (batch := reader.next_batch(5000)) is not None:
            total += len(batch.records)
            assert reader.bytes_read <= size
        assert total == 100_000
        assert reader.bytes_read == size
    finally:
        reader.close()


async def test_rows_appended_after_the_first_batch_are_read(export) -> None:
    """A reader that had loaded the file up front could not see rows written after its first batch."""
    config = export(HEADER + rows(0, 50_000))
    stream = read(config, ReadRequest(batch_size=100))
    try:
        first = await anext(stream)
        assert len(first.records) == 100
        append(Path(config.path), rows(50_000, 50_010))
        ids = [r.data["item_id"] for b in [first] + [b async for b in stream] for r in b.records]
    finally:
        await stream.aclose()
    assert ids[-1] == "50009"
    assert len(ids) == 50_010


async def test_closing_early_closes_the_file(export) -> None:
    config = export(HEADER + rows(0, 10))
    reader = CsvExportReader.open(config)
    reader.close()
    assert reader.next_batch(10) is None


def test_read_ahead_hands_out_what_it_read_then_reads_itself() -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes
    stream = ReadAhead(io.BytesIO(data), chunk_size=1000, chunks=3)
    assert stream.low
    stream.fill()
    source = stream._stream
    assert source.tell() == 3000  # three chunks read ahead, no more
    assert not stream.low
    assert stream.read(1000) == data[:1000]
    assert source.tell() == 3000  # handed out from what was read ahead
    assert not stream.low  # two of three left
    assert stream.read(1000) == data[1000:2000]
    assert stream.low  # one of three left: time to read ahead again
    assert stream.read(1000) == data[2000:3000]
    assert stream.read(500) == data[3000:3500]  # nothing ahead: read from the file, as asked
    stream.fill()
    rest = b"".join(iter(lambda: stream.read(1000), b""))
    assert rest == data[3500:]
    stream.fill()  # at the end: nothing more to read
    assert stream.read(1000) == b""
    assert not stream.low


async def test_the_file_is_read_on_the_connectors_thread_and_parsed_on_the_callers(export, monkeypatch) -> None:
    threads: dict[str, set[str]] = {"read_ahead": set(), "next_batch": set()}
    for name in threads:
        method = getattr(CsvExportReader, name)

        def spy(self: CsvExportReader, *args: object, _name: str = name, _method=method) -> object:
            threads[_name].add(threading.current_thread().name)
            return _method(self, *args)

        monkeypatch.setattr(CsvExportReader, name, spy)
    batches = await read_batches(export(HEADER + rows(0, 300)), 100)
    assert sum(len(b.records) for b in batches) == 300
    assert threads["next_batch"] == {threading.current_thread().name}
    assert len(threads["read_ahead"]) == 1
    assert threads["read_ahead"].pop().startswith("grocerysync-csv")
