"""Reads the :class:`cdc.status.Status` of a database (the I/O half of ``pgcast status``).

Lag in seconds is honest about its source: 0 when the slot has confirmed everything written,
``pg_stat_replication.flush_lag`` (time from WAL flushed locally to the consumer confirming it)
while a consumer is connected, otherwise unknown: Postgres keeps no time for an inactive slot.
"""

from __future__ import annotations

import psycopg

from cdc.errors import ConfigurationError, DatabaseError
from cdc.status import OutboxStatus, SlotStatus, Status

__all__ = ["read_status"]

_SLOT = """
SELECT s.database, s.plugin, s.active, s.active_pid, s.confirmed_flush_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,
       s.wal_status, s.safe_wal_size,
       extract(epoch FROM r.flush_lag)::float8
FROM pg_replication_slots s
LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = %s
"""


def _slot(conn: psycopg.Connection, name: str) -> SlotStatus:
    row = conn.execute(_SLOT, (name,)).fetchone()
    if row is None:
        return SlotStatus(name, exists=False)
    database, plugin, active, pid, lsn, lag, wal_status, safe, flush_lag = row
    if lag is not None and lag <= 0:
        seconds, source = 0.0, "caught up"
    elif active and flush_lag is not None:
        seconds, source = float(flush_lag), "pg_stat_replication.flush_lag"
    elif active:
        seconds, source = None, "no feedback measured yet"
    else:
        seconds, source = None, "slot inactive, no consumer to measure"
    return SlotStatus(
        name, True, database, plugin, bool(active), pid, lsn,
        None if lag is None else int(lag), seconds, source, wal_status,
        None if safe is None else int(safe),
    )  # fmt: skip


# Replication-mode tables whose replica identity no longer matches what was configured: a
# partition attached after `tables add --old-values full` (partitions keep their own identity),
# or an identity without columns (NOTHING, or DEFAULT without a primary key), which makes
# Postgres reject UPDATE/DELETE on a published table.
_IDENTITY = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       CASE WHEN t.old_values = 'full' AND c.relreplident <> 'f' THEN 'not FULL'
            ELSE 'without columns' END
FROM pgcast.tables t
CROSS JOIN LATERAL (SELECT t.relid UNION SELECT relid FROM pg_partition_tree(t.relid)) p
JOIN pg_class c ON c.oid = p.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.mode = 'replication'
  AND ((t.old_values = 'full' AND c.relreplident <> 'f')
       OR c.relreplident = 'n'
       OR (c.relreplident = 'd' AND NOT EXISTS (
               SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
ORDER BY 1
"""


def read_status(dsn: str, slot: str = "pgcast") -> Status:
    """Everything ``pgcast status`` shows, read in one session.

    Raises:
        ConfigurationError: pgcast is not installed in the database.
        DatabaseError: Postgres refused.
    """
    try:
        with psycopg.connect(dsn) as conn:
            installed = conn.execute("SELECT to_regclass('pgcast.tables') IS NOT NULL").fetchone()
            if not installed or not installed[0]:
                raise ConfigurationError(
                    "pgcast is not installed in this database: run `pgcast migrate --db URL` first"
                )
            db, wal_level, has_pub = conn.execute(
                "SELECT current_database(), current_setting('wal_level'),"
                " EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'pgcast')"
            ).fetchone() or ("", "", False)
            tables = conn.execute(
                "SELECT t.mode, quote_ident(coalesce(n.nspname, t.schema_name)) || '.' ||"
                " quote_ident(coalesce(c.relname, t.table_name)) FROM pgcast.tables t"
                " LEFT JOIN pg_class c ON c.oid = t.relid"
                " LEFT JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 2"
            ).fetchall()
            rows, age, size = conn.execute(
                "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8,"
                " pg_total_relation_size('pgcast.changes') FROM pgcast.changes"
            ).fetchone() or (0, None, 0)
            slot_status = _slot(conn, slot)
            problems = tuple(
                f"replica identity of {name} is {what}"
                for name, what in conn.execute(_IDENTITY).fetchall()
            )
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(f"could not read status: {first}", exc.sqlstate) from exc
    notes = []
    if slot_status.exists and slot_status.database != db:
        notes.append(f'slot "{slot}" belongs to database {slot_status.database}, not {db}')
    return Status(
        database=db,
        wal_level=wal_level,
        trigger_tables=tuple(n for m, n in tables if m == "trigger"),
        replication_tables=tuple(n for m, n in tables if m == "replication"),
        publication_exists=bool(has_pub),
        outbox=OutboxStatus(int(rows), age, int(size)),
        slot=slot_status,
        notes=tuple(notes),
        identity_problems=problems,
    )
