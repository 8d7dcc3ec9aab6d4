"""The contract suite from grocerysync.core.testing, run against this connector.

CHANGE: the connector name, the capability flags, the fields your connector reads, and the fixtures that
create a real data source for your POS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from grocerysync.core import Item
from grocerysync.core.testing import PosConnectorContract


class TestSqliteTableContract(PosConnectorContract):
    connector_name = "sqlite-table"
    supports_incremental = True
    compared_fields = (
        "name",
        "price",
        "gtin",
        "plu",
        "brand",
        "size",
        "department",
        "sale.price",
        "sale.start",
        "sale.end",
        "sold_by_weight",
        "stock",
        "taxable",
        "snap_ebt",
        "min_age",
        "active",
    )

    @pytest.fixture
    def make_source(self, pos_database: Callable[[Sequence[Item]], Path]) -> Callable[[Sequence[Item]], dict[str, Any]]:
        return lambda items: {"path": str(pos_database(items))}

    @pytest.fixture
    def unreachable_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "no-such-store.db")}

    @pytest.fixture
    def update_source(
        self, pos_update: Callable[[Path, Sequence[Item]], None]
    ) -> Callable[[dict[str, Any], Sequence[Item]], None]:
        return lambda config, items: pos_update(Path(config["path"]), items)
