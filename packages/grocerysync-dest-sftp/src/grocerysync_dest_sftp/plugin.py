"""Registers the ``sftp`` destination (entry point ``sftp`` in the ``grocerysync`` group)."""

from __future__ import annotations

from collections.abc import Iterator

from grocerysync.core.hookspecs import hookimpl
from grocerysync.core.records import Destination
from grocerysync_dest_sftp.config import SftpConfig, SftpSecrets
from grocerysync_dest_sftp.destination import check, open_writer

DESTINATION = Destination(
    name="sftp",
    description="Item feed files (CSV or JSON Lines) uploaded atomically to an SFTP server",
    config_model=SftpConfig,
    secrets_model=SftpSecrets,
    check=check,
    open=open_writer,
    spools=True,  # writes append to a local spool file, uploaded on commit
)


@hookimpl
def grocerysync_destinations() -> Iterator[Destination]:
    """The ``sftp`` destination."""
    yield DESTINATION
