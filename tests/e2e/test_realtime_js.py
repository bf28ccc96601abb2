"""End to end with the official ``@supabase/realtime-js`` (and ``supabase-js``), unmodified.

Each test spawns ``node tests/e2e/client.mjs`` against a real server and real PostgreSQL, and
synchronises only on what the client's callbacks print. realtime-js runs with both serializers:
vsn 2.0.0 (its default) and 1.0.0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.helpers import (
    JsClient,
    RealtimeServer,
    assert_js_change,
    binding,
    delete,
    insert,
    update,
)

VSNS = ["2.0.0", "1.0.0"]


@pytest.fixture
def clients() -> Iterator[list[JsClient]]:
    """Every client a test starts is stopped at its end."""
    started: list[JsClient] = []
    yield started
    for c in started:
        c.close()


@pytest.fixture
def spawn(realtime_server: RealtimeServer, clients: list[JsClient]) -> Any:
    def start(channels: list[dict[str, Any]], **kwargs: Any) -> JsClient:
        c = JsClient(realtime_server, channels, **kwargs)
        clients.append(c)
        return c

    return start


def is_change(channel: str, binding: int | None = None) -> Any:
    return lambda e: (
        e.get("kind") == "change"
        and e["channel"] == channel
        and (binding is None or e["binding"] == binding)
    )


@pytest.mark.parametrize("vsn", VSNS)
def test_insert_update_delete_unfiltered(
    realtime_server: RealtimeServer, spawn: Any, vsn: str
) -> None:
    db = realtime_server.dsn
    c = spawn([{"name": "all", "bindings": [binding("*")]}], vsn=vsn)
    c.subscribed("all")

    ins = insert(db, 7, "ann", "hello")
    row_id = ins.new["id"] if ins.new else 0
    assert_js_change(c, c.change("all", 0, "INSERT", row_id), "INSERT", ins)

    upd = update(db, row_id, body="edited")
    assert_js_change(c, c.change("all", 0, "UPDATE", row_id), "UPDATE", upd)

    dele = delete(db, row_id)
    assert_js_change(c, c.change("all", 0, "DELETE", row_id), "DELETE", dele)

    extra = c.changes_of("all", row_id)
    assert len(extra) == 3, f"expected exactly 3 callbacks for row {row_id}\n{c.report()}"


@pytest.mark.parametrize("vsn", VSNS)
def test_filter_room_5(realtime_server: RealtimeServer, spawn: Any, vsn: str) -> None:
    """``room_id=eq.5`` gets room 5's INSERT/UPDATE/DELETE and nothing of room 6.

    The unfiltered channel on the same socket is the witness: once it has seen room 6's change,
    which the server wrote first, a leak to the filtered channel would already be visible.
    """
    db = realtime_server.dsn
    c = spawn(
        [
            {"name": "room5", "bindings": [binding("*", "room_id=eq.5")]},
            {"name": "witness", "bindings": [binding("*")]},
        ],
        vsn=vsn,
    )
    c.subscribed("room5")
    c.subscribed("witness")

    other = insert(db, 6, "bob", "not for room 5")
    other_id = other.new["id"] if other.new else 0
    mine = insert(db, 5, "ann", "for room 5")
    mine_id = mine.new["id"] if mine.new else 0
    assert_js_change(c, c.change("room5", 0, "INSERT", mine_id), "INSERT", mine)
    c.change("witness", 0, "INSERT", other_id)

    upd_other = update(db, other_id, body="still not room 5")
    upd = update(db, mine_id, body="room 5 edited")
    assert_js_change(c, c.change("room5", 0, "UPDATE", mine_id), "UPDATE", upd)
    c.change("witness", 0, "UPDATE", other_id)
    del upd_other

    delete(db, other_id)
    dele = delete(db, mine_id)
    assert_js_change(c, c.change("room5", 0, "DELETE", mine_id), "DELETE", dele)
    c.change("witness", 0, "DELETE", other_id)
    c.change("witness", 0, "DELETE", mine_id)  # the witness saw everything after room 6's delete

    leaked = c.changes_of("room5", other_id)
    assert not leaked, f"room 6 changes reached the room_id=eq.5 channel: {leaked}\n{c.report()}"


@pytest.mark.parametrize("vsn", VSNS)
def test_two_bindings_on_one_channel(realtime_server: RealtimeServer, spawn: Any, vsn: str) -> None:
    """Binding 0: INSERT with ``room_id=eq.5``; binding 1: every event, unfiltered."""
    db = realtime_server.dsn
    c = spawn(
        [{"name": "two", "bindings": [binding("INSERT", "room_id=eq.5"), binding("*")]}], vsn=vsn
    )
    c.subscribed("two")

    a = insert(db, 5, "ann", "both bindings")
    a_id = a.new["id"] if a.new else 0
    assert_js_change(c, c.change("two", 0, "INSERT", a_id), "INSERT", a)
    assert_js_change(c, c.change("two", 1, "INSERT", a_id), "INSERT", a)

    b = insert(db, 6, "bob", "only the unfiltered binding")
    b_id = b.new["id"] if b.new else 0
    assert_js_change(c, c.change("two", 1, "INSERT", b_id), "INSERT", b)

    u = update(db, a_id, body="an UPDATE: only binding 1")
    assert_js_change(c, c.change("two", 1, "UPDATE", a_id), "UPDATE", u)

    last = insert(db, 5, "ann", "sync point")
    last_id = last.new["id"] if last.new else 0
    c.change("two", 0, "INSERT", last_id)
    c.change("two", 1, "INSERT", last_id)

    wrong = c.changes_of("two", b_id, binding=0) + [
        e for e in c.changes_of("two", a_id, binding=0) if e["payload"]["eventType"] != "INSERT"
    ]
    assert not wrong, f"binding 0 (INSERT room_id=eq.5) fired for: {wrong}\n{c.report()}"
    dupes = [len(c.changes_of("two", i, binding=n)) for i in (a_id, last_id) for n in (0,)]
    assert dupes == [1, 1], f"binding 0 fired {dupes} times for rows {a_id}, {last_id}"
    assert len(c.changes_of("two", a_id, binding=1)) == 2, c.report()


@pytest.mark.parametrize("vsn", VSNS)
def test_unsubscribe_stops_events(realtime_server: RealtimeServer, spawn: Any, vsn: str) -> None:
    db = realtime_server.dsn
    c = spawn(
        [
            {"name": "leaving", "bindings": [binding("*")]},
            {"name": "staying", "bindings": [binding("*")]},
        ],
        vsn=vsn,
    )
    c.subscribed("leaving")
    c.subscribed("staying")
    before = insert(db, 1, "ann", "before")
    before_id = before.new["id"] if before.new else 0
    c.change("leaving", 0, "INSERT", before_id)

    c.command("unsubscribe leaving")
    reply = c.wait(
        lambda e: e.get("kind") == "reply" and e.get("command") == "unsubscribe",
        "the unsubscribe() result",
    )
    assert reply["result"] == "ok", f"unsubscribe() returned {reply['result']!r}\n{c.report()}"
    closed = c.status("leaving", "CLOSED")
    assert closed["status"] == "CLOSED", c.report()
    # The server acknowledged the phx_leave (the reply to the leave push, by ref).
    leave_refs = [
        _ref(e["data"], c.vsn)
        for e in c.seen(lambda e: e.get("kind") == "frame" and e["dir"] == "out")
        if _event(e["data"], c.vsn) == "phx_leave"
    ]
    assert leave_refs, f"the client sent no phx_leave\n{c.report()}"
    c.wait(
        lambda e: (
            e.get("kind") == "frame"
            and e["dir"] == "in"
            and _event(e["data"], c.vsn) == "phx_reply"
            and _ref(e["data"], c.vsn) == leave_refs[0]
        ),
        "the server's phx_reply to phx_leave",
    )

    after = insert(db, 1, "ann", "after")
    after_id = after.new["id"] if after.new else 0
    c.change("staying", 0, "INSERT", after_id)  # same socket, sent after any leak would be
    leaked = c.changes_of("leaving", after_id)
    assert not leaked, f"events after unsubscribe: {leaked}\n{c.report()}"
    frames = [
        e
        for e in c.seen(lambda e: e.get("kind") == "frame" and e["dir"] == "in")
        if _topic(e["data"], c.vsn) == "realtime:leaving"
        and _event(e["data"], c.vsn) == "postgres_changes"
        and _payload(e["data"], c.vsn)["data"].get("record", {}).get("id") == after_id
    ]
    assert not frames, f"server still sent changes to the left channel: {frames}\n{c.report()}"


def _decode(data: Any, vsn: str) -> tuple[Any, Any, Any, Any]:
    """(topic, event, ref, payload) of a raw text frame."""
    if not isinstance(data, str):
        return None, None, None, None
    msg = json.loads(data)
    if vsn == "2.0.0":
        return msg[2], msg[3], msg[1], msg[4]
    return msg.get("topic"), msg.get("event"), msg.get("ref"), msg.get("payload")


def _topic(data: Any, vsn: str) -> Any:
    return _decode(data, vsn)[0]


def _event(data: Any, vsn: str) -> Any:
    return _decode(data, vsn)[1]


def _ref(data: Any, vsn: str) -> Any:
    return _decode(data, vsn)[2]


def _payload(data: Any, vsn: str) -> Any:
    return _decode(data, vsn)[3]


@pytest.mark.parametrize("vsn", VSNS)
def test_expired_token_is_refused(realtime_server: RealtimeServer, spawn: Any, vsn: str) -> None:
    """An expired apikey: the upgrade is refused (HTTP 401), the channel reports CHANNEL_ERROR."""
    c = spawn(
        [{"name": "x", "bindings": [binding("*")]}], vsn=vsn, token=realtime_server.expired_token()
    )
    err = c.wait(
        lambda e: e.get("kind") == "socket" and e["event"] in ("error", "close", "open"),
        "the socket's first event",
    )
    assert err["event"] == "error", f"the socket opened with an expired token\n{c.report()}"
    assert err["message"] == "Unexpected server response: 401", (
        f"expected the upgrade to be refused with 401, got {err['message']!r}\n{c.report()}"
    )
    status = c.status("x", "CHANNEL_ERROR")
    assert status["status"] == "CHANNEL_ERROR", c.report()
    assert not c.seen(lambda e: e.get("kind") == "socket" and e["event"] == "open"), c.report()


@pytest.mark.parametrize("vsn", VSNS)
def test_expired_access_token_join_is_refused(
    realtime_server: RealtimeServer, spawn: Any, vsn: str
) -> None:
    """A valid apikey but an expired ``access_token`` in phx_join: the join is refused."""
    c = spawn(
        [{"name": "x", "bindings": [binding("*")]}],
        vsn=vsn,
        access_token=realtime_server.expired_token(),
    )
    status = c.status("x", "CHANNEL_ERROR")
    assert status["status"] == "CHANNEL_ERROR", c.report()
    assert str(status["error"]).startswith("InvalidJWTToken: Token has expired"), (
        f"join error reason {status['error']!r}\n{c.report()}"
    )


@pytest.mark.parametrize("vsn", VSNS)
def test_system_message_after_subscribe(
    realtime_server: RealtimeServer, spawn: Any, vsn: str
) -> None:
    """§9 step 4: ``system`` "Subscribed to PostgreSQL" after the join (on('system') listener)."""
    c = spawn([{"name": "sys", "bindings": [binding("*", "room_id=eq.5")]}], vsn=vsn)
    c.subscribed("sys")
    event = c.wait(
        lambda e: e.get("kind") == "system" and e["channel"] == "sys", "a system message"
    )
    assert event["payload"] == {
        "channel": "sys",
        "extension": "postgres_changes",
        "status": "ok",
        "message": "Subscribed to PostgreSQL",
    }, c.report()


def test_supabase_js_client(realtime_server: RealtimeServer, spawn: Any) -> None:
    """``createClient(url, key).channel(...).on('postgres_changes', ...)``: the usual app code."""
    db = realtime_server.dsn
    c = spawn([{"name": "app", "bindings": [binding("INSERT", "room_id=eq.5")]}], lib="supabase-js")
    c.subscribed("app")
    ins = insert(db, 5, "ann", "from supabase-js")
    row_id = ins.new["id"] if ins.new else 0
    assert_js_change(c, c.change("app", 0, "INSERT", row_id), "INSERT", ins)


@pytest.mark.slow
def test_heartbeats_keep_socket_alive(realtime_server: RealtimeServer, spawn: Any) -> None:
    """65 s with only heartbeats (every 25 s): the server's 60 s idle timeout must not fire."""
    db = realtime_server.dsn
    c = spawn([{"name": "idle", "bindings": [binding("*")]}])
    c.subscribed("idle")
    c.assert_none_within(
        lambda e: (
            (e.get("kind") == "socket" and e["event"] in ("close", "error"))
            or (e.get("kind") == "heartbeat" and e["status"] not in ("sent", "ok"))
            or (e.get("kind") == "status" and e["status"] != "SUBSCRIBED")
        ),
        65,
        "the connection broke during 65 s of heartbeats only",
    )
    oks = c.seen(lambda e: e.get("kind") == "heartbeat" and e["status"] == "ok")
    assert len(oks) >= 2, f"expected >= 2 heartbeat replies in 65 s, got {len(oks)}\n{c.report()}"
    ins = insert(db, 1, "ann", "still there")
    row_id = ins.new["id"] if ins.new else 0
    assert_js_change(c, c.change("idle", 0, "INSERT", row_id), "INSERT", ins)
    opens = c.seen(lambda e: e.get("kind") == "socket" and e["event"] == "open")
    assert len(opens) == 1, f"the client reconnected ({len(opens)} opens)\n{c.report()}"
