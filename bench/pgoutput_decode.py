"""Decode speed of replication capture for an 8-column INSERT (bigint, int, 3 text, numeric, bool,
timestamptz; the shape of python-tech.md's ``items``), single-threaded, no I/O.

    .venv/bin/python bench/pgoutput_decode.py [ROWS]

Prints rows/s for three stages, best of 5 runs each:

- ``parse``: :func:`cdc.pgoutput.parse_message` only (bytes → ``Insert`` with text values);
- ``assemble``: parse + :class:`cdc.assembler.Assembler` (typed values, ``Change`` objects),
  1000 rows per transaction;
- ``assemble, 1-row txns``: the same with Begin/Commit around every row.

The Relation message is real (tests/fixtures/pgoutput_session.json); the row is built here.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from cdc.assembler import Assembler  # noqa: E402
from cdc.pgoutput import Relation, parse_message  # noqa: E402

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "pgoutput_session.json"
VALUES = (
    "9007199254740993", "42", "widget", "a short note about the widget",
    "some longer description text of a widget, around a hundred bytes or so for realism",
    "19.99", "t", "2026-01-01 12:00:00.123456+00",
)  # fmt: skip


def items_relation() -> bytes:
    for message in json.loads(FIXTURE.read_text())["messages"]:
        data = bytes.fromhex(message["hex"])
        parsed = parse_message(data) if data[:1] == b"R" else None
        if isinstance(parsed, Relation) and parsed.name == "items" and len(parsed.columns) == 8:
            return data
    raise SystemExit("no 8-column items Relation in the fixture")


def insert(oid: int) -> bytes:
    body = b"".join(b"t" + struct.pack("!I", len(v.encode())) + v.encode() for v in VALUES)
    return b"I" + struct.pack("!IcH", oid, b"N", len(VALUES)) + body


def best_rate(rows: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return rows / best


def main(rows: int) -> None:
    relation = items_relation()
    oid = struct.unpack_from("!I", relation, 1)[0]
    row = insert(oid)
    begin = b"B" + struct.pack("!QqI", 100, 0, 1)
    commit = b"C" + struct.pack("!BQQq", 0, 100, 120, 0)

    def parse_only() -> None:
        for _ in range(rows):
            parse_message(row)

    def assemble(per_txn: int) -> Callable[[], None]:
        def run() -> None:
            machine = Assembler()
            machine.feed_data(relation)
            feed = machine.feed_data
            for _ in range(rows // per_txn):
                feed(begin)
                for _ in range(per_txn):
                    feed(row)
                feed(commit)

        return run

    sample = Assembler()
    sample.feed_data(relation)
    sample.feed_data(begin)
    sample.feed_data(row)
    batch = sample.feed_data(commit)
    assert batch is not None
    print(f"row: {len(row)} bytes -> {dict(batch.changes[0].record or {})}")
    for label, run in [
        ("parse", parse_only),
        ("assemble", assemble(1000)),
        ("assemble, 1-row txns", assemble(1)),
    ]:
        rate = best_rate(rows, run)
        print(f"{label:>22}: {rate / 1000:8.0f}k rows/s  ({1e6 / rate:.2f} µs/row)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
