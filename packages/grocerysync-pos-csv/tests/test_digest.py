"""Each record carries a digest of its row, which the agent's delta check compares instead of hashing the
record's data: it must change whenever the data would, and only then."""

from __future__ import annotations

import shutil
from pathlib import Path

from csvpos_helpers import HEADER, read_all
from grocerysync_pos_csv import CsvConfig

ROWS = [
    "1001,012345678905,Whole Milk 1 gal,4.99\r\n",
    "1002,,Bananas,0.59\r\n",
    "1003,036000291452,Paper Towels,7.49\r\n",
]


async def digests(config: CsvConfig) -> dict[str, str | None]:
    records, rejected = await read_all(config)
    assert not rejected
    return {str(r.data["item_id"]): r.digest for r in records}


async def test_every_row_has_a_digest_and_reading_again_gives_the_same(export, chunk_size) -> None:
    config = export(HEADER + "".join(ROWS))
    first = await digests(config)
    assert set(first) == {"1001", "1002", "1003"}
    assert all(isinstance(d, str) and len(d) == 16 for d in first.values())
    assert len(set(first.values())) == 3
    assert await digests(config) == first


async def test_a_changed_cell_changes_only_that_rows_digest(export) -> None:
    before = await digests(export(HEADER + "".join(ROWS), name="a.csv"))
    changed = [ROWS[0], ROWS[1].replace("0.59", "0.69"), ROWS[2]]
    after = await digests(export(HEADER + "".join(changed), name="b.csv"))
    assert after["1001"] == before["1001"]
    assert after["1003"] == before["1003"]
    assert after["1002"] != before["1002"]


async def test_quoting_and_line_endings_do_not_change_a_digest(export) -> None:
    plain = await digests(export(HEADER + "".join(ROWS), name="a.csv"))
    quoted = "".join(
        ['1001,"012345678905","Whole Milk 1 gal",4.99\n', '"1002",,Bananas,"0.59"\n', ROWS[2].replace("\r\n", "\r")]
    )
    assert await digests(export(HEADER + quoted, name="b.csv")) == plain


async def test_settings_that_shape_the_data_change_every_digest(export) -> None:
    base = await digests(export(HEADER + "".join(ROWS), name="a.csv"))
    # The same rows mean other data when the price is read with a decimal comma ...
    comma = await digests(export(HEADER + "".join(ROWS), name="b.csv", decimal_comma=True))
    # ... or when the columns are mapped the other way round.
    swapped = {"item_id": "ItemNo", "gtin": "UPC", "name": "Price", "price": "Description"}
    other_mapping = await digests(export(HEADER + "".join(ROWS), name="c.csv", columns=swapped))
    for other in (comma, other_mapping):
        assert set(other) == set(base)
        assert all(other[key] != base[key] for key in base)


async def test_the_same_export_in_another_place_keeps_its_digests(export, tmp_path: Path) -> None:
    config = export(HEADER + "".join(ROWS))
    moved = tmp_path / "elsewhere" / "items.csv"
    moved.parent.mkdir()
    shutil.copy(config.path, moved)
    assert await digests(config.model_copy(update={"path": str(moved)})) == await digests(config)


async def test_a_cell_holding_the_delimiter_gets_no_digest(export) -> None:
    # Joined at the delimiter, "a,b" + "c" and "a" + "b,c" read the same: such a row gets none, and the
    # delta check hashes its data instead.
    records, _ = await read_all(export(HEADER + '1001,,"Milk, whole",4.99\r\n' + ROWS[1]))
    by_id = {r.data["item_id"]: r for r in records}
    assert by_id["1001"].data["name"] == "Milk, whole"
    assert by_id["1001"].digest is None
    assert by_id["1002"].digest is not None
