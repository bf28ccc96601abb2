"""Replication-mode capture: pgoutput from a durable logical slot. :class:`ReplicationSource`.

The I/O shell around the pure :mod:`cdc.pgoutput` decoder and :class:`cdc.assembler.Assembler`.

Driver: psycopg 3's libpq-level connection (``replication=database``), already a dependency, so no
extra wheel (psycopg2's ``LogicalReplicationConnection`` would be one). After
``START_REPLICATION`` the socket is watched with ``loop.add_reader`` and drained with the
non-blocking ``get_copy_data``: no thread. Keepalives are answered here, and a standby status
update goes out at least every ``status_interval`` seconds, and soon (``confirm_delay``) after an
ack: at most one per ``confirm_delay`` under load, not one per batch.

Positions (see :mod:`cdc.assembler`): a batch's ``seq`` is its commit's end LSN. The slot is
confirmed (``flush`` LSN of the status update) only up to what :meth:`ack` was given, so the
server keeps everything not yet handed to every subscriber. When every emitted batch is acked and
no transaction is half-read, the WAL end the server reports in keepalives is confirmed too, so a
slot whose tables are idle still advances while the rest of the database writes. The acked token
is saved in ``pgcast.consumers`` right after an ack, in the background (at most one UPDATE in
flight and, under load, one per ``confirm_delay``: acks arriving meanwhile are saved together by
the next one), and at :meth:`close`; a
restart resumes from it and the assembler drops transactions the server sends again, so after a
kill -9 little is emitted twice (a subscriber that holds its own position, passed as ``start``,
gets nothing twice).

Failures: missing REPLICATION privilege, ``wal_level`` not logical, a missing publication and a slot
in use by another process raise :class:`~cdc.errors.ConfigurationError` with what to change, and
are not retried; a lost connection (terminated backend, Postgres restart) is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import pq

from cdc.assembler import Assembler, parse_token
from cdc.changes import Batch, Position
from cdc.errors import ConfigurationError
from cdc.pgoutput import Relation, format_lsn, parse_message
from cdc.values import TypeInfo, TypeKind, TypeRegistry

__all__ = ["TYPE_QUERY", "ReplicationSource"]

log = logging.getLogger(__name__)

TYPE_QUERY = """
SELECT t.oid::int, t.typname::text, t.typtype::text,
       CASE WHEN t.typsubscript = 'array_subscript_handler'::regproc
            THEN t.typelem::int ELSE 0 END,
       t.typbasetype::int, t.typdelim::text,
       coalesce((SELECT json_agg(json_build_array(a.attname, a.atttypid::int) ORDER BY a.attnum)
                 FROM pg_attribute a
                 WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped),
                '[]')
FROM pg_type t
WHERE t.oid = ANY(%s)
"""
"""The :class:`~cdc.values.TypeInfo` rows of the given type OIDs."""

_EPOCH_2000_US = 946_684_800_000_000
_XLOG_DATA, _KEEPALIVE, _RELATION = 0x77, 0x6B, 0x52  # w, k (CopyData kinds), R (pgoutput)
_PAYLOAD = 25  # w, Int64 WAL start, Int64 WAL end, Int64 send time


def _now_pg_us() -> int:
    return time.time_ns() // 1000 - _EPOCH_2000_US


class _Lost(Exception):
    """The replication connection broke; reconnect."""


class ReplicationSource:
    """Change batches from logical replication slot ``slot`` with publication ``publication``.

    Args:
        dsn: a connection string of a role with the REPLICATION attribute.
        slot: the slot (created durable, pgoutput, if missing).
        publication: the publication (``pgcast tables add T --mode replication``).
        consumer: the name the acked position is saved under in ``pgcast.consumers``.
        status_interval: seconds between standby status updates at most.
        max_backoff: seconds between reconnection attempts at most.
        confirm_delay: seconds between standby status updates at least while acks come in.
    """

    def __init__(
        self,
        dsn: str,
        *,
        slot: str = "pgcast",
        publication: str = "pgcast",
        consumer: str = "pgcast",
        status_interval: float = 10.0,
        max_backoff: float = 5.0,
        confirm_delay: float = 0.05,
    ) -> None:
        self._dsn = dsn
        self.slot = slot
        self.publication = publication
        self.consumer = consumer
        self._status_interval = status_interval
        self._max_backoff = max_backoff
        self._confirm_delay = confirm_delay
        self._types = TypeRegistry()
        self._closed = False
        self._emitted: Position | None = None
        self._acked: Position | None = None
        self._saved: Position | None = None
        self._server_end = 0
        self._confirmed = 0
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._query: psycopg.AsyncConnection[Any] | None = None
        self._connecting = asyncio.Lock()
        self._saver: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # data on the socket, an ack, or close()
        self._last_status = 0.0  # time.monotonic() of the last standby status update

    # -- the ChangeSource interface -------------------------------------------------------------

    async def batches(self, start: Position | None = None) -> AsyncIterator[Batch]:
        """Batches after ``start`` (default: the saved position, else the slot's)."""
        backoff = 0.1
        while not self._closed:
            try:
                if start is None:
                    start = await self._stored()
                async for batch in self._stream(start):
                    start = batch.position
                    backoff = 0.1
                    yield batch
            except ConfigurationError:
                raise
            except (_Lost, psycopg.OperationalError, OSError) as exc:
                if self._closed:
                    return
                log.warning(
                    "replication connection lost (%s); reconnecting in %.1f s", exc, backoff
                )
                await self._drop()
                await asyncio.sleep(backoff)
                backoff = min(self._max_backoff, backoff * 2)

    async def ack(self, position: Position) -> None:
        """Everything up to ``position`` was handed on: it may be confirmed to the server.

        Returns at once: the stream confirms it within ``confirm_delay`` and a background task
        saves it in ``pgcast.consumers``.
        """
        self._advance(position)
        self._wake.set()
        self._schedule_save()

    async def close(self) -> None:
        """Stop reading, confirm and save the acked position, release the connections."""
        self._closed = True
        self._wake.set()
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                self._send_status(conn.pgconn, force=True)
            except (psycopg.Error, OSError):
                pass
        saver = self._saver
        if saver is not None and not saver.done():
            await asyncio.wait({saver}, timeout=5.0)
            saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await saver
        try:
            await self._save()
        except (psycopg.Error, OSError) as exc:
            log.warning("could not save the replication position: %s", exc)
        await self._drop()

    def _advance(self, position: Position) -> None:
        if self._acked is None or position.seq >= self._acked.seq:
            self._acked = position

    def _schedule_save(self) -> None:
        """Save the acked position in the background unless a save is running (it saves again
        when it ends if a newer position was acked meanwhile)."""
        if self._closed or self._acked == self._saved:
            return
        if self._saver is None or self._saver.done():
            self._saver = asyncio.create_task(self._save_acked())

    async def _save_acked(self) -> None:
        try:
            while not self._closed and self._acked != self._saved:
                await self._save()
                if self._acked != self._saved:  # under load: one UPDATE per confirm_delay
                    await asyncio.sleep(self._confirm_delay)
        except (psycopg.Error, OSError) as exc:  # a lost connection: the stream reconnects
            log.warning("could not save the replication position (retried later): %s", exc)
        except Exception:
            log.exception("could not save the replication position (retried later)")

    # -- connections ----------------------------------------------------------------------------

    async def _query_conn(self) -> psycopg.AsyncConnection[Any]:
        async with self._connecting:  # the stream and the background save share it
            if self._query is None or self._query.closed:
                self._query = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            return self._query

    async def _drop(self) -> None:
        for attr in ("_conn", "_query"):
            conn = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None and not conn.closed:
                try:
                    await conn.close()
                except (psycopg.Error, OSError):  # pragma: no cover - closing a broken link
                    pass

    async def _stored(self) -> Position | None:
        conn = await self._query_conn()
        cur = await conn.execute(
            "SELECT position FROM pgcast.consumers WHERE name = %s", (self.consumer,)
        )
        row = await cur.fetchone()
        if row is None or not str(row[0]).startswith("r1:"):
            return None
        end, _ = parse_token(row[0])
        return Position(end, row[0])

    async def _save(self) -> None:
        position = self._acked
        if position is None or position == self._saved:
            return
        conn = await self._query_conn()
        await conn.execute(
            "INSERT INTO pgcast.consumers (name, position) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position, acked_at = now()",
            (self.consumer, position.token),
        )
        self._saved = position

    async def check(self) -> None:
        """Raise :class:`~cdc.errors.ConfigurationError` now for what would stop the stream
        (privilege, ``wal_level``, publication, slot in use); create the slot if missing."""
        await self._preflight()

    async def _preflight(self) -> None:
        """Clear errors for what an operator must fix; creates the slot if missing."""
        conn = await self._query_conn()
        cur = await conn.execute(
            "SELECT current_setting('wal_level'),"
            " (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),"
            " EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s)",
            (self.publication,),
        )
        row = await cur.fetchone()
        assert row is not None
        level, may_replicate, published = row
        if level != "logical":
            raise ConfigurationError(
                f"wal_level is {level}: set wal_level = logical and restart Postgres"
            )
        if not may_replicate:
            raise ConfigurationError(
                "this role has no REPLICATION privilege: ALTER ROLE <role> REPLICATION"
                " (or use trigger mode)"
            )
        if not published:
            raise ConfigurationError(
                f'publication "{self.publication}" does not exist: run'
                " `pgcast tables add TABLE --mode replication`"
            )
        cur = await conn.execute(
            "SELECT plugin, database = current_database(), active_pid"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        )
        slot = await cur.fetchone()
        if slot is None:
            await conn.execute(
                "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,)
            )
            log.info('created replication slot "%s"', self.slot)
            return
        plugin, here, pid = slot
        if plugin != "pgoutput" or not here:
            raise ConfigurationError(
                f'replication slot "{self.slot}" is not a pgoutput slot of this database:'
                " choose another slot name or `pgcast slot drop` it"
            )
        if pid is not None:
            raise ConfigurationError(
                f'replication slot "{self.slot}" is in use by process {pid}: stop that consumer'
                " (another pgcast?) or use another slot"
            )

    async def _load_types(self, relation: Relation) -> None:
        missing = self._types.missing(column.type_oid for column in relation.columns)
        while missing:
            conn = await self._query_conn()
            cur = await conn.execute(TYPE_QUERY, (list(missing),))
            rows = await cur.fetchall()
            for oid, name, kind, element, base, delimiter, fields in rows:
                self._types.add(
                    TypeInfo(
                        oid,
                        name,
                        TypeKind(kind),
                        element,
                        base,
                        delimiter,
                        tuple((str(n), int(t)) for n, t in fields),
                    )
                )
            found = {row[0] for row in rows}
            missing = self._types.missing(missing) - (missing - found)
            if not found:
                break

    # -- the stream -----------------------------------------------------------------------------

    async def _stream(self, start: Position | None) -> AsyncIterator[Batch]:
        await self._preflight()
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, replication="database"
            )
        except psycopg.OperationalError as exc:
            if "replication" in str(exc) and "permission" in str(exc).lower():
                raise ConfigurationError(f"no replication privilege: {exc}") from exc
            raise
        self._conn = conn
        pgconn = conn.pgconn
        lsn = format_lsn(start.seq) if start is not None else "0/0"
        command = (
            f"START_REPLICATION SLOT {_ident(self.slot)} LOGICAL {lsn}"
            f" (proto_version '1', publication_names '{_literal(self.publication)}')"
        )
        pgconn.send_query(command.encode())
        loop = asyncio.get_running_loop()
        fd = pgconn.socket
        wake = self._wake
        loop.add_reader(fd, wake.set)
        try:
            await self._copy_both(pgconn, wake)
            assembler = self._assembler = Assembler(self._types, start=start)
            self._emitted = start
            if start is not None:
                self._advance(start)
            forced = 0.0
            feed_data = assembler.feed_data
            while not self._closed:
                status, data = pgconn.get_copy_data(1)
                if status == 0:
                    now = time.monotonic()
                    if now - forced >= self._status_interval:
                        self._send_status(pgconn, force=True)
                        self._schedule_save()  # retries a save that failed
                        forced = now
                    wait = self._confirm_soon(pgconn, now)
                    wake.clear()
                    try:
                        async with asyncio.timeout(wait):
                            await wake.wait()
                    except TimeoutError:
                        pass
                    pgconn.consume_input()  # raises OperationalError when the link broke
                    continue
                if status < 0:
                    raise self._ended(pgconn)
                message = bytes(data)
                kind = message[0]
                if kind == _XLOG_DATA:  # 24 header bytes after the kind, then pgoutput
                    if message[_PAYLOAD] == _RELATION:  # its types are looked up first
                        decoded = parse_message(message[_PAYLOAD:])
                        if isinstance(decoded, Relation):
                            await self._load_types(decoded)
                        batch = assembler.feed(decoded)
                    else:
                        batch = feed_data(message, _PAYLOAD)
                    if batch is not None:
                        self._emitted = batch.position
                        if batch.changes:
                            yield batch
                            # Acks given meanwhile: confirmed now or, under load, within
                            # confirm_delay of the last status update.
                            self._confirm_soon(pgconn, time.monotonic())
                        else:  # nothing to hand on: confirmable at once, not worth a save
                            self._advance(batch.position)
                elif kind == _KEEPALIVE:
                    end, _clock, reply = struct.unpack("!QqB", message[1:18])
                    self._server_end = max(self._server_end, end)
                    if reply:
                        self._send_status(pgconn, force=True)
                    else:
                        self._confirm_soon(pgconn, time.monotonic())
        finally:
            loop.remove_reader(fd)

    _assembler: Assembler | None = None

    @property
    def _idle(self) -> bool:
        """No transaction is half-read (its commit LSN is not known yet)."""
        return self._assembler is None or not self._assembler.in_transaction

    async def _copy_both(self, pgconn: Any, readable: asyncio.Event) -> None:
        """Wait for the server's answer to START_REPLICATION."""
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            readable.clear()
            async with asyncio.timeout(30):
                await readable.wait()
        result = pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            message = "" if result is None else _text(result.error_message)
            if "is active for PID" in message:
                raise ConfigurationError(
                    f'replication slot "{self.slot}" is in use by another process:'
                    f" {message.strip()}"
                )
            if "does not exist" in message and "publication" in message:
                raise ConfigurationError(message.strip())
            raise _Lost(f"START_REPLICATION failed: {message.strip()}")

    def _ended(self, pgconn: Any) -> Exception:
        result = pgconn.get_result()
        message = "" if result is None else _text(result.error_message).strip()
        if "publication" in message and "does not exist" in message:
            return ConfigurationError(
                f"{message}: run `pgcast tables add TABLE --mode replication`"
            )
        return _Lost(f"replication stream ended: {message or 'no reason given'}")

    def _confirmable(self) -> int:
        acked = self._acked.seq if self._acked is not None else 0
        emitted = self._emitted.seq if self._emitted is not None else 0
        if acked >= emitted and self._idle:
            return max(acked, self._server_end, self._confirmed)
        return max(acked, self._confirmed)

    def _confirm_soon(self, pgconn: Any, now: float) -> float:
        """Confirm what was acked unless a status update went out less than ``confirm_delay``
        ago; the seconds to wait before trying again (1 when everything is confirmed)."""
        if self._confirmable() <= self._confirmed:
            return 1.0
        due = self._last_status + self._confirm_delay - now
        if due > 0:
            return due
        self._send_status(pgconn)
        return 1.0

    def _send_status(self, pgconn: Any, force: bool = False) -> None:
        confirm = self._confirmable()
        if not force and confirm <= self._confirmed:
            return
        self._confirmed = confirm
        self._last_status = time.monotonic()
        message = b"r" + struct.pack("!QQQqB", confirm, confirm, confirm, _now_pg_us(), 0)
        pgconn.put_copy_data(message)  # both raise OperationalError when the link broke
        pgconn.flush()


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return text.replace("'", "''")
