"""Fan-out: capture source → subscription index → encoded frames → subscribers' outboxes → ack.

:class:`Hub` reads batches from a :class:`~cdc.source.ChangeSource`. For every change it asks the
:class:`~broadcaster.index.SubscriptionIndex` which bindings match, groups them by (subscriber,
topic), encodes the change's ``data`` object **once**, splices it into one frame per distinct
(vsn, topic, ids) and hands the same bytes to every subscriber that gets that frame. Once every
change of a batch is in the subscribers' buffers the batch's position is acknowledged
(:meth:`~cdc.source.ChangeSource.ack`), never earlier.

Failure policy: a change that cannot be encoded is logged and skipped; a subscriber whose
``deliver`` raises is logged and skipped; neither stops the hub. Only the source ending or failing
ends :meth:`Hub.run`.

Records larger than ``max_record_bytes`` are sent as Supabase sends them: ``errors`` is
``["Error 413: Payload Too Large"]`` and ``record``/``old_record`` keep only the fields whose value
is at most 64 bytes of text. Matching always uses the full rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import orjson

from broadcaster import phoenix
from broadcaster.filters import BoundFilter
from broadcaster.index import SubscriptionIndex
from cdc.changes import Change, JSONValue, Position, Record
from cdc.source import ChangeSource

__all__ = ["PAYLOAD_TOO_LARGE", "Binding", "Hub", "HubStats", "Subscriber", "shrink_record"]

log = logging.getLogger(__name__)

PAYLOAD_TOO_LARGE = "Error 413: Payload Too Large"
_MAX_FIELD_BYTES = 64  # what Supabase keeps of an oversized record

_Join: TypeAlias = tuple[int, int]  # (id of the subscriber, join serial)
_Key: TypeAlias = tuple[_Join, int]  # a binding: its join and its place in the join


class Subscriber(Protocol):
    """A socket as the hub sees it."""

    @property
    def vsn(self) -> phoenix.Vsn:
        """The socket's serializer."""
        ...

    def deliver(self, frame: bytes) -> None:
        """Queue one text frame; must not wait (an overflowing socket drops itself)."""
        ...


@dataclass(frozen=True, slots=True)
class Binding:
    """One usable ``postgres_changes`` binding of a joined channel.

    Attributes:
        id: the binding id the client got in the join reply.
        schema, table: names or ``"*"``.
        event: ``INSERT``, ``UPDATE``, ``DELETE`` or ``"*"``.
        filter: the bound filter, ``None`` for every row.
    """

    id: int
    schema: str
    table: str
    event: str
    filter: BoundFilter | None = None


@dataclass(slots=True)
class HubStats:
    """Counters for ``/health``."""

    batches: int = 0
    changes: int = 0
    frames: int = 0
    errors: int = 0
    position: Position | None = None
    last_commit_timestamp: float | None = None  # Unix time of the newest change handled
    last_handled_at: float | None = None  # Unix time it was handled

    def lag_seconds(self) -> float | None:
        """Commit → handled delay of the newest change (``None`` before the first)."""
        if self.last_commit_timestamp is None or self.last_handled_at is None:
            return None
        return max(0.0, self.last_handled_at - self.last_commit_timestamp)


@dataclass(frozen=True, slots=True)
class _Target:
    subscriber: Subscriber
    topic: str
    id: int
    join: _Join
    alone: bool  # the only binding of its join: its frame carries just this id
    frame_key: tuple[phoenix.Vsn, str, tuple[int, ...]]  # the frame cache key when alone


def _value_size(value: JSONValue) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return _MAX_FIELD_BYTES + 1


def shrink_record(record: Record | None) -> Record | None:
    """Supabase's treatment of an oversized record: only fields of ≤ 64 bytes are kept."""
    if record is None:
        return None
    return {k: v for k, v in record.items() if _value_size(v) <= _MAX_FIELD_BYTES}


class Hub:
    """Matches changes to bindings and fills the subscribers' outboxes.

    Args:
        source: where changes come from.
        max_record_bytes: larger ``data`` objects are shrunk as Supabase does (see module doc).
        yield_bytes, yield_seconds: while handling a batch the hub yields to the event loop once
            any one socket may have been queued this many bytes, or this much time has passed,
            since it last did, so sockets are written (and read) during a large batch. Every
            frame a socket was queued in between goes to it in one write: with many sockets,
            fewer and larger writes are what keeps fan-out fast.
    """

    def __init__(
        self,
        source: ChangeSource,
        *,
        max_record_bytes: int = 1_048_576,
        yield_bytes: int = 64 * 1024,
        yield_seconds: float = 0.05,
    ) -> None:
        self.source = source
        self.max_record_bytes = max_record_bytes
        self.yield_bytes = yield_bytes
        self.yield_seconds = yield_seconds
        self._since_yield = 0
        self.stats = HubStats()
        self._index: SubscriptionIndex[_Key] = SubscriptionIndex()
        self._targets: dict[_Key, _Target] = {}
        self._joins: dict[_Join, list[_Key]] = {}

    # --- subscriptions -------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of bindings in the index."""
        return len(self._index)

    @property
    def subscriptions(self) -> int:
        """Joined channels that have bindings."""
        return len(self._joins)

    def add(
        self, subscriber: Subscriber, serial: int, topic: str, bindings: Sequence[Binding]
    ) -> None:
        """Make the bindings of one join live. Synchronous: changes handled after this call
        see them.

        Raises:
            ValueError: this (subscriber, serial) is already subscribed, or an event is invalid
                (then nothing was added).
        """
        join = (id(subscriber), serial)
        if join in self._joins:
            raise ValueError(f"join {serial} is already subscribed")
        keys: list[_Key] = []
        alone = len(bindings) == 1
        try:
            for position, binding in enumerate(bindings):
                key: _Key = (join, position)
                self._index.add(key, binding.schema, binding.table, binding.event, binding.filter)
                frame_key = (subscriber.vsn, topic, (binding.id,))
                self._targets[key] = _Target(subscriber, topic, binding.id, join, alone, frame_key)
                keys.append(key)
        except ValueError:
            for key in keys:
                self._index.remove(key)
                del self._targets[key]
            raise
        self._joins[join] = keys

    def remove(self, subscriber: Subscriber, serial: int) -> None:
        """Forget the bindings of one join; nothing if it has none."""
        for key in self._joins.pop((id(subscriber), serial), ()):
            self._index.remove(key)
            del self._targets[key]

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, start: Position | None = None) -> None:
        """Consume the source until it ends; each batch is acknowledged once delivered.

        Raises:
            whatever the source raises (it could not go on).
        """
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        async for batch in self.source.batches(start):
            for change in batch.changes:
                self.handle(change)
                if (
                    self._since_yield >= self.yield_bytes
                    or loop.time() - last_yield >= self.yield_seconds
                ):
                    # Let the sockets be written and read: a burst larger than a socket's
                    # buffer then reaches clients that read, while one that does not read
                    # still overflows.
                    await asyncio.sleep(0)
                    last_yield = loop.time()
                    self._since_yield = 0
            self.stats.batches += 1
            self.stats.position = batch.position
            await self.source.ack(batch.position)
            last_yield = loop.time()  # ack awaited: the loop ran
            self._since_yield = 0

    def handle(self, change: Change) -> None:
        """Deliver one change to every subscriber whose bindings match it."""
        stats = self.stats
        stats.changes += 1
        stats.last_commit_timestamp = change.commit_timestamp.timestamp()
        stats.last_handled_at = time.time()
        try:
            keys = self._index.affected(change)
        except Exception:  # a bug in matching must not stop delivery to everyone else
            stats.errors += 1
            log.exception("matching change %s failed", change.position)
            return
        if not keys:
            return
        try:
            data = self._encode(change)
        except (TypeError, ValueError):
            stats.errors += 1
            log.exception("change %s cannot be encoded; skipped", change.position)
            return
        frames: dict[tuple[phoenix.Vsn, str, tuple[int, ...]], bytes] = {}
        targets = self._targets
        # Joins with several bindings get one frame listing every id that matched.
        groups: dict[_Join, tuple[Subscriber, str, list[int]]] | None = None
        sent = 0
        for key in keys:
            target = targets[key]
            if not target.alone:
                if groups is None:
                    groups = {}
                group = groups.get(target.join)
                if group is None:
                    groups[target.join] = (target.subscriber, target.topic, [target.id])
                elif target.id not in group[2]:
                    group[2].append(target.id)
                continue
            frame = frames.get(target.frame_key)
            if frame is None:
                frame = phoenix.encode_postgres_changes(
                    target.subscriber.vsn, target.topic, (target.id,), data
                )
                frames[target.frame_key] = frame
            try:
                target.subscriber.deliver(frame)
            except Exception:
                stats.errors += 1
                log.exception("delivering change %s to a subscriber failed", change.position)
            else:
                sent += 1
        if groups is not None:
            for subscriber, topic, ids in groups.values():
                ids.sort()
                cache_key = (subscriber.vsn, topic, tuple(ids))
                frame = frames.get(cache_key)
                if frame is None:
                    frame = phoenix.encode_postgres_changes(subscriber.vsn, topic, ids, data)
                    frames[cache_key] = frame
                try:
                    subscriber.deliver(frame)
                except Exception:
                    stats.errors += 1
                    log.exception("delivering change %s to a subscriber failed", change.position)
                else:
                    sent += 1
        stats.frames += sent
        if frames:
            # A socket gets at most one frame per change: the largest frame of each change
            # bounds what any one socket has been queued since the hub last yielded.
            self._since_yield += max(map(len, frames.values()))

    def _encode(self, change: Change) -> bytes:
        data = phoenix.encode_change_data(change)
        if len(data) <= self.max_record_bytes:
            return data
        shrunk = dataclasses.replace(
            change, record=shrink_record(change.record), old_record=shrink_record(change.old_record)
        )
        body: dict[str, Any] = phoenix.change_data(shrunk)
        body["errors"] = [PAYLOAD_TOO_LARGE]
        try:
            return orjson.dumps(body)
        except TypeError:  # integers beyond 64 bits (numeric)
            return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
