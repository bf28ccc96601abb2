"""The per-socket send buffer: :class:`Outbox`.

Everything a socket is sent (replies, system messages, change frames) goes through its outbox, in
order, so a join reply always precedes the changes that follow it. Producers (the hub, the socket's
own reader) call :meth:`Outbox.put`, which never waits; one writer task per socket takes what is
queued with :meth:`Outbox.take` and writes it.

Backpressure, in two stages:

1. The transport's write buffer has a high and a low water mark (websockets' ``write_limit``).
   Above the high mark the writer is suspended until the buffer falls below the low mark; while it
   waits, frames collect here.
2. The outbox is bounded in bytes. **Overflow policy:** a ``put`` that would take it over
   ``limit`` drops everything queued, refuses further frames and asks for the socket to be closed
   with :data:`OVERFLOW_CODE` and a reason that says why. The producer never waits, so one client
   that stops reading costs the others nothing, and memory per socket stays below twice ``limit``
   (what waits here plus what the writer took last) plus the transport's high-water mark.

Not a network module: it holds bytes and wakes a writer, nothing more.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = ["OVERFLOW_CODE", "CloseRequest", "Frame", "Outbox"]

OVERFLOW_CODE: Final = 1013
"""WebSocket close code for a client that does not read fast enough ("try again later")."""

Frame: TypeAlias = "bytes | str"
"""One text frame: ``str`` or its UTF-8 bytes."""


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """What :meth:`Outbox.take` returns once the socket is to be closed."""

    code: int
    reason: str
    overflow: bool = False


class Outbox:
    """A bounded FIFO of text frames, counted in bytes, with one consumer.

    Args:
        limit: most bytes that may wait here; a frame that would exceed it overflows the outbox.
        on_overflow: called once, synchronously, when the outbox overflows (the shell closes the
            socket without waiting for queued data, which is gone).

    Raises:
        ValueError: ``limit`` below 1.
    """

    __slots__ = ("_close", "_frames", "_on_overflow", "_wake", "limit", "pending_bytes")

    def __init__(self, limit: int, on_overflow: Callable[[CloseRequest], None] | None = None):
        if limit < 1:
            raise ValueError("the outbox limit must be at least 1 byte")
        self.limit = limit
        self.pending_bytes = 0
        self._frames: deque[Frame] = deque()
        self._close: CloseRequest | None = None
        self._on_overflow = on_overflow
        self._wake = asyncio.Event()

    @property
    def closing(self) -> CloseRequest | None:
        """Why the outbox accepts no more frames, or ``None`` while it does."""
        return self._close

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: Frame) -> bool:
        """Queue ``frame``; ``False`` if it was dropped (closing, or this put overflowed)."""
        if self._close is not None:
            return False
        size = len(frame)
        if self.pending_bytes + size > self.limit:
            self._overflow(size)
            return False
        self._frames.append(frame)
        self.pending_bytes += size
        self._wake.set()
        return True

    def _overflow(self, size: int) -> None:
        reason = (
            f"send buffer overflow: {self.pending_bytes + size} bytes unsent exceeds the "
            f"{self.limit}-byte limit (client too slow)"
        )
        self._frames.clear()
        self.pending_bytes = 0
        self._close = CloseRequest(OVERFLOW_CODE, reason, overflow=True)
        self._wake.set()
        if self._on_overflow is not None:
            self._on_overflow(self._close)

    def finish(self, code: int, reason: str) -> None:
        """Accept no more frames; :meth:`take` returns what is queued, then the close request.
        Does nothing if the outbox is already closing."""
        if self._close is None:
            self._close = CloseRequest(code, reason)
            self._wake.set()

    async def take(self) -> list[Frame] | CloseRequest:
        """Wait for frames and return all that are queued (oldest first), or, once the outbox
        is closing and empty, the :class:`CloseRequest`."""
        while not self._frames:
            if self._close is not None:
                return self._close
            self._wake.clear()
            await self._wake.wait()
        frames = list(self._frames)
        self._frames.clear()
        self.pending_bytes = 0
        return frames
