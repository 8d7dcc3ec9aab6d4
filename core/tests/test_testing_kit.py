"""Tests of the contract-test kit: its strategies, and that its suites pass good plugins and fail broken ones."""

from __future__ import annotations

import re
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings

from grocerysync.core.codes import is_valid_gtin, normalize_gtin, validate_plu
from grocerysync.core.items import Item
from grocerysync.core.results import RawRecord
from grocerysync.core.testing import plain_items, strategies
from grocerysync.core.testing._support import differences, secret_fragments
from grocerysync.core.validation import validate_records

pytest_plugins = ("pytester",)

SUBJECTS = Path(__file__).with_name("kit_subjects.py")

# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


@settings(max_examples=60)
@given(strategies.item_batches(max_size=8))
def test_item_batches_are_valid_items_with_unique_ids(batch: list[Item]) -> None:
    records = [RawRecord(f"row {n}", item.model_dump(mode="json")) for n, item in enumerate(batch)]
    items, rejections = validate_records(records)
    assert rejections == []
    assert items == batch  # the JSON form validates back to the same items
    ids = [i.item_id.casefold() for i in batch]
    assert len(ids) == len(set(ids))


@settings(max_examples=100)
@given(strategies.gtins())
def test_gtins_have_right_lengths_and_check_digits(code: str) -> None:
    assert len(code) in (8, 12, 13, 14)
    assert is_valid_gtin(code)
    assert normalize_gtin(code) == code  # leading zeros and all


@settings(max_examples=100)
@given(strategies.plus())
def test_plus_are_valid(code: str) -> None:
    assert validate_plu(code) == code


@settings(max_examples=100)
@given(strategies.stored_gtins())
def test_stored_gtins_normalise_to_their_canonical_form(case: tuple[str, object, str]) -> None:
    raw, style, canonical = case
    assert normalize_gtin(raw, style) == canonical  # type: ignore[arg-type]


@settings(max_examples=100)
@given(strategies.money_texts())
def test_money_texts_mean_their_value(case: tuple[str, bool, Decimal]) -> None:
    text, decimal_comma, value = case
    digits = text.strip().lstrip("$€£")
    digits = digits.replace(".", "").replace(",", ".") if decimal_comma else digits.replace(",", "")
    assert Decimal(digits) == value


@settings(max_examples=50)
@given(strategies.items(codes="required", max_places=2))
def test_items_options_are_honoured(item: Item) -> None:
    assert item.gtin or item.plu
    for money in (item.price, item.cost, item.sale.price if item.sale else None):
        if money is not None:
            assert money == money.quantize(Decimal("0.01"))


def test_strategies_reach_the_nasty_cases() -> None:
    """The point of the strategies: names with combining marks, emoji and RTL text, weighed items, extremes."""
    seen: set[str] = set()

    @settings(max_examples=400, database=None, derandomize=True)  # the same draws every run: no flakes
    @given(strategies.items())
    def look(item: Item) -> None:
        if any("\u0300" <= c <= "\u036f" for c in item.name):
            seen.add("combining")
        if any(ord(c) >= 0x1F300 for c in item.name):
            seen.add("emoji")
        if any("\u0590" <= c <= "\u06ff" for c in item.name):
            seen.add("rtl")
        if item.sold_by_weight:
            seen.add("weighed")
        if item.gtin and item.gtin.startswith("0"):
            seen.add("leading zero")
        if item.price in (Decimal("0.0001"), Decimal("999999.9999")):
            seen.add("extreme price")

    look()
    assert seen == {"combining", "emoji", "rtl", "weighed", "leading zero", "extreme price"}


def test_plain_items_are_valid_and_deterministic() -> None:
    first, second = plain_items(6), plain_items(6)
    assert first == second
    assert all(i.gtin or i.plu for i in first)
    assert len({i.item_id for i in first}) == 6


def test_differences_normalise_values_but_catch_changes() -> None:
    item = Item(item_id="1", name="Milk", price="1.50", gtin="012345678905", size="1 gal")
    same = {"name": "Milk", "price": "1.5", "gtin": "0012345678905", "size": "1 gal"}
    fields = {"name": item.name, "price": item.price, "gtin": item.gtin, "size": item.size}
    assert differences(fields, same) == []
    changed = {**same, "price": "1.51"}
    assert differences(fields, changed) == ["price: expected Decimal('1.50'), got '1.51'"]
    assert differences(fields, {"name": "Milk"})[0].startswith("price: missing")
    assert differences({"price": Decimal("1.005")}, {"price": "1.01"}, money_places=2) == []


def test_secret_fragments_cover_key_lines_but_not_armour() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    fragments = secret_fragments({"private_key": key, "password": "hunter2-long", "empty": ""})
    assert "b3BlbnNzaC1rZXktdjEAAAAA" in fragments
    assert "hunter2-long" in fragments
    assert "-----BEGIN OPENSSH PRIVATE KEY-----" not in fragments  # public armour, found in messages legitimately


# ---------------------------------------------------------------------------
# The suites against good and deliberately broken subjects
# ---------------------------------------------------------------------------

POS_CLASS = """
class TestPos(PosConnectorContract):
    connector_name = "jsonpos"
    supports_incremental = True
    compared_fields = ("name", "price", "gtin", "plu", "size", "sale.price", "sale.start", "stock", "extras")

    @pytest.fixture
    def plugin_manager(self):
        return ks.manager(FAULT)

    def test_registered_through_entry_point(self):
        pytest.skip("registered by hand")

    @pytest.fixture
    def make_source(self, tmp_path_factory):
        def make(items):
            path = tmp_path_factory.mktemp("pos") / "items.json"
            ks.write_pos(path, items)
            return {"path": str(path)}
        return make

    @pytest.fixture
    def unreachable_config(self, tmp_path):
        return {"path": str(tmp_path / "missing.json")}

    @pytest.fixture
    def update_source(self):
        async def update(config, items):  # an async factory works too
            ks.update_pos(Path(config["path"]), items)
        return update
"""

DEST_CLASS = """
class TestDest(DestinationContract):
    destination_name = "jsondir"
    transactional = FAULT != "spools_at_once"  # its author saw it write at once, and said so here
    compared_fields = ("name", "price", "gtin", "plu", "sale.price", "extras")

    @pytest.fixture
    def plugin_manager(self):
        return ks.manager(FAULT)

    def test_registered_through_entry_point(self):
        pytest.skip("registered by hand")

    @pytest.fixture
    def destination_config(self, tmp_path):
        return {"path": str(tmp_path)}

    @pytest.fixture
    def destination_secrets(self):
        return {"token": "tok-3f9a1c2b7e"}

    @pytest.fixture
    def unreachable_config(self, tmp_path):
        return {"path": str(tmp_path / "missing")}

    @pytest.fixture
    def read_back(self, tmp_path):
        async def held():
            return ks.held_pairs(tmp_path)
        return held
"""

HEADER = """
from pathlib import Path
import pytest
import kit_subjects as ks
from grocerysync.core.testing import DestinationContract, PosConnectorContract

FAULT = {fault!r}
"""

# fault -> (suite, the tests that must fail). Everything else must pass or skip.
EXPECTED: dict[str | None, tuple[str, set[str]]] = {
    None: ("both", set()),
    "drops_last": (
        "pos",
        {"test_read_round_trips_items", "test_batches_never_exceed_batch_size", "test_incremental_cursor"},
    ),
    "ignores_batch_size": ("pos", {"test_batches_never_exceed_batch_size", "test_incremental_cursor"}),
    "mangles_price": ("pos", {"test_read_round_trips_items", "test_incremental_cursor"}),
    "check_raises": ("pos", {"test_check_not_ok_on_unreachable_source"}),
    "raw_error": ("pos", {"test_read_unreachable_source_raises_source_error"}),
    "ignores_cursor": ("pos", {"test_incremental_cursor"}),
    "undocumented": ("pos", {"test_config_model_has_documented_json_schema"}),
    "appends": ("dest", {"test_writes_are_idempotent"}),  # the property test too, if examples share an id
    "no_transaction": ("dest", {"test_leaving_without_commit_changes_nothing"}),
    "spools_at_once": ("dest", {"test_declared_capabilities_match"}),
    "logs_secret": ("dest", {"test_secrets_never_leak"}),
    "drops_result": (
        "dest",
        {
            "test_plain_items_are_accepted",
            "test_written_items_read_back",
            "test_writes_are_idempotent",
            "test_leaving_without_commit_changes_nothing",
            "test_secrets_never_leak",
            "test_delete_removes_items",
        },
    ),
    # A plain str secret prints in repr(secrets), so the leak test catches it as well.
    "plain_secret": ("dest", {"test_secret_fields_are_secret_str", "test_secrets_never_leak"}),
    "delete_noop": ("dest", {"test_delete_removes_items"}),
    "wrong_value": (
        "dest",
        {
            "test_plain_items_are_accepted",
            "test_written_items_read_back",
            "test_writes_are_idempotent",
            "test_delete_removes_items",
        },
    ),
}

# Failures that depend on what hypothesis draws: examples of one test share a destination, and an item id
# drawn in two examples shows the duplicate that the appending subject makes.
# Failures that depend on what hypothesis draws (the round trip only trips over an ignored batch size
# when it draws a batch size smaller than the item count).
MAY_ALSO_FAIL: dict[str | None, set[str]] = {
    "appends": {"test_written_items_read_back"},
    "ignores_batch_size": {"test_read_round_trips_items"},
}


def test_suites_fail_exactly_where_a_subject_breaks_the_contract(pytester: pytest.Pytester) -> None:
    pytester.syspathinsert()
    (pytester.path / "kit_subjects.py").write_text(SUBJECTS.read_text(encoding="utf-8"), encoding="utf-8")
    for fault, (suite, _) in EXPECTED.items():
        body = HEADER.format(fault=fault)
        if suite in ("pos", "both"):
            body += POS_CLASS
        if suite in ("dest", "both"):
            body += DEST_CLASS
        (pytester.path / f"test_fault_{fault or 'none'}.py").write_text(textwrap.dedent(body), encoding="utf-8")
    # Shrinking a failing example of a broken subject takes long and proves nothing here. The kit's settings
    # inherit from the profile loaded when it is imported, so a fresh process with this profile skips it.
    (pytester.path / "conftest.py").write_text(
        "from hypothesis import Phase, settings\n"
        "settings.register_profile('kit-selftest', phases=[Phase.explicit, Phase.generate], database=None)\n"
        "settings.load_profile('kit-selftest')\n",
        encoding="utf-8",
    )
    # No ini file: pytest-asyncio runs in its default strict mode, as in a plugin author's own project.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "-q")

    failed: dict[str, set[str]] = {}
    ran: dict[str, set[str]] = {}
    for line in result.outlines:
        match = re.match(r"^(PASSED|FAILED|ERROR) (\S+?)::\w+::(\w+)", line)
        if match:
            outcome, module, name = match.groups()
            ran.setdefault(module, set()).add(name)
            if outcome != "PASSED":
                failed.setdefault(module, set()).add(name)
    problems = []
    for fault, (_suite, must_fail) in EXPECTED.items():
        module = f"test_fault_{fault or 'none'}.py"
        assert len(ran.get(module, ())) >= 10, f"{module}: too few tests ran: {sorted(ran.get(module, ()))}"
        got = failed.get(module, set()) - MAY_ALSO_FAIL.get(fault, set())
        if got != must_fail:
            problems.append(f"fault {fault}: expected failures {sorted(must_fail)}, got {sorted(got)}")
    assert not problems, "\n".join(problems)


def test_missing_fixture_overrides_fail_with_a_clear_message(pytester: pytest.Pytester) -> None:
    pytester.syspathinsert()
    (pytester.path / "kit_subjects.py").write_text(SUBJECTS.read_text(encoding="utf-8"), encoding="utf-8")
    pytester.makepyfile(
        """
        import pytest
        import kit_subjects as ks
        from grocerysync.core.testing import PosConnectorContract

        class TestForgetful(PosConnectorContract):
            connector_name = "jsonpos"
            supports_incremental = True

            @pytest.fixture
            def plugin_manager(self):
                return ks.manager()
        """
    )
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "-k",
        "check_ok_on_good or registered",
    )
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*TestForgetful must override the make_source fixture*",
            "*no POS connector called 'jsonpos' is installed*",
        ],
        consecutive=False,
    )
