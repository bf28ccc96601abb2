"""Which subscriptions a row change concerns: :class:`SubscriptionIndex`.

Pure: no I/O. The hub adds one binding per ``postgres_changes`` entry of a joined channel and
asks :meth:`SubscriptionIndex.affected` for every change.

A binding matches a change when its schema and table equal the change's (or are ``"*"``), its
event is ``"*"`` or the change's operation, and its filter matches a row of the change: ``record``
for INSERT, ``old_record`` for DELETE, ``record`` or ``old_record`` for UPDATE, so that a row
that moves out of a filter is reported to the subscribers it leaves. A change without such a
row matches nothing.

Layout. Bindings sit in buckets keyed by (schema, table, event), wildcards included, so a change
looks at no more than eight buckets. Within a bucket:

- bindings without conditions always match;
- bindings with an :class:`~broadcaster.filters.EqualityKey` (``eq``, ``in``, ``not.neq``) are
  filed under each of its values; a change looks up its own value of that column and evaluates
  only the rest of each filter found there, so the work grows with the bindings that match,
  not with the bindings of the table;
- the other bindings are evaluated one by one.

The lookup uses the filter's own normaliser and ``==``, exactly as
:meth:`~broadcaster.filters.BoundFilter.matches` does, so the index returns the same set as
evaluating every binding (the filter is an access boundary: there is no fallback that matches
more).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

from broadcaster.filters import BoundFilter, Key, Normaliser
from cdc.changes import Change, Operation, Record

__all__ = ["EVENTS", "WILDCARD", "SubscriptionIndex"]

WILDCARD = "*"
"""Matches any schema, table or event."""

EVENTS = frozenset({WILDCARD, *(operation.value for operation in Operation)})
"""The events a binding may name."""

K = TypeVar("K", bound=Hashable)

_BucketKey: TypeAlias = tuple[str, str, str]
_Group: TypeAlias = tuple[str, Normaliser]  # a column and how its values are compared


@dataclass(slots=True)
class _Bucket(Generic[K]):
    """The bindings of one (schema, table, event)."""

    always: set[K] = field(default_factory=set)
    scan: dict[K, BoundFilter] = field(default_factory=dict)
    # group → value → binding → what is left to check (None: nothing)
    by_value: dict[_Group, dict[Key, dict[K, BoundFilter | None]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.always or self.scan or self.by_value)


@dataclass(frozen=True, slots=True)
class _Entry:
    """Where a binding is filed, for :meth:`SubscriptionIndex.remove`."""

    bucket: _BucketKey | None  # None: filed nowhere, as the binding can never match
    group: _Group | None = None
    values: frozenset[Key] = frozenset()


class SubscriptionIndex(Generic[K]):
    """Bindings of subscribers to tables, looked up by row change.

    ``K`` is the caller's binding id: any hashable value, unique within the index.
    """

    __slots__ = ("_buckets", "_entries")

    def __init__(self) -> None:
        self._buckets: dict[_BucketKey, _Bucket[K]] = {}
        self._entries: dict[K, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(
        self,
        key: K,
        schema: str,
        table: str,
        event: str,
        bound_filter: BoundFilter | None = None,
    ) -> None:
        """File a binding.

        Args:
            key: the binding id, returned by :meth:`affected`.
            schema: a schema name or ``"*"``.
            table: a table name or ``"*"``.
            event: ``"INSERT"``, ``"UPDATE"``, ``"DELETE"`` or ``"*"``.
            bound_filter: the binding's filter; ``None`` matches every row.

        Raises:
            ValueError: ``key`` is already in the index, or ``event`` is not one of the above.
        """
        if key in self._entries:
            raise ValueError(f"binding {key!r} is already in the index")
        if event not in EVENTS:
            raise ValueError(f"event must be one of {sorted(EVENTS)}, not {event!r}")
        bucket_key = (schema, table, str(event))
        equality = None
        if bound_filter is not None:
            keys = bound_filter.equality_keys()
            equality = min(keys, key=lambda k: len(k.values), default=None)
        if equality is not None and not equality.values:  # e.g. in.(): never matches
            self._entries[key] = _Entry(None)
            return
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            bucket = self._buckets[bucket_key] = _Bucket()
        if bound_filter is None or not bound_filter.conditions:
            bucket.always.add(key)
            self._entries[key] = _Entry(bucket_key)
        elif equality is None:
            bucket.scan[key] = bound_filter
            self._entries[key] = _Entry(bucket_key)
        else:
            rest = bound_filter.without(equality)
            group = (equality.column, equality.normalise)
            by_value = bucket.by_value.setdefault(group, {})
            for value in equality.values:
                by_value.setdefault(value, {})[key] = rest if rest.conditions else None
            self._entries[key] = _Entry(bucket_key, group, equality.values)

    def remove(self, key: K) -> None:
        """Forget a binding.

        Raises:
            KeyError: ``key`` is not in the index.
        """
        entry = self._entries.pop(key)
        if entry.bucket is None:
            return
        bucket = self._buckets[entry.bucket]
        bucket.always.discard(key)
        bucket.scan.pop(key, None)
        if entry.group is not None:
            by_value = bucket.by_value[entry.group]
            for value in entry.values:
                bindings = by_value[value]
                del bindings[key]
                if not bindings:
                    del by_value[value]
            if not by_value:
                del bucket.by_value[entry.group]
        if not bucket:
            del self._buckets[entry.bucket]

    def affected(self, change: Change) -> set[K]:
        """The ids of the bindings ``change`` matches (see the module doc)."""
        candidates: tuple[Record | None, ...]
        if change.operation is Operation.INSERT:
            candidates = (change.record,)
        elif change.operation is Operation.DELETE:
            candidates = (change.old_record,)
        else:
            candidates = (change.record, change.old_record)
        rows = tuple(row for row in candidates if row is not None)
        found: set[K] = set()
        if not rows:
            return found
        get = self._buckets.get
        for schema in (change.schema, WILDCARD):
            for table in (change.table, WILDCARD):
                for event in (change.operation.value, WILDCARD):
                    bucket = get((schema, table, event))
                    if bucket is not None:
                        _collect(bucket, rows, found)
        return found


def _collect(bucket: _Bucket[K], rows: tuple[Record, ...], found: set[K]) -> None:
    """Add to ``found`` the bindings of ``bucket`` that match one of ``rows``."""
    found |= bucket.always
    for key, bound_filter in bucket.scan.items():
        if any(bound_filter.matches(row) for row in rows):
            found.add(key)
    for (column, normalise), by_value in bucket.by_value.items():
        for row in rows:
            value = row.get(column)
            normalised = None if value is None else normalise(value)
            bindings = None if normalised is None else by_value.get(normalised)
            if bindings is None:
                continue
            for key, rest in bindings.items():
                if key not in found and (rest is None or rest.matches(row)):
                    found.add(key)
