"""Fixtures: real export files written in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from csvpos_helpers import COLUMNS
from grocerysync_pos_csv import CsvConfig
from grocerysync_pos_csv.lines import CHUNK_SIZE
from grocerysync_pos_csv.reader import CsvExportReader


@pytest.fixture
def export(tmp_path: Path):
    """``export(content, **config)`` writes ``content`` (str as UTF-8, or bytes) and returns a CsvConfig."""

    def make(content: str | bytes, name: str = "items.csv", **config: Any) -> CsvConfig:
        path = tmp_path / name
        if isinstance(content, str):
            path.write_bytes(content.encode("utf-8"))
        else:
            path.write_bytes(content)
        config.setdefault("columns", COLUMNS)
        return CsvConfig(path=str(path), **config)

    return make


@pytest.fixture(params=[CHUNK_SIZE, 16, 61], ids=lambda size: f"chunk={size}")
def chunk_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Read in chunks of this many bytes; small ones put rows, quoted values and line breaks across
    chunk boundaries, and switch between the csv reader and plain lines many times in one file."""
    size: int = request.param
    monkeypatch.setattr(CsvExportReader, "chunk_size", size)
    return size
