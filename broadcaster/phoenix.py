"""The Phoenix socket serializers Supabase Realtime speaks: ``vsn`` 1.0.0 and 2.0.0.

Pure: no I/O. The shell hands in what a WebSocket frame carried and sends what comes out.

Client → server:

- ``1.0.0`` (Python ``realtime``, realtime-js ≤ 2.90): one JSON object per text frame,
  ``{"topic", "event", "payload", "ref", "join_ref"?}``; :func:`parse_text`.
- ``2.0.0`` (realtime-js ≥ 2.91): one JSON array per text frame,
  ``[join_ref, ref, topic, event, payload]`` (extra items are ignored, as Supabase does);
  :func:`parse_text`. Broadcasts come as binary frames of kind 3 (``userBroadcastPush``):
  ``u8 3, u8 len(join_ref), u8 len(ref), u8 len(topic), u8 len(event), u8 len(meta), u8 enc``,
  the five strings, then the user payload (``enc`` 1: JSON text, 0: raw bytes);
  :func:`parse_binary` turns one into a ``broadcast`` :class:`Message` whose payload is
  ``{"type": "broadcast", "event": E, "payload": P}`` (plus ``"meta"`` when the frame has one).

Server → client (:func:`encode`): ``1.0.0`` objects carry only ``topic, event, payload, ref``
(pushes have ``"ref": null``, which the Python client requires); ``2.0.0`` arrays carry all
five fields. The only binary frame a client decodes is kind 4 (``userBroadcast``,
:func:`encode_broadcast_binary`), and only a ``2.0.0`` client: a ``1.0.0`` client must never
get a binary frame.

A row change goes to many sockets that differ only in ``ids``: :func:`encode_change_data`
encodes the shared ``data`` once and :func:`encode_postgres_changes` splices each socket's ids
around it.

Every malformed inbound frame raises :class:`~broadcaster.errors.ProtocolError` and nothing
else.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from broadcaster.errors import ProtocolError
from cdc.changes import Change, JSONValue, Operation

__all__ = [
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

TOPIC_PREFIX: Final = "realtime:"
"""Every channel topic of both clients starts with this; the rest is the channel name."""

PHOENIX_TOPIC: Final = "phoenix"
"""The topic of socket-level messages (heartbeats)."""

_MAX_HEADER_FIELD = 255  # every length in a binary header is one byte


class Vsn(enum.StrEnum):
    """A serializer version, as the ``vsn`` query parameter names it."""

    V1 = "1.0.0"
    V2 = "2.0.0"

    @classmethod
    def from_query(cls, value: str | None) -> Vsn:
        """The serializer for a ``vsn`` query parameter.

        Phoenix assumes 1.0.0 when the parameter is missing and matches ``~> 1.0.0`` and
        ``~> 2.0.0``, so any ``1.0.x`` or ``2.0.x`` is accepted.

        Raises:
            ProtocolError: any other value (Phoenix refuses the connection).
        """
        if value is None:
            return cls.V1
        parts = value.split(".")
        if len(parts) == 3 and all(p.isascii() and p.isdigit() for p in parts):
            major, minor = int(parts[0]), int(parts[1])
            if minor == 0 and major in (1, 2):
                return cls.V1 if major == 1 else cls.V2
        raise ProtocolError(f"unsupported vsn {value[:20]!r}; expected 1.0.0 or 2.0.0")


class Event(enum.StrEnum):
    """Event names on the wire."""

    PHX_JOIN = "phx_join"
    PHX_LEAVE = "phx_leave"
    PHX_REPLY = "phx_reply"
    PHX_CLOSE = "phx_close"
    PHX_ERROR = "phx_error"
    HEARTBEAT = "heartbeat"
    ACCESS_TOKEN = "access_token"
    BROADCAST = "broadcast"
    PRESENCE = "presence"
    PRESENCE_STATE = "presence_state"
    PRESENCE_DIFF = "presence_diff"
    SYSTEM = "system"
    POSTGRES_CHANGES = "postgres_changes"


class ReplyStatus(enum.StrEnum):
    """The ``status`` of a ``phx_reply``."""

    OK = "ok"
    ERROR = "error"


class BinaryKind(enum.IntEnum):
    """The first byte of a ``2.0.0`` binary frame (the two kinds current clients use)."""

    USER_BROADCAST_PUSH = 3  # client → server
    USER_BROADCAST = 4  # server → client


class PayloadEncoding(enum.IntEnum):
    """How the user payload of a binary broadcast frame is encoded."""

    BINARY = 0
    JSON = 1


@dataclass(frozen=True, slots=True)
class Message:
    """One Phoenix message, in either direction.

    Attributes:
        join_ref: the ref of the join this message belongs to; ``None`` for socket-level
            messages and for server pushes.
        ref: the client's ref of a request, echoed in its reply; ``None`` for pushes.
        topic: ``realtime:<name>`` or ``phoenix``.
        event: see :class:`Event`; any string is carried.
        payload: a JSON object. A binary broadcast with raw bytes keeps them as ``bytes``.
    """

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: dict[str, Any]


# --- parsing ------------------------------------------------------------------------------


def _loads(data: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # also invalid UTF-8, lone surrogates, too deep nesting
        raise ProtocolError(f"{what} is not valid JSON") from None


def _message(
    join_ref: object, ref: object, topic: object, event: object, payload: object
) -> Message:
    if join_ref is not None and not isinstance(join_ref, str):
        raise ProtocolError("join_ref must be a string or null")
    if ref is not None and not isinstance(ref, str):
        raise ProtocolError("ref must be a string or null")
    if not isinstance(topic, str):
        raise ProtocolError("topic must be a string")
    if not isinstance(event, str):
        raise ProtocolError("event must be a string")
    if not isinstance(payload, dict):
        raise ProtocolError("payload must be a JSON object")
    return Message(join_ref, ref, topic, event, payload)


def parse_text(vsn: Vsn, text: str | bytes) -> Message:
    """Parse a text frame.

    Args:
        vsn: the socket's serializer.
        text: the frame, as ``str`` or as its UTF-8 bytes.

    Raises:
        ProtocolError: not JSON, not the shape ``vsn`` expects, or a field of the wrong type.
            A missing ``ref`` or ``join_ref`` (1.0.0) counts as ``null``.
    """
    data = _loads(text, "text frame")
    if vsn is Vsn.V1:
        if not isinstance(data, dict):
            raise ProtocolError("expected a JSON object (vsn 1.0.0)")
        for key in ("topic", "event", "payload"):
            if key not in data:
                raise ProtocolError(f"missing key {key!r}")
        return _message(
            data.get("join_ref"), data.get("ref"), data["topic"], data["event"], data["payload"]
        )
    if not isinstance(data, list) or len(data) < 5:
        raise ProtocolError("expected a JSON array [join_ref, ref, topic, event, payload]")
    return _message(data[0], data[1], data[2], data[3], data[4])


def parse_binary(data: bytes | bytearray | memoryview) -> Message:
    """Parse a ``2.0.0`` binary frame; only kind 3 (``userBroadcastPush``) is defined.

    Empty ``join_ref``/``ref`` strings (realtime-js writes ``''`` for a missing one) become
    ``None``.

    Raises:
        ProtocolError: another kind, a truncated frame, header strings that are not UTF-8,
            an unknown payload encoding, a JSON payload that does not parse, or metadata that
            is not a JSON object.
    """
    frame = bytes(data)
    if not frame:
        raise ProtocolError("empty binary frame")
    if frame[0] != BinaryKind.USER_BROADCAST_PUSH:
        raise ProtocolError(f"unsupported binary frame kind {frame[0]}")
    if len(frame) < 7:
        raise ProtocolError("binary frame header is truncated")
    sizes, encoding = frame[1:6], frame[6]
    offset = 7
    fields: list[str] = []
    for size in sizes:
        if offset + size > len(frame):
            raise ProtocolError("binary frame is shorter than its header says")
        try:
            fields.append(frame[offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError("binary frame header strings must be UTF-8") from None
        offset += size
    join_ref, ref, topic, event, meta = fields
    rest = frame[offset:]
    payload: Any
    if encoding == PayloadEncoding.JSON:
        payload = _loads(rest, "binary broadcast payload")
    elif encoding == PayloadEncoding.BINARY:
        payload = rest
    else:
        raise ProtocolError(f"unknown payload encoding {encoding}")
    body: dict[str, Any] = {"type": "broadcast", "event": event, "payload": payload}
    if meta:
        body["meta"] = _loads(meta, "binary broadcast metadata")
        if not isinstance(body["meta"], dict):
            raise ProtocolError("binary broadcast metadata must be a JSON object")
    return Message(join_ref or None, ref or None, topic, Event.BROADCAST, body)


def parse_frame(vsn: Vsn, frame: str | bytes) -> Message:
    """Parse what a WebSocket frame carried: ``str`` for a text frame, ``bytes`` for binary.

    Raises:
        ProtocolError: as :func:`parse_text` and :func:`parse_binary`; a binary frame on a
            ``1.0.0`` socket.
    """
    if isinstance(frame, str):
        return parse_text(vsn, frame)
    if vsn is Vsn.V1:
        raise ProtocolError("binary frames need vsn 2.0.0")
    return parse_binary(frame)


# --- encoding -----------------------------------------------------------------------------


def _dumps(value: object, *, sort_keys: bool = False) -> bytes:
    """JSON as compact UTF-8; integers beyond 64 bits (Postgres ``numeric``) stay exact.

    Raises:
        TypeError, ValueError: ``value`` is not JSON (bytes, NaN, non-string keys...).
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:  # orjson.JSONEncodeError; big ints are what the stdlib fallback is for
        text = json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=sort_keys
        )
        return text.encode("utf-8")


def encode(vsn: Vsn, message: Message) -> str:
    """Encode a server message as the text of one frame.

    ``1.0.0`` drops ``join_ref`` (Phoenix sends only ``topic, event, payload, ref``).

    Raises:
        TypeError, ValueError: the payload is not JSON (our bug, not the peer's).
    """
    if vsn is Vsn.V1:
        frame: object = {
            "topic": message.topic,
            "event": message.event,
            "payload": message.payload,
            "ref": message.ref,
        }
    else:
        frame = [message.join_ref, message.ref, message.topic, message.event, message.payload]
    return _dumps(frame).decode("utf-8")


def encode_broadcast_binary(
    topic: str,
    event: str,
    payload: bytes | bytearray | memoryview | JSONValue,
    meta: Mapping[str, JSONValue] | None = None,
) -> bytes:
    """Encode a broadcast as a kind-4 (``userBroadcast``) binary frame. ``2.0.0`` only.

    ``u8 4, u8 len(topic), u8 len(event), u8 len(meta), u8 enc``, then topic, event, meta
    (JSON, or nothing) and the payload: raw bytes with ``enc`` 0, JSON text with ``enc`` 1.
    The client turns it into ``{"type": "broadcast", "event", "payload", "meta"?}``.

    Raises:
        ValueError: topic, event or meta longer than 255 bytes (send JSON text instead).
        TypeError: the payload is not JSON.
    """
    topic_bytes, event_bytes = topic.encode("utf-8"), event.encode("utf-8")
    meta_bytes = _dumps(dict(meta)) if meta else b""
    for name, part in (("topic", topic_bytes), ("event", event_bytes), ("meta", meta_bytes)):
        if len(part) > _MAX_HEADER_FIELD:
            raise ValueError(f"{name} is {len(part)} bytes; a binary frame carries at most 255")
    if isinstance(payload, bytes | bytearray | memoryview):
        encoding, body = PayloadEncoding.BINARY, bytes(payload)
    else:
        encoding, body = PayloadEncoding.JSON, _dumps(payload)
    header = bytes(
        (BinaryKind.USER_BROADCAST, len(topic_bytes), len(event_bytes), len(meta_bytes), encoding)
    )
    return b"".join((header, topic_bytes, event_bytes, meta_bytes, body))


# --- server messages ----------------------------------------------------------------------


def channel_name(topic: str) -> str:
    """The channel name of a topic: ``realtime:room`` → ``room``."""
    return topic.removeprefix(TOPIC_PREFIX)


def reply(
    join_ref: str | None,
    ref: str | None,
    topic: str,
    status: ReplyStatus,
    response: dict[str, Any] | None = None,
) -> Message:
    """A ``phx_reply`` with ``{"status", "response"}``; ``response`` defaults to ``{}``."""
    payload = {"status": str(status), "response": {} if response is None else response}
    return Message(join_ref, ref, topic, Event.PHX_REPLY, payload)


def reply_ok(
    join_ref: str | None, ref: str | None, topic: str, response: dict[str, Any] | None = None
) -> Message:
    """``phx_reply`` ok."""
    return reply(join_ref, ref, topic, ReplyStatus.OK, response)


def reply_error(
    join_ref: str | None, ref: str | None, topic: str, reason: str | None = None
) -> Message:
    """``phx_reply`` error with ``{"reason": reason}``, or ``{}`` without a reason."""
    return reply(
        join_ref, ref, topic, ReplyStatus.ERROR, {} if reason is None else {"reason": reason}
    )


def push(topic: str, event: str, payload: dict[str, Any]) -> Message:
    """A server push: no ref, no join_ref."""
    return Message(None, None, topic, event, payload)


def system(topic: str, extension: str, status: ReplyStatus, message: str) -> Message:
    """A ``system`` push; the Python client requires all four payload keys."""
    payload = {
        "channel": channel_name(topic),
        "extension": extension,
        "message": message,
        "status": str(status),
    }
    return push(topic, Event.SYSTEM, payload)


def phx_close(topic: str, join_ref: str | None) -> Message:
    """``phx_close``: clients act on it only when its ``ref`` is their current join ref."""
    return Message(join_ref, join_ref, topic, Event.PHX_CLOSE, {})


def phx_error(topic: str, join_ref: str | None) -> Message:
    """``phx_error``: the client marks the channel errored and rejoins."""
    return Message(join_ref, join_ref, topic, Event.PHX_ERROR, {})


def presence_state(topic: str, state: dict[str, Any]) -> Message:
    """``presence_state``: ``{key: {"metas": [...]}}``, ``{}`` when nobody is present."""
    return push(topic, Event.PRESENCE_STATE, state)


def broadcast(
    topic: str, event: str, payload: JSONValue, meta: dict[str, JSONValue] | None = None
) -> Message:
    """A ``broadcast`` push as JSON text: ``{"type": "broadcast", "event", "payload"}``."""
    body: dict[str, Any] = {"type": "broadcast", "event": event, "payload": payload}
    if meta is not None:
        body["meta"] = meta
    return push(topic, Event.BROADCAST, body)


# --- postgres_changes ---------------------------------------------------------------------


def format_commit_timestamp(timestamp: datetime) -> str:
    """UTC with millisecond precision, as Supabase sends it: ``2026-01-01T12:00:00.123Z``.

    Sub-millisecond digits are truncated (``to_char(..., 'MS')``); a naive datetime is taken
    as UTC.
    """
    t = timestamp.astimezone(UTC) if timestamp.tzinfo is not None else timestamp
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )


def change_data(change: Change) -> dict[str, Any]:
    """The ``data`` object of a ``postgres_changes`` push.

    INSERT carries ``record``; UPDATE ``record`` and ``old_record``; DELETE only
    ``old_record``. A missing row is sent as ``{}``, never ``null``.
    """
    data: dict[str, Any] = {
        "schema": change.schema,
        "table": change.table,
        "commit_timestamp": format_commit_timestamp(change.commit_timestamp),
        "type": str(change.operation),
        "columns": [{"name": c.name, "type": c.type} for c in change.columns],
    }
    if change.operation is not Operation.DELETE:
        data["record"] = dict(change.record or {})
    if change.operation is not Operation.INSERT:
        data["old_record"] = dict(change.old_record or {})
    data["errors"] = None
    return data


def encode_change_data(change: Change) -> bytes:
    """:func:`change_data` as JSON, to encode once and splice with
    :func:`encode_postgres_changes` for every socket.

    Raises:
        TypeError, ValueError: a value in the rows is not JSON.
    """
    return _dumps(change_data(change))


def encode_postgres_changes(vsn: Vsn, topic: str, ids: Sequence[int], data: bytes) -> bytes:
    """One ``postgres_changes`` frame around ``data`` from :func:`encode_change_data`.

    The result is UTF-8 JSON for a **text** frame (websockets: ``send(frame, text=True)``), the
    same as :func:`encode` of :func:`postgres_changes` gives.

    Args:
        vsn: the socket's serializer.
        topic: the channel topic.
        ids: the ids of this channel's bindings that the change matched.
        data: the encoded ``data`` object.
    """
    head = b'{"ids":' + orjson.dumps(list(ids)) + b',"data":'
    if vsn is Vsn.V1:
        return (
            b'{"topic":'
            + orjson.dumps(topic)
            + b',"event":"postgres_changes","payload":'
            + head
            + data
            + b'},"ref":null}'
        )
    return b"[null,null," + orjson.dumps(topic) + b',"postgres_changes",' + head + data + b"}]"


def postgres_changes(topic: str, ids: Sequence[int], change: Change) -> Message:
    """A ``postgres_changes`` push as a :class:`Message` (the slow path; see
    :func:`encode_postgres_changes`)."""
    return push(topic, Event.POSTGRES_CHANGES, {"ids": list(ids), "data": change_data(change)})
