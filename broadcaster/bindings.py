"""From a join's ``postgres_changes`` entries to usable :class:`~broadcaster.hub.Binding` objects.

:func:`resolve` reads each entry (event, schema, table, filter), looks the table's columns up
through a :class:`ColumnLookup` and binds the filter to them. As Supabase inserts all of a join's
subscriptions in one transaction, one unusable entry makes the whole join's bindings unusable: the
result is then a *problem* (Supabase's error text), which the channel sends as a ``system`` error
after the successful join reply.

Defaults as Supabase: no ``event`` means ``*``; no ``schema`` means ``public``; no ``table`` means
every table of the schema. A filter needs a named table (its columns give the literals their
types).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from broadcaster.filters import (
    Comparison,
    Filter,
    FilterError,
    InList,
    IsTest,
    Like,
    bind,
    parse_filter,
)
from broadcaster.hub import Binding
from broadcaster.index import EVENTS, WILDCARD
from broadcaster.payloads import PostgresChange
from cdc.changes import Column

__all__ = ["ColumnLookup", "DatabaseProbe", "describe", "resolve"]

_UNABLE = "Unable to subscribe to changes with given parameters. "


class ColumnLookup(Protocol):
    """Where table columns come from (:class:`cdc.catalog.Catalog`)."""

    async def columns(self, schema: str, table: str) -> tuple[Column, ...]:
        """The table's columns in attnum order; ``()`` for an unknown table."""
        ...


class DatabaseProbe(ColumnLookup, Protocol):
    """Column lookups plus a health check (:class:`cdc.catalog.Catalog`)."""

    async def ping(self) -> bool:
        """Whether the database answers."""
        ...


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _condition_tuple(condition: object) -> str:
    if isinstance(condition, Comparison):
        op, value, negated = str(condition.operator), condition.value, condition.negated
    elif isinstance(condition, InList):
        items = ",".join("null" if v is None else v for v in condition.values)
        op, value, negated = "in", "{" + items + "}", condition.negated
    elif isinstance(condition, IsTest):
        op, value, negated = "is", str(condition.value), condition.negated
    elif isinstance(condition, Like):
        op = "ilike" if condition.case_insensitive else "like"
        value, negated = condition.pattern, condition.negated
    else:  # pragma: no cover - the union is closed
        return repr(condition)
    column = getattr(condition, "column", "")
    return f"{{{_quote(column)}, {_quote(op)}, {_quote(value)}, {str(negated).lower()}}}"


def describe(event: str, schema: str, table: str, parsed: Filter | None) -> str:
    """Supabase's ``params_to_log``: ``event: *, schema: public, table: t, filters: [...],
    select: nil``."""
    conditions = parsed.conditions if parsed is not None else ()
    filters = ", ".join(_condition_tuple(c) for c in conditions)
    return f"event: {event}, schema: {schema}, table: {table}, filters: [{filters}], select: nil"


async def _resolve_one(entry: PostgresChange, lookup: ColumnLookup) -> Binding | str:
    if entry.problem is not None:
        return entry.problem
    event = (entry.event or WILDCARD).upper()
    schema = entry.schema_ or "public"
    table = entry.table or WILDCARD
    try:
        parsed = parse_filter(entry.filter) if entry.filter is not None else None
    except FilterError as exc:
        return str(exc)
    params = describe(event, schema, table, parsed)
    if event not in EVENTS:
        return f"{_UNABLE}Unknown event {entry.event!r}: use INSERT, UPDATE, DELETE or *"
    if schema == WILDCARD or table == WILDCARD:
        if parsed is not None and parsed.conditions:
            return (
                f"{_UNABLE}An exception happened so please check your connect parameters: "
                f"[{params}]. Exception: a filter needs a named schema and table"
            )
        return Binding(entry.id, schema, table, event)
    columns = await lookup.columns(schema, table)
    if not columns:
        return (
            f"{_UNABLE}Please check Realtime is enabled for the given connect parameters: "
            f"[{params}]"
        )
    if parsed is None or not parsed.conditions:
        return Binding(entry.id, schema, table, event)
    try:
        bound = bind(parsed, columns)
    except FilterError as exc:
        return (
            f"{_UNABLE}An exception happened so please check your connect parameters: "
            f"[{params}]. Exception: ERROR P0001 (raise_exception) {exc}"
        )
    return Binding(entry.id, schema, table, event, bound)


async def resolve(
    entries: Sequence[PostgresChange], lookup: ColumnLookup
) -> tuple[list[Binding], str | None]:
    """Bind every entry of one join.

    Returns:
        ``(bindings, None)`` when every entry is usable, else ``([], problem)`` with the first
        entry's problem (Supabase's text).

    Raises:
        whatever ``lookup`` raises (the database could not answer).
    """
    bindings: list[Binding] = []
    for entry in entries:
        result = await _resolve_one(entry, lookup)
        if isinstance(result, str):
            return [], result
        bindings.append(result)
    return bindings, None
