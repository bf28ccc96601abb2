"""Shared helpers for capture tests: run a source in the background and collect its changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from cdc.changes import Batch, Change, Position
from cdc.cursor import CursorState, encode_position
from cdc.listen import OutboxSource

FROM_START: Position = encode_position(CursorState())


class Collector:
    """Consumes a source in a task; ``wait_for`` blocks until a predicate holds."""

    def __init__(self, source: OutboxSource, start: Position | None = FROM_START) -> None:
        self.source = source
        self.batches: list[Batch] = []
        self.changes: list[Change] = []
        self._updated = asyncio.Event()
        self._task = asyncio.create_task(self._run(start))

    async def _run(self, start: Position | None) -> None:
        try:
            async for batch in self.source.batches(start):
                self.batches.append(batch)
                self.changes.extend(batch.changes)
                await self.source.ack(batch.position)
                self._updated.set()
        finally:
            self._updated.set()

    async def wait_for(self, done: Callable[[list[Change]], bool], seconds: float = 30) -> None:
        async with asyncio.timeout(seconds):
            while not done(self.changes):
                if self._task.done():
                    self._task.result()  # raise what stopped the reader
                    raise AssertionError("reader stopped")
                self._updated.clear()
                await self._updated.wait()

    async def wait_count(self, n: int, seconds: float = 30) -> None:
        await self.wait_for(lambda changes: len(changes) >= n, seconds)

    async def stop(self) -> None:
        await self.source.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


NOW = Position(-1, "now")


@contextlib.asynccontextmanager
async def collecting(
    dsn: str, start: Position | None = NOW, **options: object
) -> AsyncIterator[Collector]:
    """Read changes from ``start``; by default only those committed after this call."""
    source = OutboxSource(dsn, **options)  # type: ignore[arg-type]
    if start is NOW:
        start = await source.current_position()
    collector = Collector(source, start)
    try:
        yield collector
    finally:
        await collector.stop()
