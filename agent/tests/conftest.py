"""In-test plugins for the agent's tests: a list-backed POS connector and a recording destination.

They are real plugin records registered with a real :class:`PluginManager` (autoload off), so the
pipeline runs exactly as it does with installed plugins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from grocerysync.agent import RunSummary, run_export
from grocerysync.core import (
    CheckResult,
    Destination,
    DestinationError,
    Item,
    ItemResult,
    ItemTransform,
    PosConnector,
    RawBatch,
    RawRecord,
    ReadRequest,
    Rejection,
    WriteContext,
    hookimpl,
)
from grocerysync.core.jobs import JobSpec
from grocerysync.core.manager import PluginManager


def make_rows(n: int, *, start: int = 1) -> list[dict[str, Any]]:
    """``n`` valid raw item rows with ids ``I00001``..."""
    return [
        {"item_id": f"I{i:05d}", "name": f"Item {i}", "price": f"{i % 50 + 1}.99", "department": str(i % 3)}
        for i in range(start, start + n)
    ]


class ListConfig(BaseModel):
    """Config of the list source: ``path`` is only there so that a missing field can be tested."""

    path: str
    fail: bool = False


@dataclass
class ListSource:
    """Reads ``rows`` (a list the test edits between runs) in batches; refs are ``row N``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[Rejection] = field(default_factory=list)
    requests: list[ReadRequest] = field(default_factory=list)
    incremental: bool = False
    #: Records per batch whatever the request asks (a connector whose batches are its own, such as a POS API's
    #: pages); None: as asked.
    batch: int | None = None

    def record(self) -> PosConnector:
        async def check(config: ListConfig) -> CheckResult:
            return CheckResult.success()

        async def read(config: ListConfig, request: ReadRequest) -> AsyncIterator[RawBatch]:
            self.requests.append(request)
            if config.fail:
                raise OSError(f"cannot open {config.path}")
            size = self.batch or request.batch_size
            for start in range(0, max(len(self.rows), 1), size):
                chunk = self.rows[start : start + size]
                records = [RawRecord(f"row {start + n + 2}", dict(r)) for n, r in enumerate(chunk)]
                yield RawBatch(records, self.bad_lines if start == 0 else [], cursor=str(start + len(chunk)))

        return PosConnector(
            name="list",
            description="rows from a list",
            config_model=ListConfig,
            check=check,
            read=read,
            supports_incremental=self.incremental,
        )


class DestConfig(BaseModel):
    shop: str


class DestSecrets(BaseModel):
    token: SecretStr


@dataclass
class RecordingDestination:
    """Keeps what was committed in ``items``; the fault switches make it fail on purpose."""

    items: dict[str, Item] = field(default_factory=dict)
    writes: list[list[str]] = field(default_factory=list)
    deletes: list[list[str]] = field(default_factory=list)
    #: item_id -> (error, retryable, how many more times to fail; -1 forever)
    fail_items: dict[str, list[Any]] = field(default_factory=dict)
    fail_batches: int = 0
    fail_commit: bool = False
    open_error: Exception | None = None
    supports_delete: bool = True
    spools: bool = False
    #: Awaited at the start of every write (a plugin's own background work, say).
    on_write: Callable[[], Awaitable[None]] | None = None
    contexts: list[WriteContext] = field(default_factory=list)
    secrets_seen: list[str] = field(default_factory=list)

    def record(self) -> Destination:
        async def check(config: DestConfig, secrets: DestSecrets) -> CheckResult:
            return CheckResult.success()

        @asynccontextmanager
        async def open_(config: DestConfig, secrets: DestSecrets, context: WriteContext) -> AsyncIterator[Any]:
            if self.open_error is not None:
                raise self.open_error
            self.contexts.append(context)
            self.secrets_seen.append(secrets.token.get_secret_value())
            yield _Writer(self)

        return Destination(
            name="recorder",
            description="records what it is sent",
            config_model=DestConfig,
            secrets_model=DestSecrets,
            check=check,
            open=open_,
            supports_delete=self.supports_delete,
            spools=self.spools,
        )

    @property
    def sent_ids(self) -> list[str]:
        return [i for batch in self.writes for i in batch]


class _Writer:
    def __init__(self, dest: RecordingDestination) -> None:
        self.dest = dest
        self.staged: dict[str, Item | None] = {}

    def _fails(self, item_id: str) -> ItemResult | None:
        rule = self.dest.fail_items.get(item_id)
        if rule is None or rule[2] == 0:
            return None
        rule[2] -= 1
        return ItemResult.failure(item_id, rule[0], retryable=rule[1])

    async def write(self, items: Sequence[Item]) -> list[ItemResult]:
        if self.dest.on_write is not None:
            await self.dest.on_write()
        if self.dest.fail_batches:
            self.dest.fail_batches -= 1
            raise DestinationError("rate limited (HTTP 429)", retryable=True)
        self.dest.writes.append([i.item_id for i in items])
        out = []
        for item in items:
            failure = self._fails(item.item_id)
            if failure is None:
                self.staged[item.item_id] = item
            out.append(failure or ItemResult.success(item.item_id))
        return out

    async def delete(self, item_ids: Sequence[str]) -> list[ItemResult]:
        self.dest.deletes.append(list(item_ids))
        out = []
        for item_id in item_ids:
            failure = self._fails(item_id)
            if failure is None:
                self.staged[item_id] = None
            out.append(failure or ItemResult.success(item_id))
        return out

    async def commit(self) -> str:
        if self.dest.fail_commit:
            raise DestinationError("upload refused: disk quota exceeded on the feed server")
        for key, item in self.staged.items():
            if item is None:
                self.dest.items.pop(key, None)
            else:
                self.dest.items[key] = item
        return f"committed {len(self.staged)} changes"


class SuffixConfig(BaseModel):
    suffix: str


def _suffix_transform() -> ItemTransform:
    def build(config: SuffixConfig):  # type: ignore[no-untyped-def]
        def apply(items: list[Item]) -> list[Item]:
            return [i.model_copy(update={"name": i.name + config.suffix}) for i in items]

        return apply

    return ItemTransform(name="suffix", description="appends to names", config_model=SuffixConfig, build=build)


class DropConfig(BaseModel):
    contains: str


def _drop_transform() -> ItemTransform:
    def build(config: DropConfig):  # type: ignore[no-untyped-def]
        return lambda items: [i for i in items if config.contains not in i.name]

    return ItemTransform(name="drop", description="drops items by name", config_model=DropConfig, build=build)


class _Plugin:
    def __init__(self, source: ListSource, dest: RecordingDestination) -> None:
        self.source = source
        self.dest = dest

    @hookimpl
    def grocerysync_pos_connectors(self) -> list[PosConnector]:
        return [self.source.record()]

    @hookimpl
    def grocerysync_destinations(self) -> list[Destination]:
        return [self.dest.record()]

    @hookimpl
    def grocerysync_item_transforms(self) -> list[ItemTransform]:
        return [_suffix_transform(), _drop_transform()]


@pytest.fixture
def source() -> ListSource:
    return ListSource(rows=make_rows(50))


@pytest.fixture
def dest() -> RecordingDestination:
    return RecordingDestination()


@pytest.fixture
def plugins(source: ListSource, dest: RecordingDestination) -> PluginManager:
    pm = PluginManager(autoload=False)
    pm.register(_Plugin(source, dest), name="test-plugins", distribution="grocerysync-test-plugins", version="1.2.3")
    return pm


def job_data(**changes: Any) -> dict[str, Any]:
    """A job document for the test plugins; keyword arguments replace top-level keys."""
    data: dict[str, Any] = {
        "name": "store 1 -> web",
        "source": {"plugin": "list", "config": {"path": "items.csv"}},
        "destination": {"plugin": "recorder", "config": {"shop": "demo"}, "secrets": {"token": "s3cr3t-t0ken"}},
        "options": {"batch_size": 10},
    }
    data.update(changes)
    return data


def make_job(**changes: Any) -> JobSpec:
    return JobSpec.model_validate(job_data(**changes))


@pytest.fixture
def export(plugins: PluginManager, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``await export(job, **kwargs)``: run_export against the test plugins with a per-test state dir."""

    async def run(job: JobSpec | None = None, **kwargs: Any) -> RunSummary:
        kwargs.setdefault("retry_delay", 0)
        return await run_export(job or make_job(), plugins=plugins, state_dir=tmp_path / "state", **kwargs)

    return run
