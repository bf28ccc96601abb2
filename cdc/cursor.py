"""Trigger-mode read cursor: which outbox rows to read next, gap-free and exactly once.

Pure: no I/O. The shell (:mod:`cdc.listen`) asks :meth:`OutboxCursor.read_params` what to read,
runs one statement that returns the matching rows *and* the statement's snapshot, and reports back
with :meth:`OutboxCursor.advance`.

Why this is gap-free. Outbox ids come from a sequence when the capture trigger runs, not at commit,
so a transaction holding id 5 may commit after one holding id 9. Each read runs in one snapshot
``S`` and returns the rows visible in ``S`` that are either

* above ``high``, the highest id read so far, or
* written by a transaction that was still in progress at the previous read: its xid is in
  ``in_progress`` (the previous snapshot's ``xip`` list) or at least ``xmax`` (the previous
  snapshot's ``xmax``; ``xip`` only lists in-progress xids below it, but a transaction that got
  its xid after the last completed one is just as much in flight).

Claim: every committed row is returned by exactly one read. A row ``r`` with id ``i`` and xid ``x``
that is not returned by read *k* although visible there has ``i <= high_{k-1}`` and ``x`` not in
flight at read *k-1* (not in ``xip_{k-1}``, below ``xmax_{k-1}``). Because ``i <= high_{k-1}``,
some row with an id at least ``i`` was visible to read *k-1*; ids are allocated after the writing
transaction got its xid, so ``x`` was assigned before that row's commit, hence before ``S_{k-1}``
was taken, hence ``x`` was either finished in ``S_{k-1}`` (then ``r`` was visible there and
returned by read *k-1* or earlier, by induction) or in flight there (excluded by assumption).
Conversely a row returned by read *k* was not
visible earlier if it came through ``in_progress``, and has a larger id than anything returned
before if it came through ``high``: no duplicates.

Full pages. Reads are ``ORDER BY id LIMIT n``. When a page is full, every selected row with an
id up to the page's last id ``L`` was returned, and the rest lie above ``L``. If ``L`` reaches the
previous ``high`` the rest is simply ``id > high``; otherwise the next read keeps the previous
``in_progress`` xids as well and skips ids up to ``L`` (``after``), so rows of transactions that
committed meanwhile are neither lost nor read twice.

Per-row order: a transaction that changes a row another transaction changed waits for that
transaction's commit before its own trigger allocates an id, so its id is larger and its rows are
never visible before the earlier ones. Within a read rows are sorted by id.

Positions: the cursor state ``(high, in_progress)`` is the resumable position. It is small: the
``in_progress`` list is bounded by the number of concurrent transactions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cdc.changes import Position

__all__ = ["CursorState", "OutboxCursor", "ReadParams", "decode_position", "encode_position"]

_TOKEN_PREFIX = "t2"


@dataclass(frozen=True, slots=True)
class CursorState:
    """Read position: rows with ``id > after`` and (``id > high`` or xid in ``in_progress``) are
    still to be read; every other committed row has been read."""

    high: int = 0
    in_progress: tuple[int, ...] = ()
    after: int = 0
    xmax: int = 0  # 0: no snapshot yet, every xid counts as in flight

    def in_flight(self, xid: int) -> bool:
        """Whether ``xid`` was in flight at the read that produced this state."""
        return xid >= self.xmax or xid in self.in_progress


@dataclass(frozen=True, slots=True)
class ReadParams:
    """The next read: ``id > after AND (id > high OR xid in flight)``, first ``limit`` rows, where
    an xid is in flight when it is in ``in_progress`` or at least ``xmax``."""

    high: int
    in_progress: tuple[int, ...]
    xmax: int
    after: int
    limit: int


def encode_position(state: CursorState) -> Position:
    """The :class:`Position` token (``t2:<high>:<after>:<xmax>:<xid>,<xid>…``)."""
    xids = ",".join(str(x) for x in state.in_progress)
    return Position(state.high, f"{_TOKEN_PREFIX}:{state.high}:{state.after}:{state.xmax}:{xids}")


def decode_position(position: Position | str) -> CursorState:
    """Parse a token made by :func:`encode_position`.

    Raises:
        ValueError: the token is not a trigger-mode position.
    """
    token = position.token if isinstance(position, Position) else position
    parts = token.split(":")
    if len(parts) != 5 or parts[0] != _TOKEN_PREFIX:
        raise ValueError(f"not a trigger-mode position: {token!r}")
    try:
        high, after, xmax = int(parts[1]), int(parts[2]), int(parts[3])
        xids = tuple(sorted({int(x) for x in parts[4].split(",") if x}))
    except ValueError:
        raise ValueError(f"not a trigger-mode position: {token!r}") from None
    if high < 0 or not 0 <= after <= high or xmax < 0 or any(not 0 < x < xmax for x in xids):
        raise ValueError(f"not a trigger-mode position: {token!r}")
    return CursorState(high, xids, after, xmax)


class OutboxCursor:
    """The read cursor over ``pgcast.changes``.

    Args:
        start: the state to resume from (a fresh reader starts at ``CursorState()``, which reads
            everything the outbox holds).
        limit: the most rows one read returns.
    """

    def __init__(self, start: CursorState | None = None, limit: int = 1000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._state = start if start is not None else CursorState()
        self._limit = limit

    @property
    def state(self) -> CursorState:
        return self._state

    @property
    def position(self) -> Position:
        return encode_position(self._state)

    def read_params(self) -> ReadParams:
        """Parameters of the next read."""
        s = self._state
        return ReadParams(s.high, s.in_progress, s.xmax, s.after, self._limit)

    def advance(self, row_ids: Sequence[int], snapshot_xip: Iterable[int], xmax: int) -> bool:
        """Record a read: the ids it returned (ascending) and its snapshot's ``xip`` and ``xmax``.

        Returns:
            True when the page was full, so the caller should read again at once.

        Raises:
            ValueError: the ids are not strictly ascending or not above ``after`` (a shell bug).
        """
        previous = self._state
        last = previous.after
        for row_id in row_ids:
            if row_id <= last:
                raise ValueError("row ids must be strictly ascending and above the cursor")
            last = row_id
        xip = set(snapshot_xip)
        if any(x >= xmax for x in xip):
            raise ValueError("xip entries must be below xmax")
        full = len(row_ids) >= self._limit
        if not full:
            high = max(previous.high, last)
            self._state = CursorState(high, tuple(sorted(xip)), 0, xmax)
        elif last >= previous.high:
            self._state = CursorState(last, tuple(sorted(xip)), 0, xmax)
        else:
            # Still in flight: what was in flight at either read.
            floor = min(previous.xmax, xmax)
            merged = {x for x in xip.union(previous.in_progress) if x < floor}
            self._state = CursorState(previous.high, tuple(sorted(merged)), last, floor)
        return full
