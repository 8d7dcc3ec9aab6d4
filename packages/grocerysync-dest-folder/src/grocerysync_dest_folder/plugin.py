"""Registers the ``folder`` destination (entry point ``folder`` in the ``grocerysync`` group)."""

from __future__ import annotations

from collections.abc import Iterator

from grocerysync.core.hookspecs import hookimpl
from grocerysync.core.records import Destination, NoSecrets
from grocerysync_dest_folder.folder import FolderConfig, check, open_writer

DESTINATION = Destination(
    name="folder",
    description="Item feed files (CSV or JSON Lines) written atomically into a local or network folder",
    config_model=FolderConfig,
    secrets_model=NoSecrets,
    check=check,
    open=open_writer,
    spools=True,  # writes append to the feed's .part file, renamed into place on commit
)


@hookimpl
def grocerysync_destinations() -> Iterator[Destination]:
    """The ``folder`` destination."""
    yield DESTINATION
