"""Fixtures: real export files written in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from csvpos_helpers import COLUMNS
from grocerysync_pos_csv import CsvConfig


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
