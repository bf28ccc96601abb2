"""cdc.pgoutput against real pgoutput bytes captured from PostgreSQL (make_pgoutput.py)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc import pgoutput
from cdc.errors import CdcError, DecodeError
from cdc.pgoutput import (
    PG_EPOCH,
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    OldKind,
    Origin,
    PrimaryKeepalive,
    Relation,
    RelationColumn,
    ReplicaIdentity,
    StandbyStatusUpdate,
    Truncate,
    TruncateOption,
    Type,
    Update,
    XLogData,
    datetime_to_pg_time,
    encode_standby_status,
    format_lsn,
    parse_copy_data,
    parse_lsn,
    parse_message,
    parse_standby_status,
    pg_time_to_datetime,
)
from tests.cdc.pgoutput_golden import binary_messages, document, messages, steps

STEPS = steps()
BIG = document()["big"]
ALL = [m.data for m in messages()] + [m.data for m in binary_messages()]


def parse_step(name: str) -> list[pgoutput.PgoutputMessage]:
    return [parse_message(data) for data in STEPS[name]]


def test_exports() -> None:
    assert sorted(pgoutput.__all__) == [
        "Begin", "Commit", "Delete", "Insert", "Message", "MessageType", "OldKind", "Origin",
        "PG_EPOCH", "PgoutputMessage", "PrimaryKeepalive", "Relation", "RelationColumn",
        "ReplicaIdentity", "StandbyStatusUpdate", "Truncate", "TruncateOption", "TupleData",
        "TupleValue", "Type", "UNCHANGED_TOAST", "Unchanged", "Update", "XLogData",
        "datetime_to_pg_time", "encode_standby_status", "format_lsn", "parse_copy_data",
        "parse_lsn", "parse_message", "parse_standby_status", "pg_time_to_datetime",
    ]  # fmt: skip


def test_every_golden_message_decodes() -> None:
    kinds = {type(parse_message(data)) for data in ALL}
    assert kinds == {
        Begin,
        Commit,
        Origin,
        Relation,
        Type,
        Insert,
        Update,
        Delete,
        Truncate,
        Message,
    }


def test_insert_transaction() -> None:
    begin, relation, first, second, commit = parse_step("insert")
    assert isinstance(begin, Begin) and isinstance(commit, Commit)
    assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
    assert begin.commit_time == commit.commit_time
    assert commit.flags == 0
    assert begin.xid == messages()[1].xid
    assert abs(pg_time_to_datetime(commit.commit_time) - datetime.now(UTC)) < timedelta(days=3650)
    assert isinstance(relation, Relation)
    assert (relation.namespace, relation.name) == ("public", "items")
    assert relation.replica_identity is ReplicaIdentity.DEFAULT
    assert [(c.name, c.type_oid, c.is_key) for c in relation.columns] == [
        ("id", 20, True), ("qty", 23, False), ("name", 25, False), ("note", 25, False),
        ("big", 25, False), ("price", 1700, False), ("active", 16, False),
        ("updated_at", 1184, False),
    ]  # fmt: skip
    assert relation.columns[0] == RelationColumn(1, "id", 20, -1)
    assert first == Insert(
        relation.oid,
        ("1", "3", "widget", "héllo ✓", BIG, "12.50", "t", "2026-01-01 12:00:00.123456+00"),
    )
    assert second == Insert(relation.oid, ("2", None, None, None, None, None, None, None))


def test_update_without_old_tuple_keeps_toast_marker() -> None:
    _, update, _ = parse_step("update_toast_no_old")
    assert isinstance(update, Update)
    assert update.old_kind is None and update.old is None
    assert update.new[4] is UNCHANGED_TOAST
    assert update.new[4] is not None
    assert update.new[:2] == ("1", "4")


def test_update_and_delete_with_key() -> None:
    (_, update, _), (_, delete, _) = parse_step("update_key"), parse_step("delete_key")
    assert isinstance(update, Update) and isinstance(delete, Delete)
    assert update.old_kind is OldKind.KEY
    assert update.old == ("2",) + (None,) * 7
    assert update.new == ("20",) + (None,) * 7
    assert delete.old_kind is OldKind.KEY and delete.old == ("20",) + (None,) * 7


def test_types_and_replica_identity_full() -> None:
    begin, *named, relation, insert, _ = parse_step("insert_full")
    assert all(isinstance(t, Type) for t in named)
    assert {(t.namespace, t.name) for t in named if isinstance(t, Type)} == {
        ("public", "mood"), ("public", "_mood"), ("public", "pair"),
        ("", "int4"),  # a domain is announced under its base type's name (pg_catalog is "")
    }  # fmt: skip
    assert isinstance(relation, Relation)
    assert relation.replica_identity is ReplicaIdentity.FULL
    assert all(column.is_key for column in relation.columns)
    assert isinstance(insert, Insert)
    assert insert.new[2:] == (
        '{a,"b c",NULL}', '{"k": [1, 2.50, null], "s": "é"}', "happy", "{happy,sad}", "5",
        '(1,"x y")', "\\x0102ff", "1.5", "2026-01-02",
    )  # fmt: skip
    (_, update, _), (_, delete, _) = parse_step("update_toast_full"), parse_step("delete_full")
    assert isinstance(update, Update) and isinstance(delete, Delete)
    assert update.old_kind is OldKind.OLD and update.old == insert.new
    assert update.new[1] is UNCHANGED_TOAST and update.new[2:4] == ("{z}", None)
    assert delete.old_kind is OldKind.OLD and delete.old[1] == BIG


def test_transactional_message_and_index_identity() -> None:
    parsed = parse_step("multi")
    relation = parsed[1]
    assert isinstance(relation, Relation)
    assert relation.replica_identity is ReplicaIdentity.INDEX
    assert [c.is_key for c in relation.columns] == [True, False, False]
    message = parsed[4]
    assert (
        message == Message(1, message.lsn, "pgcast", b"inside")
        if isinstance(message, Message)
        else False
    )
    assert isinstance(message, Message) and message.transactional
    marker = parse_message(messages()[0].data)
    assert isinstance(marker, Message) and not marker.transactional
    assert (marker.prefix, marker.content) == ("step", b"insert")
    assert parsed[7] == Delete(relation.oid, OldKind.KEY, ("2", None, None))


def test_relation_changes_mid_stream() -> None:
    _, added, insert, _ = parse_step("alter_add_column")
    assert isinstance(added, Relation) and added.columns[-1].name == "extra"
    assert isinstance(insert, Insert) and len(insert.new) == 9
    _, before, _, after, last, _ = parse_step("alter_within_txn")
    assert isinstance(before, Relation) and isinstance(after, Relation)
    assert "note" in [c.name for c in before.columns]
    assert "note" not in [c.name for c in after.columns]
    assert isinstance(last, Insert) and len(last.new) == len(after.columns) == 8


def test_truncate_and_origin() -> None:
    *_, truncate, _ = parse_step("truncate")
    assert isinstance(truncate, Truncate)
    assert truncate.options is TruncateOption.RESTART_IDENTITY
    assert len(truncate.relation_oids) == 2
    _, origin, *_ = parse_step("origin")
    assert origin == Origin(0xABCDEF, "pgcast_origin")


def test_binary_tuple_values_are_bytes() -> None:
    insert = parse_message(binary_messages()[2].data)
    assert isinstance(insert, Insert)
    assert insert.new[:3] == (struct.pack("!q", 7), struct.pack("!i", 8), b"bin")
    assert insert.new[3] is None


# --- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", ALL, ids=lambda d: d[:1].decode())
def test_every_truncation_is_a_decode_error(data: bytes) -> None:
    ends = (
        range(len(data)) if len(data) < 600 else [*range(300), *range(len(data) - 300, len(data))]
    )
    for end in ends:
        with pytest.raises(DecodeError):
            parse_message(data[:end])


def test_trailing_bytes_are_a_decode_error() -> None:
    for data in ALL:
        with pytest.raises(DecodeError, match="unexpected bytes|do not fit"):
            parse_message(data + b"\x00")


INSERT_HEAD = b"I" + struct.pack("!I", 16397)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"X", "unknown pgoutput message type"),
        (INSERT_HEAD + b"K" + struct.pack("!H", 0), "expected 'N'"),
        (INSERT_HEAD + b"N" + struct.pack("!H", 1) + b"x", "unknown tuple value kind"),
        (INSERT_HEAD + b"N" + struct.pack("!H", 1) + b"t" + struct.pack("!I", 9) + b"ab", "past"),
        (
            INSERT_HEAD + b"N" + struct.pack("!H", 1) + b"t" + struct.pack("!I", 1) + b"\xff",
            "utf-8",
        ),
        (b"U" + struct.pack("!I", 1) + b"X" + struct.pack("!H", 0), "'K' or 'O'"),
        (b"U" + struct.pack("!I", 1) + b"K" + struct.pack("!H", 0) + b"X", "expected 'N'"),
        (b"D" + struct.pack("!I", 1) + b"N" + struct.pack("!H", 0), "'K' or 'O'"),
        (b"R" + struct.pack("!I", 1) + b"s\x00t\x00" + b"z" + struct.pack("!H", 0), "RELATION"),
        (b"T" + struct.pack("!IB", 2, 0) + struct.pack("!I", 5), "do not fit"),
    ],
)
def test_malformed_messages(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        parse_message(data)


def test_crafted_messages() -> None:
    update = b"U" + struct.pack("!I", 7) + b"O" + struct.pack("!H", 1) + b"u"
    update += b"N" + struct.pack("!H", 2) + b"n" + b"t" + struct.pack("!I", 0)
    assert parse_message(update) == Update(7, OldKind.OLD, (UNCHANGED_TOAST,), (None, ""))
    truncate = b"T" + struct.pack("!IB", 1, 3) + struct.pack("!I", 9)
    parsed = parse_message(truncate)
    assert parsed == Truncate(TruncateOption.CASCADE | TruncateOption.RESTART_IDENTITY, (9,))
    assert parse_message(b"T" + struct.pack("!IB", 0, 0)) == Truncate(TruncateOption(0), ())


def test_decode_error_is_a_cdc_error() -> None:
    assert issubclass(DecodeError, CdcError)
    assert not issubclass(DecodeError, ValueError)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        parse_message(data)
    except DecodeError:
        pass


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(ALL), st.data())
def test_fuzz_mutated_golden_messages(original: bytes, data: st.DataObject) -> None:
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    try:
        parse_message(bytes(mutated))
    except DecodeError:
        pass


# --- stream framing, LSNs, times -----------------------------------------------------------------


def test_xlogdata() -> None:
    payload = ALL[1]
    frame = b"w" + struct.pack("!QQq", 0x1959E60, 0x1961850, 12345) + payload
    assert parse_copy_data(frame) == XLogData(0x1959E60, 0x1961850, 12345, payload)
    assert parse_copy_data(frame[:25]) == XLogData(0x1959E60, 0x1961850, 12345, b"")


def test_primary_keepalive() -> None:
    frame = b"k" + struct.pack("!Qq", 0x1961850, -5)
    assert parse_copy_data(frame + b"\x01") == PrimaryKeepalive(0x1961850, -5, True)
    assert parse_copy_data(frame + b"\x00") == PrimaryKeepalive(0x1961850, -5, False)


@pytest.mark.parametrize("frame", [b"", b"w", b"w" + b"\x00" * 23, b"k" + b"\x00" * 18, b"r" * 34])
def test_malformed_copy_data(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_copy_data(frame)


def test_standby_status_update() -> None:
    update = StandbyStatusUpdate(10, 9, 8, datetime_to_pg_time(datetime.now(UTC)), True)
    encoded = encode_standby_status(update)
    assert encoded[:1] == b"r" and len(encoded) == 34
    assert encoded[1:] == struct.pack("!QQQq?", 10, 9, 8, update.client_time, True)
    assert parse_standby_status(encoded) == update
    assert StandbyStatusUpdate(1, 1, 1, 0).reply_requested is False
    with pytest.raises(DecodeError):
        parse_standby_status(encoded[:-1])
    with pytest.raises(DecodeError):
        parse_standby_status(b"k" + encoded[1:])


def test_lsn_text() -> None:
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert format_lsn(0) == "0/0"
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert parse_lsn("ffffffff/ffffffff") == 2**64 - 1
    for text in ["", "16", "/1", "1/", "-1/0", "0x1/0", "1_0/0", "123456789/0", " 1/0"]:
        with pytest.raises(ValueError):
            parse_lsn(text)


def test_pg_time() -> None:
    assert pg_time_to_datetime(0) == PG_EPOCH == datetime(2000, 1, 1, tzinfo=UTC)
    moment = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert pg_time_to_datetime(datetime_to_pg_time(moment)) == moment
    assert datetime_to_pg_time(datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1
    with pytest.raises(OverflowError):
        pg_time_to_datetime(2**62)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([b"w", b"k", b"r", b""]), st.binary(max_size=40))
def test_fuzz_copy_data(tag: bytes, rest: bytes) -> None:
    try:
        parse_copy_data(tag + rest)
    except DecodeError:
        pass
    try:
        parse_standby_status(tag + rest)
    except DecodeError:
        pass
