"""What a plugin registers: small frozen records that carry a name (one per POS connector,
destination or transform), returned from the ``grocerysync_*`` registration hooks.

Plugin code never starts an event loop: ``check``, ``read`` and ``open`` are async and the
caller awaits them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from grocerysync.core.items import Item
from grocerysync.core.results import CheckResult, ItemResult, RawBatch

_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,62}$")

FeedMode = Literal["full", "delta"]


class NoSecrets(BaseModel):
    """The secrets model of a destination that needs none."""


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """What the pipeline asks a POS connector for.

    ``cursor`` is the connector's own position string from the last successful run, or None to read
    everything. Connectors that do not support incremental reads ignore it and read everything.
    """

    batch_size: int = 1000
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class WriteContext:
    """What a destination is told about the run it writes for."""

    job_name: str
    run_id: str
    mode: FeedMode
    #: A local directory the destination may use for temporary files for this run.
    work_dir: str


class DestinationWriter(Protocol):
    """One run's connection to a destination, opened by :attr:`Destination.open`.

    ``write`` and ``delete`` return one :class:`ItemResult` per item, in any order. Writes upsert by
    ``item_id`` so that a retried batch does no harm. ``commit`` makes the run's writes visible where
    the destination works in files (upload and rename) and returns a line for the run summary; leaving
    the context without ``commit`` (an error, a cancel) must leave the destination as it was, as far as
    the destination can.
    """

    async def write(self, items: Sequence[Item]) -> list[ItemResult]: ...

    async def delete(self, item_ids: Sequence[str]) -> list[ItemResult]: ...

    async def commit(self) -> str: ...


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(
            f"{kind} name {name!r} must be 2-63 characters of lowercase letters, digits, '-' or '_', "
            "starting with a letter"
        )


@dataclass(frozen=True, kw_only=True)
class PosConnector:
    """A POS connector: reads items from one kind of POS.

    - ``config_model``: a pydantic model; its JSON Schema becomes the hub's configuration form.
    - ``check(config)``: can the POS be reached and read? The message says what to fix.
    - ``read(config, request)``: an async iterator of :class:`RawBatch`, each at most
      ``request.batch_size`` records, keyed by :class:`Item` field names. Validation is the
      pipeline's job; rows the connector cannot parse at all go in ``RawBatch.rejected``.
    """

    name: str
    description: str
    config_model: type[BaseModel]
    check: Callable[[Any], Awaitable[CheckResult]]
    read: Callable[[Any, ReadRequest], AsyncIterator[RawBatch]]
    supports_incremental: bool = False
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_name("POS connector", self.name)


@dataclass(frozen=True, kw_only=True)
class Destination:
    """A destination: an e-commerce platform or feed that items are written to.

    - ``config_model`` and ``secrets_model``: pydantic models; secrets are stored encrypted by the hub
      and should use ``SecretStr`` so they never print.
    - ``check(config, secrets)``: can the destination be reached with these credentials?
    - ``open(config, secrets, context)``: an async context manager yielding a
      :class:`DestinationWriter` for one run.
    - ``supports_delete``: False when the platform cannot delete items.
    - ``spools``: True when ``write`` only appends to a file until ``commit`` (a feed file, uploaded or moved
      into place at the end), so that a small write costs what a large one does. The agent then hands
      over each batch's items as soon as they are validated, instead of holding them back until it has the
      job's ``batch_size`` of them (which an API, where each write is a request, wants). Nothing a spooling
      destination is given may be visible before ``commit``.
    """

    name: str
    description: str
    config_model: type[BaseModel]
    check: Callable[[Any, Any], Awaitable[CheckResult]]
    open: Callable[[Any, Any, WriteContext], AbstractAsyncContextManager[DestinationWriter]]
    secrets_model: type[BaseModel] = NoSecrets
    supports_delete: bool = True
    spools: bool = False
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_name("destination", self.name)


@dataclass(frozen=True, kw_only=True)
class ItemTransform:
    """A transform that a job can apply to every batch between validation and the destination.

    ``build(config)`` returns a function from a batch of items to the items to keep (changed or
    not); items it leaves out are counted as filtered. It runs for every batch, so keep it cheap.
    """

    name: str
    description: str
    config_model: type[BaseModel]
    build: Callable[[Any], Callable[[list[Item]], list[Item]]]
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_name("transform", self.name)
