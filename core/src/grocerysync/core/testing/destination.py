"""The contract suite every destination passes.

Subclass :class:`DestinationContract`, set ``destination_name`` and the capability flags, and override the
fixtures that know your destination::

    class TestMyFeedContract(DestinationContract):
        destination_name = "myfeed"
        compared_fields = ("name", "price", "gtin")

        @pytest.fixture
        def destination_config(self, tmp_path):
            return {"path": str(tmp_path / "out")}

        @pytest.fixture
        def unreachable_config(self, tmp_path):
            return {"path": str(tmp_path / "no" / "such" / "dir")}

        @pytest.fixture
        def read_back(self, destination_config):
            async def held():
                return parse_my_feed_files(destination_config["path"])  # {item_id: {field: value}}
            return held

``read_back`` returns what the destination holds now, keyed by item id, with item field names as keys
(dotted for sub-fields). For a destination that writes feed files, "holds" means the catalogue a platform
would have after taking in every committed file in order (a delta file upserts and deletes). Return a list of
``(item_id, record)`` pairs instead of a mapping to let the suite catch an item held twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from grocerysync.core.config import parse_config
from grocerysync.core.items import Item
from grocerysync.core.manager import PluginManager
from grocerysync.core.records import Destination, DestinationWriter, WriteContext
from grocerysync.core.results import CheckResult, ItemResult
from grocerysync.core.testing import strategies
from grocerysync.core.testing._support import (
    as_item_map,
    contract_settings,
    differences,
    expected_fields,
    is_secret_annotation,
    leaks,
    new_run_id,
    plain_items,
    secret_fragments,
    undocumented_fields,
)

__all__ = ["DestinationContract"]

ReadBack = Callable[[], Awaitable[Any]]


class DestinationContract:
    """Mixin of contract tests for a destination; see the module docstring for how to use it.

    Class attributes to set:

    - ``destination_name``: the name the destination registers under.
    - ``supports_delete``: ``delete`` removes items (must match the record).
    - ``transactional``: nothing is visible until ``commit`` (file feeds); False for APIs that write at once.
    - ``compared_fields``: item fields (dotted for sub-fields) that ``read_back`` gives back and that must
      hold the values written. Override :meth:`expected` when the destination transforms values.
    - ``money_places``: compare money rounded to this many places (a platform that takes cents: 2).
    """

    destination_name: ClassVar[str] = ""
    supports_delete: ClassVar[bool] = True
    transactional: ClassVar[bool] = True
    compared_fields: ClassVar[tuple[str, ...]] = ("name", "price")
    money_places: ClassVar[int | None] = None
    #: Largest generated batch per example; small keeps the suite fast.
    max_items: ClassVar[int] = 12

    # -- what the author overrides -------------------------------------------------------------

    def item_strategy(self) -> st.SearchStrategy[Item]:
        """Items to write. Items the destination cannot carry may fail, each with a reason."""
        return strategies.items()

    def expected(self, item: Item) -> dict[str, Any]:
        """What ``read_back`` must show for ``item``: ``{field: value}`` (default: ``compared_fields``)."""
        return expected_fields(item, self.compared_fields)

    @pytest.fixture
    def destination_config(self) -> dict[str, Any]:
        """A config for a fresh, empty, reachable destination (one per test)."""
        pytest.fail(f"{type(self).__name__} must override the destination_config fixture")

    @pytest.fixture
    def destination_secrets(self) -> dict[str, Any]:
        """Secrets that work with ``destination_config`` (default: none). Use distinctive values."""
        return {}

    @pytest.fixture
    def unreachable_config(self) -> dict[str, Any]:
        """A valid config whose destination cannot be reached (a closed port, a missing directory)."""
        pytest.fail(f"{type(self).__name__} must override the unreachable_config fixture")

    @pytest.fixture
    def read_back(self) -> ReadBack:
        """An async callable returning what the destination holds (see the module docstring)."""
        pytest.fail(f"{type(self).__name__} must override the read_back fixture")

    @pytest.fixture
    def plugin_manager(self) -> PluginManager:
        """The plugin manager the destination is looked up in: every installed plugin, broken ones fatal."""
        return PluginManager(autoload=True, disabled=(), strict=True)

    # -- helpers ------------------------------------------------------------------------------

    @pytest.fixture
    def destination(self, plugin_manager: PluginManager) -> Destination:
        """The destination record under test."""
        assert self.destination_name, f"{type(self).__name__} must set destination_name"
        return plugin_manager.destination(self.destination_name)

    @pytest.fixture
    def work_dir(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The run's local scratch directory (``WriteContext.work_dir``)."""
        return tmp_path_factory.mktemp("work")

    def parse(self, destination: Destination, config: dict[str, Any], secrets: dict[str, Any]) -> tuple[Any, Any]:
        """Validate config and secrets against the destination's models, as the agent does before a run."""
        return (
            parse_config(destination.config_model, config, where=f"{destination.name} config"),
            parse_config(destination.secrets_model, secrets, where=f"{destination.name} secrets"),
        )

    @asynccontextmanager
    async def run(
        self, destination: Destination, config: dict[str, Any], secrets: dict[str, Any], work_dir: Path
    ) -> AsyncIterator[DestinationWriter]:
        """Open the destination for one new run (mode ``delta``)."""
        parsed_config, parsed_secrets = self.parse(destination, config, secrets)
        run_dir = work_dir / new_run_id()
        run_dir.mkdir()
        context = WriteContext(job_name="contract-test", run_id=run_dir.name, mode="delta", work_dir=str(run_dir))
        async with destination.open(parsed_config, parsed_secrets, context) as writer:
            yield writer

    async def write(self, writer: DestinationWriter, items: Sequence[Item]) -> list[ItemResult]:
        """Write items and check there is exactly one result per item."""
        results = await writer.write(items)
        self.assert_one_result_each([i.item_id for i in items], results, "write")
        return results

    @staticmethod
    def assert_one_result_each(ids: Sequence[str], results: Any, what: str) -> None:
        assert isinstance(results, list), f"{what} returned {type(results).__name__}; it must return a list"
        assert all(isinstance(r, ItemResult) for r in results), f"{what} returned something other than ItemResults"
        got = sorted(r.item_id for r in results)
        assert got == sorted(ids), (
            f"{what} must return exactly one ItemResult per item: sent {len(ids)}, got {len(results)} "
            f"(missing {sorted(set(ids) - set(got))[:5]}, unexpected {sorted(set(got) - set(ids))[:5]})"
        )
        for r in results:
            if not r.ok:
                assert (r.error or "").strip(), f"{what}: item {r.item_id!r} failed without a reason"

    async def committed_run(
        self,
        destination: Destination,
        config: dict[str, Any],
        secrets: dict[str, Any],
        work_dir: Path,
        items: Sequence[Item],
    ) -> None:
        """One whole run: write ``items`` (one result each) and commit."""
        async with self.run(destination, config, secrets, work_dir) as writer:
            await self.write(writer, items)
            await writer.commit()

    async def held(self, read_back: ReadBack) -> dict[str, Any]:
        """What the destination holds, by item id."""
        return as_item_map(await read_back(), where="read_back")

    def assert_holds(self, held: dict[str, Any], items: Sequence[Item]) -> None:
        """Each of ``items`` is held once with the expected values."""
        problems = []
        for item in items:
            if item.item_id not in held:
                problems.append(f"item {item.item_id!r} was accepted and committed but is not held")
                continue
            problems += differences(
                self.expected(item),
                held[item.item_id],
                money_places=self.money_places,
                where=f"item {item.item_id!r}: ",
            )
        assert not problems, "the destination does not hold what was written:\n" + "\n".join(problems[:20])

    # -- the contract -------------------------------------------------------------------------

    def test_registered_through_entry_point(self) -> None:
        """An installed distribution provides the destination through the ``grocerysync`` entry-point group."""
        assert self.destination_name, f"{type(self).__name__} must set destination_name"
        manager = PluginManager(autoload=True, disabled=(), strict=True)
        destination = manager.destination(self.destination_name)
        assert destination.plugin, "the destination's distribution is unknown"

    def test_declared_capabilities_match(self, destination: Destination) -> None:
        assert destination.supports_delete == self.supports_delete, (
            f"the destination says supports_delete={destination.supports_delete} but the contract test "
            f"declares {self.supports_delete}; make them agree"
        )
        assert not destination.spools or self.transactional, (
            "the destination says it spools (writes go to a file until commit) but the contract test "
            "declares transactional = False (writes are visible at once); one of them is wrong"
        )
        assert destination.description.strip(), "the destination needs a description (the hub shows it)"

    def test_config_models_have_documented_json_schemas(self, destination: Destination) -> None:
        for role, model in (("config_model", destination.config_model), ("secrets_model", destination.secrets_model)):
            assert isinstance(model, type), f"{role} must be a pydantic model class"
            assert issubclass(model, BaseModel), f"{role} must be a pydantic model"
            schema = model.model_json_schema()
            json.dumps(schema)  # the hub stores and serves it as JSON
            assert schema.get("type") == "object", f"{role} schema is not an object"
            missing = undocumented_fields(model)
            assert not missing, f"{role} fields without Field(description=...): {missing}; the hub form shows them"
        assert destination.config_model.model_json_schema().get("properties"), "config schema has no fields"

    def test_secret_fields_are_secret_str(self, destination: Destination) -> None:
        """Secrets are SecretStr so they never print; the hub encrypts them and hides them in forms."""
        plain = [
            name
            for name, info in destination.secrets_model.model_fields.items()
            if not is_secret_annotation(info.annotation)
        ]
        assert not plain, f"secrets fields that are not SecretStr: {plain}"
        for name, prop in destination.secrets_model.model_json_schema().get("properties", {}).items():
            assert "password" in json.dumps(prop), f"secrets field {name!r} is not marked as a password in the schema"

    @pytest.mark.asyncio
    async def test_check_ok(
        self, destination: Destination, destination_config: dict[str, Any], destination_secrets: dict[str, Any]
    ) -> None:
        result = await destination.check(*self.parse(destination, destination_config, destination_secrets))
        assert isinstance(result, CheckResult), f"check returned {type(result).__name__}, not CheckResult"
        assert result.ok, f"check failed on a reachable destination: {result.message}"
        assert result.message.strip(), "check should say what it found"

    @pytest.mark.asyncio
    async def test_check_not_ok_on_unreachable(
        self, destination: Destination, unreachable_config: dict[str, Any], destination_secrets: dict[str, Any]
    ) -> None:
        """check() reports, never raises: the message is what a technician sees."""
        parsed = self.parse(destination, unreachable_config, destination_secrets)
        try:
            result = await destination.check(*parsed)
        except Exception as exc:
            pytest.fail(f"check raised {type(exc).__name__}: {exc}; it must return CheckResult.failure(message)")
        assert isinstance(result, CheckResult)
        assert not result.ok, "check said ok for an unreachable destination"
        assert result.message.strip(), "a failed check needs a message saying what to fix"
        assert "Traceback" not in result.message, "the check message holds a traceback"

    @pytest.mark.asyncio
    async def test_plain_items_are_accepted(
        self,
        destination: Destination,
        destination_config: dict[str, Any],
        destination_secrets: dict[str, Any],
        read_back: ReadBack,
        work_dir: Path,
    ) -> None:
        """Ordinary items (GTIN or PLU, cents) are all accepted, and an empty write is fine."""
        items = plain_items(6)
        async with self.run(destination, destination_config, destination_secrets, work_dir) as writer:
            assert await self.write(writer, []) == [], "writing no items must return no results"
            results = await self.write(writer, items)
            failed = [f"{r.item_id}: {r.error}" for r in results if not r.ok]
            assert not failed, f"plain items were refused: {failed}"
            line = await writer.commit()
        assert isinstance(line, str), "commit must return a line (str) for the run summary"
        assert line.strip(), "commit must return a line for the run summary"
        self.assert_holds(await self.held(read_back), items)

    @pytest.mark.asyncio
    @contract_settings()
    @given(data=st.data())
    async def test_written_items_read_back(
        self,
        destination: Destination,
        destination_config: dict[str, Any],
        destination_secrets: dict[str, Any],
        read_back: ReadBack,
        work_dir: Path,
        data: Any,
    ) -> None:
        """One result per item; every accepted item is held with its values after commit."""
        items = data.draw(strategies.item_batches(max_size=self.max_items, item=self.item_strategy()), label="items")
        async with self.run(destination, destination_config, destination_secrets, work_dir) as writer:
            results = await self.write(writer, items)
            await writer.commit()
        accepted = {r.item_id for r in results if r.ok}
        self.assert_holds(await self.held(read_back), [i for i in items if i.item_id in accepted])

    @pytest.mark.asyncio
    async def test_writes_are_idempotent(
        self,
        destination: Destination,
        destination_config: dict[str, Any],
        destination_secrets: dict[str, Any],
        read_back: ReadBack,
        work_dir: Path,
    ) -> None:
        """The same batch written in two runs leaves each item once, with its values."""
        items = plain_items(5)
        await self.committed_run(destination, destination_config, destination_secrets, work_dir, items)
        await self.committed_run(destination, destination_config, destination_secrets, work_dir, items)
        held = await self.held(read_back)
        self.assert_holds(held, items)

    @pytest.mark.asyncio
    async def test_delete_removes_items(
        self,
        destination: Destination,
        destination_config: dict[str, Any],
        destination_secrets: dict[str, Any],
        read_back: ReadBack,
        work_dir: Path,
    ) -> None:
        if not self.supports_delete:
            pytest.skip(f"{self.destination_name} does not support delete (supports_delete = False)")
        items = plain_items(5)
        await self.committed_run(destination, destination_config, destination_secrets, work_dir, items)
        gone = [items[1].item_id, items[3].item_id]
        async with self.run(destination, destination_config, destination_secrets, work_dir) as writer:
            results = await writer.delete(gone)
            self.assert_one_result_each(gone, results, "delete")
            failed = [f"{r.item_id}: {r.error}" for r in results if not r.ok]
            assert not failed, f"deleting held items failed: {failed}"
            await writer.commit()
        held = await self.held(read_back)
        assert not set(gone) & set(held), f"deleted items are still held: {sorted(set(gone) & set(held))}"
        self.assert_holds(held, [i for i in items if i.item_id not in gone])

    @pytest.mark.asyncio
    async def test_leaving_without_commit_changes_nothing(
        self,
        destination: Destination,
        destination_config: dict[str, Any],
        destination_secrets: dict[str, Any],
        read_back: ReadBack,
        work_dir: Path,
    ) -> None:
        """A run that fails or ends without commit leaves the destination as it was."""
        if not self.transactional:
            pytest.skip(f"{self.destination_name} writes at once (transactional = False)")
        items = plain_items(4)
        await self.committed_run(destination, destination_config, destination_secrets, work_dir, items[:2])
        before = await self.held(read_back)
        changed = [items[0].model_copy(update={"price": items[0].price + 5}), *items[2:]]

        class RunFailed(Exception):
            pass

        async def failing_run() -> None:
            async with self.run(destination, destination_config, destination_secrets, work_dir) as writer:
                await self.write(writer, changed)
                if self.supports_delete:
                    await writer.delete([items[1].item_id])
                raise RunFailed

        with pytest.raises(RunFailed):
            await failing_run()
        assert await self.held(read_back) == before, "a run that raised before commit changed the destination"

        async with self.run(destination, destination_config, destination_secrets, work_dir) as writer:
            await self.write(writer, changed)
        assert await self.held(read_back) == before, "a run that ended without commit changed the destination"

    @pytest.mark.asyncio
    async def test_secrets_never_leak(
        self,
        destination: Destination,
        destination_config: dict[str, Any],
        destination_secrets: dict[str, Any],
        unreachable_config: dict[str, Any],
        work_dir: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Secret values never appear in logs, results, messages, the commit line or reprs."""
        fragments = secret_fragments(destination_secrets)
        if not fragments:
            pytest.skip(f"{self.destination_name}: destination_secrets holds no secret values to look for")
        short = [f for f in fragments if len(f) < 8]
        assert not short, "use distinctive secret values (8 characters or more) in destination_secrets"
        caplog.set_level(logging.DEBUG)
        config, secrets = self.parse(destination, destination_config, destination_secrets)
        texts: list[tuple[str, str]] = [
            ("repr(config)", repr(config)),
            ("repr(secrets)", repr(secrets)),
            ("str(secrets)", str(secrets)),
            ("secrets.model_dump_json()", secrets.model_dump_json()),
        ]
        texts.append(("check message", (await destination.check(config, secrets)).message))
        bad_config = self.parse(destination, unreachable_config, destination_secrets)[0]
        texts.append(("check message (unreachable)", (await destination.check(bad_config, secrets)).message))
        no_code = Item(item_id="no-code-1", name="Item Without Code", price="1.00")
        async with self.run(destination, destination_config, destination_secrets, work_dir) as writer:
            texts.append(("repr(writer)", repr(writer)))
            results = await self.write(writer, [*plain_items(2), no_code])
            texts += [(f"result error of {r.item_id}", r.error or "") for r in results]
            texts.append(("commit line", await writer.commit()))
        texts.append(("log records", caplog.text))
        texts += [(f"log record args {r.name}", repr(r.args)) for r in caplog.records]
        found = leaks(texts, fragments)
        assert not found, f"a secret value appears in: {found}"
