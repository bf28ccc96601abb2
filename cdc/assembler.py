"""pgoutput messages to :class:`~cdc.changes.Batch` es: one batch per committed transaction.

Pure: messages in (:meth:`Assembler.feed`), batches out; no I/O. The assembler keeps the relation
cache (a Relation message replaces the cached shape of its table, so ``ALTER TABLE`` mid-stream,
even mid-transaction, applies from the next row on) and converts column text with a
:class:`~cdc.values.TypeRegistry`.

Old rows, by what the server sends (see ``REPLICA IDENTITY``):

- UPDATE without an old tuple (identity DEFAULT, key unchanged): ``old_record`` is ``None``.
- UPDATE/DELETE with a key tuple (``K``): ``old_record`` holds only the key columns.
- UPDATE/DELETE with the full old row (``O``, identity FULL): ``old_record`` holds every column.

An unchanged TOASTed value (``u``) in an UPDATE's new row is taken from the old row when that row
carries it (identity FULL, or a key column of a ``K`` tuple). Otherwise the value is unknown, and
the column is left out of ``record`` (its name is still in ``columns``): a consumer can tell "not
sent" from NULL.

Positions: a Batch's :class:`~cdc.changes.Position` has ``seq`` = the commit's end LSN (what the
shell confirms to the server and resumes from) and the token ``r1:<end LSN X/Y>:<last change
position>``. ``Change.position`` counts changes, continuing from the token the assembler was
started with, so it strictly increases across batches and across restarts that resume from a
token; a transaction the server sends again although it committed at or before that token is
dropped (the slot's confirmed position may lag what was delivered).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cdc.changes import Batch, Change, Column, JSONValue, Operation, Position
from cdc.errors import DecodeError
from cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    OldKind,
    PgoutputMessage,
    Relation,
    TupleData,
    Type,
    Update,
    format_lsn,
    parse_lsn,
    parse_message,
    pg_time_to_datetime,
)
from cdc.values import Converter, TypeRegistry, as_text

__all__ = ["Assembler", "encode_token", "parse_token"]

_OID_KIND = struct.Struct("!IB")
_U32 = struct.Struct("!I")
_INSERT, _NEW, _TEXT, _NULL = 0x49, 0x4E, 0x74, 0x6E
_TOKEN = re.compile(r"r1:([0-9A-F]{1,8}/[0-9A-F]{1,8}):(\d{1,20})")


def encode_token(end_lsn: int, last_change: int) -> str:
    """The resume token of a batch: ``r1:<commit end LSN>:<last Change.position so far>``."""
    return f"r1:{format_lsn(end_lsn)}:{last_change}"


def parse_token(token: str) -> tuple[int, int]:
    """``(end LSN, last change position)`` from :func:`encode_token`'s form.

    Raises:
        ValueError: not a replication-mode token.
    """
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise ValueError(f"not a replication position token: {token!r}")
    return parse_lsn(match[1]), int(match[2])


@dataclass(frozen=True, slots=True)
class _Table:
    """A Relation compiled for row conversion."""

    relation: Relation
    columns: tuple[Column, ...]
    names: tuple[str, ...]
    converters: tuple[Converter, ...]
    keys: tuple[bool, ...]


@dataclass(slots=True)
class _Transaction:
    begin: Begin
    commit_timestamp: datetime
    changes: list[Change]
    replayed: bool  # committed at or before the start position: already delivered, drop it


class Assembler:
    """Feeds pgoutput v1 messages, returns a :class:`Batch` at each Commit.

    Args:
        types: converts column values; the shell adds the types it looks up for
            ``types.missing(...)`` of a Relation's column OIDs before feeding that Relation.
        start: the position the stream resumes after. ``Change.position`` continues from it,
            and transactions the server sends again that committed at or before it are dropped.
    """

    def __init__(self, types: TypeRegistry | None = None, *, start: Position | None = None):
        self._types = types if types is not None else TypeRegistry()
        self._tables: dict[int, _Table] = {}
        self._relations: dict[int, Relation] = {}
        self._type_hints: dict[int, Type] = {}
        self._transaction: _Transaction | None = None
        self._last_change = parse_token(start.token)[1] if start is not None else 0
        self._start_lsn = start.seq if start is not None else 0
        # What each message does; Truncate, Origin and Message are not here: they change nothing.
        self._handlers: dict[type[Any], Callable[[Any], Batch | None]] = {
            Insert: self._insert,
            Update: self._update,
            Delete: self._delete,
            Begin: self._begin,
            Commit: self._commit,
            Relation: self._relation,
            Type: self._type,
        }

    @property
    def relations(self) -> Mapping[int, Relation]:
        """The current shape of every table seen, by OID."""
        return MappingProxyType(self._relations)

    @property
    def in_transaction(self) -> bool:
        """Whether a Begin was fed and its Commit was not yet."""
        return self._transaction is not None

    def feed_data(self, data: bytes, offset: int = 0) -> Batch | None:
        """Decode the pgoutput message at ``data[offset:]`` and :meth:`feed` it.

        An Insert of text values into a known table, the bulk of most streams, is decoded and
        converted in one pass without intermediate objects (:meth:`_fast_insert`); anything that
        pass does not expect goes the general way, which also names what is wrong.

        Raises:
            DecodeError: see :meth:`feed` and :func:`cdc.pgoutput.parse_message`.
        """
        if data[offset] == _INSERT and self._fast_insert(data, offset):
            return None
        return self.feed(parse_message(data[offset:] if offset else data))

    def _fast_insert(self, buf: bytes, offset: int) -> bool:
        """Take an Insert of text and NULL values into a cached table inside a transaction; return
        ``False`` (having changed nothing) for anything else."""
        transaction = self._transaction
        if transaction is None or len(buf) < offset + 8:
            return False
        oid, kind = _OID_KIND.unpack_from(buf, offset + 1)
        table = self._tables.get(oid)
        if (
            table is None
            or kind != _NEW
            or (buf[offset + 6] << 8 | buf[offset + 7]) != len(table.names)
        ):
            return False
        if transaction.replayed:
            return True
        record: dict[str, JSONValue] = {}
        pos = offset + 8
        length = _U32.unpack_from
        try:
            for name, convert in zip(table.names, table.converters, strict=True):
                kind = buf[pos]
                if kind == _TEXT:
                    start = pos + 5
                    pos = start + length(buf, pos + 1)[0]
                    text = buf[start:pos].decode()
                    record[name] = text if convert is as_text else convert(text)
                elif kind == _NULL:
                    record[name] = None
                    pos += 1
                else:  # unchanged TOAST or binary: not in an Insert of pgoutput v1 text mode
                    return False
        except (ValueError, IndexError, struct.error):
            return False
        if pos != len(buf):
            return False
        self._add(table, Operation.INSERT, record, None)
        return True

    def feed(self, message: PgoutputMessage) -> Batch | None:
        """Take one message; return the finished batch at a Commit, else ``None``.

        Every Commit gives a batch, also one with no changes (a transaction that only truncated
        or emitted messages), so its position can be confirmed. Truncate, Origin and Message are
        decoded but carry no row changes.

        Raises:
            DecodeError: messages out of order (a row change outside a transaction, nested Begin,
                Commit without Begin), a row of an unknown relation or of the wrong width, binary
                tuple data, or a value its type cannot parse. The assembler is then unusable
                mid-transaction; the shell reconnects and resumes from the last position.
        """
        handler = self._handlers.get(type(message))
        return None if handler is None else handler(message)

    def _relation(self, relation: Relation) -> None:
        self._relations[relation.oid] = relation
        self._tables[relation.oid] = self._compile(relation)

    def _type(self, type_: Type) -> None:
        self._type_hints[type_.oid] = type_

    # -- transactions ---------------------------------------------------------------------------

    def _begin(self, begin: Begin) -> None:
        if self._transaction is not None:
            raise DecodeError(f"Begin of xid {begin.xid} inside xid {self._transaction.begin.xid}")
        try:
            timestamp = pg_time_to_datetime(begin.commit_time)
        except OverflowError:
            raise DecodeError(f"commit timestamp {begin.commit_time} out of range") from None
        replayed = begin.final_lsn < self._start_lsn
        self._transaction = _Transaction(begin, timestamp, [], replayed)

    def _commit(self, commit: Commit) -> Batch | None:
        transaction = self._transaction
        if transaction is None:
            raise DecodeError("Commit without Begin")
        if commit.commit_lsn != transaction.begin.final_lsn:
            raise DecodeError(
                f"Commit at {format_lsn(commit.commit_lsn)} does not match Begin's"
                f" {format_lsn(transaction.begin.final_lsn)}"
            )
        self._transaction = None
        if transaction.replayed:
            return None
        token = encode_token(commit.end_lsn, self._last_change)
        return Batch(tuple(transaction.changes), Position(commit.end_lsn, token))

    def _add(
        self,
        table: _Table,
        operation: Operation,
        record: dict[str, JSONValue] | None,
        old_record: dict[str, JSONValue] | None,
    ) -> None:
        transaction = self._transaction
        if transaction is None:
            raise DecodeError(f"{operation} on {table.relation.name} outside a transaction")
        if transaction.replayed:
            return
        self._last_change += 1
        relation = table.relation
        transaction.changes.append(
            Change(
                self._last_change,
                relation.namespace,
                relation.name,
                operation,
                transaction.commit_timestamp,
                record,
                old_record,
                table.columns,
            )
        )

    # -- rows -----------------------------------------------------------------------------------

    def _table(self, oid: int, width: int) -> _Table:
        table = self._tables.get(oid)
        if table is None:
            raise DecodeError(f"row of relation {oid} before its Relation message")
        if width != len(table.names):
            raise DecodeError(
                f"{table.relation.name}: row has {width} columns, Relation has {len(table.names)}"
            )
        return table

    def _insert(self, insert: Insert) -> None:
        table = self._table(insert.relation_oid, len(insert.new))
        self._add(table, Operation.INSERT, _record(table, insert.new), None)

    def _update(self, update: Update) -> None:
        table = self._table(update.relation_oid, len(update.new))
        record = _record(table, update.new)
        old_record = None
        if update.old is not None:
            self._table(update.relation_oid, len(update.old))
            old_record = _careful_record(table, update.old, update.old_kind)
            if len(record) < len(table.names):  # unchanged TOAST: take what the old row carries
                record = {
                    name: record[name] if name in record else old_record[name]
                    for name in table.names
                    if name in record or name in old_record
                }
        self._add(table, Operation.UPDATE, record, old_record)

    def _delete(self, delete: Delete) -> None:
        table = self._table(delete.relation_oid, len(delete.old))
        self._add(
            table, Operation.DELETE, None, _careful_record(table, delete.old, delete.old_kind)
        )

    def _compile(self, relation: Relation) -> _Table:
        types = self._types
        columns = []
        converters = []
        for column in relation.columns:
            oid = column.type_oid
            info = types.get(oid)
            hint = self._type_hints.get(oid)
            if info is not None:
                name, converter = info.name, types.converter(oid)
            elif hint is not None and hint.namespace == "":
                # pgoutput names a domain after its base type, which is built in.
                name, converter = hint.name, _builtin_converter(types, hint.name)
            else:
                name, converter = hint.name if hint is not None else str(oid), types.converter(oid)
            columns.append(Column(column.name, name))
            converters.append(converter)
        return _Table(
            relation,
            tuple(columns),
            tuple(column.name for column in relation.columns),
            tuple(converters),
            tuple(column.is_key for column in relation.columns),
        )


def _builtin_converter(types: TypeRegistry, name: str) -> Converter:
    try:
        return types.converter(types.oid(name))
    except KeyError:
        return types.converter(0)  # not a built-in type: text


class _NotText(Exception):
    """A value that is neither text nor NULL: the fast path hands over to the careful one."""


def _null(value: object) -> JSONValue:
    if value is not None:
        raise _NotText
    return None


def _record(table: _Table, values: TupleData) -> dict[str, JSONValue]:
    """Convert a whole tuple; unchanged TOAST values are left out."""
    try:
        return {
            name: convert(value) if type(value) is str else _null(value)
            for name, convert, value in zip(table.names, table.converters, values, strict=True)
        }
    except (ValueError, _NotText):
        return _careful_record(table, values, None)


def _careful_record(
    table: _Table, values: TupleData, old_kind: OldKind | None
) -> dict[str, JSONValue]:
    """Convert one tuple, naming the column of a bad value. With ``old_kind`` KEY only the key
    columns are kept; unchanged TOAST values are left out."""
    record: dict[str, JSONValue] = {}
    keys_only = old_kind is OldKind.KEY
    for name, convert, is_key, value in zip(
        table.names, table.converters, table.keys, values, strict=True
    ):
        if keys_only and not is_key:
            continue
        if value is None:
            record[name] = None
        elif type(value) is str:
            try:
                record[name] = convert(value)
            except ValueError as exc:
                raise DecodeError(f"{table.relation.name}.{name}: {exc}") from None
        elif value is not UNCHANGED_TOAST:
            raise DecodeError(f"{table.relation.name}.{name}: binary tuple data is not supported")
    return record
