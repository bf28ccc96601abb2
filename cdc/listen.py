"""Trigger-mode source: reads ``pgcast.changes`` gap-free, woken by an adaptive poll or NOTIFY.

Wake-up design (see the migration's ``pgcast.wakeup``). NOTIFY serialises committing
transactions behind a cluster-wide lock, so writers only notify while the reader sleeps:

* busy: after a read that found rows the reader reads again after ``busy_poll`` seconds; empty
  reads back off (1, 2, 4 … ms) and writers pay nothing but a one-row sequence read;
* after ``idle_polls`` empty reads the reader *arms*: ``setval('pgcast.wakeup', 1)``, so capture
  triggers start to NOTIFY. A trigger that checked the flag just before it was set may still
  commit without notifying; such a transaction got its xid before the arming, so the reader keeps
  polling until no transaction older than the arming is in flight, then sleeps on the
  notification. A notification (or ``safety_interval``) wakes it; it disarms and polls again.

A lost notification therefore costs at most ``safety_interval`` of latency, never a change: the
cursor (:mod:`cdc.cursor`) decides what to read, not the notification. Connection loss (backend
terminated, Postgres restarted) reconnects with backoff and catches up from the cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from cdc.changes import Batch, Change, Column, JSONValue, Operation, Position
from cdc.cursor import CursorState, OutboxCursor, decode_position, encode_position
from cdc.errors import ConfigurationError, DatabaseError, PositionLostError
from cdc.sql import READ_CHANGES, READ_CHANGES_NO_COMMIT_TS, READ_COLUMNS

__all__ = ["OutboxSource"]

log = logging.getLogger(__name__)

_OPS = {"I": Operation.INSERT, "U": Operation.UPDATE, "D": Operation.DELETE}
# SQLSTATE classes after which reconnecting can help: connection exceptions, insufficient
# resources, operator intervention (terminate, shutdown, cannot connect now), system errors.
_RETRYABLE_CLASSES = ("08", "53", "57", "58")


def _strip_bytea(value: JSONValue) -> JSONValue:
    """to_jsonb renders bytea as ``\\x0102``; pgcast (like Supabase) sends plain hex."""
    if isinstance(value, str) and value.startswith("\\x"):
        return value[2:]
    if isinstance(value, list):
        return [_strip_bytea(v) for v in value]
    return value


class _Relation:
    __slots__ = ("bytea", "columns", "names")

    def __init__(self, columns: Sequence[tuple[str, str]]) -> None:
        self.columns = tuple(Column(n, t) for n, t in columns)
        self.names = frozenset(n for n, _ in columns)
        self.bytea = tuple(n for n, t in columns if t in ("bytea", "_bytea"))


class OutboxSource:
    """A :class:`cdc.source.ChangeSource` over the trigger-mode outbox.

    Args:
        dsn: libpq URL of the database.
        consumer: name under which acknowledged positions are stored in ``pgcast.consumers``.
        batch_size: most rows per read (and per batch).
        busy_poll: delay between reads while changes keep coming, in seconds.
        idle_polls: empty reads (with exponential backoff from ``busy_poll``) before sleeping.
        safety_interval: longest sleep without a notification, in seconds.
        ack_interval: how often acknowledged positions are written, in seconds.
        retention: prune outbox rows older than this (``None``: never prune here).
        prune_interval: how often to prune, in seconds.
    """

    def __init__(
        self,
        dsn: str,
        *,
        consumer: str = "default",
        batch_size: int = 1000,
        busy_poll: float = 0.001,
        idle_polls: int = 4,
        safety_interval: float = 1.0,
        ack_interval: float = 0.5,
        retention: timedelta | None = None,
        prune_interval: float = 60.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self.consumer = consumer
        self._batch_size = batch_size
        self._busy_poll = busy_poll
        self._idle_polls = idle_polls
        self._safety = safety_interval
        self._ack_interval = ack_interval
        self._retention = retention
        self._prune_interval = prune_interval
        self._max_backoff = max_backoff
        self._conn: Any = None
        self._wake = asyncio.Event()
        self._relations: dict[int, _Relation] = {}
        self._acked: Position | None = None
        self._ack_written: Position | None = None
        self._ack_time = 0.0
        self._closed = False
        self._prune_task: asyncio.Task[None] | None = None
        self._read_sql = READ_CHANGES
        self.reconnects = 0
        self.last_read: float = 0.0

    # -- public API ------------------------------------------------------------------------
    async def batches(self, start: Position | None = None) -> AsyncIterator[Batch]:
        """Yield batches after ``start``, else after the stored position, else from now."""
        cursor: OutboxCursor | None = None
        if start is not None:
            cursor = OutboxCursor(decode_position(start), self._batch_size)
        if self._retention is not None and self._prune_task is None:
            self._prune_task = asyncio.create_task(self._prune_loop())
        backoff = 0.05
        while not self._closed:
            try:
                conn = await self._connect()
                if cursor is None:
                    cursor = OutboxCursor(await self._initial_state(conn), self._batch_size)
                await self._check_not_pruned(conn, cursor.state)
                backoff = 0.05
                async for batch in self._read_loop(conn, cursor):
                    yield batch
            except (
                TimeoutError,
                OSError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ) as exc:
                await self._lost(exc, backoff)
            except asyncpg.PostgresError as exc:
                if (exc.sqlstate or "")[:2] not in _RETRYABLE_CLASSES:
                    raise self._translate(exc) from exc
                await self._lost(exc, backoff)
            else:
                continue
            backoff = min(backoff * 2, self._max_backoff)

    async def ack(self, position: Position) -> None:
        """Remember ``position``; it is written to ``pgcast.consumers`` every ``ack_interval``."""
        if self._acked is None or position >= self._acked:
            self._acked = position

    async def close(self) -> None:
        """Stop reading, write the last acknowledged position, release the connection."""
        self._closed = True
        self._wake.set()
        if self._prune_task is not None:
            self._prune_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._prune_task
        if self._acked is not None and self._acked != self._ack_written:
            with contextlib.suppress(Exception):
                conn = await asyncpg.connect(self._dsn, timeout=5)
                try:
                    await self._write_ack(conn, force=True)
                finally:
                    await conn.close()
        await self._drop_connection()

    # -- connection --------------------------------------------------------------------------
    async def _connect(self) -> Any:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        conn = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"TimeZone": "UTC", "application_name": "pgcast"}
        )
        try:
            if await conn.fetchval("SELECT to_regclass('pgcast.changes')") is None:
                raise ConfigurationError(
                    "pgcast is not installed in this database: run `pgcast migrate --db URL`"
                )
            tracked = await conn.fetchval("SHOW track_commit_timestamp")
            self._read_sql = READ_CHANGES if tracked == "on" else READ_CHANGES_NO_COMMIT_TS
            await conn.add_listener("pgcast", self._on_notify)
            conn.add_termination_listener(self._on_terminate)
        except BaseException:
            await conn.close()
            raise
        self._relations.clear()
        self._conn = conn
        return conn

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    def _on_terminate(self, *_: object) -> None:
        self._wake.set()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            if not conn.is_closed():
                conn.terminate()

    async def _lost(self, exc: BaseException, backoff: float) -> None:
        self.reconnects += 1
        log.warning("outbox reader lost its connection (%s); retrying in %.2fs", exc, backoff)
        await self._drop_connection()
        await asyncio.sleep(backoff)

    @staticmethod
    def _translate(exc: asyncpg.PostgresError) -> DatabaseError:
        return DatabaseError(f"outbox read failed: {exc}", exc.sqlstate)

    # -- positions ---------------------------------------------------------------------------
    async def _initial_state(self, conn: Any) -> CursorState:
        stored = await conn.fetchval(
            "SELECT position FROM pgcast.consumers WHERE name = $1", self.consumer
        )
        if stored is not None:
            return decode_position(stored)
        return decode_position(await self.current_position(conn))

    async def current_position(self, conn: Any = None) -> Position:
        """The position of "now": what commits after this call is read, nothing before."""
        own = conn is None
        if own:
            conn = await asyncpg.connect(self._dsn, timeout=10)
        try:
            row = await conn.fetchrow(
                # Every id up to the sequence's last value is either visible now (skipped) or
                # written by a transaction in flight in this snapshot (read later).
                "SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END"
                " FROM pgcast.changes_id_seq) AS high, array("
                "SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) x) AS xip,"
                " pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax"
            )
        finally:
            if own:
                await conn.close()
        state = CursorState(int(row["high"]), tuple(sorted(row["xip"])), 0, int(row["xmax"]))
        return encode_position(state)

    async def _check_not_pruned(self, conn: Any, state: CursorState) -> None:
        row = await conn.fetchrow(
            "SELECT pruned_id, pruned_xid::text::bigint AS pruned_xid FROM pgcast.state"
        )
        lost = row["pruned_id"] > state.high
        # Rows of transactions in flight at the position may have committed and been pruned since.
        lost = lost or (state.high > 0 and state.xmax <= row["pruned_xid"])
        for xid in state.in_progress:
            if lost or xid > row["pruned_xid"]:
                continue
            status = await conn.fetchval("SELECT pg_xact_status($1::text::xid8)", str(xid))
            lost = status != "aborted"
        if lost:
            raise PositionLostError(
                f"position {encode_position(state).token} is older than the outbox retention"
                f" (changes up to id {row['pruned_id']} were pruned): it cannot be resumed"
            )

    async def _write_ack(self, conn: Any, force: bool = False) -> None:
        position = self._acked
        if position is None or position == self._ack_written:
            return
        now = time.monotonic()
        if not force and now - self._ack_time < self._ack_interval:
            return
        await conn.execute(
            "INSERT INTO pgcast.consumers (name, position) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position, acked_at = now()",
            self.consumer,
            position.token,
        )
        self._ack_written, self._ack_time = position, now

    # -- reading -----------------------------------------------------------------------------
    async def _read(self, conn: Any, cursor: OutboxCursor) -> tuple[Batch | None, bool]:
        p = cursor.read_params()
        row = await conn.fetchrow(
            self._read_sql, p.after, p.high, list(p.in_progress), p.limit, str(p.xmax)
        )
        self.last_read = time.monotonic()
        rows: list[dict[str, Any]] = orjson.loads(row["rows"])
        # Build every change (which may query the catalog) before moving the cursor: if the
        # connection breaks half-way, the same rows are read again after reconnecting.
        changes = [await self._change(conn, r) for r in rows]
        full = cursor.advance([r["id"] for r in rows], row["xip"], row["xmax"])
        if not changes:
            return None, full
        return Batch(tuple(changes), cursor.position), full

    async def _relation(self, conn: Any, relid: int, keys: Mapping[str, object]) -> _Relation:
        rel = self._relations.get(relid)
        if rel is None or not rel.names.issuperset(keys):
            rel = _Relation(await conn.fetch(READ_COLUMNS, relid))
            self._relations[relid] = rel
        return rel

    async def _change(self, conn: Any, r: dict[str, Any]) -> Change:
        record: dict[str, JSONValue] | None = r["record"]
        old: dict[str, JSONValue] | None = r["old_record"]
        rel = await self._relation(conn, r["relid"], record if record is not None else old or {})
        for name in rel.bytea:
            for image in (record, old):
                if image is not None and name in image:
                    image[name] = _strip_bytea(image[name])
        return Change(
            position=r["id"],
            schema=r["schema_name"],
            table=r["table_name"],
            operation=_OPS[r["op"]],
            commit_timestamp=datetime.fromisoformat(r["ts"]),
            record=record,
            old_record=old,
            columns=rel.columns,
        )

    async def _read_loop(self, conn: Any, cursor: OutboxCursor) -> AsyncIterator[Batch]:
        empty = 0
        while not self._closed:
            batch, full = await self._read(conn, cursor)
            if batch is not None:
                empty = 0
                yield batch
                await self._write_ack(conn)
                if not full:
                    await asyncio.sleep(self._busy_poll)
                continue
            empty += 1
            if empty < self._idle_polls:
                await asyncio.sleep(self._busy_poll * (2 ** (empty - 1)))
                continue
            await self._write_ack(conn, force=True)
            async for batch in self._sleep(conn, cursor):
                yield batch
            empty = 0

    async def _arm(self, conn: Any) -> int:
        self._wake.clear()
        await conn.execute("SELECT setval('pgcast.wakeup', 1)")
        # A separate statement: its snapshot is taken after the flag was set, so every
        # transaction that could have missed the flag has an xid below this xmax.
        xmax: int = await conn.fetchval(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        )
        return xmax

    async def _sleep(self, conn: Any, cursor: OutboxCursor) -> AsyncIterator[Batch]:
        """Arm the wake-up, wait for a notification, disarm. Yields what it reads meanwhile."""
        xmax = await self._arm(conn)
        wait = self._busy_poll
        try:
            while not self._closed:
                batch, _ = await self._read(conn, cursor)
                if batch is not None:
                    yield batch
                    return
                quiet = all(x >= xmax for x in cursor.state.in_progress)
                timeout = self._safety if quiet else wait
                wait = min(wait * 2, 0.05)
                if await self._wait_wake(timeout):
                    return
                if conn.is_closed():
                    raise asyncpg.InterfaceError("connection closed")
                if quiet:
                    xmax = await self._arm(conn)  # re-assert: another reader may have disarmed
        finally:
            # Best effort: if the connection broke, the reconnect path re-reads and re-arms.
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.execute("SELECT setval('pgcast.wakeup', 0)")

    async def _wait_wake(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            return False
        return True

    # -- retention ---------------------------------------------------------------------------
    async def _prune_loop(self) -> None:
        assert self._retention is not None
        retention = self._retention
        while not self._closed:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                try:
                    deleted = await conn.fetchval("SELECT pgcast.prune($1)", retention)
                    if deleted:
                        log.info("pruned %d outbox rows older than %s", deleted, retention)
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox prune failed: %s", exc)
            await asyncio.sleep(self._prune_interval)
