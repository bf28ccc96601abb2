"""SQL text shared by the capture shells, and parsing of table names as operators type them.

Pure: no driver imports. Identifiers given by users are never pasted into SQL text here; the
shells quote them with ``psycopg.sql.Identifier`` or pass them as parameters.
"""

from __future__ import annotations

__all__ = ["READ_COLUMNS", "parse_table_name", "read_changes"]


def parse_table_name(text: str, default_schema: str = "public") -> tuple[str, str]:
    """Split ``schema.table`` the way PostgreSQL reads it: unquoted parts fold to lower case,
    double-quoted parts keep their case, may contain dots and spaces, and ``""`` is a quote.

    Raises:
        ValueError: the name is empty, has more than two parts or an unterminated quote.
    """
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quoted identifier in {text!r}")
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(text[i])
                i += 1
            part = "".join(buf)
        else:
            j = i
            while j < n and text[j] not in '."':
                j += 1
            part = text[i:j].strip().lower()
            i = j
        if not part:
            raise ValueError(f"empty identifier in table name {text!r}")
        parts.append(part)
        if i >= n:
            break
        if text[i] != ".":
            raise ValueError(f"unexpected character {text[i]!r} in table name {text!r}")
        i += 1
    if len(parts) > 2:
        raise ValueError(f"table name {text!r} has more than two parts (use schema.table)")
    if len(parts) == 1:
        return default_schema, parts[0]
    return parts[0], parts[1]


# One statement = one snapshot: the rows the cursor wants (see cdc/cursor.py) plus the
# snapshot's in-progress xids and xmax (repeated on every row; when nothing is to be read, one row
# of NULLs carries them). Index scans only (the reader's session disables sequential scans): ids
# above high by primary key, and rows of in-flight xids below it by the xid index.
# $1 high, $2 limit, $3 in-flight xip (bigint[]), $4 in-flight xmax (text); then for each
# segment three more: its bound, its xip, its xmax.
_READ = """
WITH s AS MATERIALIZED (
    SELECT array(SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) AS x) AS xip,
           pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax
)
SELECT s.xip, s.xmax, r.id, r.relid, r.schema_name, r.table_name, r.op::text AS op,
       r.record::text AS record, r.old_record::text AS old_record, {ts} AS ts
FROM s LEFT JOIN LATERAL (
    SELECT * FROM (
        (SELECT {columns} FROM pgcast.changes AS c
         WHERE c.id > $1::bigint ORDER BY c.id LIMIT $2::int)
        UNION ALL
        (SELECT {columns} FROM pgcast.changes AS c
         WHERE c.id IN ({in_flight})
         ORDER BY c.id LIMIT $2::int)
    ) AS u ORDER BY u.id LIMIT $2::int
) AS r ON true
ORDER BY r.id
"""
_COLUMNS = (
    "c.id, c.relid::int8 AS relid, c.schema_name, c.table_name, c.op, c.record, c.old_record,"
    " c.xid, c.created_at"
)
# Rows of in-flight xids below high, one xid-index lookup per set: an xip list and an xmax.
# (``id + 0`` keeps the planner on the xid index: few rows are in flight, many lie below high.)
_XIDS = (
    "SELECT x.id FROM pgcast.changes AS x WHERE x.xid = ANY(${xip}::bigint[]::text[]::xid8[])"
    " AND x.id + 0 > {after} AND x.id + 0 <= $1::bigint"
    " UNION SELECT x.id FROM pgcast.changes AS x WHERE x.xid >= ${xmax}::text::xid8"
    " AND x.id + 0 > {after} AND x.id + 0 <= $1::bigint"
)


def read_changes(segments: int, commit_timestamps: bool = True) -> str:
    """The read statement for a cursor state with ``segments`` segments."""
    parts = [_XIDS.format(xip=3, xmax=4, after="0")]
    for i in range(segments):
        n = 5 + 3 * i
        parts.append(_XIDS.format(xip=n + 1, xmax=n + 2, after=f"${n}::bigint"))
    ts = "coalesce(pg_xact_commit_timestamp(xid(r.xid)), r.created_at)"
    return _READ.format(
        columns=_COLUMNS,
        in_flight="\n UNION ".join(parts),
        ts=ts if commit_timestamps else "r.created_at",
    )


# Columns of a captured table in attnum order with their type names, as Supabase reports them.
READ_COLUMNS = """
SELECT a.attname, t.typname
FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
