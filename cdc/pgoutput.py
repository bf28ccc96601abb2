"""The pgoutput logical replication protocol, version 1, and the replication stream framing.

Pure: bytes in, frozen messages out; no I/O. Formats are quoted from the PostgreSQL manual,
"Logical Replication Message Formats" and "Streaming Replication Protocol" (``START_REPLICATION``).

- :func:`parse_message` decodes one pgoutput message (the payload of one ``XLogData``).
- :func:`parse_copy_data` decodes one CopyData message of the replication stream: ``XLogData``
  or a primary keepalive. :func:`encode_standby_status` builds our standby status update.

Every malformed input raises :class:`~cdc.errors.DecodeError` and nothing else. Text values are
decoded as UTF-8 (the replication connection must use ``client_encoding=UTF8``).
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias

from cdc.errors import DecodeError

__all__ = [
    "PG_EPOCH",
    "UNCHANGED_TOAST",
    "Begin",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "MessageType",
    "OldKind",
    "Origin",
    "PgoutputMessage",
    "PrimaryKeepalive",
    "Relation",
    "RelationColumn",
    "ReplicaIdentity",
    "StandbyStatusUpdate",
    "Truncate",
    "TruncateOption",
    "TupleData",
    "TupleValue",
    "Type",
    "Unchanged",
    "Update",
    "XLogData",
    "datetime_to_pg_time",
    "encode_standby_status",
    "format_lsn",
    "parse_copy_data",
    "parse_lsn",
    "parse_message",
    "parse_standby_status",
    "pg_time_to_datetime",
]

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""Postgres timestamps on the wire are microseconds since this instant."""


class MessageType(enum.IntEnum):
    """The first byte of a pgoutput v1 message."""

    BEGIN = ord("B")
    MESSAGE = ord("M")
    COMMIT = ord("C")
    ORIGIN = ord("O")
    RELATION = ord("R")
    TYPE = ord("Y")
    INSERT = ord("I")
    UPDATE = ord("U")
    DELETE = ord("D")
    TRUNCATE = ord("T")


class ReplicaIdentity(enum.StrEnum):
    """``pg_class.relreplident``: what a row change carries of the old row."""

    DEFAULT = "d"
    NOTHING = "n"
    FULL = "f"
    INDEX = "i"


class OldKind(enum.StrEnum):
    """What the old tuple of an Update or Delete holds."""

    KEY = "K"  # the replica identity key columns; the other columns are null
    OLD = "O"  # the whole old row (REPLICA IDENTITY FULL)


class TruncateOption(enum.IntFlag):
    """``Truncate.options`` bits."""

    CASCADE = 1
    RESTART_IDENTITY = 2


class Unchanged(enum.Enum):
    """Marker for a column value the server did not send."""

    TOAST = "u"


UNCHANGED_TOAST: Literal[Unchanged.TOAST] = Unchanged.TOAST
"""An unchanged TOASTed value (``u``): the value exists but was not sent. Never ``None``."""

TupleValue: TypeAlias = str | bytes | None | Literal[Unchanged.TOAST]
"""One column: text (``t``) as ``str``, binary (``b``) as ``bytes``, NULL (``n``) as ``None``."""
TupleData: TypeAlias = tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    """Start of a transaction. ``commit_time``: microseconds since :data:`PG_EPOCH`."""

    final_lsn: int
    commit_time: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """End of a transaction; ``end_lsn`` is where a consumer resumes and what it confirms."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class Origin:
    """The replication origin a transaction came from."""

    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    """One column of a :class:`Relation`; flag 1 marks a replica identity key column."""

    flags: int
    name: str
    type_oid: int
    type_modifier: int

    @property
    def is_key(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    """A table's shape; sent before its first change in a session and after a schema change."""

    oid: int
    namespace: str
    name: str
    replica_identity: ReplicaIdentity
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True, slots=True)
class Type:
    """Names a type that is not built in (OID at or above 10000) before a Relation uses it."""

    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    """``old`` is present when the key changed (:attr:`OldKind.KEY`) or with REPLICA IDENTITY
    FULL (:attr:`OldKind.OLD`); ``old_kind`` is then set too."""

    relation_oid: int
    old_kind: OldKind | None
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old_kind: OldKind
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    options: TruncateOption
    relation_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Message:
    """A ``pg_logical_emit_message``; flag 1 means transactional."""

    flags: int
    lsn: int
    prefix: str
    content: bytes

    @property
    def transactional(self) -> bool:
        return bool(self.flags & 1)


PgoutputMessage: TypeAlias = (
    Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message
)

_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_OID_KIND = struct.Struct("!IB")
_COLUMN_TYPE = struct.Struct("!Ii")
_TRUNCATE = struct.Struct("!IB")
_MESSAGE = struct.Struct("!BQ")
_NEW = ord("N")


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    """A NUL-terminated string at ``pos`` and the position after it."""
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    """TupleData: Int16 column count, then per column Byte1 kind (n, u, t + Int32 length + bytes,
    b + Int32 length + bytes)."""
    count = buf[pos] << 8 | buf[pos + 1]
    pos += 2
    values: list[TupleValue] = []
    append = values.append
    length = _U32.unpack_from
    for _ in range(count):
        kind = buf[pos]
        if kind == 0x74:  # t
            start = pos + 5
            pos = start + length(buf, pos + 1)[0]
            append(buf[start:pos].decode())
        elif kind == 0x6E:  # n
            append(None)
            pos += 1
        elif kind == 0x75:  # u
            append(UNCHANGED_TOAST)
            pos += 1
        elif kind == 0x62:  # b
            start = pos + 5
            pos = start + length(buf, pos + 1)[0]
            append(buf[start:pos])
        else:
            raise DecodeError(f"unknown tuple value kind {kind:#04x}")
    if pos > len(buf):  # slicing does not check: a value ran past the end
        raise DecodeError("column value runs past the end of the message")
    return tuple(values), pos


def _done(buf: bytes, pos: int, result: PgoutputMessage) -> PgoutputMessage:
    if pos != len(buf):
        raise DecodeError(f"{len(buf) - pos} unexpected bytes after {type(result).__name__}")
    return result


def _begin(buf: bytes) -> PgoutputMessage:
    # Int64 final LSN, Int64 commit timestamp, Int32 xid
    return _done(buf, 1 + _BEGIN.size, Begin(*_BEGIN.unpack_from(buf, 1)))


def _commit(buf: bytes) -> PgoutputMessage:
    # Int8 flags (unused), Int64 commit LSN, Int64 end LSN, Int64 commit timestamp
    return _done(buf, 1 + _COMMIT.size, Commit(*_COMMIT.unpack_from(buf, 1)))


def _origin(buf: bytes) -> PgoutputMessage:
    # Int64 commit LSN on the origin, String origin name
    (lsn,) = _U64.unpack_from(buf, 1)
    name, pos = _string(buf, 9)
    return _done(buf, pos, Origin(lsn, name))


def _relation(buf: bytes) -> PgoutputMessage:
    # Int32 OID, String namespace, String name, Int8 replica identity, Int16 column count, then
    # per column: Int8 flags, String name, Int32 type OID, Int32 type modifier
    (oid,) = _U32.unpack_from(buf, 1)
    namespace, pos = _string(buf, 5)
    name, pos = _string(buf, pos)
    identity = ReplicaIdentity(chr(buf[pos]))
    (count,) = _U16.unpack_from(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        flags = buf[pos]
        column, pos = _string(buf, pos + 1)
        type_oid, modifier = _COLUMN_TYPE.unpack_from(buf, pos)
        pos += _COLUMN_TYPE.size
        columns.append(RelationColumn(flags, column, type_oid, modifier))
    return _done(buf, pos, Relation(oid, namespace, name, identity, tuple(columns)))


def _type(buf: bytes) -> PgoutputMessage:
    # Int32 OID, String namespace, String name
    (oid,) = _U32.unpack_from(buf, 1)
    namespace, pos = _string(buf, 5)
    name, pos = _string(buf, pos)
    return _done(buf, pos, Type(oid, namespace, name))


def _insert(buf: bytes) -> PgoutputMessage:
    # Int32 relation OID, Byte1 'N', TupleData
    oid, kind = _OID_KIND.unpack_from(buf, 1)
    if kind != _NEW:
        raise DecodeError(f"Insert: expected 'N', got {kind:#04x}")
    new, pos = _tuple(buf, 6)
    return _done(buf, pos, Insert(oid, new))


def _old_kind(kind: int) -> OldKind:
    try:
        return OldKind(chr(kind))
    except ValueError:
        raise DecodeError(f"expected 'K' or 'O', got {kind:#04x}") from None


def _update(buf: bytes) -> PgoutputMessage:
    # Int32 relation OID, optional Byte1 'K' or 'O' + TupleData, Byte1 'N' + TupleData
    oid, kind = _OID_KIND.unpack_from(buf, 1)
    old_kind: OldKind | None = None
    old: TupleData | None = None
    pos = 6
    if kind != _NEW:
        old_kind = _old_kind(kind)
        old, pos = _tuple(buf, pos)
        if buf[pos] != _NEW:
            raise DecodeError(f"Update: expected 'N', got {buf[pos]:#04x}")
        pos += 1
    new, pos = _tuple(buf, pos)
    return _done(buf, pos, Update(oid, old_kind, old, new))


def _delete(buf: bytes) -> PgoutputMessage:
    # Int32 relation OID, Byte1 'K' or 'O', TupleData
    oid, kind = _OID_KIND.unpack_from(buf, 1)
    old_kind = _old_kind(kind)
    old, pos = _tuple(buf, 6)
    return _done(buf, pos, Delete(oid, old_kind, old))


def _truncate(buf: bytes) -> PgoutputMessage:
    # Int32 relation count, Int8 options, Int32 OID per relation
    count, options = _TRUNCATE.unpack_from(buf, 1)
    pos = 1 + _TRUNCATE.size
    if pos + 4 * count != len(buf):
        raise DecodeError(f"Truncate: {count} relations do not fit {len(buf)} bytes")
    oids = struct.unpack_from(f"!{count}I", buf, pos)
    return Truncate(TruncateOption(options), oids)


def _message(buf: bytes) -> PgoutputMessage:
    # Int8 flags, Int64 LSN, String prefix, Int32 content length, Byte[n] content
    flags, lsn = _MESSAGE.unpack_from(buf, 1)
    prefix, pos = _string(buf, 1 + _MESSAGE.size)
    (length,) = _U32.unpack_from(buf, pos)
    pos += 4
    content = buf[pos : pos + length]
    return _done(buf, pos + length, Message(flags, lsn, prefix, bytes(content)))


_PARSERS: dict[int, Callable[[bytes], PgoutputMessage]] = {
    MessageType.BEGIN: _begin,
    MessageType.MESSAGE: _message,
    MessageType.COMMIT: _commit,
    MessageType.ORIGIN: _origin,
    MessageType.RELATION: _relation,
    MessageType.TYPE: _type,
    MessageType.INSERT: _insert,
    MessageType.UPDATE: _update,
    MessageType.DELETE: _delete,
    MessageType.TRUNCATE: _truncate,
}


def parse_message(data: bytes) -> PgoutputMessage:
    """Decode one pgoutput protocol v1 message.

    Raises:
        DecodeError: ``data`` is not one well-formed message (unknown type, truncated, trailing
            bytes, invalid UTF-8, unknown enum value).
    """
    if not data:
        raise DecodeError("empty pgoutput message")
    parser = _PARSERS.get(data[0])
    if parser is None:
        raise DecodeError(f"unknown pgoutput message type {data[:1]!r}")
    try:
        return parser(data)
    except (struct.error, IndexError, ValueError) as exc:  # ValueError: UTF-8, enums, index()
        raise DecodeError(f"malformed {MessageType(data[0]).name} message: {exc}") from None


# --- replication stream framing ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class XLogData:
    """``w``: WAL data. ``data`` is one pgoutput message; times are µs since :data:`PG_EPOCH`."""

    wal_start: int
    wal_end: int
    send_time: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PrimaryKeepalive:
    """``k``: the server's position; answer at once when ``reply_requested``."""

    wal_end: int
    send_time: int
    reply_requested: bool


@dataclass(frozen=True, slots=True)
class StandbyStatusUpdate:
    """``r``: our progress. Each LSN is the last WAL byte + 1 written/flushed/applied."""

    write_lsn: int
    flush_lsn: int
    apply_lsn: int
    client_time: int
    reply_requested: bool = False


_XLOG = struct.Struct("!QQq")
_KEEPALIVE = struct.Struct("!Qq?")
_STATUS = struct.Struct("!QQQq?")


def parse_copy_data(data: bytes) -> XLogData | PrimaryKeepalive:
    """Decode one CopyData payload that the server sends during ``START_REPLICATION``.

    ``w``: Int64 WAL start, Int64 WAL end, Int64 send time, Byte[n] data.
    ``k``: Int64 WAL end, Int64 send time, Byte1 1 when the server asks for a reply.

    Raises:
        DecodeError: unknown message type or wrong length.
    """
    tag = data[:1]
    if tag == b"w" and len(data) >= 1 + _XLOG.size:
        wal_start, wal_end, send_time = _XLOG.unpack_from(data, 1)
        return XLogData(wal_start, wal_end, send_time, data[1 + _XLOG.size :])
    if tag == b"k" and len(data) == 1 + _KEEPALIVE.size:
        wal_end, send_time, reply = _KEEPALIVE.unpack_from(data, 1)
        return PrimaryKeepalive(wal_end, send_time, reply)
    raise DecodeError(f"malformed replication message {bytes(data[:17])!r}")


def encode_standby_status(update: StandbyStatusUpdate) -> bytes:
    """``r``: Int64 written, Int64 flushed, Int64 applied, Int64 client time, Byte1 reply."""
    return b"r" + _STATUS.pack(
        update.write_lsn,
        update.flush_lsn,
        update.apply_lsn,
        update.client_time,
        update.reply_requested,
    )


def parse_standby_status(data: bytes) -> StandbyStatusUpdate:
    """The inverse of :func:`encode_standby_status` (for tests and fake servers).

    Raises:
        DecodeError: not a standby status update.
    """
    if data[:1] != b"r" or len(data) != 1 + _STATUS.size:
        raise DecodeError(f"malformed standby status update {bytes(data[:17])!r}")
    return StandbyStatusUpdate(*_STATUS.unpack_from(data, 1))


# --- LSNs and timestamps -------------------------------------------------------------------------


_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def format_lsn(lsn: int) -> str:
    """``0x16B374D848`` → ``16/B374D848``, as Postgres prints a ``pg_lsn``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """``16/B374D848`` → ``0x16B374D848``.

    Raises:
        ValueError: not ``hex/hex`` with each half at most 8 digits.
    """
    match = _LSN.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid LSN {text!r}")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def pg_time_to_datetime(micros: int) -> datetime:
    """Microseconds since :data:`PG_EPOCH` → an aware UTC datetime.

    Raises:
        OverflowError: outside the years 1–9999.
    """
    return PG_EPOCH + timedelta(microseconds=micros)


def datetime_to_pg_time(moment: datetime) -> int:
    """An aware datetime → microseconds since :data:`PG_EPOCH`."""
    delta = moment - PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
