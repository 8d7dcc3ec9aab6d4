"""Small, real (file-backed) POS connectors and destinations for testing the contract kit itself.

Each has a ``fault`` that breaks one promise of the contract; the kit's tests run the suites against the good
and the broken ones and check that exactly the right tests fail. Loaded by test modules that pytester writes.
"""

# The subjects touch small local files in async functions on purpose: they stay short and obvious.
# ruff: noqa: ASYNC240

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from grocerysync.core import (
    CheckResult,
    Destination,
    Item,
    ItemResult,
    PosConnector,
    RawBatch,
    RawRecord,
    ReadRequest,
    SourceError,
    WriteContext,
    hookimpl,
)
from grocerysync.core.manager import PluginManager

log = logging.getLogger("kit_subjects")


# ---------------------------------------------------------------------------
# A POS that keeps its items in a JSON file: {"rows": [{"v": version, "item": {...}}]}
# ---------------------------------------------------------------------------


class JsonPosConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="The POS's JSON item file.")


class UndocumentedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


def write_pos(path: Path, items: Sequence[Item]) -> None:
    rows = [{"v": 1, "item": i.model_dump(mode="json", exclude_none=True)} for i in items]
    path.write_text(json.dumps({"rows": rows}), encoding="utf-8")


def update_pos(path: Path, items: Sequence[Item]) -> None:
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    version = max((r["v"] for r in rows), default=0) + 1
    changed = {i.item_id: i for i in items}
    rows = [r for r in rows if r["item"]["item_id"] not in changed]
    rows += [{"v": version, "item": i.model_dump(mode="json", exclude_none=True)} for i in items]
    path.write_text(json.dumps({"rows": rows}), encoding="utf-8")


def pos_connector(fault: str | None = None) -> PosConnector:
    async def check(config: Any) -> CheckResult:
        path = Path(config.path)
        if fault == "check_raises":
            path.read_bytes()
        if not path.is_file():
            return CheckResult.failure(f"POS file not found: {path}")
        return CheckResult.success(f"{path.name}: {path.stat().st_size} bytes")

    async def read(config: Any, request: ReadRequest) -> AsyncIterator[RawBatch]:
        path = Path(config.path)
        if fault != "raw_error" and not path.is_file():
            raise SourceError(f"POS file not found: {path}")
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        rows.sort(key=lambda r: (r["v"], r["item"]["item_id"]))
        if request.cursor is not None and fault != "ignores_cursor":
            rows = [r for r in rows if r["v"] > int(request.cursor)]
        if fault == "drops_last" and rows:
            rows = rows[:-1]
        size = len(rows) + 1 if fault == "ignores_batch_size" else request.batch_size
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            records = []
            for n, row in enumerate(chunk, start + 1):
                data = dict(row["item"])
                if fault == "mangles_price":
                    data["price"] = str(Decimal(data["price"]) + Decimal("0.01"))
                records.append(RawRecord(f"row {n}", data))
            yield RawBatch(records=records, cursor=str(chunk[-1]["v"]))

    return PosConnector(
        name="jsonpos",
        description="Items from a JSON file",
        config_model=UndocumentedConfig if fault == "undocumented" else JsonPosConfig,
        check=check,
        read=read,
        supports_incremental=True,
    )


# ---------------------------------------------------------------------------
# A destination that keeps what it holds in <dir>/held.json, written on commit
# ---------------------------------------------------------------------------


class DirConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="Directory the destination writes into.")


class DirSecrets(BaseModel):
    token: SecretStr = Field(description="Access token.")


class PlainSecrets(BaseModel):
    token: str = Field(description="Access token.")


def held_pairs(directory: Path) -> list[tuple[str, dict[str, Any]]]:
    path = directory / "held.json"
    if not path.exists():
        return []
    return [(e["item_id"], e) for e in json.loads(path.read_text(encoding="utf-8"))]


def _save(directory: Path, entries: list[dict[str, Any]]) -> None:
    tmp = directory / "held.json.tmp"
    tmp.write_text(json.dumps(entries), encoding="utf-8")
    tmp.replace(directory / "held.json")


class DirWriter:
    def __init__(self, directory: Path, fault: str | None) -> None:
        self.directory = directory
        self.fault = fault
        self.entries = [e for _, e in held_pairs(directory)]

    def _merge(self, items: Sequence[Item]) -> None:
        new = [i.model_dump(mode="json") for i in items]
        if self.fault == "wrong_value":
            for entry in new:
                entry["name"] = entry["name"].upper() + "!"
        if self.fault != "appends":
            ids = {i.item_id for i in items}
            self.entries = [e for e in self.entries if e["item_id"] not in ids]
        self.entries += new
        if self.fault in ("no_transaction", "spools_at_once"):
            _save(self.directory, self.entries)

    async def write(self, items: Sequence[Item]) -> list[ItemResult]:
        self._merge(items)
        results = [ItemResult.success(i.item_id) for i in items]
        return results[:-1] if self.fault == "drops_result" and results else results

    async def delete(self, item_ids: Sequence[str]) -> list[ItemResult]:
        if self.fault != "delete_noop":
            self.entries = [e for e in self.entries if e["item_id"] not in set(item_ids)]
        return [ItemResult.success(i) for i in item_ids]

    async def commit(self) -> str:
        _save(self.directory, self.entries)
        return f"{len(self.entries)} items held"


def destination(fault: str | None = None) -> Destination:
    async def check(config: Any, secrets: Any) -> CheckResult:
        if fault == "logs_secret":
            log.debug("checking with token %s", secrets.token.get_secret_value())
        if not Path(config.path).is_dir():
            return CheckResult.failure(f"directory not found: {config.path}")
        return CheckResult.success("writable")

    @asynccontextmanager
    async def open_(config: Any, secrets: Any, context: WriteContext) -> AsyncIterator[DirWriter]:
        yield DirWriter(Path(config.path), fault)

    return Destination(
        name="jsondir",
        description="Items into a JSON file in a directory",
        config_model=DirConfig,
        secrets_model=PlainSecrets if fault == "plain_secret" else DirSecrets,
        check=check,
        open=open_,
        spools=fault != "no_transaction",  # a file until commit; "spools_at_once" says so but writes at once
    )


class _Plugin:
    def __init__(self, fault: str | None) -> None:
        self.fault = fault

    @hookimpl
    def grocerysync_pos_connectors(self) -> Iterator[PosConnector]:
        yield pos_connector(self.fault)

    @hookimpl
    def grocerysync_destinations(self) -> Iterator[Destination]:
        yield destination(self.fault)


def manager(fault: str | None = None) -> PluginManager:
    """A plugin manager holding only the subjects, with the given fault."""
    pm = PluginManager(autoload=False, disabled=(), strict=True)
    pm.register(_Plugin(fault), name="kit-subjects", distribution="kit-subjects", version="1")
    return pm
