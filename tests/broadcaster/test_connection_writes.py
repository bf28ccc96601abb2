"""How a connection writes: one write per socket per event-loop iteration, in order, and a
client whose transport backlog passes the limit is closed with 1013.

The socket here is a recording implementation of ``connection.WebSocket`` (the seam between the
connection and websockets); the wire itself is covered by test_server and the e2e tests."""

from __future__ import annotations

import asyncio

from broadcaster import phoenix
from broadcaster.connection import ConnectionLimits, Flusher, RealtimeConnection
from broadcaster.hub import Hub
from broadcaster.outbox import Frame
from cdc.changes import Column
from cdc.source import MemorySource


class NoTables:
    async def columns(self, schema: str, table: str) -> tuple[Column, ...]:
        return ()


class RecordingSocket:
    def __init__(self, backlog: int = 0) -> None:
        self.inbound: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.writes: list[list[Frame]] = []
        self.closed: tuple[int, str] | None = None
        self.backlog = backlog

    async def recv(self) -> str | bytes | None:
        return await self.inbound.get()

    def write(self, frames: list[Frame]) -> int:
        if self.closed is not None:
            return -1
        self.writes.append(list(frames))
        return self.backlog

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.inbound.put_nowait(None)


def connect(
    socket: RecordingSocket, flusher: Flusher, buffer_bytes: int = 1000
) -> RealtimeConnection:
    return RealtimeConnection(
        socket,
        phoenix.Vsn.V1,
        hub=Hub(MemorySource()),
        lookup=NoTables(),
        verifier=None,
        token=None,
        limits=ConnectionLimits(buffer_bytes=buffer_bytes),
        flusher=flusher,
    )


async def test_frames_of_one_loop_iteration_go_out_in_one_write_per_socket() -> None:
    flusher = Flusher()
    a, b = RecordingSocket(), RecordingSocket()
    ca, cb = connect(a, flusher), connect(b, flusher)
    runs = [asyncio.create_task(c.run()) for c in (ca, cb)]
    for i in range(50):
        ca.deliver(b"a%d" % i)
        if i % 2 == 0:
            cb.deliver(b"b%d" % i)
    assert a.writes == [] and b.writes == []  # nothing is written synchronously
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert a.writes == [[b"a%d" % i for i in range(50)]]
    assert b.writes == [[b"b%d" % i for i in range(0, 50, 2)]]
    ca.deliver(b"next")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert a.writes[1:] == [[b"next"]] and len(b.writes) == 1
    for c in (ca, cb):
        c.close(1001, "bye")
    await asyncio.wait_for(asyncio.gather(*runs), 5)
    assert a.closed == (1001, "bye") and b.closed == (1001, "bye")


async def test_replies_and_changes_keep_their_order_in_the_write() -> None:
    socket = RecordingSocket()
    conn = connect(socket, Flusher())
    run = asyncio.create_task(conn.run())
    conn.deliver(b"change-1")
    socket.inbound.put_nowait('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"7"}')
    await asyncio.sleep(0.05)
    conn.deliver(b"change-2")
    await asyncio.sleep(0.05)
    flat = [f for write in socket.writes for f in write]
    assert flat[0] == b"change-1" and flat[-1] == b"change-2"
    reply = phoenix.parse_frame(phoenix.Vsn.V1, flat[1])
    assert reply.event == phoenix.Event.PHX_REPLY and reply.ref == "7"
    conn.close(1000, "")
    await asyncio.wait_for(run, 5)


async def test_a_client_that_does_not_read_is_closed_with_1013() -> None:
    socket = RecordingSocket(backlog=5000)  # the transport still holds 5,000 bytes
    conn = connect(socket, Flusher(), buffer_bytes=1000)
    run = asyncio.create_task(conn.run())
    conn.deliver(b"x" * 10)
    await asyncio.wait_for(run, 5)
    assert socket.closed is not None and socket.closed[0] == 1013
    assert "5000 bytes not yet read by the client" in socket.closed[1]
    assert not conn.outbox.put(b"late")
