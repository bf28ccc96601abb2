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
    old_values: str = "full",
    granularity: str = "row",
) -> CapturedTable:
    """Install (or reinstall) trigger capture on a table.

    ``granularity`` ``row`` fires once per changed row (cheapest for small transactions);
    ``statement`` once per statement with transition tables (cheapest for large statements).
    Partitioned tables always get ``statement`` (see the returned ``granularity``).
    """
    chosen = tuple(e.lower() for e in events)
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        raise ConfigurationError(f"events must be a subset of {','.join(EVENTS)}")
    if old_values not in ("full", "key"):
        raise ConfigurationError("old values must be 'full' or 'key'")
    if granularity not in ("row", "statement"):
        raise ConfigurationError("granularity must be 'row' or 'statement'")
    try:
        with psycopg.connect(dsn) as conn, conn.transaction():
            _require_pgcast(conn)
            oid, schema, table = _resolve(conn, name)
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
            args = [old_values, *_key_columns(conn, oid)]
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
                " granularity = excluded.granularity",
                (oid, schema, table, list(chosen), old_values, granularity),
            )
            return CapturedTable(schema, table, chosen, old_values, "trigger", 0, granularity)
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


def remove_table(dsn: str, name: str) -> None:
    """Remove capture from a table (its rows already in the outbox stay until pruned)."""
    try:
        with psycopg.connect(dsn) as conn, conn.transaction():
            _require_pgcast(conn)
            oid, schema, table = _resolve(conn, name)
            row = conn.execute("SELECT 1 FROM pgcast.tables WHERE relid = %s", (oid,)).fetchone()
            if row is None:
                raise UnknownTableError(f'"{schema}"."{table}" is not captured')
            _drop_triggers(conn, schema, table)
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
                "        t.events, t.old_values, t.mode, coalesce(b.n, 0), t.granularity"
                " FROM pgcast.tables t"
                " LEFT JOIN pg_class c ON c.oid = t.relid"
                " LEFT JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN backlog b ON b.relid = t.relid"
                " ORDER BY 1, 2"
            ).fetchall()
    except psycopg.Error as exc:
        raise _fail(exc, "could not list tables") from exc
    return [CapturedTable(s, t, tuple(e), o, m, int(n), g) for s, t, e, o, m, n, g in rows]


def prune(dsn: str, older_than: timedelta) -> int:
    """Delete outbox rows older than ``older_than``; returns how many were deleted."""
    try:
        with psycopg.connect(dsn) as conn, conn.transaction():
            _require_pgcast(conn)
            row = conn.execute("SELECT pgcast.prune(%s)", (older_than,)).fetchone()
    except psycopg.Error as exc:
        raise _fail(exc, "could not prune") from exc
    return int(row[0]) if row else 0
