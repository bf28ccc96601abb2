"""Trigger-mode source: reads ``pgcast.changes`` gap-free, woken by an adaptive poll or NOTIFY.

Wake-up design (see the migration's ``pgcast.wakeup``). NOTIFY serialises committing
transactions behind a cluster-wide lock, so writers notify only while it pays:

* *polling*: while changes keep coming the reader reads every ``poll_interval`` seconds (at once
  after a full page) and writers pay nothing but a one-row sequence read;
* *armed*: a read that finds nothing sets ``pgcast.wakeup`` to 1, so capture triggers NOTIFY, and
  the reader sleeps until a notification. It stays armed while the change rate is low (each
  commit wakes it at once) and disarms, back to polling, once more than ``disarm_rows`` changes
  arrive within ``rate_window`` seconds: at high rates polling batches many commits per read and
  spares writers the NOTIFY lock.

Arming has a race: a trigger that read the flag just before it was set may still commit without
notifying. Such a transaction got its xid before the flag was set, so it is below the ``xmax`` of
the first read after arming; until every such xid has left the snapshot the reader keeps polling
(1–50 ms backoff) instead of sleeping.

A lost notification therefore costs at most ``safety_interval`` of latency, never a change: the
cursor (:mod:`cdc.cursor`) decides what to read, not the notification. Connection loss (backend
terminated, Postgres restarted) reconnects with backoff and catches up from the cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import orjson

from cdc.changes import Batch, Change, Column, JSONValue, Operation, Position
from cdc.cursor import CursorState, OutboxCursor, XidSet, decode_position, encode_position
from cdc.errors import ConfigurationError, DatabaseError, PositionLostError
from cdc.sql import READ_COLUMNS, read_changes
from cdc.values import fix_bytea

__all__ = ["OutboxSource"]

log = logging.getLogger(__name__)

_OPS = {"I": Operation.INSERT, "U": Operation.UPDATE, "D": Operation.DELETE}
# SQLSTATE classes after which reconnecting can help: connection exceptions, insufficient
# resources, operator intervention (terminate, shutdown, cannot connect now), system errors.
_RETRYABLE_CLASSES = ("08", "53", "57", "58")


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
        poll_interval: delay between reads while polling, in seconds.
        arm_below: a polling read that returns fewer changes than this arms the wake-up.
        disarm_rows: changes within ``rate_window`` that switch from notifications to polling.
        rate_window: seconds over which the change rate is judged.
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
        poll_interval: float = 0.002,
        arm_below: int = 3,
        disarm_rows: int = 20,
        rate_window: float = 0.01,
        safety_interval: float = 1.0,
        ack_interval: float = 0.5,
        retention: timedelta | None = None,
        prune_interval: float = 60.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self.consumer = consumer
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._arm_below = arm_below
        self._disarm_rows = disarm_rows
        self._rate_window = rate_window
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
        self._commit_ts = True
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
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(self._dsn, timeout=5)
            try:
                # Writers need not notify a reader that is gone.
                await conn.execute("SELECT setval('pgcast.wakeup', 0)")
                await self._write_ack(conn, force=True)
            finally:
                await conn.close()
        await self._drop_connection()

    # -- connection --------------------------------------------------------------------------
    async def _connect(self) -> Any:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        conn = await asyncpg.connect(
            self._dsn,
            timeout=10,
            # Every read is built for index scans; stale statistics on the fast-changing outbox
            # must not turn them into sequential scans of the whole table.
            server_settings={
                "TimeZone": "UTC",
                "application_name": "pgcast",
                "enable_seqscan": "off",
            },
        )
        try:
            if await conn.fetchval("SELECT to_regclass('pgcast.changes')") is None:
                raise ConfigurationError(
                    "pgcast is not installed in this database: run `pgcast migrate --db URL`"
                )
            tracked = await conn.fetchval("SHOW track_commit_timestamp")
            self._commit_ts = tracked == "on"
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
        in_flight = XidSet(tuple(sorted(row["xip"])), int(row["xmax"]))
        return encode_position(CursorState(int(row["high"]), in_flight))

    async def _check_not_pruned(self, conn: Any, state: CursorState) -> None:
        row = await conn.fetchrow(
            "SELECT pruned_id, pruned_xid::text::bigint AS pruned_xid FROM pgcast.state"
        )
        lost = row["pruned_id"] > state.high
        # Rows of transactions in flight at the position may have committed and been pruned since.
        sets = [state.in_flight, *(s.xids for s in state.segments)]
        lost = lost or any(state.high > 0 and x.xmax <= row["pruned_xid"] for x in sets)
        for xid in {x for s in sets for x in s.xip}:
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
        state = p.state
        args: list[object] = [
            state.high,
            p.limit,
            list(state.in_flight.xip),
            str(state.in_flight.xmax),
        ]
        for seg in state.segments:
            args += [seg.after, list(seg.xids.xip), str(seg.xids.xmax)]
        sql = read_changes(len(state.segments), self._commit_ts)
        rows = await conn.fetch(sql, *args)
        self.last_read = time.monotonic()
        head = rows[0]
        if head["id"] is None:
            rows = []
        # Build every change (which may query the catalog) before moving the cursor: if the
        # connection breaks half-way, the same rows are read again after reconnecting.
        for relid in {r["relid"] for r in rows}:
            if relid not in self._relations:
                await self._load_relation(conn, relid)
        changes = []
        for r in rows:
            change = self._change(r)
            if change is None:  # the table's columns changed since they were cached
                await self._load_relation(conn, r["relid"])
                change = self._change(r, stale_ok=True)
                assert change is not None
            changes.append(change)
        ids = [r["id"] for r in rows]
        full = len(ids) >= p.limit
        cursor.advance(ids, ids[-1] if full else None, head["xip"], head["xmax"])
        if not changes:
            return None, full
        return Batch(tuple(changes), cursor.position), full

    async def _load_relation(self, conn: Any, relid: int) -> None:
        self._relations[relid] = _Relation(await conn.fetch(READ_COLUMNS, relid))

    def _change(self, r: Any, stale_ok: bool = False) -> Change | None:
        """The change of one outbox row, or None when the cached columns do not fit it."""
        text = r["record"]
        record: dict[str, JSONValue] | None = None if text is None else orjson.loads(text)
        text = r["old_record"]
        old: dict[str, JSONValue] | None = None if text is None else orjson.loads(text)
        rel = self._relations[r["relid"]]
        image = record if record is not None else old
        if not stale_ok and image is not None and not rel.names.issuperset(image):
            return None
        for name in rel.bytea:
            for values in (record, old):
                if values is not None and name in values:
                    values[name] = fix_bytea(values[name])
        return Change(
            position=r["id"],
            schema=r["schema_name"],
            table=r["table_name"],
            operation=_OPS[r["op"]],
            commit_timestamp=r["ts"],
            record=record,
            old_record=old,
            columns=rel.columns,
        )

    async def _read_loop(self, conn: Any, cursor: OutboxCursor) -> AsyncIterator[Batch]:
        armed = False
        horizon: int | None = None  # xmax of the first read after arming
        recent: deque[tuple[float, int]] = deque()  # (time, rows) of reads while armed
        backoff = self._poll_interval
        while not self._closed:
            self._wake.clear()
            batch, full = await self._read(conn, cursor)
            rows = len(batch.changes) if batch is not None else 0
            if batch is not None:
                yield batch
                await self._write_ack(conn)
            if full:
                continue
            if not armed:
                if rows >= self._arm_below:
                    await asyncio.sleep(self._poll_interval)
                    continue
                await self._write_ack(conn, force=True)
                await conn.execute("SELECT setval('pgcast.wakeup', 1)")
                armed, horizon, backoff = True, None, self._poll_interval
                recent.clear()
                continue  # the next read's snapshot is taken after the flag was set
            if horizon is None:
                horizon = cursor.state.in_flight.xmax
            now = time.monotonic()
            recent.append((now, rows))
            while recent and recent[0][0] < now - self._rate_window:
                recent.popleft()
            if sum(n for _, n in recent) >= self._disarm_rows:
                await conn.execute("SELECT setval('pgcast.wakeup', 0)")
                armed = False
                await asyncio.sleep(self._poll_interval)
                continue
            quiet = all(x >= horizon for x in cursor.state.in_flight.xip)
            if await self._wait_wake(self._safety if quiet else backoff):
                continue
            if conn.is_closed():
                raise asyncpg.InterfaceError("connection closed")
            if quiet:
                # Re-assert the flag (another reader may have cleared it) and re-check.
                await conn.execute("SELECT setval('pgcast.wakeup', 1)")
                horizon = None
            else:
                backoff = min(backoff * 2, 0.05)

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
