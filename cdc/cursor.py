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

Full pages. Reads are ``ORDER BY id LIMIT n``, so when a page is full every wanted row with an id
up to the page's last id ``L`` was returned and the rest lie above ``L``. If ``L`` reaches
``high`` the rest is simply ``id > high``. Otherwise the cursor keeps *segments*: "rows of these
xids above this bound". The in-flight set before the page becomes a segment with bound ``L``
(its visible rows up to ``L`` were returned), older segments' bounds rise to at least ``L``, and
the new snapshot's in-flight set selects its rows at any id (they were invisible, so none was
returned). Segments are dropped once a page is not full or reaches ``high``.

The read statement selects exactly the rows :meth:`CursorState.wants` (``cdc.sql`` builds it for
the number of segments); the shell tells :meth:`OutboxCursor.advance` where the page was cut.

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

__all__ = [
    "CursorState",
    "OutboxCursor",
    "ReadParams",
    "Segment",
    "XidSet",
    "decode_position",
    "encode_position",
]

_TOKEN_PREFIX = "t3"


_NO_XID = 2**63 - 1  # an xmax no xid reaches: "nothing at or above is in flight"


@dataclass(frozen=True, slots=True)
class XidSet:
    """The xids in flight at one snapshot: those in ``xip`` and every xid from ``xmax`` on."""

    xip: tuple[int, ...] = ()
    xmax: int = 0  # 0: every xid

    def __contains__(self, xid: object) -> bool:
        return isinstance(xid, int) and (xid >= self.xmax or xid in self.xip)

    def covers(self, other: XidSet) -> bool:
        """Whether every xid of ``other`` is in this set."""
        return self.xmax <= other.xmax and all(x in self for x in other.xip)


@dataclass(frozen=True, slots=True)
class Segment:
    """Rows whose xid is in ``xids`` and whose id is above ``after`` are still to be read."""

    after: int
    xids: XidSet


@dataclass(frozen=True, slots=True)
class CursorState:
    """Read position. Still to be read: rows above ``high``, rows of xids in flight at the last
    read (``in_flight``, any id), and rows described by ``segments``."""

    high: int = 0
    in_flight: XidSet = XidSet()
    segments: tuple[Segment, ...] = ()

    def wants(self, row_id: int, xid: int) -> bool:
        """Whether a committed row is still to be read."""
        if row_id > self.high or xid in self.in_flight:
            return True
        return any(row_id > s.after and xid in s.xids for s in self.segments)


@dataclass(frozen=True, slots=True)
class ReadParams:
    """The next read: the rows ``state`` wants, first ``limit`` by id."""

    state: CursorState
    limit: int


def _xids(values: tuple[int, ...]) -> str:
    return ",".join(str(x) for x in values)


def encode_position(state: CursorState) -> Position:
    """The :class:`Position` token: ``t3:<high>:<xmax>:<xid>,…`` then ``:<after>:<xmax>:<xid>,…``
    per segment."""
    parts = [_TOKEN_PREFIX, str(state.high), str(state.in_flight.xmax), _xids(state.in_flight.xip)]
    for segment in state.segments:
        parts += [str(segment.after), str(segment.xids.xmax), _xids(segment.xids.xip)]
    return Position(state.high, ":".join(parts))


def _parse_set(xmax: str, xip: str) -> XidSet:
    limit = int(xmax)
    values = tuple(sorted({int(x) for x in xip.split(",") if x}))
    if not 0 <= limit <= _NO_XID or any(not 0 < x < limit for x in values):
        raise ValueError
    return XidSet(values, limit)


def decode_position(position: Position | str) -> CursorState:
    """Parse a token made by :func:`encode_position`.

    Raises:
        ValueError: the token is not a trigger-mode position.
    """
    token = position.token if isinstance(position, Position) else position
    parts = token.split(":")
    if len(parts) < 4 or (len(parts) - 4) % 3 or parts[0] != _TOKEN_PREFIX:
        raise ValueError(f"not a trigger-mode position: {token!r}")
    try:
        high = int(parts[1])
        in_flight = _parse_set(parts[2], parts[3])
        segments = []
        for i in range(4, len(parts), 3):
            after = int(parts[i])
            if not 0 <= after <= high:
                raise ValueError
            segments.append(Segment(after, _parse_set(parts[i + 1], parts[i + 2])))
    except ValueError:
        raise ValueError(f"not a trigger-mode position: {token!r}") from None
    if high < 0:
        raise ValueError(f"not a trigger-mode position: {token!r}")
    return CursorState(high, in_flight, tuple(segments))


def _simplify(segments: list[Segment]) -> tuple[Segment, ...]:
    """Drop segments another one makes redundant (same or lower bound, superset of xids)."""
    kept: list[Segment] = []
    for seg in sorted(segments, key=lambda s: (s.after, -len(s.xids.xip))):
        if any(k.after <= seg.after and k.xids.covers(seg.xids) for k in kept):
            continue
        kept.append(seg)
    return tuple(kept)


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
        return ReadParams(self._state, self._limit)

    def advance(
        self, row_ids: Sequence[int], cut: int | None, snapshot_xip: Iterable[int], xmax: int
    ) -> None:
        """Record a read.

        Args:
            row_ids: the ids the read returned, ascending.
            cut: the last id when the page was full (``limit`` rows), else None.
            snapshot_xip: the read snapshot's in-progress xids.
            xmax: the read snapshot's xmax.

        Raises:
            ValueError: inconsistent input (a shell bug).
        """
        previous = self._state
        last = 0
        for row_id in row_ids:
            if row_id <= last:
                raise ValueError("row ids must be strictly ascending")
            last = row_id
        if cut is not None and cut != last:
            raise ValueError("the cut is the last id of a full page")
        xip = tuple(sorted(set(snapshot_xip)))
        if any(x >= xmax for x in xip):
            raise ValueError("xip entries must be below xmax")
        now = XidSet(xip, xmax)
        if cut is None or cut >= previous.high:
            self._state = CursorState(max(previous.high, last, cut or 0), now)
            return
        raised = [Segment(max(s.after, cut), s.xids) for s in previous.segments]
        raised.append(Segment(cut, previous.in_flight))
        self._state = CursorState(previous.high, now, _simplify(raised))
