"""Every encoding a POS writes: UTF-8 with and without BOM, cp1252 with and without BOM, latin-1."""

from __future__ import annotations

import pytest
from csvpos_helpers import HEADER, read_all

# Every test here also runs with chunks small enough to cut rows and quoted values apart.
pytestmark = pytest.mark.usefixtures("chunk_size")

ROWS = "1,012345678905,Crème brûlée,3.99\r\n2,036000291452,Jalapeño “hot” salsa – 16 oz,2.49\r\n"
NAMES = ["Crème brûlée", "Jalapeño “hot” salsa – 16 oz"]
BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        pytest.param((HEADER + ROWS).encode("utf-8"), "auto", id="utf-8 auto"),
        pytest.param(BOM + (HEADER + ROWS).encode("utf-8"), "auto", id="utf-8 BOM auto"),
        pytest.param((HEADER + ROWS).encode("cp1252"), "auto", id="cp1252 auto"),
        pytest.param(BOM + (HEADER + ROWS).encode("cp1252"), "auto", id="cp1252 with a UTF-8 BOM auto"),
        pytest.param((HEADER + ROWS).encode("utf-8"), "utf-8", id="utf-8 explicit"),
        pytest.param(BOM + (HEADER + ROWS).encode("utf-8"), "utf-8-sig", id="utf-8-sig explicit"),
        pytest.param((HEADER + ROWS).encode("cp1252"), "cp1252", id="cp1252 explicit"),
        pytest.param(BOM + (HEADER + ROWS).encode("cp1252"), "cp1252", id="cp1252 with BOM explicit"),
    ],
)
async def test_text_is_decoded_and_the_header_matches(export, raw: bytes, encoding: str) -> None:
    records, rejected = await read_all(export(raw, encoding=encoding))
    assert rejected == []
    assert [r.data["name"] for r in records] == NAMES
    # The BOM never sticks to the first header name, so "ItemNo" was found.
    assert [r.data["item_id"] for r in records] == ["1", "2"]


async def test_latin1_file(export) -> None:
    raw = (HEADER + "1,012345678905,Crème fraîche ½ L,3.99\r\n").encode("latin-1")
    records, rejected = await read_all(export(raw, encoding="latin-1"))
    assert rejected == []
    assert records[0].data["name"] == "Crème fraîche ½ L"


async def test_auto_switches_to_cp1252_when_non_utf8_appears_late(export) -> None:
    # The first chunk is plain ASCII; the cp1252 byte comes far into the file.
    filler = "".join(f"{n},012345678905,Item {n},1.00\r\n" for n in range(3, 20000))
    raw = (HEADER + filler).encode("ascii") + "99999,012345678905,Café,1.00\r\n".encode("cp1252")
    records, rejected = await read_all(export(raw))
    assert rejected == []
    assert records[-1].data["name"] == "Café"
    assert records[-1].ref == f"row {len(records) + 1}"


async def test_undecodable_row_is_rejected_under_an_explicit_encoding_and_the_rest_go_through(export) -> None:
    raw = (
        (HEADER + "1,012345678905,Apple,1.00\r\n").encode("utf-8")
        + "2,036000291452,Café,2.00\r\n".encode("cp1252")
        + b"3,012345678905,Pear,3.00\r\n"
    )
    records, rejected = await read_all(export(raw, encoding="utf-8"))
    assert [r.data["item_id"] for r in records] == ["1", "3"]
    assert [r.ref for r in records] == ["row 2", "row 4"]
    assert len(rejected) == 1
    bad = rejected[0]
    assert bad.ref == "row 3"
    assert bad.stage == "read"
    assert bad.item_id == "2"
    assert "not valid utf-8" in bad.reason
    assert "encoding" in bad.reason


async def test_undecodable_bytes_inside_a_multiline_record_reject_that_record_by_its_first_line(export) -> None:
    raw = (
        (HEADER + '1,012345678905,"Apple\r\n').encode("utf-8")
        + 'crisp café",1.00\r\n'.encode("cp1252")
        + b"2,036000291452,Pear,3.00\r\n"
    )
    records, rejected = await read_all(export(raw, encoding="utf-8"))
    assert [(r.ref, r.data["item_id"]) for r in records] == [("row 4", "2")]
    assert [(r.ref, r.item_id) for r in rejected] == [("row 2", "1")]
    assert "line 3" in rejected[0].reason


async def test_cp1252_undefined_byte_is_rejected_when_cp1252_is_explicit(export) -> None:
    raw = (HEADER + "1,012345678905,Apple,1.00\r\n").encode() + b"2,036000291452,Bad\x81,2.00\r\n"
    records, rejected = await read_all(export(raw, encoding="cp1252"))
    assert [r.data["item_id"] for r in records] == ["1"]
    assert [r.ref for r in rejected] == ["row 3"]


async def test_cp1252_undefined_byte_is_read_in_auto_mode(export) -> None:
    raw = (HEADER + "1,012345678905,Apple,1.00\r\n").encode() + b"2,036000291452,Odd\x81,2.00\r\n"
    records, rejected = await read_all(export(raw))
    assert rejected == []
    assert records[1].data["name"] == "Odd\x81"
