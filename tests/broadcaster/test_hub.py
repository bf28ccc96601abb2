"""The hub against an in-memory source: matching, one frame per (vsn, topic, ids), ack after
delivery, failing subscribers, oversized records."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from broadcaster.filters import bind, parse_filter
from broadcaster.hub import PAYLOAD_TOO_LARGE, Binding, Hub, shrink_record
from broadcaster.phoenix import Vsn
from cdc.changes import Change, Column, Operation
from cdc.source import MemorySource

COLUMNS = (Column("id", "int8"), Column("room", "int4"), Column("body", "text"))
WHEN = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def change(op: Operation, new: dict | None, old: dict | None = None, pos: int = 1) -> Change:
    return Change(pos, "public", "m", op, WHEN, new, old, COLUMNS)


class Sink:
    def __init__(self, vsn: Vsn = Vsn.V1, fail: bool = False) -> None:
        self.vsn = vsn
        self.frames: list[bytes] = []
        self.fail = fail

    def deliver(self, frame: bytes) -> None:
        if self.fail:
            raise RuntimeError("broken socket")
        self.frames.append(frame)


def room(value: int) -> Binding:
    return Binding(value, "public", "m", "*", bind(parse_filter(f"room=eq.{value}"), COLUMNS))


def test_groups_ids_per_topic_and_shares_identical_frames() -> None:
    hub = Hub(MemorySource())
    a, b = Sink(), Sink()
    hub.add(a, 1, "realtime:x", [room(5), Binding(9, "public", "*", "INSERT")])
    hub.add(b, 1, "realtime:x", [room(5)])
    hub.add(b, 2, "realtime:y", [room(6)])
    hub.handle(change(Operation.INSERT, {"id": 1, "room": 5, "body": "hi"}))
    (frame_a,) = a.frames
    assert json.loads(frame_a)["payload"]["ids"] == [5, 9]
    (frame_b,) = b.frames
    assert json.loads(frame_b)["payload"]["ids"] == [5]
    assert len(hub) == 4 and hub.subscriptions == 3
    hub.remove(a, 1)
    hub.remove(a, 1)  # nothing left: no error
    assert len(hub) == 2


def test_update_leaving_a_filter_and_delete_on_old_row() -> None:
    hub = Hub(MemorySource())
    sink = Sink(Vsn.V2)
    hub.add(sink, 1, "realtime:x", [room(5)])
    hub.handle(change(Operation.UPDATE, {"id": 1, "room": 6}, {"id": 1, "room": 5}))
    hub.handle(change(Operation.DELETE, None, {"id": 1, "room": 5}))
    hub.handle(change(Operation.DELETE, None, {"id": 2, "room": 6}))
    kinds = [json.loads(f)[4]["data"]["type"] for f in sink.frames]
    assert kinds == ["UPDATE", "DELETE"]


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    hub = Hub(MemorySource())
    broken, good = Sink(fail=True), Sink()
    hub.add(broken, 1, "realtime:x", [room(5)])
    hub.add(good, 1, "realtime:x", [room(5)])
    hub.handle(change(Operation.INSERT, {"id": 1, "room": 5}))
    assert len(good.frames) == 1 and hub.stats.errors == 1


def test_oversized_records_keep_small_fields_and_say_413() -> None:
    hub = Hub(MemorySource(), max_record_bytes=200)
    sink = Sink()
    hub.add(sink, 1, "realtime:x", [room(5)])
    hub.handle(change(Operation.INSERT, {"id": 1, "room": 5, "body": "x" * 300}))
    data = json.loads(sink.frames[0])["payload"]["data"]
    assert data["errors"] == [PAYLOAD_TOO_LARGE]
    assert data["record"] == {"id": 1, "room": 5}
    assert shrink_record(None) is None
    assert shrink_record({"a": [1] * 40, "b": None}) == {"b": None}


def test_adding_a_join_twice_or_a_bad_event_is_refused() -> None:
    hub = Hub(MemorySource())
    sink = Sink()
    hub.add(sink, 1, "realtime:x", [room(5)])
    with pytest.raises(ValueError):
        hub.add(sink, 1, "realtime:x", [room(5)])
    with pytest.raises(ValueError):
        hub.add(sink, 2, "realtime:x", [room(5), Binding(1, "public", "m", "TRUNCATE")])
    assert len(hub) == 1


async def test_run_acks_each_batch_after_delivery() -> None:
    source = MemorySource()
    hub = Hub(source)
    sink = Sink()
    hub.add(sink, 1, "realtime:x", [room(5)])
    task = asyncio.create_task(hub.run())
    first = await source.push(change(Operation.INSERT, {"id": 1, "room": 5}))
    second = await source.push(
        change(Operation.INSERT, {"id": 2, "room": 6}, pos=2),
        change(Operation.INSERT, {"id": 3, "room": 5}, pos=3),
    )
    await source.close()
    await task
    assert first < second and source.acked == second
    assert len(sink.frames) == 2
    assert hub.stats.batches == 2 and hub.stats.changes == 3
    assert hub.stats.position == second and hub.stats.lag_seconds() is not None
