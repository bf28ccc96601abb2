"""Tests for broadcaster.phoenix: golden frames from the protocol notes (§9), binary layouts,
and a fuzzed decoder that only ever raises ProtocolError."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import broadcaster.phoenix as phoenix
from broadcaster.errors import BroadcastError, ProtocolError
from broadcaster.phoenix import (
    BinaryKind,
    Event,
    Message,
    PayloadEncoding,
    ReplyStatus,
    Vsn,
    broadcast,
    change_data,
    channel_name,
    encode,
    encode_broadcast_binary,
    encode_change_data,
    encode_postgres_changes,
    format_commit_timestamp,
    parse_binary,
    parse_frame,
    parse_text,
    phx_close,
    phx_error,
    postgres_changes,
    presence_state,
    push,
    reply,
    reply_error,
    reply_ok,
    system,
)
from cdc.changes import Change, Column, Operation

V1, V2 = Vsn.V1, Vsn.V2

JOIN_PAYLOAD = {
    "config": {
        "broadcast": {"ack": False, "self": False},
        "presence": {"key": "", "enabled": False},
        "postgres_changes": [
            {
                "event": "INSERT",
                "schema": "public",
                "table": "messages",
                "filter": "channel_id=eq.5",
            }
        ],
        "private": False,
    },
    "access_token": "<jwt>",
}
COLUMNS = (Column("id", "int8"), Column("channel_id", "int4"), Column("body", "text"))
T0 = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


def make_change(
    operation: Operation = Operation.INSERT,
    record: dict[str, Any] | None = None,
    old_record: dict[str, Any] | None = None,
) -> Change:
    return Change(
        position=1,
        schema="public",
        table="messages",
        operation=operation,
        commit_timestamp=T0,
        record=record,
        old_record=old_record,
        columns=COLUMNS,
    )


def test_exports() -> None:
    assert sorted(phoenix.__all__) == sorted(
        [
            "PHOENIX_TOPIC",
            "TOPIC_PREFIX",
            "BinaryKind",
            "Event",
            "Message",
            "PayloadEncoding",
            "ReplyStatus",
            "Vsn",
            "broadcast",
            "change_data",
            "channel_name",
            "encode",
            "encode_broadcast_binary",
            "encode_change_data",
            "encode_postgres_changes",
            "format_commit_timestamp",
            "parse_binary",
            "parse_frame",
            "parse_text",
            "phx_close",
            "phx_error",
            "postgres_changes",
            "presence_state",
            "push",
            "reply",
            "reply_error",
            "reply_ok",
            "system",
        ]
    )
    assert issubclass(ProtocolError, BroadcastError)


# --- vsn ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "vsn"),
    [(None, V1), ("1.0.0", V1), ("1.0.7", V1), ("2.0.0", V2), ("2.0.3", V2)],
)
def test_vsn_from_query(query: str | None, vsn: Vsn) -> None:
    assert Vsn.from_query(query) is vsn


@pytest.mark.parametrize("query", ["", "3.0.0", "1.1.0", "2", "2.0", "2.0.0-rc", "x.y.z", "².0.0"])
def test_vsn_from_query_refuses(query: str) -> None:
    with pytest.raises(ProtocolError, match="unsupported vsn"):
        Vsn.from_query(query)


# --- parsing text ---------------------------------------------------------------------------


def test_parse_v2_join_golden() -> None:
    text = '["1","1","realtime:x","phx_join",' + json.dumps(JOIN_PAYLOAD) + "]"
    assert parse_text(V2, text) == Message("1", "1", "realtime:x", "phx_join", JOIN_PAYLOAD)
    assert parse_text(V2, text.encode()) == parse_text(V2, text)


def test_parse_v2_heartbeat_and_extra_items() -> None:
    assert parse_text(V2, '[null,"2","phoenix","heartbeat",{}]') == Message(
        None, "2", "phoenix", "heartbeat", {}
    )
    # Supabase matches [join_ref, ref, topic, event, payload | _]
    assert parse_text(V2, '[null,"2","phoenix","heartbeat",{},"extra"]').ref == "2"


def test_parse_v1_python_client() -> None:
    # The Python client dumps its pydantic Message: every key, heartbeat ref null.
    text = '{"event":"heartbeat","payload":{},"topic":"phoenix","ref":null,"join_ref":null}'
    assert parse_text(V1, text) == Message(None, None, "phoenix", "heartbeat", {})
    join = {"topic": "realtime:x", "event": "phx_join", "payload": {}, "ref": "1", "join_ref": "1"}
    assert parse_text(V1, json.dumps(join)) == Message("1", "1", "realtime:x", "phx_join", {})


def test_parse_v1_missing_refs_are_null() -> None:
    message = parse_text(V1, '{"topic":"realtime:x","event":"phx_leave","payload":{}}')
    assert message == Message(None, None, "realtime:x", "phx_leave", {})


@pytest.mark.parametrize(
    ("vsn", "text", "error"),
    [
        (V1, "", "not valid JSON"),
        (V1, "{", "not valid JSON"),
        (V2, b"\xff", "not valid JSON"),
        (V2, '"\ud800"', "not valid JSON"),
        (V1, "[]", "expected a JSON object"),
        (V1, '{"event":"e","payload":{}}', "missing key 'topic'"),
        (V1, '{"topic":"t","payload":{}}', "missing key 'event'"),
        (V1, '{"topic":"t","event":"e"}', "missing key 'payload'"),
        (V2, "{}", "expected a JSON array"),
        (V2, '[null,null,"t","e"]', "expected a JSON array"),
        (V2, '[1,null,"t","e",{}]', "join_ref must be"),
        (V2, '[null,1,"t","e",{}]', "ref must be"),
        (V2, '[null,null,1,"e",{}]', "topic must be"),
        (V2, '[null,null,"t",null,{}]', "event must be"),
        (V2, '[null,null,"t","e",[]]', "payload must be"),
        (V1, '{"topic":"t","event":"e","payload":"x","ref":null}', "payload must be"),
    ],
)
def test_parse_text_errors(vsn: Vsn, text: str | bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_text(vsn, text)


# --- binary ---------------------------------------------------------------------------------


def kind3(
    join_ref: bytes = b"6",
    ref: bytes = b"7",
    topic: bytes = b"realtime:x",
    event: bytes = b"cursor",
    meta: bytes = b"",
    encoding: int = 1,
    payload: bytes = b'{"x":1}',
) -> bytes:
    header = bytes((3, len(join_ref), len(ref), len(topic), len(event), len(meta), encoding))
    return header + join_ref + ref + topic + event + meta + payload


def test_parse_binary_observed_frame() -> None:
    # realtime-js send({type:'broadcast', event:'cursor', payload:{x:1}}) with vsn 2.0.0
    frame = bytes.fromhex("03 01 01 0a 06 00 01") + b'67realtime:xcursor{"x":1}'
    assert frame == kind3()
    assert parse_binary(frame) == Message(
        "6",
        "7",
        "realtime:x",
        "broadcast",
        {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
    )
    assert parse_binary(bytearray(frame)) == parse_binary(memoryview(frame))


def test_parse_binary_raw_payload_meta_and_empty_refs() -> None:
    message = parse_binary(
        kind3(join_ref=b"", ref=b"", meta=b'{"persist":true}', encoding=0, payload=b"\x00\xff")
    )
    assert message.join_ref is None and message.ref is None
    assert message.payload == {
        "type": "broadcast",
        "event": "cursor",
        "payload": b"\x00\xff",
        "meta": {"persist": True},
    }


def test_parse_binary_utf8_topic() -> None:
    topic = "realtime:café"
    message = parse_binary(kind3(topic=topic.encode()))
    assert message.topic == topic


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"", "empty binary frame"),
        (b"\x00\x01", "unsupported binary frame kind 0"),
        (b"\x04", "unsupported binary frame kind 4"),
        (b"\x03\x01\x01\x01\x01\x00", "header is truncated"),
        (b"\x03\x05\x00\x00\x00\x00\x01ab", "shorter than its header"),
        (kind3(topic=b"\xff"), "must be UTF-8"),
        (kind3(encoding=2), "unknown payload encoding 2"),
        (kind3(payload=b""), "payload is not valid JSON"),
        (kind3(payload=b"{"), "payload is not valid JSON"),
        (kind3(meta=b"{"), "metadata is not valid JSON"),
        (kind3(meta=b"[1]"), "metadata must be a JSON object"),
    ],
)
def test_parse_binary_errors(frame: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_binary(frame)


def test_parse_frame_dispatches_on_frame_type() -> None:
    assert parse_frame(V2, '[null,"1","phoenix","heartbeat",{}]').event == "heartbeat"
    assert parse_frame(V1, '{"topic":"phoenix","event":"heartbeat","payload":{}}').ref is None
    assert parse_frame(V2, kind3()).event == "broadcast"
    with pytest.raises(ProtocolError, match="binary frames need vsn 2.0.0"):
        parse_frame(V1, kind3())


# --- fuzz: only ProtocolError ---------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(), inner, max_size=6),
    max_leaves=20,
)
REFS = st.none() | st.text(max_size=4) | st.integers() | st.booleans()


def _expect_message_or_protocol_error(parse: Any, *args: Any) -> None:
    try:
        message = parse(*args)
    except ProtocolError:
        return
    assert isinstance(message, Message)
    assert isinstance(message.topic, str) and isinstance(message.event, str)
    assert isinstance(message.payload, dict)
    assert message.ref is None or isinstance(message.ref, str)
    assert message.join_ref is None or isinstance(message.join_ref, str)


@given(vsn=st.sampled_from(Vsn), data=st.text() | st.binary())
def test_fuzz_parse_text_any_input(vsn: Vsn, data: str | bytes) -> None:
    _expect_message_or_protocol_error(parse_text, vsn, data)


@given(
    vsn=st.sampled_from(Vsn),
    items=st.lists(REFS | JSON_VALUES, max_size=7),
    as_object=st.booleans(),
)
def test_fuzz_parse_text_json_shapes(vsn: Vsn, items: list[Any], as_object: bool) -> None:
    keys = ["join_ref", "ref", "topic", "event", "payload", "other", "more"]
    value: Any = dict(zip(keys, items, strict=False)) if as_object else items
    _expect_message_or_protocol_error(parse_text, vsn, json.dumps(value))


@given(data=st.binary())
def test_fuzz_parse_binary_any_input(data: bytes) -> None:
    _expect_message_or_protocol_error(parse_binary, data)


@given(
    header=st.lists(st.integers(0, 12), min_size=5, max_size=5),
    encoding=st.integers(0, 3),
    body=st.binary(max_size=40),
)
def test_fuzz_parse_binary_kind3(header: list[int], encoding: int, body: bytes) -> None:
    _expect_message_or_protocol_error(parse_binary, bytes((3, *header, encoding)) + body)


@given(vsn=st.sampled_from(Vsn), data=st.text() | st.binary())
def test_fuzz_parse_frame(vsn: Vsn, data: str | bytes) -> None:
    _expect_message_or_protocol_error(parse_frame, vsn, data)


# --- encoding: golden frames of §9 -----------------------------------------------------------


def test_encode_v2_golden_frames() -> None:
    response = {"postgres_changes": [{**JOIN_PAYLOAD["config"]["postgres_changes"][0], "id": 1000}]}  # type: ignore[index]
    assert encode(V2, reply_ok("1", "1", "realtime:x", response)) == (
        '["1","1","realtime:x","phx_reply",{"status":"ok","response":{"postgres_changes":'
        '[{"event":"INSERT","schema":"public","table":"messages","filter":"channel_id=eq.5",'
        '"id":1000}]}}]'
    )
    subscribed = system(
        "realtime:x", "postgres_changes", ReplyStatus.OK, "Subscribed to PostgreSQL"
    )
    assert encode(V2, subscribed) == (
        '[null,null,"realtime:x","system",{"channel":"x","extension":"postgres_changes",'
        '"message":"Subscribed to PostgreSQL","status":"ok"}]'
    )
    assert (
        encode(V2, reply_ok(None, "2", "phoenix"))
        == '[null,"2","phoenix","phx_reply",{"status":"ok","response":{}}]'
    )
    assert (
        encode(V2, reply_ok("1", "3", "realtime:x"))
        == '["1","3","realtime:x","phx_reply",{"status":"ok","response":{}}]'
    )
    assert encode(V2, phx_close("realtime:x", "1")) == '["1","1","realtime:x","phx_close",{}]'
    change = make_change(record={"id": 1, "channel_id": 5, "body": "hi"})
    assert encode(V2, postgres_changes("realtime:x", [1000], change)) == (
        '[null,null,"realtime:x","postgres_changes",{"ids":[1000],"data":{"schema":"public",'
        '"table":"messages","commit_timestamp":"2026-01-01T00:00:00.123Z","type":"INSERT",'
        '"columns":[{"name":"id","type":"int8"},{"name":"channel_id","type":"int4"},'
        '{"name":"body","type":"text"}],"record":{"id":1,"channel_id":5,"body":"hi"},'
        '"errors":null}}]'
    )


def test_encode_v1_frames_have_no_join_ref() -> None:
    assert encode(V1, reply_ok("1", "1", "realtime:x")) == (
        '{"topic":"realtime:x","event":"phx_reply","payload":{"status":"ok","response":{}},'
        '"ref":"1"}'
    )
    # Python heartbeats have ref null, and the reply echoes it
    assert encode(V1, reply_ok(None, None, "phoenix")) == (
        '{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":null}'
    )
    # pushes carry the key "ref": null (the Python client's models require it)
    frame = json.loads(encode(V1, system("realtime:x", "system", ReplyStatus.ERROR, "boom")))
    assert frame == {
        "topic": "realtime:x",
        "event": "system",
        "payload": {"channel": "x", "extension": "system", "message": "boom", "status": "error"},
        "ref": None,
    }
    assert json.loads(encode(V1, phx_close("realtime:x", "1")))["ref"] == "1"


def test_encode_keeps_big_integers_exact() -> None:
    big = 123456789012345678901234567890
    text = encode(V2, push("realtime:x", "e", {"n": big, "s": "é"}))
    assert text == '[null,null,"realtime:x","e",{"n":123456789012345678901234567890,"s":"é"}]'


def test_encode_refuses_non_json() -> None:
    with pytest.raises(TypeError):
        encode(V2, push("realtime:x", "e", {"b": b"raw"}))
    with pytest.raises(ValueError):
        encode(V2, push("realtime:x", "e", {"n": 10**30, "x": float("nan")}))


def test_reply_builders() -> None:
    assert reply("1", "2", "realtime:x", ReplyStatus.ERROR) == Message(
        "1", "2", "realtime:x", "phx_reply", {"status": "error", "response": {}}
    )
    assert reply_error(None, "5", "realtime:y", "unmatched topic").payload == {
        "status": "error",
        "response": {"reason": "unmatched topic"},
    }
    assert reply_error("1", "5", "realtime:y").payload["response"] == {}
    assert phx_error("realtime:x", "4") == Message("4", "4", "realtime:x", "phx_error", {})
    assert presence_state("realtime:x", {}) == Message(
        None, None, "realtime:x", "presence_state", {}
    )
    assert channel_name("realtime:room:1") == "room:1"
    assert channel_name("phoenix") == "phoenix"


def test_broadcast_push() -> None:
    assert encode(V2, broadcast("realtime:x", "cursor", {"x": 2})) == (
        '[null,null,"realtime:x","broadcast",{"type":"broadcast","event":"cursor",'
        '"payload":{"x":2}}]'
    )
    replayed = broadcast("realtime:x", "m", {}, {"replayed": True, "id": "a"})
    assert replayed.payload["meta"] == {"replayed": True, "id": "a"}


# --- kind 4 ---------------------------------------------------------------------------------


def decode_kind4(frame: bytes) -> dict[str, Any]:
    """What realtime-js does with a kind-4 frame (serializer.ts _decodeUserBroadcast)."""
    assert frame[0] == 4
    topic_size, event_size, meta_size, encoding = frame[1:5]
    offset = 5
    topic = frame[offset : offset + topic_size].decode()
    offset += topic_size
    event = frame[offset : offset + event_size].decode()
    offset += event_size
    meta = frame[offset : offset + meta_size].decode()
    offset += meta_size
    rest = frame[offset:]
    data: dict[str, Any] = {
        "type": "broadcast",
        "event": event,
        "payload": json.loads(rest) if encoding == 1 else rest,
    }
    if meta_size:
        data["meta"] = json.loads(meta)
    return {"topic": topic, "event": "broadcast", "payload": data}


def test_encode_broadcast_binary_json_layout() -> None:
    frame = encode_broadcast_binary("realtime:x", "cursor", {"x": 1})
    assert frame == bytes((4, 10, 6, 0, 1)) + b'realtime:xcursor{"x":1}'
    assert int(BinaryKind.USER_BROADCAST) == 4 and int(PayloadEncoding.JSON) == 1
    assert decode_kind4(frame) == {
        "topic": "realtime:x",
        "event": "broadcast",
        "payload": {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
    }


def test_encode_broadcast_binary_raw_payload_and_meta() -> None:
    frame = encode_broadcast_binary("realtime:é", "ev", b"\x00\x01", {"replayed": True})
    meta = b'{"replayed":true}'
    topic = "realtime:é".encode()
    assert frame == bytes((4, len(topic), 2, len(meta), 0)) + topic + b"ev" + meta + b"\x00\x01"
    assert decode_kind4(frame)["payload"]["meta"] == {"replayed": True}
    assert encode_broadcast_binary("t", "e", bytearray(b"z"), {})[3] == 0  # empty meta: none


def test_encode_broadcast_binary_limits() -> None:
    encode_broadcast_binary("t" * 255, "e" * 255, None)
    with pytest.raises(ValueError, match="topic is 256 bytes"):
        encode_broadcast_binary("t" * 256, "e", None)
    with pytest.raises(ValueError, match="event is 256 bytes"):
        encode_broadcast_binary("t", "é" * 128, None)
    with pytest.raises(ValueError, match="meta is"):
        encode_broadcast_binary("t", "e", None, {"k": "v" * 300})


# --- postgres_changes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (T0, "2026-01-01T00:00:00.123Z"),
        (datetime(2026, 1, 1, 12, 0, 0, 999999, tzinfo=UTC), "2026-01-01T12:00:00.999Z"),
        (
            datetime(2026, 1, 1, 2, 30, tzinfo=timezone(timedelta(hours=2, minutes=30))),
            "2026-01-01T00:00:00.000Z",
        ),
        (datetime(2026, 1, 1, 0, 0, 1, 1000), "2026-01-01T00:00:01.001Z"),
        (datetime(999, 3, 4, 5, 6, 7, tzinfo=UTC), "0999-03-04T05:06:07.000Z"),
    ],
)
def test_format_commit_timestamp(timestamp: datetime, text: str) -> None:
    assert format_commit_timestamp(timestamp) == text


def test_change_data_by_operation() -> None:
    row, old = {"id": 1, "body": "new"}, {"id": 1}
    insert = change_data(make_change(Operation.INSERT, row))
    assert insert["record"] == row and "old_record" not in insert
    update = change_data(make_change(Operation.UPDATE, row, old))
    assert update["record"] == row and update["old_record"] == old
    assert change_data(make_change(Operation.UPDATE, row, None))["old_record"] == {}
    delete = change_data(make_change(Operation.DELETE, None, old))
    assert delete["old_record"] == old and "record" not in delete
    assert change_data(make_change(Operation.DELETE))["old_record"] == {}
    assert list(update) == [
        "schema",
        "table",
        "commit_timestamp",
        "type",
        "columns",
        "record",
        "old_record",
        "errors",
    ]
    assert update["errors"] is None and update["type"] == "UPDATE"
    assert update["columns"][0] == {"name": "id", "type": "int8"}


@pytest.mark.parametrize("vsn", list(Vsn))
@pytest.mark.parametrize("operation", list(Operation))
@pytest.mark.parametrize("ids", [[], [7], [1, 2, 2147483647]])
def test_fast_path_equals_encode(vsn: Vsn, operation: Operation, ids: list[int]) -> None:
    change = make_change(operation, {"id": 10**25, "body": 'q"\u2028'}, {"id": 1})
    data = encode_change_data(change)
    fast = encode_postgres_changes(vsn, 'realtime:"x"', ids, data)
    assert fast == encode(vsn, postgres_changes('realtime:"x"', ids, change)).encode()
    frame = json.loads(fast)
    payload = frame["payload"] if vsn is V1 else frame[4]
    assert payload["ids"] == ids
    if vsn is V1:
        assert frame["ref"] is None and frame["event"] == Event.POSTGRES_CHANGES
