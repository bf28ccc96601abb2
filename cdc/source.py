"""The interface every capture source implements, and an in-memory source for tests.

A source yields :class:`~cdc.changes.Batch` objects in order. The consumer calls :meth:`ack` with a
batch's position once it has handed the batch on (for pgcast: once it is in every subscriber's
buffer); a source persists acknowledged positions so a restarted consumer resumes from them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from cdc.changes import Batch, Change, Position

__all__ = ["ChangeSource", "MemorySource"]


@runtime_checkable
class ChangeSource(Protocol):
    """A stream of change batches with resumable positions."""

    def batches(self, start: Position | None = None) -> AsyncIterator[Batch]:
        """Yield batches that come after ``start`` (or after the last acknowledged position)."""
        ...

    async def ack(self, position: Position) -> None:
        """Record that everything up to ``position`` has been handed on."""
        ...

    async def close(self) -> None:
        """Stop reading and release connections."""
        ...


class MemorySource:
    """A source fed by :meth:`push`; for tests of consumers. Bounded: ``push`` waits when full."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize)
        self._seq = 0
        self.acked: Position | None = None

    async def push(self, *changes: Change) -> Position:
        """Queue one batch of ``changes`` and return its position."""
        self._seq += 1
        position = Position(self._seq, f"m:{self._seq}")
        await self._queue.put(Batch(tuple(changes), position))
        return position

    async def batches(self, start: Position | None = None) -> AsyncIterator[Batch]:
        while True:
            batch = await self._queue.get()
            if batch is None:
                return
            if start is not None and batch.position <= start:
                continue
            yield batch

    async def ack(self, position: Position) -> None:
        self.acked = position

    async def close(self) -> None:
        await self._queue.put(None)
