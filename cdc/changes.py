"""The change contract between capture (``cdc``) and delivery (``broadcaster``).

Pure: standard library only. Both capture modes (trigger and replication) produce exactly these
records, so the broadcaster never knows which mode fed it.

Values inside ``record``/``old_record`` are typed the way JSON carries them and the way Supabase
Realtime sends them: int, bigint and numeric as numbers, booleans, json/jsonb nested, arrays as
arrays, timestamps as ISO strings (``timestamptz`` as ``2026-01-01T12:00:00.123456+00:00``),
bytea as hex without the ``\\x`` prefix, NULL as ``None``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias

__all__ = [
    "Batch",
    "Change",
    "Column",
    "JSONValue",
    "Operation",
    "Position",
    "Record",
]

JSONValue: TypeAlias = "None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]"
Record: TypeAlias = Mapping[str, JSONValue]


class Operation(enum.StrEnum):
    """The kind of row change, spelled as Supabase's ``data.type``."""

    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the changed table: its name and ``pg_type.typname`` (``int4``, ``_text``)."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Change:
    """One row change.

    Attributes:
        position: this change's own number within its capture mode: the outbox id in trigger
            mode, a counter carried in the positions in replication mode (WAL positions are
            shared by the rows of one statement). Unique per change; resuming is done with the
            :class:`Position` of a :class:`Batch`, not with this number.
        schema: the table's schema name.
        table: the table name.
        operation: INSERT, UPDATE or DELETE.
        commit_timestamp: when the transaction committed (UTC, timezone-aware).
        record: the new row (INSERT, UPDATE); ``None`` for DELETE.
        old_record: the old row (UPDATE, DELETE) as far as it is captured (all columns, or only the
            key columns with ``--old-values key``); ``None`` for INSERT.
        columns: every column of the table in attnum order.
    """

    position: int
    schema: str
    table: str
    operation: Operation
    commit_timestamp: datetime
    record: Record | None
    old_record: Record | None
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A resumable capture position: hand it back to a source to get what comes after it.

    The token is opaque to consumers. Positions of one source compare in emission order through
    ``seq`` (a counter that only grows), never through the token.
    """

    seq: int
    token: str = field(compare=False)


@dataclass(frozen=True, slots=True)
class Batch:
    """Changes read together (one read in trigger mode, one transaction in replication mode).

    Within a batch changes are in commit order for any one row. ``position`` resumes right after
    the last change of this batch.
    """

    changes: tuple[Change, ...]
    position: Position
