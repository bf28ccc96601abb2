"""Operator actions on a database: choose captured tables, list them, prune the outbox.

Every action runs in one transaction, so a failure leaves nothing half-installed. Identifiers are
quoted with :mod:`psycopg.sql`; user input never becomes SQL text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg import sql

from cdc.errors import ConfigurationError, DatabaseError, PrivilegeError, UnknownTableError
from cdc.identity import IDENTITY_NAMES
from cdc.publication import publish, unpublish
from cdc.sql import parse_table_name

__all__ = ["EVENTS", "CapturedTable", "add_table", "list_tables", "prune", "remove_table"]

EVENTS = ("insert", "update", "delete")
_TRIGGER = "pgcast_capture_{}"


@dataclass(frozen=True, slots=True)
class CapturedTable:
    schema: str
    table: str
    events: tuple[str, ...]
    old_values: str
    mode: str
    backlog: int
    granularity: str = "row"
    identity: str = "default"


def _fail(exc: psycopg.Error, doing: str) -> DatabaseError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseError(f"{doing}: {first}", exc.sqlstate)


def _require_pgcast(conn: psycopg.Connection) -> None:
    row = conn.execute("SELECT to_regclass('pgcast.changes') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise ConfigurationError(
            "pgcast is not installed in this database: run `pgcast migrate --db URL` first"
        )


def _resolve(conn: psycopg.Connection, name: str) -> tuple[int, str, str]:
    """(oid, schema, table) of a capturable table, or a one-line error saying what to do."""
    try:
        schema, table = parse_table_name(name)
    except ValueError as exc:
        raise UnknownTableError(str(exc)) from None
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
        raise UnknownTableError(
            f'schema "{schema}" does not exist (quote mixed-case names: \'"MySchema".table\')'
        )
    row = conn.execute(
        "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    ).fetchone()
    if row is None:
        raise UnknownTableError(
            f'table "{schema}"."{table}" does not exist (quote mixed-case names: '
            "'public.\"MyTable\"')"
        )
    if row[1] not in ("r", "p"):
        raise UnknownTableError(f'"{schema}"."{table}" is not a table; only tables can be captured')
    return int(row[0]), schema, table


def _is_partitioned(conn: psycopg.Connection, oid: int) -> bool:
    row = conn.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = %s", (oid,)).fetchone()
    return bool(row and row[0])


def _key_columns(conn: psycopg.Connection, oid: int) -> list[str]:
    """Primary key columns, else the replica identity index's, else none."""
    row = conn.execute(
        "SELECT array_agg(a.attname ORDER BY k.ord)"
        " FROM pg_index i"
        " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = %s AND (i.indisprimary OR i.indisreplident)"
        " GROUP BY i.indisprimary ORDER BY i.indisprimary DESC LIMIT 1",
        (oid,),
    ).fetchone()
    return list(row[0]) if row and row[0] else []


def _drop_triggers(conn: psycopg.Connection, schema: str, table: str) -> None:
    for event in EVENTS:
        conn.execute(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}.{}").format(
                sql.Identifier(_TRIGGER.format(event)),
                sql.Identifier(schema),
                sql.Identifier(table),
            )
        )


def add_table(
    dsn: str,
    name: str,
    events: Sequence[str] = EVENTS,
    old_values: str | None = "full",
    granularity: str = "row",
    mode: str = "trigger",
) -> CapturedTable:
    """Install (or reinstall) capture on a table, switching it from the other mode if needed.

    Trigger mode: ``granularity`` ``row`` fires once per changed row (cheapest for small
    transactions); ``statement`` once per statement with transition tables (cheapest for large
    statements). Partitioned tables always get ``statement`` (see the returned ``granularity``).
    ``old_values`` None means ``full``.

    Replication mode: the table joins publication ``pgcast`` (see :mod:`cdc.publication`);
    ``old_values`` ``full`` sets ``REPLICA IDENTITY FULL``, ``key`` needs a primary key or
    identity index, None keeps the table's replica identity. Every event is published.
    """
    chosen = tuple(e.lower() for e in events)
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        raise ConfigurationError(f"events must be a subset of {','.join(EVENTS)}")
    if old_values not in (None, "full", "key"):
        raise ConfigurationError("old values must be 'full' or 'key'")
    if granularity not in ("row", "statement"):
        raise ConfigurationError("granularity must be 'row' or 'statement'")
    if mode not in ("trigger", "replication"):
        raise ConfigurationError("mode must be 'trigger' or 'replication'")
    if mode == "replication":
        if set(chosen) != set(EVENTS):
            raise ConfigurationError(
                "--events applies to trigger mode only: a publication publishes every"
                " INSERT, UPDATE and DELETE of its tables"
            )
        return _add_replicated(dsn, name, old_values)
    old_values = old_values or "full"
    try:
        with psycopg.connect(dsn) as conn, conn.transaction():
            _require_pgcast(conn)
            oid, schema, table = _resolve(conn, name)
            unpublish(conn, oid, schema, table)
            if _is_partitioned(conn, oid):
                # Row triggers fire on the partitions (partition names, cross-partition moves as
                # DELETE + INSERT); statement triggers on the parent report the parent's rows.
                granularity = "statement"
            allowed = conn.execute("SELECT has_table_privilege(%s, 'TRIGGER')", (oid,)).fetchone()
            if not allowed or not allowed[0]:
                raise PrivilegeError(
                    f'role lacks the TRIGGER privilege on "{schema}"."{table}": connect as its '
                    f'owner or GRANT TRIGGER ON "{schema}"."{table}" TO the role'
                )
            args: list[str] = [old_values, *_key_columns(conn, oid)]
            _drop_triggers(conn, schema, table)
            for event in EVENTS:
                if event in chosen:
                    _create_trigger(conn, schema, table, event, args, granularity)
            conn.execute(
                "INSERT INTO pgcast.tables"
                " (relid, schema_name, table_name, events, old_values, granularity)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (relid) DO UPDATE SET"
                " schema_name = excluded.schema_name, table_name = excluded.table_name,"
                " events = excluded.events, old_values = excluded.old_values,"
                " granularity = excluded.granularity, mode = 'trigger'",
                (oid, schema, table, list(chosen), old_values, granularity),
            )
            return CapturedTable(schema, table, chosen, old_values, "trigger", 0, granularity)
    except psycopg.Error as exc:
        raise _fail(exc, f"could not capture {name}") from exc


def _add_replicated(dsn: str, name: str, old_values: str | None) -> CapturedTable:
    try:
        with psycopg.connect(dsn) as conn, conn.transaction():
            _require_pgcast(conn)
            oid, schema, table = _resolve(conn, name)
            _drop_triggers(conn, schema, table)
            carried = publish(conn, oid, schema, table, old_values)
            conn.execute(
                "INSERT INTO pgcast.tables"
                " (relid, schema_name, table_name, events, old_values, granularity, mode)"
                " VALUES (%s, %s, %s, %s, %s, 'row', 'replication') ON CONFLICT (relid) DO UPDATE"
                " SET schema_name = excluded.schema_name, table_name = excluded.table_name,"
                " events = excluded.events, old_values = excluded.old_values,"
                " granularity = excluded.granularity, mode = excluded.mode",
                (oid, schema, table, list(EVENTS), carried),
            )
            row = conn.execute("SELECT relreplident::text FROM pg_class WHERE oid = %s", (oid,))
            ident = IDENTITY_NAMES.get(str((row.fetchone() or ("d",))[0]), "default")
            return CapturedTable(schema, table, EVENTS, carried, "replication", 0, "-", ident)
    except psycopg.Error as exc:
        raise _fail(exc, f"could not capture {name}") from exc


def _create_trigger(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    event: str,
    args: Iterable[str],
    granularity: str,
) -> None:
    if granularity == "row":
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {name} AFTER {event} ON {schema}.{table}"
                " FOR EACH ROW EXECUTE FUNCTION pgcast.capture_row({args})"
            ).format(
                name=sql.Identifier(_TRIGGER.format(event)),
                event=sql.SQL(event.upper()),
                schema=sql.Identifier(schema),
                table=sql.Identifier(table),
                args=sql.SQL(", ").join(sql.Literal(a) for a in args),
            )
        )
        return
    referencing = {
        "insert": "NEW TABLE AS pgcast_new",
        "update": "NEW TABLE AS pgcast_new OLD TABLE AS pgcast_old",
        "delete": "OLD TABLE AS pgcast_old",
    }[event]
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER {name} AFTER {event} ON {schema}.{table}"
            " REFERENCING {referencing} FOR EACH STATEMENT"
            " EXECUTE FUNCTION pgcast.{function}({args})"
        ).format(
            name=sql.Identifier(_TRIGGER.format(event)),
            event=sql.SQL(event.upper()),
            schema=sql.Identifier(schema),
            table=sql.Identifier(table),
            referencing=sql.SQL(referencing),
            function=sql.Identifier(f"capture_{event}"),
            args=sql.SQL(", ").join(sql.Literal(a) for a in args),
        )
    )


def wal_level(dsn: str) -> str:
    """The server's ``wal_level`` (replication mode needs ``logical``)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('wal_level')").fetchone()
    except psycopg.Error as exc:
        raise _fail(exc, "reading wal_level") from exc
    assert row is not None
    return str(row[0])


def remove_table(dsn: str, name: str) -> None:
    """Remove capture from a table, whichever its mode (its rows already in the outbox stay until
    pruned; a replica identity set by ``add_table`` stays too)."""
    try:
        with psycopg.connect(dsn) as conn, conn.transaction():
            _require_pgcast(conn)
            oid, schema, table = _resolve(conn, name)
            row = conn.execute("SELECT 1 FROM pgcast.tables WHERE relid = %s", (oid,)).fetchone()
            if row is None:
                raise UnknownTableError(f'"{schema}"."{table}" is not captured')
            _drop_triggers(conn, schema, table)
            unpublish(conn, oid, schema, table)
            conn.execute("DELETE FROM pgcast.tables WHERE relid = %s", (oid,))
    except psycopg.Error as exc:
        raise _fail(exc, f"could not remove {name}") from exc


def list_tables(dsn: str) -> list[CapturedTable]:
    """Captured tables with their outbox backlog (rows no consumer has acknowledged yet)."""
    try:
        with psycopg.connect(dsn) as conn:
            _require_pgcast(conn)
            rows = conn.execute(
                "WITH acked AS (SELECT coalesce(min(split_part(position, ':', 2)::bigint), 0) AS id"
                "               FROM pgcast.consumers WHERE position LIKE 't3:%%'),"
                " backlog AS (SELECT relid, count(*) AS n FROM pgcast.changes"
                "             WHERE id > (SELECT id FROM acked) GROUP BY relid)"
                " SELECT coalesce(n.nspname, t.schema_name), coalesce(c.relname, t.table_name),"
                "        t.events, t.old_values, t.mode, coalesce(b.n, 0), t.granularity,"
                "        coalesce(c.relreplident::text, 'd')"
                " FROM pgcast.tables t"
                " LEFT JOIN pg_class c ON c.oid = t.relid"
                " LEFT JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN backlog b ON b.relid = t.relid"
                " ORDER BY 1, 2"
            ).fetchall()
    except psycopg.Error as exc:
        raise _fail(exc, "could not list tables") from exc
    return [
        CapturedTable(
            s,
            t,
            tuple(e),
            o,
            m,
            int(n),
            g if m == "trigger" else "-",
            IDENTITY_NAMES.get(str(r), str(r)),
        )
        for s, t, e, o, m, n, g, r in rows
    ]


def prune(dsn: str, older_than: timedelta) -> int:
    """Delete outbox rows older than ``older_than``; returns how many were deleted."""
    try:
        with psycopg.connect(dsn) as conn, conn.transaction():
            _require_pgcast(conn)
            row = conn.execute("SELECT pgcast.prune(%s)", (older_than,)).fetchone()
    except psycopg.Error as exc:
        raise _fail(exc, "could not prune") from exc
    return int(row[0]) if row else 0
