"""Tests for broadcaster.channel: messages in, frames and effects out, no event loop."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import broadcaster.channel as channel_module
from broadcaster.auth import Claims
from broadcaster.channel import (
    PRESENCE_PAYLOAD_NOT_A_MAP,
    TOO_MANY_CHANNELS,
    TOO_MANY_JOINS,
    TOPIC_NAME_REQUIRED,
    UNMATCHED_TOPIC,
    Action,
    Broadcast,
    ChannelState,
    Disconnect,
    PresenceSync,
    PresenceTrack,
    PresenceUntrack,
    Reauthorize,
    SocketProtocol,
    Subscribe,
    Unsubscribe,
)
from broadcaster.payloads import JoinPayload
from broadcaster.phoenix import (
    Message,
    ReplyStatus,
    Vsn,
    encode,
    parse_binary,
    parse_text,
    phx_close,
    reply_error,
    reply_ok,
    system,
)

BINDING = {"event": "INSERT", "schema": "public", "table": "messages", "filter": "channel_id=eq.5"}
JS_JOIN_PAYLOAD: dict[str, Any] = {
    "config": {
        "broadcast": {"ack": False, "self": False},
        "presence": {"key": "", "enabled": False},
        "postgres_changes": [BINDING],
        "private": False,
    },
    "access_token": "user.jwt",
}
EXP = 2_000_000_000.0


def claims(exp: float = EXP) -> Claims:
    return Claims("authenticated", exp, "user-1", MappingProxyType({"role": "authenticated"}))


def join_message(
    topic: str = "realtime:x",
    join_ref: str | None = "1",
    ref: str | None = "1",
    payload: dict[str, Any] | None = None,
) -> Message:
    return Message(join_ref, ref, topic, "phx_join", {} if payload is None else payload)


def keys() -> Any:
    counter = iter(range(1000))
    return lambda: f"key-{next(counter)}"


def new_protocol(**kwargs: Any) -> SocketProtocol:
    return SocketProtocol(presence_key_factory=keys(), **kwargs)


def subscribe(protocol: SocketProtocol, message: Message, now: float = 0.0) -> Subscribe:
    actions = protocol.receive(message, now)
    request = actions[-1]
    assert isinstance(request, Subscribe)
    assert not any(
        isinstance(a, Message) and a.topic == message.topic and a.ref == message.ref
        for a in actions
    )  # no join reply before the shell confirms
    return request


def joined(
    protocol: SocketProtocol, topic: str = "realtime:x", payload: dict[str, Any] | None = None
) -> Subscribe:
    request = subscribe(protocol, join_message(topic, payload=payload))
    protocol.joined(request, claims())
    return request


def state_of(protocol: SocketProtocol, topic: str) -> ChannelState:
    return protocol.channels[topic].state


def test_exports() -> None:
    assert sorted(channel_module.__all__) == sorted(
        [
            "PRESENCE_PAYLOAD_NOT_A_MAP",
            "SUBSCRIBED_TO_POSTGRES",
            "TOO_MANY_CHANNELS",
            "TOO_MANY_JOINS",
            "TOPIC_NAME_REQUIRED",
            "UNMATCHED_TOPIC",
            "Action",
            "Broadcast",
            "Channel",
            "ChannelState",
            "Disconnect",
            "Effect",
            "PresenceSync",
            "PresenceTrack",
            "PresenceUntrack",
            "Reauthorize",
            "SocketProtocol",
            "Subscribe",
            "Unsubscribe",
        ]
    )


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SocketProtocol(max_channels=0)
    with pytest.raises(ValueError):
        SocketProtocol(max_joins_per_second=0)


# --- heartbeat ------------------------------------------------------------------------------


def test_heartbeat_v2() -> None:
    protocol = new_protocol()
    actions = protocol.receive(parse_text(Vsn.V2, '[null,"2","phoenix","heartbeat",{}]'), 0.0)
    assert [encode(Vsn.V2, a) for a in actions if isinstance(a, Message)] == [
        '[null,"2","phoenix","phx_reply",{"status":"ok","response":{}}]'
    ]


def test_heartbeat_python_null_ref() -> None:
    protocol = new_protocol()
    message = parse_text(Vsn.V1, '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}')
    (reply,) = protocol.receive(message, 0.0)
    assert isinstance(reply, Message)
    assert encode(Vsn.V1, reply) == (
        '{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":null}'
    )


# --- the §9 conformance script ---------------------------------------------------------------


def frames(vsn: Vsn, actions: list[Action]) -> list[str]:
    return [encode(vsn, a) for a in actions if isinstance(a, Message)]


def test_conformance_script_v2() -> None:
    protocol = new_protocol()
    text = '["1","1","realtime:x","phx_join",' + json.dumps(JS_JOIN_PAYLOAD) + "]"
    request = subscribe(protocol, parse_text(Vsn.V2, text))
    assert (request.topic, request.join_ref, request.token) == ("realtime:x", "1", "user.jwt")
    assert [b.params for b in request.bindings] == [BINDING]
    assert state_of(protocol, "realtime:x") is ChannelState.JOINING

    # ... the shell verifies the token and indexes the bindings, then:
    actions = protocol.joined(request, claims())
    binding_id = request.bindings[0].id
    assert frames(Vsn.V2, actions) == [
        '["1","1","realtime:x","phx_reply",{"status":"ok","response":{"postgres_changes":'
        '[{"event":"INSERT","schema":"public","table":"messages","filter":"channel_id=eq.5",'
        f'"id":{binding_id}}}]}}}}]',
        '[null,null,"realtime:x","system",{"channel":"x","extension":"postgres_changes",'
        '"message":"Subscribed to PostgreSQL","status":"ok"}]',
    ]
    assert len(actions) == 2  # presence is off: no PresenceSync
    assert state_of(protocol, "realtime:x") is ChannelState.JOINED
    assert protocol.channels["realtime:x"].claims == claims()

    heartbeat = protocol.receive(parse_text(Vsn.V2, '[null,"2","phoenix","heartbeat",{}]'), 25.0)
    assert frames(Vsn.V2, heartbeat) == [
        '[null,"2","phoenix","phx_reply",{"status":"ok","response":{}}]'
    ]

    leave = protocol.receive(parse_text(Vsn.V2, '["1","3","realtime:x","phx_leave",{}]'), 30.0)
    assert leave[0] == Unsubscribe("realtime:x", request.serial)
    assert frames(Vsn.V2, leave) == [
        '["1","3","realtime:x","phx_reply",{"status":"ok","response":{}}]',
        '["1","1","realtime:x","phx_close",{}]',
    ]
    assert protocol.channels == {}


def test_conformance_script_v1_python() -> None:
    protocol = new_protocol()
    payload = {**JS_JOIN_PAYLOAD, "config": {**JS_JOIN_PAYLOAD["config"], "broadcast": None}}
    request = subscribe(protocol, Message("1", "1", "realtime:x", "phx_join", payload))
    actions = protocol.joined(request, claims())
    reply, subscribed = frames(Vsn.V1, actions)
    assert reply == (
        '{"topic":"realtime:x","event":"phx_reply","payload":{"status":"ok","response":'
        '{"postgres_changes":[{"event":"INSERT","schema":"public","table":"messages",'
        f'"filter":"channel_id=eq.5","id":{request.bindings[0].id}}}]}}}},"ref":"1"}}'
    )
    assert subscribed.endswith(',"ref":null}')
    leave = protocol.receive(Message("1", "2", "realtime:x", "phx_leave", {}), 1.0)
    assert frames(Vsn.V1, leave) == [
        '{"topic":"realtime:x","event":"phx_reply","payload":{"status":"ok","response":{}},'
        '"ref":"2"}',
        '{"topic":"realtime:x","event":"phx_close","payload":{},"ref":"1"}',
    ]


# --- join -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [{}, {"postgres_changes": []}, {"postgres_changes": None}, {"postgres_changes": [None]}],
)
def test_join_without_bindings(config: dict[str, Any]) -> None:
    protocol = new_protocol()
    request = subscribe(protocol, join_message(payload={"config": config}))
    assert request.bindings == () and request.token is None
    assert protocol.joined(request, claims()) == [
        reply_ok("1", "1", "realtime:x", {"postgres_changes": []})
    ]


def test_join_echoes_bindings_in_order_with_ids() -> None:
    protocol = new_protocol()
    entries = [
        {"event": "*", "schema": "public", "table": "a"},
        {"event": "UPDATE", "schema": "public", "table": "b", "filter": "x=in.(1,2)"},
        {"event": "*", "schema": "public", "table": "a"},  # identical: identical id
        {"event": "DELETE", "schema": "public"},
    ]
    request = subscribe(protocol, join_message(payload={"config": {"postgres_changes": entries}}))
    reply = protocol.joined(request, claims())[0]
    assert isinstance(reply, Message)
    echoed = reply.payload["response"]["postgres_changes"]
    assert [{k: v for k, v in e.items() if k != "id"} for e in echoed] == entries
    ids = [e["id"] for e in echoed]
    assert all(type(i) is int for i in ids)
    assert ids[0] == ids[2] and len(set(ids)) == 3


def test_join_with_unusable_bindings_succeeds_then_reports() -> None:
    protocol = new_protocol()
    request = subscribe(protocol, join_message(payload=JS_JOIN_PAYLOAD))
    problem = 'Error parsing `filter` params: ["wrong"]'
    actions = protocol.joined(request, claims(), problem=problem)
    assert actions[1] == system("realtime:x", "postgres_changes", ReplyStatus.ERROR, problem)
    reply = actions[0]
    assert isinstance(reply, Message) and reply.payload["status"] == "ok"
    assert reply.payload["response"]["postgres_changes"][0]["id"] == request.bindings[0].id


def test_join_with_presence_asks_for_presence_state() -> None:
    protocol = new_protocol()
    payload = {"config": {"presence": {"key": "", "enabled": True}}}
    request = subscribe(protocol, join_message(payload=payload))
    assert protocol.channels["realtime:x"].presence_key == "key-0"
    actions = protocol.joined(request, claims())
    assert actions == [
        reply_ok("1", "1", "realtime:x", {"postgres_changes": []}),
        PresenceSync("realtime:x", request.serial),
    ]


def test_join_keeps_a_given_presence_key() -> None:
    protocol = new_protocol()
    subscribe(protocol, join_message(payload={"config": {"presence": {"key": "me"}}}))
    assert protocol.channels["realtime:x"].presence_key == "me"


def test_join_without_join_ref_uses_ref() -> None:
    protocol = new_protocol()
    request = subscribe(protocol, join_message(join_ref=None, ref="9"))
    assert request.join_ref == "9"
    assert protocol.joined(request, claims())[0] == reply_ok(
        "9", "9", "realtime:x", {"postgres_changes": []}
    )


def test_join_refused() -> None:
    protocol = new_protocol()
    request = subscribe(protocol, join_message(ref="4", join_ref="4"))
    reason = "InvalidJWTToken: Token has expired 12 seconds ago"
    assert protocol.join_refused(request, reason) == [reply_error("4", "4", "realtime:x", reason)]
    assert protocol.channels == {}
    assert protocol.join_refused(request, reason) == []  # stale now


def test_confirming_twice_is_a_shell_bug() -> None:
    protocol = new_protocol()
    request = joined(protocol)
    with pytest.raises(ValueError, match="already confirmed"):
        protocol.joined(request, claims())
    assert protocol.join_refused(request, "late") == []
    assert "realtime:x" in protocol.channels


def test_join_to_a_topic_that_is_not_realtime() -> None:
    protocol = new_protocol()
    for topic in ("phoenix", "room", ""):
        assert protocol.receive(join_message(topic), 0.0) == [
            reply_error("1", "1", topic, UNMATCHED_TOPIC)
        ]
    assert protocol.channels == {}


def test_join_without_a_name() -> None:
    protocol = new_protocol()
    assert protocol.receive(join_message("realtime:"), 0.0) == [
        reply_error("1", "1", "realtime:", TOPIC_NAME_REQUIRED)
    ]
    assert protocol.channels == {}


def test_duplicate_join_closes_the_old_one() -> None:
    protocol = new_protocol()
    first = joined(protocol, payload=JS_JOIN_PAYLOAD)
    actions = protocol.receive(join_message(join_ref="5", ref="5"), 1.0)
    assert actions[:2] == [Unsubscribe("realtime:x", first.serial), phx_close("realtime:x", "1")]
    second = actions[2]
    assert isinstance(second, Subscribe) and second.serial != first.serial
    assert protocol.channels["realtime:x"].join_ref == "5"
    assert protocol.joined(second, claims())[0] == reply_ok(
        "5", "5", "realtime:x", {"postgres_changes": []}
    )


def test_duplicate_join_while_joining_makes_the_first_confirmation_stale() -> None:
    protocol = new_protocol()
    first = subscribe(protocol, join_message())
    actions = protocol.receive(join_message(join_ref="1", ref="2"), 0.0)  # the same join_ref
    assert actions[:2] == [Unsubscribe("realtime:x", first.serial), phx_close("realtime:x", "1")]
    second = actions[2]
    assert isinstance(second, Subscribe)
    # The shell finishes the first subscription late: it is undone, nothing is sent.
    assert protocol.joined(first, claims()) == [Unsubscribe("realtime:x", first.serial)]
    assert protocol.channels["realtime:x"].state is ChannelState.JOINING
    assert protocol.joined(second, claims())[0] == reply_ok(
        "1", "2", "realtime:x", {"postgres_changes": []}
    )


def test_leave_while_joining() -> None:
    protocol = new_protocol()
    request = subscribe(protocol, join_message())
    assert protocol.receive(Message("1", "2", "realtime:x", "phx_leave", {}), 0.0) == [
        Unsubscribe("realtime:x", request.serial),
        reply_ok("1", "2", "realtime:x"),
        phx_close("realtime:x", "1"),
    ]
    assert protocol.joined(request, claims()) == [Unsubscribe("realtime:x", request.serial)]
    assert protocol.channels == {}


# --- unmatched topics and unknown events ----------------------------------------------------


@pytest.mark.parametrize(
    "event", ["phx_leave", "broadcast", "presence", "access_token", "heartbeat", "x"]
)
def test_messages_for_an_unjoined_topic(event: str) -> None:
    protocol = new_protocol()
    joined(protocol, "realtime:other")
    message = Message("3", "7", "realtime:x", event, {})
    assert protocol.receive(message, 0.0) == [reply_error("3", "7", "realtime:x", UNMATCHED_TOPIC)]


def test_unknown_socket_level_event() -> None:
    protocol = new_protocol()
    assert protocol.receive(Message(None, "1", "phoenix", "phx_leave", {}), 0.0) == [
        reply_error(None, "1", "phoenix", UNMATCHED_TOPIC)
    ]


@pytest.mark.parametrize("event", ["heartbeat", "phx_reply", "phx_close", "postgres_changes", "?"])
def test_unknown_events_on_a_joined_channel_are_ignored(event: str) -> None:
    protocol = new_protocol()
    joined(protocol)
    assert protocol.receive(Message("1", "2", "realtime:x", event, {"a": 1}), 0.0) == []


def test_replies_carry_the_channel_join_ref() -> None:
    # Supabase's Phoenix fork accepts pushes with a stale or missing join_ref.
    protocol = new_protocol()
    joined(protocol, payload={"config": {"broadcast": {"ack": True}}})
    actions = protocol.receive(Message(None, "8", "realtime:x", "broadcast", {"event": "e"}), 0.0)
    assert actions[-1] == reply_ok("1", "8", "realtime:x")


# --- limits ---------------------------------------------------------------------------------


def test_too_many_channels() -> None:
    protocol = new_protocol(max_channels=2)
    joined(protocol, "realtime:a")
    subscribe(protocol, join_message("realtime:b"))  # joining counts too
    assert protocol.receive(join_message("realtime:c", "3", "3"), 0.0) == [
        reply_error("3", "3", "realtime:c", TOO_MANY_CHANNELS)
    ]
    # re-joining an existing topic replaces it, so it does not count twice
    actions = protocol.receive(join_message("realtime:a", "4", "4"), 0.0)
    assert isinstance(actions[-1], Subscribe)
    protocol.receive(Message("2", "5", "realtime:b", "phx_leave", {}), 0.0)
    assert isinstance(protocol.receive(join_message("realtime:c", "6", "6"), 0.0)[-1], Subscribe)


def test_too_many_joins_per_second() -> None:
    protocol = new_protocol(max_joins_per_second=2)
    subscribe(protocol, join_message("realtime:a"), now=10.0)
    subscribe(protocol, join_message("realtime:b"), now=10.5)
    assert protocol.receive(join_message("realtime:c", "3", "3"), 10.9) == [
        reply_error("3", "3", "realtime:c", TOO_MANY_JOINS),
        Disconnect(TOO_MANY_JOINS),
    ]
    assert "realtime:c" not in protocol.channels
    subscribe(protocol, join_message("realtime:c"), now=11.0)  # the join at 10.0 has aged out
    assert isinstance(protocol.receive(join_message("realtime:d"), 11.6)[-1], Subscribe)


def test_refused_joins_do_not_count_against_the_rate() -> None:
    protocol = new_protocol(max_joins_per_second=1)
    protocol.receive(join_message("realtime:"), 0.0)
    protocol.receive(join_message("nope"), 0.0)
    subscribe(protocol, join_message("realtime:a"), now=0.0)


# --- access_token ---------------------------------------------------------------------------


def access_token(token: object) -> Message:
    return Message("1", "9", "realtime:x", "access_token", {"access_token": token})


def test_access_token_refresh() -> None:
    protocol = new_protocol()
    request = joined(protocol, payload=JS_JOIN_PAYLOAD)
    for ignored in (None, 5, "sb_publishable_abc", "user.jwt"):
        assert protocol.receive(access_token(ignored), 0.0) == []
    (effect,) = protocol.receive(access_token("new.jwt"), 0.0)
    assert effect == Reauthorize("realtime:x", request.serial, "new.jwt")
    assert "new.jwt" not in repr(effect)
    fresh = claims(EXP + 3600)
    assert protocol.reauthorized(effect, fresh) == []
    channel = protocol.channels["realtime:x"]
    assert channel.claims == fresh and channel.access_token == "new.jwt"
    assert protocol.receive(access_token("new.jwt"), 0.0) == []  # now the current token


def test_access_token_while_joining_is_ignored() -> None:
    protocol = new_protocol()
    subscribe(protocol, join_message())
    assert protocol.receive(access_token("new.jwt"), 0.0) == []


def test_reauthorized_after_leave_is_stale() -> None:
    protocol = new_protocol()
    joined(protocol)
    (effect,) = protocol.receive(access_token("new.jwt"), 0.0)
    assert isinstance(effect, Reauthorize)
    protocol.receive(Message("1", "2", "realtime:x", "phx_leave", {}), 0.0)
    joined(protocol)  # a new join on the same topic
    assert protocol.reauthorized(effect, claims(1.0)) == []
    assert protocol.channels["realtime:x"].claims == claims()


# --- broadcast and presence -----------------------------------------------------------------


def test_broadcast_without_ack_gets_no_reply() -> None:
    protocol = new_protocol()
    request = joined(protocol)
    payload = {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
    assert protocol.receive(Message("1", "3", "realtime:x", "broadcast", payload), 0.0) == [
        Broadcast("realtime:x", request.serial, payload, include_self=False)
    ]


def test_binary_broadcast_with_ack_and_self() -> None:
    protocol = new_protocol()
    request = joined(protocol, payload={"config": {"broadcast": {"ack": "true", "self": True}}})
    message = parse_binary(bytes((3, 1, 1, 10, 6, 0, 1)) + b'13realtime:xcursor{"x":1}')
    assert protocol.receive(message, 0.0) == [
        Broadcast("realtime:x", request.serial, message.payload, include_self=True),
        reply_ok("1", "3", "realtime:x"),
    ]


def presence(payload: dict[str, Any], ref: str = "4") -> Message:
    return Message("1", ref, "realtime:x", "presence", payload)


def test_presence_track_untrack() -> None:
    protocol = new_protocol()
    request = joined(protocol, payload={"config": {"presence": {"key": "u1", "enabled": True}}})
    ok = reply_ok("1", "4", "realtime:x")
    track = {"type": "presence", "event": "track", "payload": {"online_at": "now"}}
    assert protocol.receive(presence(track), 0.0) == [
        PresenceTrack("realtime:x", request.serial, "u1", {"online_at": "now"}),
        ok,
    ]
    assert protocol.receive(presence(track), 0.0) == [ok]  # identical: a no-op
    python_track = {"event": "TRACK", "payload": {"online_at": "later"}}  # Python: no "type"
    assert protocol.receive(presence(python_track), 0.0)[0] == PresenceTrack(
        "realtime:x", request.serial, "u1", {"online_at": "later"}
    )
    assert protocol.receive(presence({"type": "presence", "event": "untrack"}), 0.0) == [
        PresenceUntrack("realtime:x", request.serial, "u1"),
        ok,
    ]
    assert protocol.channels["realtime:x"].presence_meta is None


def test_presence_track_turns_presence_on() -> None:
    protocol = new_protocol()
    request = joined(protocol)
    actions = protocol.receive(presence({"event": "track"}), 0.0)
    assert actions == [
        PresenceTrack("realtime:x", request.serial, "key-0", {}),
        reply_ok("1", "4", "realtime:x"),
        PresenceSync("realtime:x", request.serial),
    ]
    assert protocol.channels["realtime:x"].presence_enabled


def test_presence_track_while_joining_waits_for_the_join() -> None:
    protocol = new_protocol()
    request = subscribe(protocol, join_message())
    actions = protocol.receive(presence({"event": "track", "payload": {"a": 1}}), 0.0)
    assert not any(isinstance(a, PresenceSync) for a in actions)
    assert protocol.joined(request, claims())[-1] == PresenceSync("realtime:x", request.serial)


@pytest.mark.parametrize(
    ("payload", "reply"),
    [
        (
            {"event": "track", "payload": "x"},
            reply_error("1", "4", "realtime:x", PRESENCE_PAYLOAD_NOT_A_MAP),
        ),
        (
            {"event": "track", "payload": [1]},
            reply_error("1", "4", "realtime:x", PRESENCE_PAYLOAD_NOT_A_MAP),
        ),
        ({"event": "dance"}, reply_error("1", "4", "realtime:x")),
        ({}, reply_ok("1", "4", "realtime:x")),
        ({"event": 5}, reply_ok("1", "4", "realtime:x")),
    ],
)
def test_presence_odd_payloads(payload: dict[str, Any], reply: Message) -> None:
    protocol = new_protocol()
    joined(protocol)
    assert protocol.receive(presence(payload), 0.0) == [reply]


# --- shutdown and token expiry --------------------------------------------------------------


def test_shutdown() -> None:
    protocol = new_protocol()
    request = joined(protocol)
    actions = protocol.shutdown("realtime:x", "Too many messages per second")
    assert actions == [
        Unsubscribe("realtime:x", request.serial),
        system("realtime:x", "system", ReplyStatus.ERROR, "Too many messages per second"),
        phx_close("realtime:x", "1"),
    ]
    assert frames(Vsn.V2, actions)[0] == (
        '[null,null,"realtime:x","system",{"channel":"x","extension":"system",'
        '"message":"Too many messages per second","status":"error"}]'
    )
    assert protocol.shutdown("realtime:x", "again") == []


def test_token_expiry() -> None:
    protocol = new_protocol()
    assert protocol.next_expiry() is None
    first = subscribe(protocol, join_message("realtime:a"))
    protocol.joined(first, claims(exp=1000.0))
    second = subscribe(protocol, join_message("realtime:b"))
    protocol.joined(second, claims(exp=2000.0))
    subscribe(protocol, join_message("realtime:c"))  # still joining: no claims yet
    assert protocol.next_expiry() == 1000.0
    assert protocol.expire_tokens(999.9) == []
    assert protocol.expire_tokens(1000.5, leeway=1.0) == []
    actions = protocol.expire_tokens(1012.7)
    assert actions == [
        Unsubscribe("realtime:a", first.serial),
        system("realtime:a", "system", ReplyStatus.ERROR, "Token has expired 12 seconds ago"),
        phx_close("realtime:a", "1"),
    ]
    assert set(protocol.channels) == {"realtime:b", "realtime:c"}
    assert protocol.next_expiry() == 2000.0


def test_terminate() -> None:
    protocol = new_protocol()
    a = joined(protocol, "realtime:a")
    b = subscribe(protocol, join_message("realtime:b"))
    assert protocol.terminate() == [
        Unsubscribe("realtime:a", a.serial),
        Unsubscribe("realtime:b", b.serial),
    ]
    assert protocol.channels == {} and protocol.terminate() == []


def test_channel_repr_hides_tokens() -> None:
    protocol = new_protocol()
    request = joined(protocol, payload=JS_JOIN_PAYLOAD)
    assert "user.jwt" not in repr(protocol.channels["realtime:x"]) + repr(request)
    assert (
        protocol.channels["realtime:x"].bindings
        == JoinPayload.model_validate(JS_JOIN_PAYLOAD).config.postgres_changes
    )


# --- model: a simulated shell never leaks a binding ----------------------------------------

TOPICS = st.sampled_from(["realtime:a", "realtime:b", "realtime:c"]) | st.sampled_from(
    ["realtime:", "phoenix", "other"]
)
EVENTS = st.sampled_from(["phx_join", "phx_leave", "access_token", "presence"]) | st.sampled_from(
    ["heartbeat", "broadcast", "x"]
)
PAYLOADS = st.sampled_from(
    [
        {},
        JS_JOIN_PAYLOAD,
        {"access_token": "t2"},
        {"event": "track", "payload": {"a": 1}},
        {"event": "untrack"},
        {"config": {"broadcast": {"ack": True}, "presence": {"enabled": True}}},
    ]
)
STEPS = st.lists(
    st.tuples(
        st.just("msg"), st.sampled_from(["realtime:a", "realtime:b"]), st.just("phx_join"), PAYLOADS
    )
    | st.tuples(st.just("msg"), TOPICS, EVENTS, PAYLOADS)
    | st.tuples(st.just("confirm"), st.integers(0, 5), st.booleans())
    | st.tuples(st.just("expire"), st.floats(0, 3000))
    | st.tuples(st.just("shutdown"), TOPICS),
    max_size=40,
)


@settings(max_examples=300)
@given(steps=STEPS)
def test_model_no_leaked_bindings(steps: list[tuple[Any, ...]]) -> None:
    protocol = new_protocol(max_channels=2, max_joins_per_second=3)
    live: set[int] = set()  # serials with bindings in the "index"
    pending: list[Subscribe] = []
    replies: dict[int, int] = {}
    now = 0.0

    def run(actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Subscribe):
                pending.append(action)
            elif isinstance(action, Unsubscribe):
                live.discard(action.serial)
            elif isinstance(action, Reauthorize):
                run(protocol.reauthorized(action, claims(2500.0)))

    for step in steps:
        now += 0.2
        if step[0] == "msg":
            _, topic, event, payload = step
            run(protocol.receive(Message("1", "1", topic, event, payload), now))
        elif step[0] == "confirm" and pending:
            request = pending.pop(step[1] % len(pending))
            if step[2]:
                live.add(request.serial)  # the shell adds, then confirms
                actions = protocol.joined(request, claims(1000.0 + step[1]))
                if not (len(actions) == 1 and isinstance(actions[0], Unsubscribe)):
                    replies[request.serial] = replies.get(request.serial, 0) + 1
                run(actions)
            else:
                run(protocol.join_refused(request, "InvalidJWTToken: nope"))
        elif step[0] == "expire":
            run(protocol.expire_tokens(step[1]))
        elif step[0] == "shutdown":
            run(protocol.shutdown(step[1], "bye"))
        channels = protocol.channels
        assert len(channels) <= 2
        assert all(topic.startswith("realtime:") and topic != "realtime:" for topic in channels)
        joined_serials = {c.serial for c in channels.values() if c.state is ChannelState.JOINED}
        assert live == joined_serials  # live bindings exactly for joined channels
        assert all(count == 1 for count in replies.values())  # one join reply per join
    run(protocol.terminate())
    assert live == set() and protocol.channels == {}


def test_default_presence_keys_are_unique() -> None:
    protocol = SocketProtocol()
    subscribe(protocol, join_message("realtime:a"))
    subscribe(protocol, join_message("realtime:b"))
    key_a, key_b = (protocol.channels[t].presence_key for t in ("realtime:a", "realtime:b"))
    assert key_a and key_b and key_a != key_b


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
CONFIG_KEYS = st.sampled_from(
    [
        "config",
        "broadcast",
        "presence",
        "postgres_changes",
        "ack",
        "self",
        "key",
        "enabled",
        "event",
        "payload",
        "access_token",
        "user_token",
        "private",
        "table",
        "filter",
    ]
)


@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(["realtime:a", "realtime:b", "phoenix"]),
            st.sampled_from(
                ["phx_join", "phx_leave", "access_token", "broadcast", "presence", "heartbeat"]
            ),
            st.dictionaries(CONFIG_KEYS, JSON | st.dictionaries(CONFIG_KEYS, JSON), max_size=4),
        ),
        max_size=12,
    )
)
def test_fuzz_payloads_never_crash(messages: list[tuple[str, str, dict[str, Any]]]) -> None:
    protocol = new_protocol()

    def run(actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Subscribe):
                run(protocol.joined(action, claims()))
            elif isinstance(action, Message):
                encode(Vsn.V2, action)  # every frame is encodable
                encode(Vsn.V1, action)

    for topic, event, payload in messages:
        run(protocol.receive(Message("1", "2", topic, event, payload), 0.0))
