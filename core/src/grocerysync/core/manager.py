"""The plugin manager: loads ``grocerysync`` entry points and looks plugins up by name.

Call sites use this typed façade, never ``pm.hook.*`` directly.

Switches (keyword arguments, or the environment when those are not given):

- ``GROCERYSYNC_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (register plugins by hand).
- ``GROCERYSYNC_DISABLE_PLUGINS=a,b``: skip these entry points (by entry-point or distribution name).
- ``GROCERYSYNC_PLUGINS_STRICT=1``: a plugin that fails to import is fatal instead of skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any, Literal, TypeVar

import pluggy

from grocerysync.core import hookspecs
from grocerysync.core.errors import PluginError
from grocerysync.core.records import Destination, ItemTransform, PosConnector

log = logging.getLogger(__name__)

Kind = Literal["pos", "destination", "transform"]
R = TypeVar("R", PosConnector, Destination, ItemTransform)

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One loaded record: what it is, its name, and the distribution that provides it."""

    kind: Kind
    name: str
    distribution: str
    version: str
    description: str


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """An entry point that could not be loaded, and why."""

    entry_point: str
    distribution: str
    error: str

    def __str__(self) -> str:
        return (
            f"plugin {self.entry_point!r} from distribution {self.distribution!r} failed to load and "
            f"was skipped: {self.error} (reinstall or upgrade it, or disable it with "
            f"GROCERYSYNC_DISABLE_PLUGINS={self.entry_point})"
        )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


class PluginManager:
    """Typed access to the installed GrocerySync plugins."""

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        disabled: Iterable[str] | None = None,
        strict: bool | None = None,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self.autoload = not _env_flag("GROCERYSYNC_DISABLE_PLUGIN_AUTOLOAD") if autoload is None else autoload
        if disabled is None:
            disabled = [n for n in os.environ.get("GROCERYSYNC_DISABLE_PLUGINS", "").split(",") if n.strip()]
        self.disabled = frozenset(n.strip() for n in disabled)
        self.strict = _env_flag("GROCERYSYNC_PLUGINS_STRICT") if strict is None else strict
        self.failures: list[LoadFailure] = []
        self._dists: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self._cache: dict[str, dict[str, Any]] = {}
        if self.autoload:
            self.load_entry_points()

    # -- loading -----------------------------------------------------------

    def load_entry_points(self) -> None:
        """Load every ``grocerysync`` entry point not disabled; record (or, if strict, raise) failures."""
        # The standard library's importlib.metadata, which pydantic has loaded already: the backport would add a
        # second copy and the email header parsers it reads METADATA with, over 1 MB in every agent process.
        for ep in metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            dist = ep.dist
            dist_name = dist.name if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            if ep.name in self.disabled or dist_name in self.disabled:
                log.info("plugin %s (%s) is disabled", ep.name, dist_name)
                continue
            if self._pm.get_plugin(ep.name) is not None or self._pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # any import-time error in third-party code
                failure = LoadFailure(ep.name, dist_name, f"{type(exc).__name__}: {exc}")
                if self.strict:
                    raise PluginError(str(failure)) from exc
                log.error("%s", failure)
                self.failures.append(failure)
                continue
            self.register(plugin, name=ep.name, distribution=dist_name, version=version)
        self._pm.check_pending()

    def register(self, plugin: object, *, name: str, distribution: str = "", version: str = "") -> None:
        """Register a plugin object (a module or an instance with hook implementations)."""
        self._pm.register(plugin, name=name)
        self._pm.check_pending()
        self._dists[name] = (distribution or name, version or "0")
        self._cache.clear()

    # -- lookups -------------------------------------------------------------

    def _collect(self, hook_name: str, kind: Kind, record_type: type[R]) -> dict[str, R]:
        if hook_name in self._cache:
            return self._cache[hook_name]
        found: dict[str, R] = {}
        hook = getattr(self._pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order
            dist = self._dists.get(impl.plugin_name, (impl.plugin_name, "0"))[0]
            try:
                records = list(impl.function() or ())
            except Exception as exc:
                failure = LoadFailure(impl.plugin_name, dist, f"{hook_name} raised {type(exc).__name__}: {exc}")
                if self.strict:
                    raise PluginError(str(failure)) from exc
                log.error("%s", failure)
                self.failures.append(failure)
                continue
            for record in records:
                if not isinstance(record, record_type):
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} ({dist}) returned {type(record).__name__} from "
                        f"{hook_name}; expected {record_type.__name__}"
                    )
                if record.name in found:
                    raise PluginError(
                        f"two plugins claim the {kind} name {record.name!r}: distribution "
                        f"{found[record.name].plugin!r} and distribution {dist!r}; uninstall one, or "
                        "disable one with GROCERYSYNC_DISABLE_PLUGINS"
                    )
                found[record.name] = replace(record, plugin=dist)
        self._cache[hook_name] = found
        return found

    def pos_connectors(self) -> dict[str, PosConnector]:
        """Every registered POS connector, by name."""
        return self._collect("grocerysync_pos_connectors", "pos", PosConnector)

    def destinations(self) -> dict[str, Destination]:
        """Every registered destination, by name."""
        return self._collect("grocerysync_destinations", "destination", Destination)

    def transforms(self) -> dict[str, ItemTransform]:
        """Every registered item transform, by name."""
        return self._collect("grocerysync_item_transforms", "transform", ItemTransform)

    def pos_connector(self, name: str) -> PosConnector:
        """The POS connector called ``name``; PluginError naming the installed ones if none is."""
        return _lookup("POS connector", name, self.pos_connectors())

    def destination(self, name: str) -> Destination:
        """The destination called ``name``; PluginError naming the installed ones if none is."""
        return _lookup("destination", name, self.destinations())

    def transform(self, name: str) -> ItemTransform:
        """The transform called ``name``; PluginError naming the installed ones if none is."""
        return _lookup("transform", name, self.transforms())

    def infos(self) -> list[PluginInfo]:
        """Every loaded record with its distribution and version, sorted by kind and name."""
        out = []
        groups: list[tuple[Kind, Callable[[], dict[str, Any]]]] = [
            ("pos", self.pos_connectors),
            ("destination", self.destinations),
            ("transform", self.transforms),
        ]
        versions = dict(self._dists.values())
        for kind, getter in groups:
            for name, record in sorted(getter().items()):
                out.append(PluginInfo(kind, name, record.plugin, versions.get(record.plugin, "?"), record.description))
        return out


def _lookup(kind: str, name: str, records: dict[str, R]) -> R:
    try:
        return records[name]
    except KeyError:
        known = ", ".join(sorted(records)) or "none"
        raise PluginError(
            f"no {kind} called {name!r} is installed (installed: {known}); install the plugin that provides it"
        ) from None
