"""End to end with the official Python ``realtime`` client (async API), unmodified.

The client speaks vsn 1.0.0 only and hands postgres_changes callbacks the raw ``{data, ids}``
object (validated by its pydantic models: a frame that fails them is logged and dropped, so a
missing event usually means a malformed frame; the raw frames are in every failure message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.e2e.helpers import (
    WAIT,
    RealtimeServer,
    Written,
    check_commit_timestamp,
    delete,
    insert,
    py_expected_data,
    update,
    without,
)

try:
    import websockets
    from realtime import (
        AsyncRealtimeChannel,
        AsyncRealtimeClient,
        RealtimePostgresChangesListenEvent,
        RealtimeSubscribeStates,
    )
except ImportError as exc:  # reported by every test, never skipped
    IMPORT_ERROR: ImportError | None = exc
else:
    IMPORT_ERROR = None

REQUIREMENT = "realtime==2.34.1"
Event = dict[str, Any]


def require_realtime() -> None:
    if IMPORT_ERROR is not None:
        pytest.fail(
            f"the Python `realtime` client is not installed ({IMPORT_ERROR}): "
            f"pip install '{REQUIREMENT}' (or `.ci/install-e2e .venv`)"
        )


class FrameLog(logging.Handler):
    """The client logs every raw frame at DEBUG (``send: ...``, ``receive: ...``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(
            f"{record.name.rsplit('.', 1)[-1]} {record.levelname}: {record.getMessage()[:1500]}"
        )


class PyClient:
    """An AsyncRealtimeClient plus a log of everything its callbacks delivered."""

    def __init__(self, server: RealtimeServer, frames: FrameLog, token: str | None = None):
        require_realtime()
        self.server = server
        self.frames = frames
        self.client = AsyncRealtimeClient(
            f"{server.http_base}/realtime/v1", token or server.token(), max_retries=1
        )
        self.events: list[Event] = []
        self._taken: set[int] = set()
        self._changed = asyncio.Event()

    def _record(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def channel(self, name: str, bindings: list[tuple[str, str | None]]) -> AsyncRealtimeChannel:
        ch = self.client.channel(name)

        def on_change(index: int) -> Callable[[Any], None]:
            def callback(payload: Any) -> None:
                self._record(
                    {"kind": "change", "channel": name, "binding": index, "payload": payload}
                )

            return callback

        for i, (event, filter_) in enumerate(bindings):
            ch.on_postgres_changes(
                RealtimePostgresChangesListenEvent(event),
                table="messages",
                schema="public",
                filter=filter_,
                callback=on_change(i),
            )

        def on_system(payload: Any) -> None:
            self._record({"kind": "system", "channel": name, "payload": payload.model_dump()})

        ch.on_system(on_system)
        return ch

    async def subscribe(self, ch: AsyncRealtimeChannel) -> Event:
        name = ch.topic.removeprefix("realtime:")

        def on_status(status: RealtimeSubscribeStates, err: Exception | None) -> None:
            self._record(
                {
                    "kind": "status",
                    "channel": name,
                    "status": str(status.value),
                    "error": None if err is None else str(err),
                }
            )

        await asyncio.wait_for(ch.subscribe(on_status), WAIT)
        return await self.wait(
            lambda e: e["kind"] == "status" and e["channel"] == name,
            f"a subscribe status on {name!r}",
        )

    async def subscribed(self, ch: AsyncRealtimeChannel) -> None:
        event = await self.subscribe(ch)
        if event["status"] != "SUBSCRIBED":
            pytest.fail(
                f"{ch.topic}: {event['status']} ({event['error']}) instead of "
                f"SUBSCRIBED\n{self.report()}"
            )

    def report(self) -> str:
        lines = ["python client callbacks:"]
        lines += [f"  {json.dumps(e, default=str)[:1500]}" for e in self.events]
        lines.append("python client frames (from its DEBUG log):")
        lines += [f"  {line}" for line in self.frames.lines[-80:]]
        lines.append(self.server.log_tail())
        return "\n".join(lines)

    async def wait(self, pred: Callable[[Event], bool], what: str, seconds: float = WAIT) -> Event:
        """The first event matching ``pred`` that no earlier ``wait`` returned."""
        deadline = time.monotonic() + seconds
        while True:
            for i, e in enumerate(self.events):
                if i not in self._taken and pred(e):
                    self._taken.add(i)
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out after {seconds}s waiting for {what}\n{self.report()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def change(self, channel: str, binding: int, kind: str, row_id: int) -> Event:
        def match(e: Event) -> bool:
            if e["kind"] != "change" or e["channel"] != channel or e["binding"] != binding:
                return False
            data = e["payload"]["data"]
            return bool(
                data.get("type") == kind
                and row_id
                in ((data.get("record") or {}).get("id"), (data.get("old_record") or {}).get("id"))
            )

        event = await self.wait(match, f"{kind} of row {row_id} on {channel!r} binding {binding}")
        payload: Event = event["payload"]
        return payload

    def changes_of(self, channel: str, row_id: int, binding: int | None = None) -> list[Event]:
        out = []
        for e in self.events:
            if e["kind"] != "change" or e["channel"] != channel:
                continue
            if binding is not None and e["binding"] != binding:
                continue
            data = e["payload"]["data"]
            ids = ((data.get("record") or {}).get("id"), (data.get("old_record") or {}).get("id"))
            if row_id in ids:
                out.append(e)
        return out

    def check(self, payload: Event, kind: str, written: Written, ids: list[int]) -> None:
        data = payload["data"]
        check_commit_timestamp(data.get("commit_timestamp"), written)
        expected = {"ids": sorted(ids), "data": py_expected_data(kind, written)}
        actual = {"ids": sorted(payload["ids"]), "data": without(data, "commit_timestamp")}
        if actual != expected:
            pytest.fail(
                f"{kind} payload differs\n  got:      {json.dumps(actual, sort_keys=True)}"
                f"\n  expected: {json.dumps(expected, sort_keys=True)}\n{self.report()}"
            )


def binding_ids(ch: AsyncRealtimeChannel) -> list[int]:
    ids = [cb.id for cb in ch.postgres_changes_callbacks]
    assert all(isinstance(i, int) for i in ids), f"binding ids {ids}"
    return [i for i in ids if i is not None]


def new_id(w: Written) -> int:
    assert w.new is not None
    return int(w.new["id"])


@pytest.fixture
async def frames() -> AsyncIterator[FrameLog]:
    handler = FrameLog()
    logger = logging.getLogger("realtime")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
async def py(realtime_server: RealtimeServer, frames: FrameLog) -> AsyncIterator[PyClient]:
    c = PyClient(realtime_server, frames)
    yield c
    await c.client.close()


async def test_insert_update_delete_unfiltered(py: PyClient) -> None:
    db = py.server.dsn
    ch = py.channel("all", [("*", None)])
    await py.subscribed(ch)
    ids = binding_ids(ch)

    ins = await asyncio.to_thread(insert, db, 7, "ann", "hello")
    py.check(await py.change("all", 0, "INSERT", new_id(ins)), "INSERT", ins, ids)
    upd = await asyncio.to_thread(update, db, new_id(ins), body="edited")
    py.check(await py.change("all", 0, "UPDATE", new_id(ins)), "UPDATE", upd, ids)
    dele = await asyncio.to_thread(delete, db, new_id(ins))
    py.check(await py.change("all", 0, "DELETE", new_id(ins)), "DELETE", dele, ids)
    assert len(py.changes_of("all", new_id(ins))) == 3, py.report()


async def test_filter_room_5(py: PyClient) -> None:
    db = py.server.dsn
    room5 = py.channel("room5", [("*", "room_id=eq.5")])
    witness = py.channel("witness", [("*", None)])
    await py.subscribed(room5)
    await py.subscribed(witness)
    ids = binding_ids(room5)

    other = await asyncio.to_thread(insert, db, 6, "bob", "not for room 5")
    mine = await asyncio.to_thread(insert, db, 5, "ann", "for room 5")
    py.check(await py.change("room5", 0, "INSERT", new_id(mine)), "INSERT", mine, ids)
    await py.change("witness", 0, "INSERT", new_id(other))

    await asyncio.to_thread(update, db, new_id(other), body="still not room 5")
    upd = await asyncio.to_thread(update, db, new_id(mine), body="room 5 edited")
    py.check(await py.change("room5", 0, "UPDATE", new_id(mine)), "UPDATE", upd, ids)
    await py.change("witness", 0, "UPDATE", new_id(other))

    await asyncio.to_thread(delete, db, new_id(other))
    dele = await asyncio.to_thread(delete, db, new_id(mine))
    py.check(await py.change("room5", 0, "DELETE", new_id(mine)), "DELETE", dele, ids)
    await py.change("witness", 0, "DELETE", new_id(mine))

    leaked = py.changes_of("room5", new_id(other))
    assert not leaked, f"room 6 changes reached room_id=eq.5: {leaked}\n{py.report()}"


async def test_two_bindings_on_one_channel(py: PyClient) -> None:
    """Binding 0: INSERT ``room_id=eq.5``; binding 1: every event. One message, both ids."""
    db = py.server.dsn
    ch = py.channel("two", [("INSERT", "room_id=eq.5"), ("*", None)])
    await py.subscribed(ch)
    id0, id1 = binding_ids(ch)
    assert id0 != id1, f"two different bindings got the same id {id0}\n{py.report()}"

    a = await asyncio.to_thread(insert, db, 5, "ann", "both bindings")
    py.check(await py.change("two", 0, "INSERT", new_id(a)), "INSERT", a, [id0, id1])
    py.check(await py.change("two", 1, "INSERT", new_id(a)), "INSERT", a, [id0, id1])

    b = await asyncio.to_thread(insert, db, 6, "bob", "only binding 1")
    py.check(await py.change("two", 1, "INSERT", new_id(b)), "INSERT", b, [id1])

    u = await asyncio.to_thread(update, db, new_id(a), body="UPDATE: only binding 1")
    py.check(await py.change("two", 1, "UPDATE", new_id(a)), "UPDATE", u, [id1])

    assert not py.changes_of("two", new_id(b), binding=0), py.report()
    assert len(py.changes_of("two", new_id(a), binding=0)) == 1, py.report()


async def test_unsubscribe_stops_events(py: PyClient) -> None:
    db = py.server.dsn
    leaving = py.channel("leaving", [("*", None)])
    staying = py.channel("staying", [("*", None)])
    await py.subscribed(leaving)
    await py.subscribed(staying)
    before = await asyncio.to_thread(insert, db, 1, "ann", "before")
    await py.change("leaving", 0, "INSERT", new_id(before))

    await leaving.unsubscribe()
    # CLOSED comes from the server's phx_reply to phx_leave (Python waits for it).
    closed = await py.wait(
        lambda e: e["kind"] == "status" and e["channel"] == "leaving", "CLOSED after unsubscribe()"
    )
    assert closed["status"] == "CLOSED", py.report()

    after = await asyncio.to_thread(insert, db, 1, "ann", "after")
    await py.change("staying", 0, "INSERT", new_id(after))
    leaked = py.changes_of("leaving", new_id(after))
    assert not leaked, f"events after unsubscribe: {leaked}\n{py.report()}"
    sent_to_left = [
        line
        for line in py.frames.lines
        if line.startswith("client DEBUG: receive:")
        and "realtime:leaving" in line
        and "postgres_changes" in line
        and f"'id': {new_id(after)}" in line.replace('"', "'")
    ]
    assert not sent_to_left, f"server still sent changes to the left channel: {sent_to_left}"


async def test_expired_token_is_refused(realtime_server: RealtimeServer, frames: FrameLog) -> None:
    c = PyClient(realtime_server, frames, token=realtime_server.expired_token())
    try:
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            await asyncio.wait_for(c.client.connect(), WAIT)
        assert info.value.response.status_code == 401, (
            f"upgrade refused with {info.value.response.status_code}, expected 401"
        )
        assert not c.client.is_connected
    finally:
        await c.client.close()


async def test_expired_access_token_join_is_refused(py: PyClient) -> None:
    """Valid apikey, expired ``access_token`` in phx_join: join error ``InvalidJWTToken: ...``."""
    await py.client.set_auth(py.server.expired_token())
    ch = py.channel("x", [("*", None)])
    event = await py.subscribe(ch)
    assert event["status"] == "CHANNEL_ERROR", py.report()
    reason = json.loads(event["error"]).get("reason", "")
    assert reason.startswith("InvalidJWTToken: Token has expired"), (
        f"join error reason {reason!r}\n{py.report()}"
    )


async def test_system_message_after_subscribe(py: PyClient) -> None:
    ch = py.channel("sys", [("*", "room_id=eq.5")])
    await py.subscribed(ch)
    event = await py.wait(
        lambda e: e["kind"] == "system" and e["channel"] == "sys", "a system message"
    )
    assert event["payload"] == {
        "channel": "sys",
        "extension": "postgres_changes",
        "status": "ok",
        "message": "Subscribed to PostgreSQL",
    }, py.report()


@pytest.mark.slow
async def test_heartbeats_keep_socket_alive(py: PyClient) -> None:
    """65 s with only the client's heartbeats (every 25 s, ``ref: null``): no idle close."""
    db = py.server.dsn
    ch = py.channel("idle", [("*", None)])
    await py.subscribed(ch)
    ws = py.client._ws_connection
    assert ws is not None
    deadline = time.monotonic() + 65
    while (left := deadline - time.monotonic()) > 0:
        bad = [e for e in py.events if e["kind"] == "status" and e["status"] != "SUBSCRIBED"]
        if bad or py.client._ws_connection is not ws:
            pytest.fail(
                f"the connection broke during 65 s of heartbeats only: {bad}\n{py.report()}"
            )
        py._changed.clear()
        try:
            await asyncio.wait_for(py._changed.wait(), left)
        except TimeoutError:
            pass
    assert ws.close_code is None, f"socket closed ({ws.close_code})\n{py.report()}"
    replies = [
        line
        for line in py.frames.lines
        if line.startswith("client DEBUG: receive:") and '"phoenix"' in line and "phx_reply" in line
    ]
    assert len(replies) >= 2, f"expected >= 2 heartbeat replies, got {len(replies)}\n{py.report()}"
    ins = await asyncio.to_thread(insert, db, 1, "ann", "still there")
    py.check(await py.change("idle", 0, "INSERT", new_id(ins)), "INSERT", ins, binding_ids(ch))
    assert py.client._ws_connection is ws, f"the client reconnected\n{py.report()}"
