"""The contract suite every POS connector passes.

Subclass :class:`PosConnectorContract` in a test module, set ``connector_name`` and the capability flags,
and override the fixtures that know your POS::

    class TestMyPosContract(PosConnectorContract):
        connector_name = "mypos"
        supports_incremental = True

        @pytest.fixture
        def make_source(self, tmp_path_factory):
            def make(items):            # may also be ``async def``
                path = tmp_path_factory.mktemp("pos") / "items.db"
                write_my_pos_database(path, items)
                return {"path": str(path)}
            return make

        @pytest.fixture
        def unreachable_config(self, tmp_path):
            return {"path": str(tmp_path / "missing.db")}

Tests a connector does not support skip with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from grocerysync.core.config import parse_config
from grocerysync.core.errors import GrocerySyncError
from grocerysync.core.items import Item
from grocerysync.core.manager import PluginManager
from grocerysync.core.records import PosConnector, ReadRequest
from grocerysync.core.results import CheckResult, RawBatch, RawRecord, Rejection
from grocerysync.core.testing import strategies
from grocerysync.core.testing._support import (
    contract_settings,
    differences,
    expected_fields,
    maybe_await,
    plain_items,
    undocumented_fields,
)
from grocerysync.core.validation import validate_records

__all__ = ["PosConnectorContract", "ReadOutcome"]

MakeSource = Callable[[Sequence[Item]], "dict[str, Any] | Awaitable[dict[str, Any]]"]
UpdateSource = Callable[[dict[str, Any], Sequence[Item]], "Awaitable[None] | None"]


@dataclass
class ReadOutcome:
    """Everything one read produced: the batches, their records and rejections, and the last cursor."""

    batches: list[RawBatch] = field(default_factory=list)

    @property
    def records(self) -> list[RawRecord]:
        return [r for b in self.batches for r in b.records]

    @property
    def rejected(self) -> list[Rejection]:
        return [r for b in self.batches for r in b.rejected]

    @property
    def cursor(self) -> str | None:
        cursors = [b.cursor for b in self.batches if b.cursor is not None]
        return cursors[-1] if cursors else None

    def items(self) -> dict[str, Item]:
        """The records validated as the pipeline does, by item_id; fails on any rejection."""
        assert not self.rejected, "the connector rejected rows of a valid source: " + "; ".join(
            map(str, self.rejected[:5])
        )
        items, rejections = validate_records(self.records)
        assert not rejections, "records of a valid source failed validation: " + "; ".join(map(str, rejections[:5]))
        ids = [i.item_id for i in items]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        assert not dupes, f"the connector returned these items more than once: {dupes[:10]}"
        return {i.item_id: i for i in items}


class PosConnectorContract:
    """Mixin of contract tests for a POS connector; see the module docstring for how to use it.

    Class attributes to set:

    - ``connector_name``: the name the connector registers under.
    - ``supports_incremental``: the connector honours ``ReadRequest.cursor`` (then override ``update_source``).
    - ``compared_fields``: item fields (dotted for sub-fields: ``sale.price``) that must survive the trip
      POS -> connector -> validation unchanged. Add every field your connector reads.

    Methods to override when your POS cannot hold everything :func:`strategies.items` draws:
    :meth:`item_strategy`.
    """

    connector_name: ClassVar[str] = ""
    supports_incremental: ClassVar[bool] = False
    compared_fields: ClassVar[tuple[str, ...]] = ("name", "price", "gtin", "plu")
    #: Largest generated catalogue per example; small keeps the suite fast.
    max_items: ClassVar[int] = 12

    # -- what the author overrides -------------------------------------------------------------

    def item_strategy(self) -> st.SearchStrategy[Item]:
        """The items your POS can hold (default: everything :func:`strategies.items` draws)."""
        return strategies.items()

    @pytest.fixture
    def make_source(self) -> MakeSource:
        """A factory: given items, create a new POS data source holding exactly those; return the config dict.

        It is called several times in one test (once per generated example), and each call must create a
        new, independent source (use ``tmp_path_factory.mktemp``).
        """
        pytest.fail(f"{type(self).__name__} must override the make_source fixture (see PosConnectorContract)")

    @pytest.fixture
    def unreachable_config(self) -> dict[str, Any]:
        """A valid config for a source that cannot be reached (a missing file, a closed port)."""
        pytest.fail(f"{type(self).__name__} must override the unreachable_config fixture")

    @pytest.fixture
    def update_source(self) -> UpdateSource:
        """For incremental connectors: ``update(config, items)`` changes (upserts) those items in the source,
        as the POS would when a price changes, so that a read from the last cursor returns them."""
        if not self.supports_incremental:
            pytest.skip(f"{self.connector_name} does not support incremental reads (supports_incremental = False)")
        pytest.fail(f"{type(self).__name__} declares supports_incremental, so it must override update_source")

    @pytest.fixture
    def plugin_manager(self) -> PluginManager:
        """The plugin manager the connector is looked up in: every installed plugin, broken ones fatal."""
        return PluginManager(autoload=True, disabled=(), strict=True)

    # -- helpers ------------------------------------------------------------------------------

    @pytest.fixture
    def connector(self, plugin_manager: PluginManager) -> PosConnector:
        """The connector record under test."""
        assert self.connector_name, f"{type(self).__name__} must set connector_name"
        return plugin_manager.pos_connector(self.connector_name)

    def parse(self, connector: PosConnector, data: dict[str, Any]) -> Any:
        """Validate a config dict against the connector's model, as the agent does before a run."""
        return parse_config(connector.config_model, data, where=f"{connector.name} config")

    async def read(
        self, connector: PosConnector, data: dict[str, Any], *, batch_size: int = 1000, cursor: str | None = None
    ) -> ReadOutcome:
        """Read a whole source through the connector and check the shape of every batch."""
        iterator = connector.read(self.parse(connector, data), ReadRequest(batch_size=batch_size, cursor=cursor))
        assert hasattr(iterator, "__aiter__"), (
            f"{connector.name}.read must return an async iterator (an `async def` with `yield`), "
            f"got {type(iterator).__name__}"
        )
        outcome = ReadOutcome()
        async for batch in iterator:
            assert isinstance(batch, RawBatch), f"read yielded {type(batch).__name__}; it must yield RawBatch"
            assert len(batch.records) <= batch_size, (
                f"a batch held {len(batch.records)} records but batch_size was {batch_size}"
            )
            for record in batch.records:
                assert isinstance(record, RawRecord), f"a batch held {type(record).__name__}, not RawRecord"
                assert isinstance(record.ref, str), f"record ref {record.ref!r} is not a str"
                assert record.ref.strip(), (
                    f"record {dict(record.data)!r} has no ref; say where it came from, e.g. 'row 12'"
                )
            outcome.batches.append(batch)
        return outcome

    def assert_same_items(self, expected: Sequence[Item], got: dict[str, Item]) -> None:
        """The items read are exactly ``expected``, with equal ``compared_fields``."""
        want = {i.item_id: i for i in expected}
        assert set(got) == set(want), (
            f"item ids differ: missing {sorted(set(want) - set(got))[:10]}, "
            f"unexpected {sorted(set(got) - set(want))[:10]}"
        )
        problems = []
        for item_id, item in want.items():
            problems += differences(
                expected_fields(item, self.compared_fields), got[item_id], where=f"item {item_id!r}: "
            )
        assert not problems, "values changed on the way through the connector:\n" + "\n".join(problems[:20])

    # -- the contract -------------------------------------------------------------------------

    def test_registered_through_entry_point(self) -> None:
        """An installed distribution provides the connector through the ``grocerysync`` entry-point group."""
        assert self.connector_name, f"{type(self).__name__} must set connector_name"
        manager = PluginManager(autoload=True, disabled=(), strict=True)
        connector = manager.pos_connector(self.connector_name)
        assert connector.plugin, "the connector's distribution is unknown"

    def test_declared_capabilities_match(self, connector: PosConnector) -> None:
        assert connector.supports_incremental == self.supports_incremental, (
            f"the connector says supports_incremental={connector.supports_incremental} but the contract test "
            f"declares {self.supports_incremental}; make them agree"
        )
        assert connector.description.strip(), "the connector needs a description (the hub shows it)"

    def test_config_model_has_documented_json_schema(self, connector: PosConnector) -> None:
        model = connector.config_model
        assert isinstance(model, type), "config_model must be a pydantic model class"
        assert issubclass(model, BaseModel), "config_model must be a pydantic model"
        schema = model.model_json_schema()
        json.dumps(schema)  # the hub stores and serves it as JSON
        assert schema.get("type") == "object", "the config schema is not an object"
        assert schema.get("properties"), "the config schema has no fields"
        missing = undocumented_fields(model)
        assert not missing, f"config fields without Field(description=...): {missing}; the hub form shows them"

    @pytest.mark.asyncio
    async def test_config_model_refuses_unknown_fields(self, connector: PosConnector, make_source: MakeSource) -> None:
        """A misspelt setting must be refused, not silently ignored (use ``extra="forbid"``)."""
        data = await maybe_await(make_source([]))
        self.parse(connector, data)
        with pytest.raises(ValidationError):
            connector.config_model.model_validate({**data, "no_such_setting_x": "1"})

    @pytest.mark.asyncio
    async def test_check_ok_on_good_source(self, connector: PosConnector, make_source: MakeSource) -> None:
        data = await maybe_await(make_source(plain_items(3)))
        result = await connector.check(self.parse(connector, data))
        assert isinstance(result, CheckResult), f"check returned {type(result).__name__}, not CheckResult"
        assert result.ok, f"check failed on a good source: {result.message}"
        assert result.message.strip(), "check should say what it found, e.g. the file's size and age"

    @pytest.mark.asyncio
    async def test_check_not_ok_on_unreachable_source(
        self, connector: PosConnector, unreachable_config: dict[str, Any]
    ) -> None:
        """check() reports, never raises: the message is what a technician sees."""
        try:
            result = await connector.check(self.parse(connector, unreachable_config))
        except Exception as exc:
            pytest.fail(f"check raised {type(exc).__name__}: {exc}; it must return CheckResult.failure(message)")
        assert isinstance(result, CheckResult)
        assert not result.ok, "check said ok for an unreachable source"
        assert result.message.strip(), "a failed check needs a message saying what to fix"
        assert "Traceback" not in result.message, "the check message holds a traceback"

    @pytest.mark.asyncio
    async def test_read_unreachable_source_raises_source_error(
        self, connector: PosConnector, unreachable_config: dict[str, Any]
    ) -> None:
        """A source that cannot be read at all is one clear error (SourceError), not a stray exception."""
        with pytest.raises(GrocerySyncError) as info:
            await self.read(connector, unreachable_config)
        assert str(info.value).strip(), "the error needs a message saying what failed and what to do"

    @pytest.mark.asyncio
    @contract_settings()
    @given(data=st.data())
    async def test_read_round_trips_items(self, connector: PosConnector, make_source: MakeSource, data: Any) -> None:
        """Items put in the POS come out of read + validation with the same ids and values."""
        items = data.draw(strategies.item_batches(max_size=self.max_items, item=self.item_strategy()), label="items")
        batch_size = data.draw(st.integers(1, self.max_items + 2), label="batch_size")
        config = await maybe_await(make_source(items))
        outcome = await self.read(connector, config, batch_size=batch_size)
        self.assert_same_items(items, outcome.items())

    @pytest.mark.asyncio
    async def test_batches_never_exceed_batch_size(self, connector: PosConnector, make_source: MakeSource) -> None:
        items = plain_items(7)
        config = await maybe_await(make_source(items))
        for batch_size in (1, 2, 3, 7, 1000):
            outcome = await self.read(connector, config, batch_size=batch_size)  # read() checks each batch's size
            assert len(outcome.records) == len(items), f"batch_size={batch_size}: read {len(outcome.records)} records"
            if batch_size < len(items):
                assert len([b for b in outcome.batches if b.records]) > 1, f"batch_size={batch_size}: one batch"

    @pytest.mark.asyncio
    async def test_empty_source_yields_no_records(self, connector: PosConnector, make_source: MakeSource) -> None:
        config = await maybe_await(make_source([]))
        outcome = await self.read(connector, config)
        assert outcome.records == [], f"an empty source yielded {len(outcome.records)} records"
        assert outcome.rejected == [], f"an empty source yielded rejections: {outcome.rejected[:3]}"

    @pytest.mark.asyncio
    async def test_reading_twice_gives_the_same_items(self, connector: PosConnector, make_source: MakeSource) -> None:
        items = plain_items(5)
        config = await maybe_await(make_source(items))
        first = (await self.read(connector, config)).items()
        second = (await self.read(connector, config)).items()
        assert first == second, "a second read of an unchanged source gave different items"

    @pytest.mark.asyncio
    async def test_cursor_ignored_when_not_incremental(self, connector: PosConnector, make_source: MakeSource) -> None:
        if self.supports_incremental:
            pytest.skip("the connector supports incremental reads")
        items = plain_items(4)
        config = await maybe_await(make_source(items))
        outcome = await self.read(connector, config, cursor="2001-01-01T00:00:00|42")
        self.assert_same_items(items, outcome.items())

    @pytest.mark.asyncio
    async def test_incremental_cursor(
        self, connector: PosConnector, make_source: MakeSource, update_source: UpdateSource
    ) -> None:
        """A read from the last cursor returns exactly what changed since, with the new values."""
        if not self.supports_incremental:
            pytest.skip(f"{self.connector_name} does not support incremental reads (supports_incremental = False)")
        items = plain_items(6)
        config = await maybe_await(make_source(items))
        full = await self.read(connector, config, batch_size=4)
        self.assert_same_items(items, full.items())
        cursor = full.cursor
        assert isinstance(cursor, str), "an incremental connector must give a cursor (str) with its batches"
        assert cursor, "an incremental connector must give a non-empty cursor"

        unchanged = await self.read(connector, config, cursor=cursor)
        assert unchanged.records == [], (
            f"nothing changed, yet a read from cursor {cursor!r} returned {len(unchanged.records)} records"
        )

        changed = [
            items[1].model_copy(update={"price": items[1].price + 1, "name": items[1].name + " New"}),
            items[4].model_copy(update={"price": items[4].price + 2}),
        ]
        await maybe_await(update_source(config, changed))
        delta = await self.read(connector, config, cursor=cursor, batch_size=1)
        self.assert_same_items(changed, delta.items())
        assert delta.cursor, "a read of changed items gave no cursor"
        assert delta.cursor != cursor, "the cursor did not move after reading changed items"

        again = await self.read(connector, config, cursor=delta.cursor)
        assert again.records == [], "a read from the newest cursor returned items again"
