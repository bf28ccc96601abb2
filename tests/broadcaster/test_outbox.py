"""The per-socket send buffer: order, when the writer is woken, byte bounds, overflow policy."""

from __future__ import annotations

import pytest

from broadcaster.outbox import OVERFLOW_CODE, CloseRequest, Outbox


def test_frames_come_out_in_order_and_the_close_request_stays() -> None:
    outbox = Outbox(100)
    assert outbox.put("a") and outbox.put(b"bc")
    assert outbox.pending_bytes == 3 and len(outbox) == 2
    outbox.finish(1001, "bye")
    assert not outbox.put("late")
    assert outbox.take() == ["a", b"bc"]
    assert outbox.take() == [] and outbox.pending_bytes == 0
    assert outbox.closing == CloseRequest(1001, "bye")
    outbox.finish(1000, "again")  # the first request stands
    assert outbox.closing == CloseRequest(1001, "bye")


def test_the_writer_is_woken_once_per_take_and_on_finish() -> None:
    wakes: list[int] = []
    outbox = Outbox(100, on_ready=lambda: wakes.append(len(outbox)))
    outbox.put("a")
    outbox.put("b")
    outbox.put("c")
    assert wakes == [1]  # only the first frame since the last take
    assert outbox.take() == ["a", "b", "c"]
    outbox.put("d")
    assert wakes == [1, 1]
    outbox.finish(1000, "")
    assert wakes == [1, 1, 1]
    outbox.finish(1000, "")  # already closing: no new wake-up
    assert wakes == [1, 1, 1]


def test_overflow_of_the_queue_drops_everything_and_asks_for_a_close() -> None:
    seen: list[CloseRequest] = []
    outbox = Outbox(10, seen.append)
    assert outbox.put("12345")
    assert not outbox.put("123456")
    assert len(seen) == 1 and seen[0].overflow and seen[0].code == OVERFLOW_CODE
    assert "10-byte limit" in seen[0].reason and "11 bytes unsent" in seen[0].reason
    assert outbox.pending_bytes == 0 and not outbox.put("x")
    assert outbox.take() == [] and outbox.closing == seen[0]


def test_a_transport_backlog_over_the_limit_overflows() -> None:
    seen: list[CloseRequest] = []
    outbox = Outbox(10, seen.append)
    assert outbox.backlog(10)  # at the limit: fine
    assert outbox.put("abc")
    assert not outbox.backlog(11)
    assert len(seen) == 1 and seen[0].overflow and "11 bytes not yet read" in seen[0].reason
    assert outbox.take() == [] and not outbox.put("x")
    assert not outbox.backlog(50)  # already overflowed: reported once
    assert len(seen) == 1


def test_a_backlog_overflow_replaces_a_graceful_close() -> None:
    seen: list[CloseRequest] = []
    outbox = Outbox(10, seen.append)
    outbox.finish(1001, "going away")
    assert not outbox.backlog(100)
    assert outbox.closing is not None and outbox.closing.code == OVERFLOW_CODE
    assert seen == [outbox.closing]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Outbox(0)
