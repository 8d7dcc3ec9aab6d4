"""Registers the connector: the module the ``grocerysync`` entry point names.

CHANGE: the connector's name (what a job's ``source.plugin`` says), its description (the hub shows it), and
``supports_incremental`` (True only if ``read`` honours ``ReadRequest.cursor``).
"""

from __future__ import annotations

from collections.abc import Iterator

from grocerysync.core import PosConnector, hookimpl
from grocerysync_pos_template.config import SqliteTableConfig
from grocerysync_pos_template.reader import check, read

CONNECTOR = PosConnector(
    name="sqlite-table",
    description="Reads items from a table in a SQLite POS database; incremental by a last-modified column.",
    config_model=SqliteTableConfig,
    check=check,
    read=read,
    supports_incremental=True,
)


@hookimpl
def grocerysync_pos_connectors() -> Iterator[PosConnector]:
    """The POS connectors this distribution provides."""
    yield CONNECTOR
