"""Shared test helpers: read an export through the connector's async API."""

from __future__ import annotations

from grocerysync_pos_csv import CsvConfig, read

from grocerysync.core.records import ReadRequest
from grocerysync.core.results import RawBatch, RawRecord, Rejection

COLUMNS = {"item_id": "ItemNo", "gtin": "UPC", "name": "Description", "price": "Price"}
HEADER = "ItemNo,UPC,Description,Price\r\n"


async def read_batches(config: CsvConfig, batch_size: int = 1000) -> list[RawBatch]:
    return [batch async for batch in read(config, ReadRequest(batch_size=batch_size))]


async def read_all(config: CsvConfig, batch_size: int = 1000) -> tuple[list[RawRecord], list[Rejection]]:
    records: list[RawRecord] = []
    rejected: list[Rejection] = []
    for batch in await read_batches(config, batch_size):
        records += batch.records
        rejected += batch.rejected
    return records, rejected
