"""Small records that pass between plugins and the pipeline: raw rows, rejections, write results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Stage = Literal["read", "validate", "map", "write", "delete"]


class RawRecord(NamedTuple):
    """One item as read from the POS, keyed by :class:`~grocerysync.core.items.Item` field names.

    ``ref`` says where it came from in words a technician can find ("row 1812", "PLU table id 55").
    A named tuple rather than a dataclass: one is made per POS row, and tuples are the cheapest to make.

    ``digest`` is optional: text that changes whenever ``data`` would, such as a hash of the row as the POS
    wrote it together with the connector settings that turn a row into ``data``. The delta check compares it
    with the last run's instead of serialising and hashing ``data``, which costs several times more. Leave it
    None unless the connector can promise that: an unchanged digest means the item is not sent again.
    """

    ref: str
    data: Mapping[str, Any]
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """An item that did not go through, and why. ``ref`` points at the source row when known."""

    ref: str
    reason: str
    stage: Stage
    item_id: str | None = None

    def __str__(self) -> str:
        who = f" (item {self.item_id})" if self.item_id else ""
        return f"{self.ref}{who}: {self.reason}"


@dataclass(slots=True)
class RawBatch:
    """A batch of raw records from a POS connector.

    ``rejected`` holds rows the connector could not even turn into a record (a wrong column count, an
    undecodable line); ``cursor`` is the connector's position after this batch, for incremental reads.
    """

    records: list[RawRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    cursor: str | None = None


class ItemResult(NamedTuple):
    """What a destination did with one item: ``ok``, or an ``error`` a technician can act on.

    ``retryable`` marks transient failures (rate limits, timeouts) that the pipeline may try again.
    A named tuple: destinations return one per item written, so it must be cheap to make.
    """

    item_id: str
    ok: bool
    error: str | None = None
    retryable: bool = False

    @classmethod
    def success(cls, item_id: str) -> ItemResult:
        return cls(item_id, True)

    @classmethod
    def failure(cls, item_id: str, error: str, *, retryable: bool = False) -> ItemResult:
        return cls(item_id, False, error, retryable)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The answer to "can I reach it?": ``ok`` and a message that says what to do when it is not."""

    ok: bool
    message: str

    @classmethod
    def success(cls, message: str = "reachable") -> CheckResult:
        return cls(True, message)

    @classmethod
    def failure(cls, message: str) -> CheckResult:
        return cls(False, message)


def results_by_id(results: Sequence[ItemResult]) -> dict[str, ItemResult]:
    """Index results by item id (the last result for an id wins)."""
    return {r.item_id: r for r in results}
