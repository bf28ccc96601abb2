"""The per-socket send buffer: :class:`Outbox`.

Everything a socket is sent (replies, system messages, change frames) goes through its outbox, in
order, so a join reply always precedes the changes that follow it. Producers (the hub, the socket's
own reader) call :meth:`Outbox.put`, which never waits. The first frame queued since the last
:meth:`Outbox.take` calls ``on_ready``: the connection then schedules one write for the end of the
event-loop iteration, which takes **everything** queued by then and writes it to the socket at
once, so what a socket receives in one loop iteration costs one write.

Backpressure and the overflow policy. Two quantities are bounded by ``limit``:

1. the bytes queued here (checked on every :meth:`put`);
2. the bytes the transport still holds for the client after a write (the writer reports them
   with :meth:`Outbox.backlog`): a client that stops reading leaves them there.

Going over either drops everything queued, refuses further frames and calls ``on_overflow`` with
a close request (:data:`OVERFLOW_CODE` and a reason that says why). The producer never waits, so
one client that stops reading costs the others nothing, and memory per socket stays below about
twice ``limit``.

Not a network module: it holds bytes and says when to write, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = ["OVERFLOW_CODE", "CloseRequest", "Frame", "Outbox"]

OVERFLOW_CODE: Final = 1013
"""WebSocket close code for a client that does not read fast enough ("try again later")."""

Frame: TypeAlias = "bytes | str"
"""One text frame's payload: ``str`` or its UTF-8 bytes."""


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """Why the socket is to be closed: what :attr:`Outbox.closing` holds."""

    code: int
    reason: str
    overflow: bool = False


def _nothing() -> None:
    return None


class Outbox:
    """A bounded FIFO of text frames, counted in bytes, with one consumer.

    Args:
        limit: most bytes that may wait here, and most the transport may still hold after a
            write; beyond either the outbox overflows.
        on_overflow: called once, synchronously, when the outbox overflows (the shell closes the
            socket without waiting for queued data, which is gone).
        on_ready: called when there is something for the writer: the first frame after a
            :meth:`take`, and :meth:`finish`.

    Raises:
        ValueError: ``limit`` below 1.
    """

    __slots__ = ("_close", "_frames", "_on_overflow", "_on_ready", "limit", "pending_bytes")

    def __init__(
        self,
        limit: int,
        on_overflow: Callable[[CloseRequest], None] | None = None,
        on_ready: Callable[[], None] = _nothing,
    ) -> None:
        if limit < 1:
            raise ValueError("the outbox limit must be at least 1 byte")
        self.limit = limit
        self.pending_bytes = 0
        self._frames: list[Frame] = []
        self._close: CloseRequest | None = None
        self._on_overflow = on_overflow
        self._on_ready = on_ready

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
        pending = self.pending_bytes + len(frame)
        if pending > self.limit:
            self._overflow(f"{pending} bytes unsent")
            return False
        self.pending_bytes = pending
        frames = self._frames
        frames.append(frame)
        if len(frames) == 1:
            self._on_ready()
        return True

    def take(self) -> list[Frame]:
        """Everything queued, oldest first (empty when nothing is)."""
        frames = self._frames
        if frames:
            self._frames = []
            self.pending_bytes = 0
        return frames

    def backlog(self, unsent: int) -> bool:
        """The writer's report: the transport still holds ``unsent`` bytes after a write.
        ``False`` if that is over the limit (the outbox then overflows)."""
        if unsent <= self.limit:
            return True
        if self._close is None or not self._close.overflow:
            self._close = None
            self._overflow(f"{unsent} bytes not yet read by the client")
        return False

    def _overflow(self, what: str) -> None:
        reason = (
            f"send buffer overflow: {what} exceeds the {self.limit}-byte limit (client too slow)"
        )
        self._frames = []
        self.pending_bytes = 0
        self._close = CloseRequest(OVERFLOW_CODE, reason, overflow=True)
        if self._on_overflow is not None:
            self._on_overflow(self._close)

    def finish(self, code: int, reason: str) -> None:
        """Accept no more frames: what is queued is still written, then the socket closes with
        ``code`` and ``reason``. Does nothing if the outbox is already closing."""
        if self._close is None:
            self._close = CloseRequest(code, reason)
            self._on_ready()
