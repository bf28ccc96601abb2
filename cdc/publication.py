"""Replication-mode membership: the ``pgcast`` publication and the tables' replica identity.

Functions take an open psycopg connection inside the caller's transaction (see :mod:`cdc.admin`),
so switching a table between modes is all-or-nothing. Identifiers are quoted with
:mod:`psycopg.sql`.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from cdc.errors import ConfigurationError, PrivilegeError
from cdc.identity import plan_identity

__all__ = ["PUBLICATION", "publish", "unpublish"]

PUBLICATION = "pgcast"


def _ensure_publication(conn: psycopg.Connection, partitioned: bool) -> None:
    row = conn.execute(
        "SELECT pg_has_role(pubowner, 'USAGE'), puballtables, pubviaroot"
        " FROM pg_publication WHERE pubname = %s",
        (PUBLICATION,),
    ).fetchone()
    name = sql.Identifier(PUBLICATION)
    if row is None:
        can = conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')")
        if not (can.fetchone() or (False,))[0]:
            raise PrivilegeError(
                f'role cannot create publication "{PUBLICATION}": GRANT CREATE ON DATABASE to it,'
                " or connect as the database owner"
            )
        # Partitions' changes are reported as their root table, as trigger mode reports them.
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} WITH (publish_via_partition_root = true)").format(name)
        )
        return
    owned, all_tables, via_root = row
    if not owned:
        raise PrivilegeError(
            f'role does not own publication "{PUBLICATION}": connect as its owner to change it'
        )
    if all_tables:
        raise ConfigurationError(
            f'publication "{PUBLICATION}" is FOR ALL TABLES: every table is already published;'
            " drop it or recreate it without FOR ALL TABLES"
        )
    if partitioned and not via_root:
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)").format(name)
        )


def publish(
    conn: psycopg.Connection, oid: int, schema: str, table: str, old_values: str | None
) -> str:
    """Add the table to the publication with the replica identity ``old_values`` asks for
    (None keeps the table's own); returns what old rows will carry, ``full`` or ``key``.

    Raises:
        PrivilegeError: the role does not own the table or the publication.
        ConfigurationError: the table would have no usable replica identity.
    """
    label = f'"{schema}"."{table}"'
    row = conn.execute(
        "SELECT pg_has_role(c.relowner, 'USAGE'), c.relkind = 'p', c.relreplident::text,"
        " EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)"
        " FROM pg_class c WHERE c.oid = %s",
        (oid,),
    ).fetchone()
    if row is None:  # dropped concurrently
        raise ConfigurationError(f"table {label} no longer exists")
    owned, partitioned, current, has_pk = row
    if not owned:
        raise PrivilegeError(
            f"role does not own {label}: publishing a table (ALTER PUBLICATION … ADD TABLE) needs"
            " its owner; connect as the owner"
        )
    plan = plan_identity(label, current, has_pk, old_values)
    _ensure_publication(conn, partitioned)
    target = plan.alter_to or ("FULL" if plan.old_values == "full" else None)
    if target is not None:
        # A partitioned table's setting does not reach its partitions, whose WAL records decide
        # what the old row carries: set every partition too (also ones attached since).
        targets = conn.execute(
            # (pg_partition_tree lists nothing for a table that is not partitioned)
            "SELECT n.nspname, c.relname FROM (SELECT %s::oid AS relid, 0 AS level"
            "  UNION SELECT relid, level FROM pg_partition_tree(%s::regclass)) t"
            " JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relreplident <> %s ORDER BY t.level",
            (oid, oid, target[0].lower()),
        ).fetchall()
        for nsp, rel in targets:
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY {}").format(
                    sql.Identifier(nsp), sql.Identifier(rel), sql.SQL(target)
                )
            )
    member = conn.execute(
        "SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
        " WHERE p.pubname = %s AND r.prrelid = %s",
        (PUBLICATION, oid),
    ).fetchone()
    if member is None:
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}.{}").format(
                sql.Identifier(PUBLICATION), sql.Identifier(schema), sql.Identifier(table)
            )
        )
    return plan.old_values


def unpublish(conn: psycopg.Connection, oid: int, schema: str, table: str) -> None:
    """Remove the table from the publication if it is a member (replica identity stays)."""
    member = conn.execute(
        "SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
        " WHERE p.pubname = %s AND r.prrelid = %s",
        (PUBLICATION, oid),
    ).fetchone()
    if member is not None:
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} DROP TABLE {}.{}").format(
                sql.Identifier(PUBLICATION), sql.Identifier(schema), sql.Identifier(table)
            )
        )
