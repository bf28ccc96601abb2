"""The per-socket send buffer: order, byte bound, overflow policy, close requests."""

from __future__ import annotations

import asyncio

import pytest

from broadcaster.outbox import OVERFLOW_CODE, CloseRequest, Outbox


async def test_frames_come_out_in_order_then_the_close_request() -> None:
    outbox = Outbox(100)
    assert outbox.put("a") and outbox.put(b"bc")
    assert outbox.pending_bytes == 3 and len(outbox) == 2
    outbox.finish(1001, "bye")
    assert not outbox.put("late")
    assert await outbox.take() == ["a", b"bc"]
    assert await outbox.take() == CloseRequest(1001, "bye")
    outbox.finish(1000, "again")  # the first request stands
    assert outbox.closing == CloseRequest(1001, "bye")


async def test_take_waits_for_a_frame() -> None:
    outbox = Outbox(100)
    taker = asyncio.create_task(outbox.take())
    await asyncio.sleep(0)
    assert not taker.done()
    outbox.put("x")
    assert await taker == ["x"]


async def test_overflow_drops_everything_and_asks_for_a_close() -> None:
    seen: list[CloseRequest] = []
    outbox = Outbox(10, seen.append)
    assert outbox.put("12345")
    assert not outbox.put("123456")
    assert len(seen) == 1 and seen[0].overflow and seen[0].code == OVERFLOW_CODE
    assert "10-byte limit" in seen[0].reason
    assert outbox.pending_bytes == 0 and not outbox.put("x")
    assert await outbox.take() == seen[0]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Outbox(0)
