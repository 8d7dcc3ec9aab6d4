"""Writing to a destination: batches with retries and exponential backoff for transient failures,
and the stand-in writer a dry run uses to record what it would have sent.
"""

from __future__ import annotations

import asyncio
import operator
import random
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

import orjson

from grocerysync.core.errors import DestinationError, GrocerySyncError
from grocerysync.core.items import Item
from grocerysync.core.results import ItemResult

T = TypeVar("T")

_RESULT_ID = operator.attrgetter("item_id")
_RESULT_OK = operator.attrgetter("ok")

#: Longest wait between two attempts, whatever the attempt number.
MAX_DELAY_S = 30.0
#: Longest wait a destination's ``retry_after`` gets: a platform asking for more fails the batch when the
#: attempts run out rather than holding the run for longer.
MAX_RETRY_AFTER_S = 300.0


def backoff(attempt: int, base: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): exponential, with jitter, capped."""
    if base <= 0:
        return 0.0
    delay: float = min(base * 2 ** (attempt - 1), MAX_DELAY_S)
    # Jitter spreads out many stores retrying against one platform at the same moment.
    return delay * (0.5 + random.random() / 2)  # noqa: S311


def _delay(attempt: int, base: float, retry_after: float | None) -> float:
    """The backoff, or the wait the destination asked for if that is longer (capped at MAX_RETRY_AFTER_S)."""
    delay = backoff(attempt, base)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


async def send_with_retry(
    call: Callable[[Sequence[T]], Awaitable[list[ItemResult]]],
    batch: Sequence[T],
    key: Callable[[T], str],
    *,
    what: str,
    max_attempts: int,
    base_delay: float,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Call ``call(batch)`` and retry what failed transiently; return ``(ok keys, [(key, error)])``.

    A retryable :class:`DestinationError` retries the whole (remaining) batch, after the backoff or after its
    ``retry_after`` if that is longer; retryable per-item results retry just those items. Anything not
    retryable, or still failing after ``max_attempts``, is a failure. A non-retryable ``DestinationError`` (or
    one that keeps coming) stops the run.
    """
    ok: list[str] = []
    failed: list[tuple[str, str]] = []
    todo = list(batch)
    attempt = 1
    while todo:
        try:
            results = await call(todo)
        except DestinationError as exc:
            if exc.retryable and attempt < max_attempts:
                await asyncio.sleep(_delay(attempt, base_delay, exc.retry_after))
                attempt += 1
                continue
            if exc.retryable:
                raise DestinationError(f"{exc} (gave up after {attempt} attempts)", retryable=True) from exc
            raise
        except GrocerySyncError:
            raise
        except (ConnectionError, TimeoutError) as exc:
            if attempt < max_attempts:
                await asyncio.sleep(backoff(attempt, base_delay))
                attempt += 1
                continue
            raise DestinationError(
                f"{what} failed after {attempt} attempts: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        except Exception as exc:  # a bug or an unexpected error inside the plugin
            raise DestinationError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
        keys = list(map(key, todo))
        if list(map(_RESULT_ID, results)) == keys and all(map(_RESULT_OK, results)):
            ok += keys  # the usual answer: every item accepted, in order (checked by builtins, no loop)
            break
        by_id = {r.item_id: r for r in results}
        retry: list[T] = []
        last = attempt >= max_attempts
        for entry, k in zip(todo, keys, strict=True):
            result = by_id.get(k)
            if result is None:
                failed.append((k, "the destination returned no result for this item"))
            elif result.ok:
                ok.append(k)
            elif result.retryable and not last:
                retry.append(entry)
            else:
                error = result.error or "the destination refused this item without a reason"
                if result.retryable:
                    error = f"{error} (still failing after {attempt} attempts)"
                failed.append((k, error))
        if retry:
            await asyncio.sleep(backoff(attempt, base_delay))
            attempt += 1
        todo = retry
    return ok, failed


class PreviewWriter:
    """A dry run's destination: writes each upsert and delete as a JSON line and sends nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] = path.open("wb")
        self.upserts = 0
        self.deletes = 0

    async def write(self, items: Sequence[Item]) -> list[ItemResult]:
        """Record the upserts; every one counts as accepted."""
        lines = [
            orjson.dumps({"op": "upsert", "item_id": i.item_id, "item": i.model_dump(mode="json", exclude_none=True)})
            for i in items
        ]
        self._file.write(b"\n".join(lines) + b"\n" if lines else b"")
        self.upserts += len(items)
        return [ItemResult.success(i.item_id) for i in items]

    async def delete(self, item_ids: Sequence[str]) -> list[ItemResult]:
        """Record the deletes; every one counts as accepted."""
        for item_id in item_ids:
            self._file.write(orjson.dumps({"op": "delete", "item_id": item_id}) + b"\n")
        self.deletes += len(item_ids)
        return [ItemResult.success(i) for i in item_ids]

    async def commit(self) -> str:
        """Close the preview file; nothing was sent."""
        self._file.close()
        return f"dry run: nothing sent; {self.upserts} upserts and {self.deletes} deletes written to {self.path}"

    def close(self) -> None:
        """Close the preview file if the run stopped early."""
        if not self._file.closed:
            self._file.close()
