"""Cost of SubscriptionIndex.affected() per change as eq bindings on one table grow.

Run: ``.venv/bin/python bench/matching.py``. Each binding is ``room=eq.<n>`` on public.messages
(one room per subscriber); changes are INSERTs into a room that has one subscriber, and UPDATEs
that move a row from one room to another (old and new rooms both see it). The last column is
brute force (every binding's filter evaluated) for contrast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from broadcaster.filters import BoundFilter, bind, parse_filter
from broadcaster.index import SubscriptionIndex
from cdc.changes import Change, Column, Operation, Record

COLUMNS = (Column("id", "int8"), Column("room", "int4"), Column("body", "text"))
SIZES = (10, 1_000, 100_000)


def change(operation: Operation, record: Record | None, old: Record | None) -> Change:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return Change(1, "public", "messages", operation, when, record, old, COLUMNS)


def per_change_us(run: Callable[[Change], object], changes: list[Change], budget: float) -> float:
    """Mean µs per call, repeating over ``changes`` for about ``budget`` seconds."""
    calls, start = 0, time.perf_counter()
    while True:
        for item in changes:
            run(item)
        calls += len(changes)
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return elapsed / calls * 1e6


def main() -> None:
    print(f"{'bindings':>9} {'change':>7} {'µs/change':>10} {'matched':>8} {'brute force µs':>15}")
    for size in SIZES:
        index: SubscriptionIndex[int] = SubscriptionIndex()
        filters: list[BoundFilter] = []
        for room in range(size):
            bound = bind(parse_filter(f"room=eq.{room}"), COLUMNS)
            filters.append(bound)
            index.add(room, "public", "messages", "*", bound)
        rooms = [(i * 7919) % size for i in range(100)]
        inserts = [
            change(Operation.INSERT, {"id": i, "room": room, "body": "hi"}, None)
            for i, room in enumerate(rooms)
        ]
        updates = [
            change(
                Operation.UPDATE,
                {"id": i, "room": room, "body": "hi"},
                {"id": i, "room": (room + 1) % size, "body": "hi"},
            )
            for i, room in enumerate(rooms)
        ]

        def brute(item: Change, filters: list[BoundFilter] = filters) -> int:
            rows = [row for row in (item.record, item.old_record) if row is not None]
            return sum(any(f.matches(row) for row in rows) for f in filters)

        for name, changes in (("INSERT", inserts), ("UPDATE", updates)):
            matched = len(index.affected(changes[0]))
            assert matched == brute(changes[0])
            indexed = per_change_us(index.affected, changes, budget=0.5)
            brute_us = per_change_us(brute, changes[:3], budget=0.5)
            print(f"{size:>9,} {name:>7} {indexed:>10.2f} {matched:>8} {brute_us:>15,.1f}")


if __name__ == "__main__":
    main()
