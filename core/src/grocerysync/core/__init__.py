"""GrocerySync core: the SDK shared by the hub, the agent and every plugin."""

from grocerysync.core.errors import ConfigError, DestinationError, GrocerySyncError, PluginError, SourceError
from grocerysync.core.hookspecs import hookimpl
from grocerysync.core.items import Item, MultiPrice, Sale, Size, SizeUnit, WeightUnit
from grocerysync.core.records import (
    Destination,
    DestinationWriter,
    ItemTransform,
    NoSecrets,
    PosConnector,
    ReadRequest,
    WriteContext,
)
from grocerysync.core.results import CheckResult, ItemResult, RawBatch, RawRecord, Rejection

__all__ = [
    "CheckResult",
    "ConfigError",
    "Destination",
    "DestinationError",
    "DestinationWriter",
    "GrocerySyncError",
    "Item",
    "ItemResult",
    "ItemTransform",
    "MultiPrice",
    "NoSecrets",
    "PluginError",
    "PosConnector",
    "RawBatch",
    "RawRecord",
    "ReadRequest",
    "Rejection",
    "Sale",
    "Size",
    "SizeUnit",
    "SourceError",
    "WeightUnit",
    "WriteContext",
    "hookimpl",
]
