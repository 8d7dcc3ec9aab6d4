"""send_with_retry on its own: how a destination's per-item answers become sent and failed items."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from grocerysync.agent import sending
from grocerysync.agent.sending import send_with_retry
from grocerysync.core.errors import DestinationError
from grocerysync.core.results import ItemResult

KEYS = ["a", "b", "c", "d"]


async def _send(answer: list[ItemResult]) -> tuple[list[str], list[tuple[str, str]]]:
    async def write(batch: Sequence[str]) -> list[ItemResult]:
        return answer

    return await send_with_retry(write, KEYS, str, what="test write", max_attempts=1, base_delay=0)


async def test_every_item_accepted_in_order() -> None:
    assert await _send([ItemResult.success(k) for k in KEYS]) == (KEYS, [])


async def test_answers_in_another_order_count_the_same() -> None:
    ok, failed = await _send([ItemResult.success(k) for k in reversed(KEYS)])
    assert (ok, failed) == (KEYS, [])


async def test_an_item_without_an_answer_fails_and_a_stray_answer_is_ignored() -> None:
    answer = [ItemResult.success("a"), ItemResult.success("b"), ItemResult.success("x"), ItemResult.success("d")]
    ok, failed = await _send(answer)
    assert ok == ["a", "b", "d"]
    assert failed == [("c", "the destination returned no result for this item")]


async def test_a_refused_item_fails_with_the_destinations_reason() -> None:
    answer = [ItemResult.success(k) for k in KEYS]
    answer[2] = ItemResult.failure("c", "price is required")
    ok, failed = await _send(answer)
    assert ok == ["a", "b", "d"]
    assert failed == [("c", "price is required")]


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays send_with_retry waits, recorded instead of waited."""
    recorded: list[float] = []

    async def sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return recorded


def _rate_limited(times: int, retry_after: float) -> tuple[list[int], object]:
    calls: list[int] = []

    async def write(batch: Sequence[str]) -> list[ItemResult]:
        calls.append(len(batch))
        if len(calls) <= times:
            raise DestinationError("429 Too Many Requests", retry_after=retry_after)
        return [ItemResult.success(k) for k in batch]

    return calls, write


async def test_a_batch_waits_as_long_as_the_platform_asks(waits: list[float]) -> None:
    calls, write = _rate_limited(2, retry_after=12.5)
    ok, failed = await send_with_retry(write, KEYS, str, what="test write", max_attempts=3, base_delay=0.1)
    assert (ok, failed) == (KEYS, [])
    assert calls == [4, 4, 4]
    assert waits == [12.5, 12.5]  # longer than the backoff (0.05-0.2 s), so the platform's wait


async def test_the_backoff_still_applies_when_it_is_the_longer_wait(waits: list[float]) -> None:
    calls, write = _rate_limited(1, retry_after=0)
    await send_with_retry(write, KEYS, str, what="test write", max_attempts=2, base_delay=1.0)
    assert calls == [4, 4]
    assert len(waits) == 1
    assert 0.5 <= waits[0] <= 1.0


async def test_a_wait_beyond_five_minutes_is_cut_short_and_the_attempts_still_end(waits: list[float]) -> None:
    calls, write = _rate_limited(5, retry_after=86_400)
    with pytest.raises(DestinationError, match="gave up after 2 attempts"):
        await send_with_retry(write, KEYS, str, what="test write", max_attempts=2, base_delay=0)
    assert calls == [4, 4]
    assert waits == [sending.MAX_RETRY_AFTER_S]


def test_retry_after_makes_the_error_retryable_and_odd_values_do_no_harm() -> None:
    assert DestinationError("slow down", retry_after=3).retryable
    assert DestinationError("slow down", retry_after=3).retry_after == 3
    assert not DestinationError("no such store").retryable
    past = DestinationError("slow down", retry_after=-40)  # a Retry-After date already past: try again now
    assert (past.retryable, past.retry_after) == (True, 0.0)
    nan = DestinationError("slow down", retry_after=float("nan"))
    assert (nan.retryable, nan.retry_after) == (False, None)
