"""The hooks a GrocerySync plugin implements: this module is their reference documentation.

A plugin is a distribution with an entry point in the ``grocerysync`` group pointing at a module
(or object) whose functions are decorated with :data:`hookimpl`::

    [project.entry-points.grocerysync]
    mypos = "grocerysync_pos_mypos.plugin"

Every hook returns records (:mod:`grocerysync.core.records`); records are looked up by name, and two
plugins claiming one name are refused at load time, naming both distributions.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from grocerysync.core.records import Destination, ItemTransform, PosConnector

PROJECT_NAME = "grocerysync"
ENTRY_POINT_GROUP = "grocerysync"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -------------------------------------------------------------------------
# Registration hooks: what a plugin provides
# -------------------------------------------------------------------------


@hookspec
def grocerysync_pos_connectors() -> Iterable[PosConnector]:
    """Register POS connectors.

    Return (or yield) :class:`~grocerysync.core.records.PosConnector` records, one per kind of POS
    this plugin reads. Called once when plugins are loaded.

    :return: an iterable of ``PosConnector``; an empty one if the plugin provides none.
    """
    raise NotImplementedError


@hookspec
def grocerysync_destinations() -> Iterable[Destination]:
    """Register destinations.

    Return (or yield) :class:`~grocerysync.core.records.Destination` records, one per platform or
    feed this plugin writes to. Called once when plugins are loaded.

    :return: an iterable of ``Destination``; an empty one if the plugin provides none.
    """
    raise NotImplementedError


@hookspec
def grocerysync_item_transforms() -> Iterable[ItemTransform]:
    """Register item transforms that jobs may apply between validation and the destination.

    Return (or yield) :class:`~grocerysync.core.records.ItemTransform` records. A job names the
    transforms it applies, in order, with a config for each. Called once when plugins are loaded.

    :return: an iterable of ``ItemTransform``; an empty one if the plugin provides none.
    """
    raise NotImplementedError
