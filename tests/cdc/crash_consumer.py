"""A subscriber that test_replication_crash.py kills with SIGKILL: it delivers changes to a file.

``python -m tests.cdc.crash_consumer DSN SLOT FILE``. Each change is appended as one JSON line
``{"token", "id", "n", "of"}`` (``n`` of ``of`` within its batch), one unbuffered write per
batch, and only then is the batch acked. On start the file is the subscriber's own record of what
it holds: a batch is delivered once all its lines are there; a torn tail (a kill mid-write) is cut
off, and the token of the last delivered batch is the ``start`` it resumes from, as pgcast's
subscribers do. Nothing else tells the source where to resume.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from cdc.assembler import parse_token
from cdc.changes import Position
from cdc.replication import ReplicationSource

DELIVERY = 0.002
"""Seconds each batch takes to hand on (a client far away) before it is written down: the writer
gets ahead, so every kill lands in a backlog the slot still holds, and often between a batch's
arrival and its ack."""


def delivered(path: Path) -> tuple[list[int], int, str | None]:
    """The ids of the complete batches in ``path``, the byte length they take, the last token."""
    ids: list[int] = []
    pending: list[int] = []
    end = 0
    offset = 0
    token: str | None = None
    data = path.read_bytes() if path.exists() else b""
    for line in data.splitlines(keepends=True):
        offset += len(line)
        if not line.endswith(b"\n"):
            break  # torn final line
        entry = json.loads(line)
        if entry["n"] == 1:
            pending = []
        pending.append(entry["id"])
        if entry["n"] == entry["of"] == len(pending):
            ids += pending
            pending = []
            end = offset
            token = entry["token"]
    return ids, end, token


async def consume(dsn: str, slot: str, out: int, start: Position | None) -> None:
    """Deliver every batch after ``start`` to the file descriptor ``out``, then ack it."""
    source = ReplicationSource(dsn, slot=slot, publication=slot, consumer=slot, max_backoff=0.5)
    async for batch in source.batches(start):
        await asyncio.sleep(DELIVERY)
        of = len(batch.changes)
        lines = [
            {"token": batch.position.token, "id": change.record["id"], "n": n, "of": of}
            for n, change in enumerate(batch.changes, 1)
            if change.record is not None
        ]
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        while data:
            data = data[os.write(out, data) :]
        await source.ack(batch.position)


def main(dsn: str, slot: str, path: Path) -> None:
    _, end, token = delivered(path)
    out = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.truncate(out, end)  # a batch cut short by the kill was never delivered
    start = None if token is None else Position(parse_token(token)[0], token)
    asyncio.run(consume(dsn, slot, out, start))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
