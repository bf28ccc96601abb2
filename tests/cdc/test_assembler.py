"""cdc.assembler over the golden pgoutput session (tests/fixtures/make_pgoutput.py)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc import assembler
from cdc.assembler import Assembler, encode_token, parse_token
from cdc.changes import Batch, Change, Column, Operation, Position
from cdc.errors import DecodeError
from cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    OldKind,
    Origin,
    Relation,
    RelationColumn,
    ReplicaIdentity,
    Truncate,
    TruncateOption,
    Type,
    Update,
    format_lsn,
    parse_message,
)
from cdc.values import TypeRegistry
from tests.cdc.pgoutput_golden import binary_messages, document, messages, steps, types

BIG = document()["big"]
ITEMS = (
    Column("id", "int8"), Column("qty", "int4"), Column("name", "text"), Column("note", "text"),
    Column("big", "text"), Column("price", "numeric"), Column("active", "bool"),
    Column("updated_at", "timestamptz"),
)  # fmt: skip
EMPTY_ITEM = {c.name: None for c in ITEMS}
FULL_ROW = {
    "id": 1, "big": BIG, "tags": ["a", "b c", None], "doc": {"k": [1, 2.5, None], "s": "é"},
    "m": "happy", "moods": ["happy", "sad"], "p": 5, "pr": {"a": 1, "b": "x y"}, "b": "0102ff",
    "f": 1.5, "d": "2026-01-02",
}  # fmt: skip


JUNK_HEADER = b"w" + bytes(24)  # where the replication shell's CopyData header sits


def golden_batches(registry: TypeRegistry | None = None, raw: bool = False) -> dict[str, Batch]:
    """Feed the whole session; the batch of each step by step name (last batch of the step).
    With ``raw``, as the replication shell does: the bytes to ``feed_data`` after a header."""
    machine = Assembler(registry if registry is not None else TypeRegistry(types()))
    batches: dict[str, Batch] = {}
    names = iter(steps())
    for message in messages():
        parsed = parse_message(message.data)
        if isinstance(parsed, Message) and parsed.prefix == "step":
            name = next(names)
        if raw:
            batch = machine.feed_data(JUNK_HEADER + message.data, len(JUNK_HEADER))
        else:
            batch = machine.feed(parsed)
        if batch is not None:
            batches[name] = batch
    assert not machine.in_transaction
    return batches


BATCHES = golden_batches()


def only(batch: Batch) -> Change:
    (change,) = batch.changes
    return change


def test_exports() -> None:
    assert sorted(assembler.__all__) == ["Assembler", "encode_token", "parse_token"]


def test_insert() -> None:
    batch = BATCHES["insert"]
    first, second = batch.changes
    assert first.operation is Operation.INSERT and first.old_record is None
    assert (first.schema, first.table, first.columns) == ("public", "items", ITEMS)
    assert first.record == {
        "id": 1, "qty": 3, "name": "widget", "note": "héllo ✓", "big": BIG, "price": 12.5,
        "active": True, "updated_at": "2026-01-01T12:00:00.123456+00:00",
    }  # fmt: skip
    assert second.record == {**EMPTY_ITEM, "id": 2}
    assert first.commit_timestamp == second.commit_timestamp
    assert first.commit_timestamp.tzinfo is UTC
    assert (first.position, second.position) == (1, 2)


def test_positions() -> None:
    (commit,) = [
        parsed for parsed in map(parse_message, steps()["insert"]) if isinstance(parsed, Commit)
    ]
    position = BATCHES["insert"].position
    assert position == Position(commit.end_lsn, f"r1:{format_lsn(commit.end_lsn)}:2")
    ordered = list(BATCHES.values())
    assert [b.position.seq for b in ordered] == sorted(b.position.seq for b in ordered)
    changes = [c.position for b in ordered for c in b.changes]
    assert changes == list(range(1, len(changes) + 1))


def test_update_without_old_tuple_leaves_unchanged_toast_out() -> None:
    change = only(BATCHES["update_toast_no_old"])
    assert change.operation is Operation.UPDATE
    assert change.old_record is None
    assert change.record is not None and "big" not in change.record
    assert change.record == {
        "id": 1, "qty": 4, "name": "widget", "note": "héllo ✓", "price": 12.5, "active": True,
        "updated_at": "2026-01-01T12:00:00.123456+00:00",
    }  # fmt: skip
    assert "big" in [c.name for c in change.columns]


def test_key_change_and_delete_carry_only_the_key() -> None:
    update = only(BATCHES["update_key"])
    assert update.old_record == {"id": 2}
    assert update.record == {**EMPTY_ITEM, "id": 20}
    delete = only(BATCHES["delete_key"])
    assert delete.operation is Operation.DELETE
    assert delete.record is None and delete.old_record == {"id": 20}


def test_replica_identity_full_and_custom_types() -> None:
    insert = only(BATCHES["insert_full"])
    assert insert.record == FULL_ROW
    assert [(c.name, c.type) for c in insert.columns] == [
        ("id", "int4"), ("big", "text"), ("tags", "_text"), ("doc", "jsonb"), ("m", "mood"),
        ("moods", "_mood"), ("p", "posint"), ("pr", "pair"), ("b", "bytea"), ("f", "float8"),
        ("d", "date"),
    ]  # fmt: skip
    update = only(BATCHES["update_toast_full"])
    assert update.old_record == FULL_ROW
    assert update.record == {**FULL_ROW, "tags": ["z"], "doc": None}  # big came from the old row
    assert update.record is not None and list(update.record) == list(FULL_ROW)  # column order
    delete = only(BATCHES["delete_full"])
    assert delete.old_record == {**FULL_ROW, "tags": ["z"], "doc": None}


def test_without_catalog_lookups_type_messages_still_help() -> None:
    change = only(golden_batches(TypeRegistry())["insert_full"])
    assert change.record is not None
    assert change.record["p"] == 5  # the domain's Type message names its base type, int4
    assert change.record["moods"] == "{happy,sad}"  # unknown array type: text
    assert change.record["pr"] == '(1,"x y")'
    assert dict((c.name, c.type) for c in change.columns)["p"] == "int4"


def test_multi_statement_transaction_with_index_identity() -> None:
    batch = BATCHES["multi"]
    assert [(c.operation, c.record, c.old_record) for c in batch.changes] == [
        (Operation.INSERT, {"a": 1, "b": "one", "c": 10}, None),
        (Operation.INSERT, {"a": 2, "b": None, "c": 20}, None),
        (Operation.UPDATE, {"a": 1, "b": "one", "c": 11}, None),
        (Operation.UPDATE, {"a": 2, "b": None, "c": 21}, None),
        (Operation.DELETE, None, {"a": 2}),
        (Operation.UPDATE, {"a": 5, "b": "one", "c": 11}, {"a": 1}),
    ]
    assert {c.table for c in batch.changes} == {"keyed"}  # the unpublished table is not sent


def test_alter_table_mid_stream() -> None:
    change = only(BATCHES["alter_add_column"])
    assert change.columns == (*ITEMS, Column("extra", "int4"))
    assert change.record == {**EMPTY_ITEM, "id": 3, "name": "after alter", "extra": 7}
    before, after = BATCHES["alter_within_txn"].changes
    assert before.record == {**EMPTY_ITEM, "id": 4, "extra": 7}
    assert "note" not in [c.name for c in after.columns]
    assert after.record == {
        **{k: v for k, v in EMPTY_ITEM.items() if k != "note"},
        "id": 5,
        "extra": None,
    }


def test_truncate_gives_an_empty_batch_and_origin_is_ignored() -> None:
    truncate = BATCHES["truncate"]
    assert truncate.changes == ()
    assert parse_token(truncate.position.token)[1] == 17
    origin = only(BATCHES["origin"])
    assert origin.record is not None and origin.record["id"] == 6


def test_relation_cache() -> None:
    machine = Assembler(TypeRegistry(types()))
    for message in messages():
        machine.feed_data(message.data)
    shapes = {r.name: r for r in machine.relations.values()}
    assert set(shapes) == {"items", "full_items", "keyed"}
    assert [c.name for c in shapes["items"].columns][-1] == "extra"
    with pytest.raises(TypeError):
        machine.relations[0] = shapes["items"]  # type: ignore[index]


def test_resume_from_a_token_continues_change_positions() -> None:
    start = BATCHES["insert"].position
    machine = Assembler(TypeRegistry(types()), start=start)
    stream = steps()
    # The server may send the acknowledged transaction again: it is dropped, uncounted.
    assert [machine.feed_data(data) for data in stream["insert"]] == [None] * 5
    assert not machine.in_transaction
    for data in stream["update_toast_no_old"]:
        batch = machine.feed_data(data)
    assert batch == BATCHES["update_toast_no_old"]
    assert only(batch).position == 3


def test_tokens() -> None:
    assert encode_token(0x16B374D848, 5) == "r1:16/B374D848:5"
    assert parse_token("r1:16/B374D848:5") == (0x16B374D848, 5)
    for token in ["", "m:1", "r1:16/B374D848", "r1:16/B374D848:x", "r2:0/0:1", "r1:0/0:-1"]:
        with pytest.raises(ValueError):
            parse_token(token)


# --- crafted streams ---------------------------------------------------------------------------

REL_COLUMNS = (
    RelationColumn(1, "k", 23, -1),
    RelationColumn(0, "v", 25, -1),
    RelationColumn(0, "n", 23, -1),
)
REL = Relation(1, "public", "t", ReplicaIdentity.DEFAULT, REL_COLUMNS)
BEGIN = Begin(100, 0, 7)
COMMIT = Commit(0, 100, 120, 0)


def run(*body: object) -> Batch:
    machine = Assembler()
    machine.feed(REL)
    machine.feed(BEGIN)
    assert machine.in_transaction
    for message in body:
        assert machine.feed(message) is None  # type: ignore[arg-type]
    batch = machine.feed(COMMIT)
    assert batch is not None and not machine.in_transaction
    return batch


def test_commit_timestamp_is_utc_from_the_pg_epoch() -> None:
    batch = run(Insert(1, ("1", "a", "2")))
    assert only(batch).commit_timestamp == datetime(2000, 1, 1, tzinfo=UTC)
    assert batch.position == Position(120, "r1:0/78:1")


def test_unchanged_toast_resolution_rules() -> None:
    u = UNCHANGED_TOAST
    batch = run(
        Update(1, OldKind.KEY, ("1", None, None), (u, u, "3")),  # key from the key tuple
        Update(1, OldKind.OLD, ("1", "x", u), ("1", u, u)),  # only what the old row carries
        Update(1, None, None, ("1", u, None)),
    )
    first, second, third = (c.record for c in batch.changes)
    assert first == {"k": 1, "n": 3}
    assert second == {"k": 1, "v": "x"}
    assert batch.changes[1].old_record == {"k": 1, "v": "x"}
    assert third == {"k": 1, "n": None}


def test_ignored_messages() -> None:
    batch = run(
        Origin(5, "o"),
        Message(1, 5, "p", b"c"),
        Truncate(TruncateOption.CASCADE, (1,)),
        Type(99_999, "public", "thing"),
    )
    assert batch.changes == ()


def test_unknown_types_are_text_and_named() -> None:
    machine = Assembler()
    machine.feed(Type(70_000, "public", "thing"))
    machine.feed(Type(70_001, "", "not_a_builtin"))
    columns = (
        RelationColumn(0, "a", 70_000, -1),
        RelationColumn(0, "b", 70_001, -1),
        RelationColumn(0, "c", 70_002, -1),
    )
    machine.feed(Relation(2, "s", "t", ReplicaIdentity.NOTHING, columns))
    machine.feed(BEGIN)
    machine.feed(Insert(2, ("1", "2", "3")))
    batch = machine.feed(COMMIT)
    assert batch is not None
    change = only(batch)
    assert change.record == {"a": "1", "b": "2", "c": "3"}
    assert change.columns == (
        Column("a", "thing"),
        Column("b", "not_a_builtin"),
        Column("c", "70002"),
    )


def test_binary_tuple_data_is_refused() -> None:
    machine = Assembler()
    with pytest.raises(DecodeError, match="binary"):
        for message in binary_messages():
            machine.feed_data(message.data)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([Insert(1, ("1", "a"))], "row has 2 columns"),
        ([Insert(9, ("1",))], "before its Relation"),
        ([Insert(1, ("x", "a", "1"))], r"t\.k: invalid literal"),
        ([Update(1, OldKind.KEY, ("1",), ("1", "a", "1"))], "row has 1 columns"),
        ([Delete(1, OldKind.OLD, ("1", "a"))], "row has 2 columns"),
        ([BEGIN], "Begin of xid 7 inside xid 7"),
        ([Commit(0, 99, 120, 0)], "does not match"),
    ],
)
def test_malformed_streams(body: list[object], match: str) -> None:
    machine = Assembler()
    machine.feed(REL)
    machine.feed(BEGIN)
    with pytest.raises(DecodeError, match=match):
        for message in body:
            machine.feed(message)  # type: ignore[arg-type]


def test_out_of_transaction_messages() -> None:
    machine = Assembler()
    machine.feed(REL)
    with pytest.raises(DecodeError, match="outside a transaction"):
        machine.feed(Delete(1, OldKind.KEY, ("1", None, None)))
    with pytest.raises(DecodeError, match="Commit without Begin"):
        machine.feed(COMMIT)
    with pytest.raises(DecodeError, match="out of range"):
        machine.feed(Begin(1, 2**62, 1))
    with pytest.raises(DecodeError):
        machine.feed_data(b"?")


# --- the one-pass Insert path of feed_data equals the general path ------------------------------


def test_feed_data_at_an_offset_gives_the_golden_batches() -> None:
    """The whole golden session (Relations, inserts of every type, updates, deletes, TOAST,
    ALTER TABLE) through ``feed_data`` at offset 25, as the replication shell feeds it."""
    assert golden_batches(raw=True) == BATCHES


def _value(kind: str, text: bytes) -> bytes:
    if kind in "tb":
        return kind.encode() + struct.pack("!I", len(text)) + text
    return kind.encode()


_ints = st.integers(-(2**31), 2**31 - 1).map(lambda n: str(n).encode())
# Mostly what the server sends for REL (int4, text, int4), sometimes anything else.
_values = st.tuples(
    st.sampled_from("tttttttnnubx"),
    st.one_of(_ints, _ints, _ints, st.text(max_size=5).map(str.encode), st.binary(max_size=6)),
)


def _mostly(value: object, *others: object) -> st.SearchStrategy[Any]:
    return st.sampled_from([value] * 6 + list(others))


@settings(max_examples=400)
@given(
    oid=_mostly(1, 2),
    new_kind=_mostly(b"N", b"O"),
    values=st.one_of(st.lists(_values, min_size=3, max_size=3), st.lists(_values, max_size=4)),
    declared=_mostly(None, 0, 2, 3, 4),
    cut=_mostly(None, 0, 1, 4, 9),
    extra=_mostly(b"", b"\x00", b"t"),
    in_transaction=_mostly(True, False),
)
def test_fast_insert_equals_the_general_path(
    oid: int,
    new_kind: bytes,
    values: list[tuple[str, bytes]],
    declared: int | None,
    cut: int | None,
    extra: bytes,
    in_transaction: bool,
) -> None:
    """Any Insert message, well-formed or not: ``feed_data`` (one pass, falling back to the
    general path on anything unexpected) yields what ``feed(parse_message(...))`` yields, or the
    same DecodeError, and leaves the assembler in the same state."""
    count = len(values) if declared is None else declared
    data = b"I" + struct.pack("!I", oid) + new_kind + struct.pack("!H", count)
    data += b"".join(_value(kind, text) for kind, text in values) + extra
    if cut:
        data = data[: max(1, len(data) - cut)]
    outcomes = []
    for fast in (True, False):
        machine = Assembler()
        machine.feed(REL)
        if in_transaction:
            machine.feed(BEGIN)
        try:
            if fast:
                result: object = machine.feed_data(JUNK_HEADER + data, len(JUNK_HEADER))
            else:
                result = machine.feed(parse_message(data))
        except DecodeError as exc:
            result = ("error", str(exc))
        after = machine.feed(COMMIT) if machine.in_transaction else None
        outcomes.append((result, after))
    assert outcomes[0] == outcomes[1]
