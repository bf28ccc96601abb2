"""The outbox cursor against a model of Postgres' id allocation, visibility and snapshots.

No database: the model allocates ids from a sequence when a transaction writes (after it got its
xid), makes rows visible only at commit, and hands the cursor what one read statement would see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.changes import Position
from cdc.cursor import (
    CursorState,
    OutboxCursor,
    ReadParams,
    Segment,
    XidSet,
    decode_position,
    encode_position,
)


@dataclass
class Txn:
    name: int
    xid: int = 0  # assigned at the first write, as Postgres does
    rows: list[int] = field(default_factory=list)
    keys: set[int] = field(default_factory=set)


@dataclass
class Row:
    id: int
    xid: int
    key: int
    committed: bool = False


class Model:
    """Transactions writing outbox rows, committing out of id order; row locks on keys."""

    def __init__(self) -> None:
        self.next_xid = 100
        self.next_id = 1
        self.names = 0
        self.open: dict[int, Txn] = {}
        self.rows: dict[int, Row] = {}
        self.commit_order: list[int] = []  # xids in commit order
        self.latest_completed = 99
        self.locks: dict[int, int] = {}  # key -> xid holding it

    def begin(self) -> Txn:
        self.names += 1
        txn = Txn(self.names)
        self.open[txn.name] = txn
        return txn

    def write(self, txn: Txn, key: int) -> bool:
        holder = self.locks.get(key)
        if holder is not None and (not txn.xid or holder != txn.xid):
            return False  # would block on the row lock
        if not txn.xid:
            txn.xid = self.next_xid
            self.next_xid += 1
        self.locks[key] = txn.xid
        row = Row(self.next_id, txn.xid, key)
        self.next_id += 1
        self.rows[row.id] = row
        txn.rows.append(row.id)
        txn.keys.add(key)
        return True

    def end(self, txn: Txn, commit: bool) -> None:
        del self.open[txn.name]
        if txn.xid:
            self.latest_completed = max(self.latest_completed, txn.xid)
        for key in txn.keys:
            del self.locks[key]
        if commit:
            for row_id in txn.rows:
                self.rows[row_id].committed = True
            if txn.xid:
                self.commit_order.append(txn.xid)
        else:
            for row_id in txn.rows:
                del self.rows[row_id]

    def read(self, p: ReadParams) -> tuple[list[tuple[int, int]], list[int], int]:
        """What the read statement returns: committed rows above ``high`` or with a candidate
        xid, first ``limit`` by id, and its snapshot's xip and xmax as Postgres makes them
        (xmax is one past the latest completed xid, xip lists in-flight xids below it)."""
        page = sorted(
            (r.id, r.xid) for r in self.rows.values() if r.committed and p.state.wants(r.id, r.xid)
        )
        xmax = self.latest_completed + 1
        xip = sorted(t.xid for t in self.open.values() if t.xid and t.xid < xmax)
        return page[: p.limit], xip, xmax


def step(model: Model, cursor: OutboxCursor) -> tuple[list[int], bool]:
    """One read as the shell does it: read, keep the wanted rows, advance. (ids, page full)."""
    params = cursor.read_params()
    page, xip, xmax = model.read(params)
    ids = [row_id for row_id, _ in page]
    cut = ids[-1] if len(ids) >= params.limit else None
    cursor.advance(ids, cut, xip, xmax)
    return ids, cut is not None


def random_script(seed: int, length: int) -> list[tuple[str, int, int]]:
    """A uniformly random interleaving (hypothesis' own integers lean towards 0, which makes
    every transaction write the same key and serialise)."""
    rng = random.Random(seed)
    kinds = ["begin", "write", "write", "write", "commit", "abort", "read", "read"]
    return [(rng.choice(kinds), rng.randrange(8), rng.randrange(6)) for _ in range(length)]


def drive(script: list[tuple[str, int, int]], limit: int, restart_every: int = 0) -> None:
    model = Model()
    cursor = OutboxCursor(limit=limit)
    emitted: list[int] = []
    reads = 0

    def read_once() -> bool:
        nonlocal cursor, reads
        reads += 1
        if restart_every and reads % restart_every == 0:
            # Resume from the serialised position, as a restarted reader would.
            cursor = OutboxCursor(decode_position(cursor.position.token), limit=limit)
        ids, full = step(model, cursor)
        emitted.extend(ids)
        return full

    for op, n, key in script:
        txns = list(model.open.values())
        if op == "begin":
            model.begin()
        elif op == "write" and txns:
            model.write(txns[n % len(txns)], key=key)
        elif op in ("commit", "abort") and txns:
            model.end(txns[n % len(txns)], commit=op == "commit")
        elif op == "read":
            read_once()
    for txn in list(model.open.values()):
        model.end(txn, commit=True)
    for _ in range(1000):  # every full page makes progress, so this ends
        if not read_once():
            break
    else:
        raise AssertionError("the reader made no progress")
    read_once()

    committed = sorted(r.id for r in model.rows.values())
    assert sorted(emitted) == committed, "every committed row exactly once"
    assert len(emitted) == len(set(emitted)), "no duplicates"
    # Per key, rows arrive in commit order (the order their transactions committed).
    rank = {xid: i for i, xid in enumerate(model.commit_order)}
    by_key: dict[int, list[tuple[int, int]]] = {}
    for row_id in emitted:
        row = model.rows[row_id]
        by_key.setdefault(row.key, []).append((rank[row.xid], row.id))
    for seq in by_key.values():
        assert seq == sorted(seq), "per-row order follows commit order"


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 2**32), st.integers(10, 200), st.integers(1, 5))
def test_every_committed_row_exactly_once_in_commit_order(
    seed: int, length: int, limit: int
) -> None:
    drive(random_script(seed, length), limit)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32), st.integers(10, 200), st.integers(1, 4), st.integers(1, 5))
def test_resuming_from_serialised_positions(seed: int, length: int, limit: int, every: int) -> None:
    drive(random_script(seed, length), limit, restart_every=every)


def test_late_commit_below_high_is_read() -> None:
    model = Model()
    cursor = OutboxCursor(limit=10)
    slow, fast = model.begin(), model.begin()
    model.write(slow, 1)  # id 1
    model.write(fast, 2)  # id 2
    model.end(fast, commit=True)
    assert step(model, cursor) == ([2], False)
    assert cursor.state == CursorState(2, XidSet((slow.xid,), fast.xid + 1))
    model.end(slow, commit=True)
    assert step(model, cursor) == ([1], False)
    assert cursor.state == CursorState(2, XidSet((), fast.xid + 1))


def test_in_flight_xid_above_xmax_is_not_in_xip_but_still_read() -> None:
    model = Model()
    cursor = OutboxCursor(limit=10)
    early, late = model.begin(), model.begin()
    model.write(early, 1)  # xid 100, id 1
    model.write(late, 2)  # xid 101, id 2
    third = model.begin()
    model.write(third, 3)  # xid 102, id 3
    model.end(early, commit=True)  # latest completed 100 -> xmax 101: late, third not in xip
    assert step(model, cursor) == ([1], False)
    assert cursor.state.in_flight == XidSet((), 101)
    model.end(third, commit=True)
    assert step(model, cursor) == ([3], False)
    model.end(late, commit=True)
    assert step(model, cursor) == ([2], False)


def test_xid_at_or_above_xmax_holding_a_low_id_is_not_skipped() -> None:
    model = Model()
    cursor = OutboxCursor(limit=10)
    y, x = model.begin(), model.begin()
    model.write(y, 1)  # y gets xid 100, id 1
    model.write(x, 2)  # x gets xid 101, id 2
    model.write(y, 3)  # id 3
    model.end(y, commit=True)  # latest completed 100: xmax 101, so x (101) is not in xip
    assert step(model, cursor) == ([1, 3], False)
    model.end(x, commit=True)
    assert step(model, cursor) == ([2], False)


def test_full_page_below_high_keeps_old_in_progress() -> None:
    model = Model()
    cursor = OutboxCursor(limit=1)
    slow, fast = model.begin(), model.begin()
    model.write(slow, 1)
    model.write(slow, 2)
    model.write(fast, 3)
    model.end(fast, commit=True)
    assert step(model, cursor) == ([3], True)
    model.end(slow, commit=True)
    got: list[int] = []
    while True:
        ids, full = step(model, cursor)
        got += ids
        if not full:
            break
    assert got == [1, 2]


def test_in_flight_rows_below_a_full_page_are_not_skipped_or_repeated() -> None:
    """Found by the property test: while a full page drains rows below ``high``, a transaction
    still in flight at that read may hold lower ids; and the old in-flight set must not make
    already returned rows come back."""
    model = Model()
    cursor = OutboxCursor(limit=1)
    a, b, c = model.begin(), model.begin(), model.begin()
    model.write(a, 1)  # id 1
    model.write(b, 2)  # id 2
    model.write(c, 3)  # id 3
    d = model.begin()
    model.write(d, 4)  # id 4
    model.end(d, commit=True)
    assert step(model, cursor) == ([4], True)
    model.end(b, commit=True)
    model.end(c, commit=True)
    assert step(model, cursor) == ([2], True)  # a (id 1) is still in flight
    model.end(a, commit=True)
    got = []
    while True:
        ids, full = step(model, cursor)
        got += ids
        if not full:
            break
    assert got == [1, 3]
    assert cursor.state.segments == ()


def test_rows_of_a_drained_transaction_are_not_repeated() -> None:
    model = Model()
    cursor = OutboxCursor(limit=1)
    t = model.begin()
    for key in (1, 2, 3):
        model.write(t, key)  # ids 1, 2, 3
    h = model.begin()
    model.write(h, 4)  # id 4
    model.end(h, commit=True)
    assert step(model, cursor) == ([4], True)
    model.end(t, commit=True)
    got = []
    for _ in range(10):
        ids, full = step(model, cursor)
        got += ids
        if not full:
            break
    assert got == [1, 2, 3]


def test_position_round_trip_and_errors() -> None:
    state = CursorState(42, XidSet((7, 9), 11), (Segment(40, XidSet((5, 7), 10)),))
    position = encode_position(state)
    assert position == Position(42, "t3:42:11:7,9:40:10:5,7")
    assert decode_position(position) == state
    assert decode_position(position.token) == state
    assert decode_position(encode_position(CursorState())) == CursorState()
    bad_tokens = [
        "", "t3:1:0", "t2:1:0:", "t3:x:5:", "t3:-1:5:", "t3:5:5:0", "t3:5:5:a", "t3:5:5:5",
        "t3:5:-1:", "t3:5:5::6:9:", "t3:5:5::1:9", "t3:5:5::1:3:3",
    ]  # fmt: skip
    for bad in bad_tokens:
        with pytest.raises(ValueError):
            decode_position(bad)


def test_state_predicate_and_sets() -> None:
    flight = XidSet((3, 5), 8)
    assert [x for x in range(1, 11) if x in flight] == [3, 5, 8, 9, 10]
    assert "3" not in flight
    state = CursorState(10, flight)
    assert state.wants(11, 1) and state.wants(2, 3) and not state.wants(2, 4)
    draining = CursorState(10, XidSet((5,), 8), (Segment(4, XidSet((3, 5), 7)),))
    assert draining.wants(2, 5)  # in flight now: any id
    assert draining.wants(6, 3) and not draining.wants(3, 3)  # segment: only above its bound
    assert draining.wants(6, 7) and not draining.wants(6, 4)
    assert XidSet((3,), 7).covers(XidSet((3,), 9)) and not XidSet((3,), 7).covers(XidSet((4,), 9))
    assert XidSet((), 0).covers(XidSet((1, 2), 5))


def test_advance_rejects_bad_input_and_bad_limit() -> None:
    cursor = OutboxCursor(limit=5)
    with pytest.raises(ValueError):
        cursor.advance([3, 2], None, [], 10)
    with pytest.raises(ValueError):
        cursor.advance([], None, [10], 10)
    with pytest.raises(ValueError):
        cursor.advance([5], 4, [], 10)
    with pytest.raises(ValueError):
        cursor.advance([5], 6, [], 10)
    with pytest.raises(ValueError):
        OutboxCursor(limit=0)
    assert cursor.read_params() == ReadParams(CursorState(), 5)
