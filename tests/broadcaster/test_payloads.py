"""Tests for broadcaster.payloads: join payloads validate leniently, as Supabase's do."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import broadcaster.payloads as payloads
from broadcaster.payloads import (
    AccessTokenPayload,
    BroadcastConfig,
    JoinConfig,
    JoinPayload,
    PostgresChange,
    PresenceConfig,
    binding_id,
)

JS_JOIN = {
    "config": {
        "broadcast": {"ack": False, "self": False},
        "presence": {"key": "", "enabled": True},
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
    "access_token": "user.jwt",
    "version": "realtime-js/2.119.1",
}


def test_exports() -> None:
    assert sorted(payloads.__all__) == [
        "AccessTokenPayload",
        "BroadcastConfig",
        "JoinConfig",
        "JoinPayload",
        "PostgresChange",
        "PresenceConfig",
        "binding_id",
    ]


def test_realtime_js_join() -> None:
    join = JoinPayload.model_validate(JS_JOIN)
    assert join.config.broadcast == BroadcastConfig()
    assert join.config.presence == PresenceConfig(enabled=True, key="")
    assert join.config.private is False
    assert join.token == "user.jwt"
    (change,) = join.config.postgres_changes
    assert (change.event, change.schema_, change.table, change.filter) == (
        "INSERT",
        "public",
        "messages",
        "channel_id=eq.5",
    )
    assert change.problem is None
    assert change.reply_entry == {**JS_JOIN["config"]["postgres_changes"][0], "id": change.id}  # type: ignore[index]


def test_python_join_with_null_broadcast() -> None:
    # The Python client sends config.broadcast = None when no broadcast options were given.
    join = JoinPayload.model_validate(
        {
            "config": {
                "broadcast": None,
                "presence": {"key": "", "enabled": False},
                "private": False,
                "postgres_changes": [{"event": "*", "schema": "public"}],
            },
            "access_token": "anon.jwt",
        }
    )
    assert join.config.broadcast == BroadcastConfig()
    assert join.config.postgres_changes[0].table is None
    assert join.config.postgres_changes[0].reply_entry["event"] == "*"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("TRUE", True), ("False", False)],
)
def test_flexible_booleans(value: object, expected: bool) -> None:
    config = JoinConfig.model_validate(
        {
            "broadcast": {"ack": value, "self": value},
            "presence": {"enabled": value},
            "private": value,
        }
    )
    assert config.broadcast.ack is expected and config.broadcast.self_ is expected
    assert config.presence.enabled is expected and config.private is expected


@pytest.mark.parametrize("value", [1, 0, "yes", "", None, [], {}])
def test_invalid_booleans_take_the_default(value: object) -> None:
    config = JoinConfig.model_validate(
        {
            "broadcast": {"ack": value, "self": True},
            "private": value,
            "presence": {"enabled": value},
        }
    )
    assert (config.broadcast.ack, config.broadcast.self_) == (False, True)  # the valid key survives
    assert config.private is False and config.presence.enabled is False


@pytest.mark.parametrize(
    "payload",
    [{}, {"config": None}, {"config": "x"}, {"config": {"broadcast": 1, "presence": []}}],
)
def test_missing_or_invalid_config_is_the_default(payload: dict[str, Any]) -> None:
    join = JoinPayload.model_validate(payload)
    assert join.config == JoinConfig()
    assert join.config.postgres_changes == ()
    assert join.token is None


@pytest.mark.parametrize("value", [None, [], [None], [None, None], {"event": "*"}, "x", 5])
def test_postgres_changes_null_and_junk_are_empty(value: object) -> None:
    assert JoinConfig.model_validate({"postgres_changes": value}).postgres_changes == ()


def test_postgres_changes_drop_null_entries_keep_order() -> None:
    entries = [None, {"table": "a"}, "junk", {"table": "b"}, None]
    changes = JoinConfig.model_validate({"postgres_changes": entries}).postgres_changes
    assert [c.table for c in changes] == ["a", "b"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"event": 5}, "`event` must be a string"),
        ({"table": "t", "filter": ["a"]}, "`filter` must be a string"),
        ({"schema": 1, "table": {}}, "`schema`, `table` must be strings"),
    ],
)
def test_postgres_change_problem(entry: dict[str, Any], problem: str) -> None:
    change = PostgresChange.model_validate(entry)
    assert change.problem is not None and change.problem.endswith(problem)
    assert change.reply_entry == {**entry, "id": change.id}  # still echoed as sent


def test_postgres_change_requires_an_object() -> None:
    with pytest.raises(ValueError, match="must be an object"):
        PostgresChange.model_validate(["not", "an", "object"])


def test_unknown_keys_are_echoed_and_hashed() -> None:
    plain = PostgresChange.model_validate({"event": "*", "schema": "public", "table": "t"})
    select = PostgresChange.model_validate(
        {"event": "*", "schema": "public", "table": "t", "select": ["id"]}
    )
    assert select.reply_entry["select"] == ["id"]
    assert plain.id != select.id


@pytest.mark.parametrize(
    ("key", "expected"), [("user-1", "user-1"), ("", ""), (7, "7"), (1.5, "1.5"), (True, None)]
)
def test_presence_key(key: object, expected: str | None) -> None:
    assert PresenceConfig.model_validate({"key": key}).key == expected


@pytest.mark.parametrize(
    ("payload", "token"),
    [
        ({}, None),
        ({"access_token": "a"}, "a"),
        ({"user_token": "u"}, "u"),
        ({"access_token": "a", "user_token": "u"}, "u"),  # legacy user_token wins
        ({"access_token": "sb_publishable_x"}, None),  # opaque keys: use the connect token
        ({"access_token": "sb_x", "user_token": "u"}, None),
        ({"user_token": "sb_secret_x"}, None),
        ({"access_token": 5}, None),
        ({"access_token": None, "user_token": "u"}, "u"),
    ],
)
def test_join_token(payload: dict[str, Any], token: str | None) -> None:
    assert JoinPayload.model_validate(payload).token == token


def test_tokens_never_in_repr() -> None:
    join = JoinPayload.model_validate({"access_token": "secret.jwt", "user_token": "other.jwt"})
    assert "secret.jwt" not in repr(join) and "other.jwt" not in repr(join)
    refresh = AccessTokenPayload.model_validate({"access_token": "secret.jwt"})
    assert refresh.access_token == "secret.jwt" and "secret.jwt" not in repr(refresh)


@pytest.mark.parametrize("payload", [{}, {"access_token": None}, {"access_token": 3}, "x"])
def test_access_token_payload_lenient(payload: object) -> None:
    assert AccessTokenPayload.model_validate(payload).access_token is None


# --- binding ids ----------------------------------------------------------------------------

PARAMS = st.dictionaries(
    st.sampled_from(["event", "schema", "table", "filter", "select", "other"]),
    st.none() | st.text(max_size=8) | st.integers() | st.lists(st.text(max_size=3), max_size=3),
    max_size=6,
)


@given(params=PARAMS)
def test_binding_id_is_a_positive_int32_of_the_params(params: dict[str, Any]) -> None:
    value = binding_id(params)
    assert type(value) is int and 1 <= value < 2**31
    assert binding_id(dict(reversed(params.items()))) == value  # key order does not matter
    assert PostgresChange.model_validate(params).id == value


def test_binding_id_known_values_are_stable() -> None:
    # Pinned so ids survive restarts and upgrades: clients hold them across reconnects.
    params = {"event": "INSERT", "schema": "public", "table": "messages", "filter": "id=eq.5"}
    assert binding_id(params) == binding_id(dict(params))
    assert binding_id(params) == 1513245456
    assert binding_id({}) == 1493557590
    assert binding_id({**params, "filter": "id=eq.6"}) != binding_id(params)


def test_binding_id_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    class ZeroDigest:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def digest(self) -> bytes:
            return b"\x80\x00\x00\x00"  # the top bit is masked off: 0

    monkeypatch.setattr(hashlib, "blake2b", ZeroDigest)
    assert binding_id({"event": "*"}) == 1
