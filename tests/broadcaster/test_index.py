"""Tests for broadcaster.index: the index returns exactly what evaluating every binding returns."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import broadcaster.index as index_module
from broadcaster.filters import BoundFilter, FilterError, bind, parse_filter
from broadcaster.index import EVENTS, WILDCARD, SubscriptionIndex
from cdc.changes import Change, Column, JSONValue, Operation, Record

COLUMNS = (Column("a", "int4"), Column("b", "text"), Column("c", "bool"), Column("n", "numeric"))
TABLES = [("public", "t1"), ("public", "t2"), ("other", "t1")]
Binding = tuple[str, str, str, BoundFilter | None]


def test_exports() -> None:
    assert sorted(index_module.__all__) == ["EVENTS", "SubscriptionIndex", "WILDCARD"]
    assert EVENTS == {"*", "INSERT", "UPDATE", "DELETE"}


def make_change(
    operation: Operation,
    record: Record | None = None,
    old_record: Record | None = None,
    schema: str = "public",
    table: str = "t1",
) -> Change:
    return Change(
        position=1,
        schema=schema,
        table=table,
        operation=operation,
        commit_timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        record=record,
        old_record=old_record,
        columns=COLUMNS,
    )


def brute_force(bindings: dict[Any, Binding], change: Change) -> set[Any]:
    """The reference: evaluate every binding on its own."""
    if change.operation is Operation.INSERT:
        rows = [change.record]
    elif change.operation is Operation.DELETE:
        rows = [change.old_record]
    else:
        rows = [change.record, change.old_record]
    return {
        key
        for key, (schema, table, event, bound) in bindings.items()
        if schema in (change.schema, "*")
        and table in (change.table, "*")
        and event in (change.operation, "*")
        and any(row is not None and (bound is None or bound.matches(row)) for row in rows)
    }


# --- Random bindings and changes ----------------------------------------------------------

int_literal = st.integers(-2, 2).map(str)
text_literal = st.sampled_from(["x", "y", "X", '""', "x%"])
a_condition = st.one_of(
    st.builds(
        "a={}{}.{}".format,
        st.sampled_from(["", "not."]),
        st.sampled_from(["eq", "neq", "lt", "lte", "gt", "gte"]),
        int_literal,
    ),
    st.builds(
        "a={}in.({})".format,
        st.sampled_from(["", "not."]),
        st.lists(int_literal | st.just("null"), max_size=3).map(",".join),
    ),
    st.builds("a={}is.null".format, st.sampled_from(["", "not."])),
)
b_condition = st.one_of(
    st.builds(
        "b={}{}.{}".format,
        st.sampled_from(["", "not."]),
        st.sampled_from(["eq", "neq", "lt", "gt"]),
        text_literal,
    ),
    st.builds(
        "b={}{}.{}".format,
        st.sampled_from(["", "not."]),
        st.sampled_from(["like", "ilike"]),
        st.sampled_from(["x%", "%", "_", "X", "x\\%"]),
    ),
    st.builds(
        "b={}in.({})".format,
        st.sampled_from(["", "not."]),
        st.lists(text_literal, max_size=3).map(",".join),
    ),
)
c_condition = st.one_of(
    st.builds("c={}eq.{}".format, st.sampled_from(["", "not."]), st.sampled_from(["t", "false"])),
    st.builds(
        "c={}is.{}".format,
        st.sampled_from(["", "not."]),
        st.sampled_from(["null", "true", "false", "unknown"]),
    ),
)
n_condition = st.builds(
    "n={}.{}".format,
    st.sampled_from(["eq", "not.neq", "gt"]),
    st.sampled_from(["1", "1.5", "NaN", "-2"]),
)
filter_texts = st.lists(a_condition | b_condition | c_condition | n_condition, max_size=3).map(
    ",".join
)
bound_filters = st.none() | filter_texts.map(lambda text: bind(parse_filter(text), COLUMNS))
bindings = st.tuples(
    st.sampled_from(["public", "other", WILDCARD]),
    st.sampled_from(["t1", "t2", WILDCARD]),
    st.sampled_from(sorted(EVENTS)),
    bound_filters,
)

values: dict[str, st.SearchStrategy[JSONValue]] = {
    "a": st.sampled_from([None, -2, -1, 0, 1, 2, 3, 1.0, "2", "junk", True]),
    "b": st.sampled_from([None, "x", "y", "X", "", "x%", "xyz", 5]),
    "c": st.sampled_from([None, True, False, "t", 1]),
    "n": st.sampled_from([None, 1, 1.0, 1.5, "NaN", -2, "1"]),
}
rows = st.fixed_dictionaries({}, optional=values)  # some columns absent, as with key-only rows


@st.composite
def changes(draw: st.DrawFn) -> Change:
    schema, table = draw(st.sampled_from(TABLES))
    operation = draw(st.sampled_from(list(Operation)))
    record = old_record = None
    if operation is not Operation.DELETE:
        record = draw(rows)
    if operation is not Operation.INSERT:
        old_record = draw(st.none() | rows)
    return make_change(operation, record, old_record, schema, table)


class IndexMatchesBruteForce(RuleBasedStateMachine):
    """Random adds, removes and changes; the index always agrees with brute force."""

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.index: SubscriptionIndex[int] = SubscriptionIndex()
        self.bindings: dict[int, Binding] = {}
        self.next_key = 0

    @rule(target=keys, binding=bindings)
    def add(self, binding: Binding) -> int:
        key, self.next_key = self.next_key, self.next_key + 1
        self.index.add(key, *binding)
        self.bindings[key] = binding
        return key

    @rule(key=consumes(keys))
    def remove(self, key: int) -> None:
        self.index.remove(key)
        del self.bindings[key]

    @rule(change=changes())
    def check(self, change: Change) -> None:
        assert self.index.affected(change) == brute_force(self.bindings, change)

    @invariant()
    def same_size(self) -> None:
        assert len(self.index) == len(self.bindings)
        assert all(key in self.index for key in self.bindings)

    def teardown(self) -> None:
        for key in list(self.bindings):
            self.index.remove(key)
        assert not self.index._buckets  # nothing left behind


IndexMatchesBruteForce.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None
)
TestIndexMatchesBruteForce = IndexMatchesBruteForce.TestCase


# --- Semantics ----------------------------------------------------------------------------


def bound(text: str) -> BoundFilter:
    return bind(parse_filter(text), COLUMNS)


@pytest.fixture
def index() -> SubscriptionIndex[str]:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add("all", WILDCARD, WILDCARD, WILDCARD)
    index.add("t1", "public", "t1", "*", bound(""))
    index.add("inserts", "public", "t1", "INSERT")
    index.add("a=1", "public", "t1", "*", bound("a=eq.1"))
    index.add("a=1 deletes", "public", "t1", Operation.DELETE, bound("a=eq.1"))
    index.add("a in 1,2 and b=x", "public", "t1", "*", bound("a=in.(1,2),b=eq.x"))
    index.add("b like x%", "public", WILDCARD, "*", bound("b=like.x%"))
    index.add("never", "public", "t1", "*", bound("a=in.(null)"))
    return index


def test_insert_matches_record(index: SubscriptionIndex[str]) -> None:
    change = make_change(Operation.INSERT, {"a": 1, "b": "xy"})
    assert index.affected(change) == {"all", "t1", "inserts", "a=1", "b like x%"}


def test_update_matches_new_or_old_row(index: SubscriptionIndex[str]) -> None:
    change = make_change(Operation.UPDATE, {"a": 2, "b": "x"}, {"a": 1, "b": "x"})
    assert index.affected(change) == {"all", "t1", "a=1", "a in 1,2 and b=x", "b like x%"}
    key_only = make_change(Operation.UPDATE, {"a": 3, "b": "q"}, {"a": 1})
    assert index.affected(key_only) == {"all", "t1", "a=1"}


def test_delete_matches_old_row(index: SubscriptionIndex[str]) -> None:
    change = make_change(Operation.DELETE, None, {"a": 1}, table="t2")
    assert index.affected(change) == {"all"}
    change = make_change(Operation.DELETE, None, {"a": 1})
    assert index.affected(change) == {"all", "t1", "a=1", "a=1 deletes"}
    no_identity = make_change(Operation.DELETE, None, {})
    assert index.affected(no_identity) == {"all", "t1"}


def test_change_without_rows_matches_nothing(index: SubscriptionIndex[str]) -> None:
    assert index.affected(make_change(Operation.INSERT, None)) == set()
    assert index.affected(make_change(Operation.DELETE, None, None)) == set()


def test_add_and_remove_keep_the_index_consistent(index: SubscriptionIndex[str]) -> None:
    assert len(index) == 8 and "never" in index and "nope" not in index
    with pytest.raises(ValueError, match="already in the index"):
        index.add("a=1", "public", "t1", "*")
    with pytest.raises(ValueError, match="event must be one of"):
        index.add("bad", "public", "t1", "TRUNCATE")
    with pytest.raises(KeyError):
        index.remove("nope")
    index.add("a=1 too", "public", "t1", "*", bound("a=eq.1,c=is.true"))
    index.remove("a=1")
    change = make_change(Operation.INSERT, {"a": 1, "c": True})
    assert index.affected(change) == {"all", "t1", "inserts", "a=1 too"}
    for key in ["all", "t1", "inserts", "a=1 deletes", "a in 1,2 and b=x", "b like x%", "never"]:
        index.remove(key)
    assert index.affected(change) == {"a=1 too"}
    index.remove("a=1 too")
    assert len(index) == 0 and not index._buckets
    index.add("a=1", "public", "t1", "*", bound("a=eq.1"))  # a removed key can come back
    assert index.affected(change) == {"a=1"}


def test_hashable_keys_of_any_kind() -> None:
    index: SubscriptionIndex[tuple[str, int]] = SubscriptionIndex()
    index.add(("socket-1", 1000), "public", "t1", "*", bound("a=eq.5"))
    assert index.affected(make_change(Operation.INSERT, {"a": "5"})) == {("socket-1", 1000)}


# --- Work: only the bindings that can match are evaluated ---------------------------------


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count BoundFilter.matches calls."""
    calls = [0]
    original = BoundFilter.matches

    def matches(self: BoundFilter, record: Record) -> bool:
        calls[0] += 1
        return original(self, record)

    monkeypatch.setattr(BoundFilter, "matches", matches)
    yield calls


MESSAGES = (Column("id", "int8"), Column("room", "int4"), Column("body", "text"))


def messages_change(operation: Operation, record: Record | None, old: Record | None) -> Change:
    return Change(
        1, "public", "messages", operation, datetime(2026, 1, 1, tzinfo=UTC), record, old, MESSAGES
    )


def test_100k_eq_bindings_evaluate_only_matching_ones(counted: list[int]) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    for room in range(100_000):
        filter = bind(parse_filter(f"room=eq.{room},body=neq.secret"), MESSAGES)
        index.add(room, "public", "messages", "*", filter)
    index.add(-1, "public", "messages", "*", bind(parse_filter("body=like.%x%"), MESSAGES))
    counted[0] = 0

    insert = messages_change(Operation.INSERT, {"id": 1, "room": 42, "body": "hi"}, None)
    assert index.affected(insert) == {42}
    assert counted[0] == 2  # the rest of room 42's filter, and the one unindexed binding

    counted[0] = 0
    update = messages_change(
        Operation.UPDATE, {"id": 1, "room": 43, "body": "x"}, {"id": 1, "room": 42, "body": "x"}
    )
    assert index.affected(update) == {42, 43, -1}
    assert counted[0] == 3  # room 43 on the new row, room 42 on the old one, the like binding

    counted[0] = 0
    secret = messages_change(Operation.INSERT, {"id": 2, "room": 7, "body": "secret"}, None)
    assert index.affected(secret) == set()
    assert counted[0] == 2


def test_bindings_without_rest_need_no_evaluation(counted: list[int]) -> None:
    index: SubscriptionIndex[int] = SubscriptionIndex()
    for room in range(1000):
        index.add(
            room, "public", "messages", "INSERT", bind(parse_filter(f"room=eq.{room}"), MESSAGES)
        )
    change = messages_change(Operation.INSERT, {"id": 1, "room": "7", "body": None}, None)
    assert index.affected(change) == {7}
    assert counted[0] == 0


def test_bound_filter_errors_are_raised_before_the_index() -> None:
    with pytest.raises(FilterError):
        bind(parse_filter("room=eq.x"), MESSAGES)
