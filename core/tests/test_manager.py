"""The plugin manager, exercised with real distributions laid out on sys.path (dist-info + entry points)."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from grocerysync.core.errors import PluginError
from grocerysync.core.hookspecs import hookimpl
from grocerysync.core.manager import PluginManager
from grocerysync.core.records import PosConnector
from grocerysync.core.results import CheckResult

MakeDist = Callable[..., None]


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeDist:
    """Install a tiny distribution (module + dist-info with a grocerysync entry point) on sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("GROCERYSYNC_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("GROCERYSYNC_PLUGINS_STRICT", raising=False)

    def make(dist: str, module: str, source: str, ep_name: str | None = None) -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[grocerysync]\n{ep_name or module} = {module}\n")

    return make


CONNECTOR = """
from pydantic import BaseModel
from grocerysync.core import hookimpl, PosConnector, CheckResult

class Config(BaseModel):
    path: str = "x"

async def check(config):
    return CheckResult.success()

async def read(config, request):
    if False:
        yield

@hookimpl
def grocerysync_pos_connectors():
    return [PosConnector(name="{name}", description="test", config_model=Config, check=check, read=read)]
"""


def _only_test_plugins(pm: PluginManager, prefix: str = "gs_test_") -> dict[str, PosConnector]:
    return {n: c for n, c in pm.pos_connectors().items() if c.plugin.startswith(prefix)}


def test_entry_point_plugins_are_found_with_their_distribution(make_dist: MakeDist) -> None:
    make_dist("gs_test_alpha", "gs_test_alpha_mod", CONNECTOR.format(name="alpha-pos"))
    pm = PluginManager(autoload=True, disabled=[])
    connector = pm.pos_connector("alpha-pos")
    assert connector.plugin == "gs_test_alpha"
    info = next(i for i in pm.infos() if i.name == "alpha-pos")
    assert (info.kind, info.distribution, info.version) == ("pos", "gs_test_alpha", "1.2.3")


def test_two_plugins_claiming_one_name_are_refused_naming_both(make_dist: MakeDist) -> None:
    make_dist("gs_test_one", "gs_test_one_mod", CONNECTOR.format(name="same-pos"))
    make_dist("gs_test_two", "gs_test_two_mod", CONNECTOR.format(name="same-pos"))
    pm = PluginManager(disabled=[])
    with pytest.raises(PluginError) as info:
        pm.pos_connectors()
    assert "gs_test_one" in str(info.value)
    assert "gs_test_two" in str(info.value)
    assert "same-pos" in str(info.value)


def test_broken_plugin_is_reported_with_its_distribution_and_skipped(
    make_dist: MakeDist, caplog: pytest.LogCaptureFixture
) -> None:
    make_dist("gs_test_broken", "gs_test_broken_mod", "import does_not_exist_anywhere\n")
    make_dist("gs_test_fine", "gs_test_fine_mod", CONNECTOR.format(name="fine-pos"))
    with caplog.at_level(logging.ERROR):
        pm = PluginManager(disabled=[], strict=False)
    assert "fine-pos" in _only_test_plugins(pm)
    assert [f.distribution for f in pm.failures] == ["gs_test_broken"]
    assert "does_not_exist_anywhere" in str(pm.failures[0])
    assert "gs_test_broken" in caplog.text


def test_broken_plugin_is_fatal_when_strict(make_dist: MakeDist) -> None:
    make_dist("gs_test_broken2", "gs_test_broken2_mod", "raise RuntimeError('boom at import')\n")
    with pytest.raises(PluginError, match=r"gs_test_broken2.*boom at import"):
        PluginManager(disabled=[], strict=True)


def test_plugin_can_be_disabled_by_name_or_distribution(make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist("gs_test_off", "gs_test_off_mod", CONNECTOR.format(name="off-pos"), ep_name="offpos")
    assert "off-pos" not in PluginManager(disabled=["offpos"]).pos_connectors()
    assert "off-pos" not in PluginManager(disabled=["gs_test_off"]).pos_connectors()
    monkeypatch.setenv("GROCERYSYNC_DISABLE_PLUGINS", "offpos, other")
    assert "off-pos" not in PluginManager().pos_connectors()
    monkeypatch.delenv("GROCERYSYNC_DISABLE_PLUGINS")
    assert "off-pos" in PluginManager().pos_connectors()


def test_autoload_can_be_turned_off(make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist("gs_test_auto", "gs_test_auto_mod", CONNECTOR.format(name="auto-pos"))
    assert PluginManager(autoload=False).pos_connectors() == {}
    monkeypatch.setenv("GROCERYSYNC_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert PluginManager().pos_connectors() == {}


def test_misspelt_hook_fails_loudly() -> None:
    class Typo:
        @hookimpl
        def grocerysync_pos_conectors(self) -> list[PosConnector]:
            return []

    pm = PluginManager(autoload=False)
    with pytest.raises(Exception, match="grocerysync_pos_conectors"):
        pm.register(Typo(), name="typo")


def test_unknown_name_lists_installed_ones() -> None:
    class Cfg(BaseModel):
        pass

    async def check(config: Cfg) -> CheckResult:
        return CheckResult.success()

    class One:
        @hookimpl
        def grocerysync_pos_connectors(self) -> list[PosConnector]:
            return [PosConnector(name="one", description="", config_model=Cfg, check=check, read=None)]  # type: ignore[arg-type]

    pm = PluginManager(autoload=False)
    pm.register(One(), name="one-plugin", distribution="grocerysync-pos-one", version="2.0")
    with pytest.raises(PluginError, match=r"no POS connector called 'two'.*installed: one"):
        pm.pos_connector("two")
    assert pm.pos_connector("one").plugin == "grocerysync-pos-one"


def test_wrong_record_type_is_reported() -> None:
    class Wrong:
        @hookimpl
        def grocerysync_destinations(self) -> list[str]:
            return ["not a record"]

    pm = PluginManager(autoload=False)
    pm.register(Wrong(), name="wrong")
    with pytest.raises(PluginError, match="expected Destination"):
        pm.destinations()


@pytest.mark.parametrize("name", ["CSV", "a", "has space", "1abc"])
def test_record_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        PosConnector(name=name, description="", config_model=BaseModel, check=None, read=None)  # type: ignore[arg-type]


def test_transforms_register_and_attribute_to_their_distribution() -> None:
    from grocerysync.core.items import Item
    from grocerysync.core.records import ItemTransform

    class Cfg(BaseModel):
        suffix: str

    def build(config: Cfg) -> Callable[[list[Item]], list[Item]]:
        return lambda items: [i.model_copy(update={"name": i.name + config.suffix}) for i in items]

    class Plugin:
        @hookimpl
        def grocerysync_item_transforms(self) -> list[ItemTransform]:
            return [ItemTransform(name="suffix", description="adds a suffix", config_model=Cfg, build=build)]

    pm = PluginManager(autoload=False)
    pm.register(Plugin(), name="t", distribution="grocerysync-transform-suffix", version="0.3")
    transform = pm.transform("suffix")
    apply = transform.build(Cfg(suffix="!"))
    out = apply([Item.model_validate({"item_id": "1", "name": "Milk", "price": "1"})])
    assert out[0].name == "Milk!"
    assert [(i.kind, i.name, i.distribution, i.version) for i in pm.infos()] == [
        ("transform", "suffix", "grocerysync-transform-suffix", "0.3")
    ]
