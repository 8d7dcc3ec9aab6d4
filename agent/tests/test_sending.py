"""send_with_retry on its own: how a destination's per-item answers become sent and failed items."""

from __future__ import annotations

from collections.abc import Sequence

from grocerysync.agent.sending import send_with_retry
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
