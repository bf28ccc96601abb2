"""The realtime server end to end: a real PostgreSQL, the real server in-process, and a plain
websockets client that speaks the Phoenix protocol (vsn 1.0.0 and 2.0.0)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from broadcaster.app import App, AppOptions
from broadcaster.auth import make_token
from broadcaster.config import Settings
from cdc import admin

SECRET = "test-secret-for-the-server-tests"
TOKEN = make_token(SECRET, "anon", ttl=3600)
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
COLUMNS = [
    {"name": "id", "type": "int8"},
    {"name": "room", "type": "int4"},
    {"name": "body", "type": "text"},
]
VSNS = ["1.0.0", "2.0.0"]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def tables(db: str) -> str:
    conn = await asyncpg.connect(db)
    await conn.execute(
        "CREATE TABLE public.messages (id bigserial PRIMARY KEY, room int, body text);"
        "CREATE TABLE public.big (id bigserial PRIMARY KEY, body text);"
    )
    await conn.close()
    admin.add_table(db, "public.messages")
    admin.add_table(db, "public.big")
    return db


def make_settings(db: str, consumer: str, **overrides: Any) -> Settings:
    return Settings(database_url=db, port=0, jwt_secret=SECRET, consumer_name=consumer, **overrides)


@pytest.fixture(scope="module")
async def app(tables: str) -> AsyncIterator[App]:
    server = App(make_settings(tables, "test_server"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def pg(tables: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(tables)
    yield conn
    await conn.close()


# --- a protocol client -------------------------------------------------------------------------


@dataclass
class Msg:
    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any
    raw: Any


class Client:
    def __init__(self, ws: ClientConnection, vsn: str) -> None:
        self.ws = ws
        self.vsn = vsn
        self._ref = 0

    @classmethod
    async def connect(
        cls, port: int, vsn: str = "1.0.0", token: str | None = TOKEN, **kwargs: Any
    ) -> Client:
        query = f"vsn={vsn}" + (f"&apikey={token}" if token is not None else "")
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/realtime/v1/websocket?{query}", **kwargs
        )
        return cls(ws, vsn)

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def push(
        self,
        topic: str,
        event: str,
        payload: Any,
        ref: str | None = None,
        join_ref: str | None = None,
    ) -> str | None:
        if self.vsn == "1.0.0":
            frame: Any = {
                "topic": topic,
                "event": event,
                "payload": payload,
                "ref": ref,
                "join_ref": join_ref,
            }
        else:
            frame = [join_ref, ref, topic, event, payload]
        await self.ws.send(json.dumps(frame))
        return ref

    async def recv(self, seconds: float = 10) -> Msg:
        async with asyncio.timeout(seconds):
            text = await self.ws.recv()
        raw = json.loads(text)
        if self.vsn == "1.0.0":
            assert set(raw) == {"topic", "event", "payload", "ref"}, raw
            return Msg(None, raw["ref"], raw["topic"], raw["event"], raw["payload"], raw)
        return Msg(raw[0], raw[1], raw[2], raw[3], raw[4], raw)

    async def recv_until(self, match: Callable[[Msg], bool], seconds: float = 10) -> Msg:
        async with asyncio.timeout(seconds):
            while True:
                message = await self.recv(seconds)
                if match(message):
                    return message

    async def join(
        self, name: str, bindings: list[dict[str, Any]], token: str | None = TOKEN
    ) -> tuple[Msg, str]:
        ref = self.next_ref()
        payload: dict[str, Any] = {
            "config": {
                "broadcast": {"ack": False, "self": False},
                "presence": {"key": "", "enabled": False},
                "postgres_changes": bindings,
                "private": False,
            }
        }
        if token is not None:
            payload["access_token"] = token
        topic = f"realtime:{name}"
        await self.push(topic, "phx_join", payload, ref=ref, join_ref=ref)
        reply = await self.recv()
        assert (reply.topic, reply.event, reply.ref) == (topic, "phx_reply", ref), reply
        return reply, ref

    async def close(self) -> None:
        await self.ws.close()


def postgres_changes(message: Msg) -> bool:
    return message.event == "postgres_changes"


async def insert(pg: asyncpg.Connection, room: int, body: str) -> int:
    row_id: int = await pg.fetchval(
        "INSERT INTO public.messages (room, body) VALUES ($1, $2) RETURNING id", room, body
    )
    return row_id


# --- join, events, filters ---------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_join_without_filter_gets_every_event_with_supabase_payloads(
    app: App, pg: asyncpg.Connection, vsn: str
) -> None:
    client = await Client.connect(app.server.port, vsn)
    binding = {"event": "*", "schema": "public", "table": "messages"}
    reply, ref = await client.join(f"all-{vsn}", [binding])
    assert reply.payload["status"] == "ok"
    (entry,) = reply.payload["response"]["postgres_changes"]
    assert isinstance(entry["id"], int)
    assert entry == {**binding, "id": entry["id"]}
    if vsn == "2.0.0":
        assert reply.join_ref == ref
    system = await client.recv()
    assert system.event == "system" and system.ref is None
    assert system.payload == {
        "channel": f"all-{vsn}",
        "extension": "postgres_changes",
        "message": "Subscribed to PostgreSQL",
        "status": "ok",
    }

    row_id = await insert(pg, 1, "hi")
    event = await client.recv_until(postgres_changes)
    assert event.ref is None and event.topic == f"realtime:all-{vsn}"
    if vsn == "1.0.0":
        assert event.raw["ref"] is None
    else:
        assert event.raw[:2] == [None, None]
    data = event.payload["data"]
    assert event.payload["ids"] == [entry["id"]]
    assert TIMESTAMP.match(data.pop("commit_timestamp"))
    assert data == {
        "schema": "public",
        "table": "messages",
        "type": "INSERT",
        "columns": COLUMNS,
        "record": {"id": row_id, "room": 1, "body": "hi"},
        "errors": None,
    }

    await pg.execute("UPDATE public.messages SET body = 'edited' WHERE id = $1", row_id)
    data = (await client.recv_until(postgres_changes)).payload["data"]
    assert data["type"] == "UPDATE"
    assert data["record"] == {"id": row_id, "room": 1, "body": "edited"}
    assert data["old_record"] == {"id": row_id, "room": 1, "body": "hi"}

    await pg.execute("DELETE FROM public.messages WHERE id = $1", row_id)
    data = (await client.recv_until(postgres_changes)).payload["data"]
    assert data["type"] == "DELETE"
    assert "record" not in data
    assert data["old_record"] == {"id": row_id, "room": 1, "body": "edited"}
    await client.close()


@pytest.mark.parametrize("vsn", VSNS)
async def test_filter_delivers_matching_rows_and_rows_that_leave(
    app: App, pg: asyncpg.Connection, vsn: str
) -> None:
    client = await Client.connect(app.server.port, vsn)
    room = 500 + VSNS.index(vsn)
    binding = {"event": "*", "schema": "public", "table": "messages", "filter": f"room=eq.{room}"}
    reply, _ = await client.join(f"room-{vsn}", [binding])
    (entry,) = reply.payload["response"]["postgres_changes"]
    assert (await client.recv()).payload["status"] == "ok"

    await insert(pg, room + 10, "elsewhere")
    inside = await insert(pg, room, "inside")
    event = await client.recv_until(postgres_changes)
    assert event.payload["ids"] == [entry["id"]]
    assert event.payload["data"]["record"]["id"] == inside  # the other room's row never came

    await pg.execute("UPDATE public.messages SET room = $1 WHERE id = $2", room + 10, inside)
    data = (await client.recv_until(postgres_changes)).payload["data"]
    assert data["type"] == "UPDATE"
    assert data["old_record"]["room"] == room and data["record"]["room"] == room + 10

    await pg.execute("UPDATE public.messages SET body = 'gone' WHERE id = $1", inside)
    await pg.execute("DELETE FROM public.messages WHERE id = $1", inside)  # outside: not sent
    marker = await insert(pg, room, "marker")
    data = (await client.recv_until(postgres_changes)).payload["data"]
    assert (data["type"], data["record"]["id"]) == ("INSERT", marker)
    await pg.execute("DELETE FROM public.messages WHERE id = $1", marker)
    data = (await client.recv_until(postgres_changes)).payload["data"]
    assert (data["type"], data["old_record"]["id"]) == ("DELETE", marker)
    await client.close()


async def test_two_bindings_on_one_channel_share_one_message(
    app: App, pg: asyncpg.Connection
) -> None:
    client = await Client.connect(app.server.port, "2.0.0")
    bindings = [
        {"event": "INSERT", "schema": "public", "table": "messages", "filter": "room=eq.700"},
        {"event": "*", "schema": "public", "table": "messages", "filter": "body=eq.both"},
    ]
    reply, _ = await client.join("two", bindings)
    ids = [e["id"] for e in reply.payload["response"]["postgres_changes"]]
    await insert(pg, 700, "both")
    event = await client.recv_until(postgres_changes)
    assert sorted(event.payload["ids"]) == sorted(ids)
    await client.close()


async def test_subscribed_means_live(app: App, pg: asyncpg.Connection) -> None:
    client = await Client.connect(app.server.port, "2.0.0")
    misses = 0
    for i in range(100):
        room = 10_000 + i
        binding = {"event": "INSERT", "schema": "public", "table": "messages"}
        binding["filter"] = f"room=eq.{room}"
        reply, ref = await client.join(f"live-{i}", [binding])
        assert reply.payload["status"] == "ok"
        await insert(pg, room, "now")  # committed right after SUBSCRIBED
        try:
            event = await client.recv_until(postgres_changes, seconds=5)
        except TimeoutError:
            misses += 1
        else:
            assert event.payload["data"]["record"]["room"] == room
        await client.push(
            f"realtime:live-{i}", "phx_leave", {}, ref=client.next_ref(), join_ref=ref
        )
        await client.recv_until(lambda m: m.event == "phx_close")
    assert misses == 0
    await client.close()


@pytest.mark.parametrize(
    ("binding", "message"),
    [
        (
            {"event": "*", "schema": "public", "table": "messages", "filter": "room=wrong"},
            "Error parsing `filter` params",
        ),
        (
            {"event": "*", "schema": "public", "table": "messages", "filter": "nope=eq.1"},
            "invalid column for filter nope",
        ),
        (
            {"event": "*", "schema": "public", "table": "doesnotexist"},
            "Unable to subscribe to changes with given parameters. Please check Realtime is"
            " enabled for the given connect parameters: [event: *, schema: public, table:"
            " doesnotexist, filters: [], select: nil]",
        ),
    ],
)
async def test_unusable_binding_gives_a_system_error_but_the_join_succeeds(
    app: App, binding: dict[str, Any], message: str
) -> None:
    client = await Client.connect(app.server.port)
    reply, _ = await client.join("bad", [binding])
    assert reply.payload["status"] == "ok"
    assert reply.payload["response"]["postgres_changes"][0]["table"] == binding["table"]
    system = await client.recv()
    assert system.event == "system"
    assert system.payload["status"] == "error"
    assert system.payload["extension"] == "postgres_changes"
    assert message in system.payload["message"]
    await client.close()


# --- socket-level protocol ---------------------------------------------------------------------


@pytest.mark.parametrize("vsn", VSNS)
async def test_heartbeat_leave_and_unmatched_topic(app: App, vsn: str) -> None:
    client = await Client.connect(app.server.port, vsn)
    await client.push("phoenix", "heartbeat", {}, ref="hb")
    reply = await client.recv()
    assert (reply.topic, reply.event, reply.ref) == ("phoenix", "phx_reply", "hb")
    assert reply.payload == {"status": "ok", "response": {}}
    await client.push("phoenix", "heartbeat", {}, ref=None)  # the Python client's heartbeat
    assert (await client.recv()).event == "phx_reply"

    await client.push("realtime:nobody", "broadcast", {}, ref="7")
    reply = await client.recv()
    assert reply.payload == {"status": "error", "response": {"reason": "unmatched topic"}}

    _, join_ref = await client.join("leave", [])
    await client.push("realtime:leave", "phx_leave", {}, ref="9", join_ref=join_ref)
    reply = await client.recv()
    assert (reply.event, reply.ref, reply.payload["status"]) == ("phx_reply", "9", "ok")
    close = await client.recv()
    assert (close.event, close.ref, close.payload) == ("phx_close", join_ref, {})
    await client.close()


async def test_bad_tokens_are_refused_at_the_upgrade(app: App) -> None:
    expired = make_token(SECRET, "anon", ttl=-10)
    forged = make_token("another-secret", "anon")
    for token in (None, "garbage", expired, forged):
        with pytest.raises(InvalidStatus) as caught:
            await Client.connect(app.server.port, token=token)
        response = caught.value.response
        assert response.status_code == 401
        assert response.headers["Content-Type"] == "application/json"
        assert isinstance(json.loads(response.body)["error"], str)
    header = await websockets.connect(
        f"ws://127.0.0.1:{app.server.port}/socket/websocket",
        additional_headers={"x-api-key": TOKEN},
    )
    await header.close()


async def test_token_expiring_mid_session_closes_the_channel(app: App) -> None:
    client = await Client.connect(app.server.port, "2.0.0")
    short = make_token(SECRET, "anon", ttl=2)
    reply, join_ref = await client.join("expiring", [], token=short)
    assert reply.payload["status"] == "ok"
    system = await client.recv(seconds=5)
    assert system.event == "system"
    assert system.payload["extension"] == "system" and system.payload["status"] == "error"
    assert system.payload["message"].startswith("Token has expired")
    close = await client.recv()
    assert (close.event, close.ref) == ("phx_close", join_ref)
    await client.close()


async def test_malformed_frames_never_kill_the_socket(app: App, pg: asyncpg.Connection) -> None:
    watcher = await Client.connect(app.server.port, "2.0.0")
    binding = {"event": "INSERT", "schema": "public", "table": "messages", "filter": "room=eq.900"}
    await watcher.join("watch", [binding])
    for vsn in VSNS:
        client = await Client.connect(app.server.port, vsn)
        for frame in ("garbage", "[1,2]", '{"topic":1}', "[]", "{}", "null", '"x"'):
            await client.ws.send(frame)
        await client.ws.send(b"\x03\x09")  # binary: refused on 1.0.0, truncated on 2.0.0
        await client.push("realtime:x", "phx_join", "not an object", ref="1")
        await client.push("realtime:y", "phx_join", {"config": {"postgres_changes": 5}}, ref="2")
        await client.push("phoenix", "heartbeat", {}, ref="alive")
        reply = await client.recv_until(lambda m: m.ref == "alive")
        assert reply.payload["status"] == "ok"
        await client.close()
    row = await insert(pg, 900, "still delivered")
    event = await watcher.recv_until(postgres_changes)
    assert event.payload["data"]["record"]["id"] == row
    await watcher.close()


async def test_health(app: App) -> None:
    url = f"http://127.0.0.1:{app.server.port}/health"
    response = await asyncio.to_thread(urllib.request.urlopen, url, timeout=10)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.read())
    assert body["status"] == "ok"
    assert body["database"] == {"reachable": True}
    assert body["capture"]["running"] is True
    assert isinstance(body["sockets"], int) and isinstance(body["subscriptions"], int)
    assert "lag_seconds" in body["capture"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        await asyncio.to_thread(
            urllib.request.urlopen, f"http://127.0.0.1:{app.server.port}/nope", timeout=10
        )
    assert caught.value.code == 404


# --- limits, slow clients, drain ---------------------------------------------------------------


async def test_idle_socket_is_closed(tables: str) -> None:
    server = App(make_settings(tables, "test_idle", heartbeat_timeout_s=0.3))
    await server.start()
    try:
        client = await Client.connect(server.server.port)
        with pytest.raises(ConnectionClosed) as caught:
            await client.recv(seconds=5)
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1000
        assert "idle" in caught.value.rcvd.reason
    finally:
        await server.stop()


async def test_a_client_that_stops_reading_is_cut_off_and_others_keep_receiving(
    tables: str, pg: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    server = App(make_settings(tables, "test_slow", max_socket_buffer_bytes=256 * 1024))
    await server.start()
    try:
        port = server.server.port
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        slow = await Client.connect(port, sock=sock, max_queue=1)
        fast = await Client.connect(port)
        binding = {"event": "INSERT", "schema": "public", "table": "big"}
        for client in (slow, fast):
            await client.join("big", [binding])
            await client.recv()  # system
        sockets = list(server.server.connections)
        assert len(sockets) == 2
        rows, size = 400, 32 * 1024
        await pg.execute(
            "INSERT INTO public.big (body) SELECT repeat('x', $1) FROM generate_series(1, $2)",
            size,
            rows,
        )
        received = 0
        while received < rows:
            await fast.recv_until(postgres_changes)
            received += 1
        waits = {asyncio.create_task(s.wait_closed()): s for s in sockets}
        done, pending = await asyncio.wait(waits, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 1
        closing = waits[done.pop()].outbox.closing
        assert closing is not None and closing.overflow and closing.code == 1013
        assert "send buffer overflow" in caplog.text
        pending.pop().cancel()
        await fast.push("phoenix", "heartbeat", {}, ref="still-here")
        assert (await fast.recv_until(lambda m: m.ref == "still-here")).payload["status"] == "ok"
        await fast.close()
        slow.ws.transport.abort()
    finally:
        await server.stop()


async def test_drain_sends_going_away_and_saves_the_position(
    tables: str, pg: asyncpg.Connection
) -> None:
    server = App(make_settings(tables, "test_drain"))
    await server.start()
    client = await Client.connect(server.server.port)
    binding = {"event": "INSERT", "schema": "public", "table": "messages", "filter": "room=eq.77"}
    await client.join("drain", [binding])
    await insert(pg, 77, "before drain")
    await client.recv_until(postgres_changes)
    await server.stop()
    with pytest.raises(ConnectionClosed) as caught:
        await client.recv_until(lambda m: False)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001
    stored = await pg.fetchval("SELECT position FROM pgcast.consumers WHERE name = 'test_drain'")
    assert stored is not None


async def test_access_token_refresh(app: App, pg: asyncpg.Connection) -> None:
    client = await Client.connect(app.server.port, "2.0.0")
    binding = {"event": "INSERT", "schema": "public", "table": "messages", "filter": "room=eq.31"}
    _, join_ref = await client.join("refresh", [binding])
    await client.recv()  # system ok
    fresh = make_token(SECRET, "authenticated", ttl=7200, sub="user-1")
    await client.push("realtime:refresh", "access_token", {"access_token": fresh}, "5", join_ref)
    row = await insert(pg, 31, "after refresh")
    event = await client.recv()  # nothing else came first: a good token is not answered
    assert event.event == "postgres_changes"
    assert event.payload["data"]["record"]["id"] == row

    await client.join("witness", [binding])
    await client.recv()  # system ok
    await client.push("realtime:refresh", "access_token", {"access_token": "bad"}, "6", join_ref)
    system = await client.recv()
    assert system.event == "system" and system.topic == "realtime:refresh"
    assert system.payload["extension"] == "system" and system.payload["status"] == "error"
    close = await client.recv()
    assert (close.event, close.ref) == ("phx_close", join_ref)
    await insert(pg, 31, "after shutdown")
    event = await client.recv()
    assert (event.event, event.topic) == ("postgres_changes", "realtime:witness")
    # Both channels' frames for one change are queued together: none came for the closed one.
    await client.push("phoenix", "heartbeat", {}, ref="hb")
    assert (await client.recv()).ref == "hb"
    await client.close()


async def test_rejoining_a_topic_closes_the_old_channel(app: App, pg: asyncpg.Connection) -> None:
    client = await Client.connect(app.server.port, "2.0.0")
    binding = {"event": "INSERT", "schema": "public", "table": "messages", "filter": "room=eq.32"}
    _, first = await client.join("again", [binding])
    await client.recv()  # system
    ref = client.next_ref()
    await client.push(
        "realtime:again", "phx_join", {"config": {"postgres_changes": [binding]}}, ref, ref
    )
    close = await client.recv()
    assert (close.event, close.ref) == ("phx_close", first)
    reply = await client.recv()
    assert (reply.event, reply.ref, reply.payload["status"]) == ("phx_reply", ref, "ok")
    await client.recv()  # system
    await insert(pg, 32, "once")
    event = await client.recv()
    assert event.event == "postgres_changes" and event.join_ref is None
    await client.push("phoenix", "heartbeat", {}, ref="hb")
    assert (await client.recv()).ref == "hb"  # delivered once, not once per join
    await client.close()


@pytest.fixture(scope="module")
async def limited(tables: str) -> AsyncIterator[App]:
    server = App(
        make_settings(
            tables,
            "test_limits",
            max_events_per_second=5,
            max_frame_bytes=2000,
            max_record_bytes=300,
            max_channels_per_socket=2,
        )
    )
    await server.start()
    yield server
    await server.stop()


async def test_oversized_records_are_shrunk_as_supabase_does(
    limited: App, pg: asyncpg.Connection
) -> None:
    client = await Client.connect(limited.server.port)
    binding = {"event": "INSERT", "schema": "public", "table": "messages", "filter": "room=eq.41"}
    await client.join("large", [binding])
    row = await insert(pg, 41, "y" * 400)
    data = (await client.recv_until(postgres_changes)).payload["data"]
    assert data["errors"] == ["Error 413: Payload Too Large"]
    assert data["record"] == {"id": row, "room": 41}
    await client.close()


async def test_frame_size_limit_closes_the_socket(limited: App) -> None:
    client = await Client.connect(limited.server.port)
    await client.ws.send("x" * 3000)
    with pytest.raises(ConnectionClosed) as caught:
        await client.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009


async def test_events_per_second_limit_shuts_the_channel(limited: App) -> None:
    client = await Client.connect(limited.server.port)
    _, join_ref = await client.join("chatty", [])
    for i in range(10):
        await client.push("realtime:chatty", "broadcast", {"event": "e", "payload": {}}, str(i))
    system = await client.recv_until(lambda m: m.event == "system")
    assert system.payload["message"] == "Too many messages per second"
    assert (await client.recv()).event == "phx_close"
    await client.close()


async def test_channel_limit(limited: App) -> None:
    client = await Client.connect(limited.server.port)
    for name in ("one", "two"):
        reply, _ = await client.join(name, [])
        assert reply.payload["status"] == "ok"
    reply, _ = await client.join("three", [])
    assert reply.payload == {
        "status": "error",
        "response": {"reason": "ChannelRateLimitReached: Too many channels"},
    }
    await client.close()


async def test_no_auth_accepts_clients_without_a_token(tables: str) -> None:
    settings = Settings(database_url=tables, port=0, no_auth=True, consumer_name="test_no_auth")
    server = App(settings)
    await server.start()
    try:
        client = await Client.connect(server.server.port, token=None)
        reply, _ = await client.join("open", [], token=None)
        assert reply.payload["status"] == "ok"
        await client.close()
    finally:
        await server.stop()


async def test_broadcasts_are_relayed_between_sockets(app: App) -> None:
    v1 = await Client.connect(app.server.port, "1.0.0")
    v2 = await Client.connect(app.server.port, "2.0.0")
    await v1.join("chat", [])
    _, join_ref = await v2.join("chat", [])
    await v1.push(
        "realtime:chat", "broadcast", {"type": "broadcast", "event": "hi", "payload": {"a": 1}}
    )
    got = await v2.recv()
    assert (got.event, got.ref, got.join_ref) == ("broadcast", None, None)
    assert got.payload == {"type": "broadcast", "event": "hi", "payload": {"a": 1}}
    # kind-3 binary from the 2.0.0 client reaches the 1.0.0 client as JSON text
    topic, event, body = b"realtime:chat", b"cursor", b'{"x":2}'
    header = bytes([3, len(join_ref), 1, len(topic), len(event), 0, 1])
    await v2.ws.send(header + join_ref.encode() + b"9" + topic + event + body)
    got = await v1.recv()
    assert got.payload == {"type": "broadcast", "event": "cursor", "payload": {"x": 2}}
    for client in (v1, v2):  # no echo to the sender (self: false)
        await client.push("phoenix", "heartbeat", {}, ref="hb")
        assert (await client.recv()).ref == "hb"
        await client.close()


def fuzz_frames(rng: random.Random, count: int) -> list[str | bytes]:
    """Garbage, truncations and mutations of valid frames (deterministic for a seed)."""
    seeds = [
        '{"topic":"realtime:f","event":"phx_join","payload":{"config":{}},"ref":"1"}',
        '["1","1","realtime:f","phx_join",{"config":{"postgres_changes":[{"table":"t"}]}}]',
        '[null,"2","phoenix","heartbeat",{}]',
        '{"topic":"realtime:f","event":"access_token","payload":{"access_token":5},"ref":"3"}',
    ]
    alphabet = '{}[]",:0123456789abcnulltrue\\ \x00é'
    frames: list[str | bytes] = []
    for _ in range(count):
        kind = rng.randrange(4)
        seed = rng.choice(seeds)
        if kind == 0:
            frames.append(rng.randbytes(rng.randrange(0, 64)))
        elif kind == 1:
            frames.append(seed[: rng.randrange(len(seed))])
        elif kind == 2:
            chars = list(seed)
            for _ in range(rng.randrange(1, 6)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            frames.append("".join(chars))
        else:
            frames.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(40))))
    return frames


async def test_fuzzed_frames_never_kill_the_socket(app: App, pg: asyncpg.Connection) -> None:
    watcher = await Client.connect(app.server.port)
    binding = {"event": "INSERT", "schema": "public", "table": "messages", "filter": "room=eq.901"}
    await watcher.join("fuzz-watch", [binding])
    rng = random.Random(20260101)
    for vsn in VSNS:
        client = await Client.connect(app.server.port, vsn)
        for frame in fuzz_frames(rng, 60):
            await client.ws.send(frame)
        await client.push("phoenix", "heartbeat", {}, ref="alive")
        reply = await client.recv_until(lambda m: m.ref == "alive")
        assert reply.payload["status"] == "ok"
        await client.close()
    row = await insert(pg, 901, "after fuzz")
    event = await watcher.recv_until(postgres_changes)
    assert event.payload["data"]["record"]["id"] == row
    await watcher.close()


async def test_compressed_sockets_get_the_same_frames(tables: str, pg: asyncpg.Connection) -> None:
    """With permessage-deflate negotiated, frames go through the library's framing (compressed);
    without it, through pgcast's own writer; clients read the same messages either way."""
    server = App(make_settings(tables, "test_deflate"), AppOptions(compression=True))
    await server.start()
    try:
        port = server.server.port
        deflate = await Client.connect(port, compression="deflate")
        plain = await Client.connect(port, compression=None)
        assert deflate.ws.protocol.extensions and not plain.ws.protocol.extensions
        binding = {"event": "INSERT", "schema": "public", "table": "messages"}
        for client in (deflate, plain):
            await client.join("deflate", [binding])
            await client.recv()  # system
        await insert(pg, 4242, "x" * 5000)
        got = [await c.recv_until(postgres_changes) for c in (deflate, plain)]
        assert got[0].payload == got[1].payload
        assert got[0].payload["data"]["record"]["body"] == "x" * 5000
        for client in (deflate, plain):
            await client.close()
    finally:
        await server.stop()
