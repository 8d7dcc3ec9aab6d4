"""Whatever text a POS writes through a standard CSV writer comes back cell for cell, row numbers included."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
from csvpos_helpers import read_all
from grocerysync_pos_csv import CsvConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Every test here also runs with chunks small enough to cut rows and quoted values apart.
pytestmark = pytest.mark.usefixtures("chunk_size")

# Text a till could hold: printable characters of cp1252 (so every encoding here can write it), line breaks.
cell = st.text(
    alphabet=st.characters(codec="cp1252", exclude_categories=("Cc", "Cs")) | st.just("\n"),
    max_size=12,
).filter(lambda s: s.strip() not in ("", "NULL", "N/A"))
row = st.tuples(cell, cell, cell)
# ASCII digits with at most one point: what the connector hands over as a Decimal.
PLAIN = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(row, min_size=1, max_size=8),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    encoding=st.sampled_from(["utf-8", "cp1252", "utf-8-sig"]),
    line_end=st.sampled_from(["\r\n", "\n"]),
)
async def test_written_rows_read_back(
    tmp_path: Path, rows: list[tuple[str, str, str]], delimiter: str, encoding: str, line_end: str
) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=line_end, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["Id", "Name", "Price"])
    writer.writerows(rows)
    path = tmp_path / "roundtrip.csv"
    path.write_bytes(buffer.getvalue().encode(encoding))
    config = CsvConfig(
        path=str(path),
        encoding="auto",
        delimiter=delimiter,
        columns={"item_id": "Id", "name": "Name", "price": "Price"},
        currency_symbols=[],
    )
    records, rejected = await read_all(config, batch_size=3)
    assert rejected == []
    # A plain number in a price column comes as the Decimal the item model would make of it (if it prints the same).
    expected = [(i, n, Decimal(p) if PLAIN.fullmatch(p) and str(Decimal(p)) == p else p) for i, n, p in rows]
    assert [(r.data["item_id"], r.data["name"], r.data["price"]) for r in records] == expected
    # Each record is numbered by its first physical line.
    expected, line = [], 2
    for values in rows:
        expected.append(f"row {line}")
        line += 1 + sum(v.count("\n") for v in values)
    assert [r.ref for r in records] == expected
