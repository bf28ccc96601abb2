"""SQL text shared by the capture shells, and parsing of table names as operators type them.

Pure: no driver imports. Identifiers given by users are never pasted into SQL text here; the
shells quote them with ``psycopg.sql.Identifier`` or pass them as parameters.
"""

from __future__ import annotations

__all__ = [
    "READ_CHANGES",
    "READ_CHANGES_NO_COMMIT_TS",
    "READ_COLUMNS",
    "parse_table_name",
]


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


# One statement = one snapshot: the rows to emit plus that snapshot's in-progress xids.
# $1 after, $2 high, $3 in-progress xids (bigint[]), $4 limit, $5 xmax (text). Two index
# scans, one per branch of the cursor's predicate (see cdc/cursor.py), merged in id order.
_READ = """
SELECT array(SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) AS x) AS xip,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
       (SELECT pruned_id FROM pgcast.state) AS pruned_id,
       coalesce((SELECT json_agg(r ORDER BY r.id) FROM (
           SELECT * FROM (
               (SELECT {columns} FROM pgcast.changes AS c
                WHERE c.id > greatest($1::bigint, $2::bigint) ORDER BY c.id LIMIT $4::int)
               UNION ALL
               (SELECT {columns} FROM pgcast.changes AS c
                WHERE (c.xid = ANY($3::bigint[]::text[]::xid8[]) OR c.xid >= $5::text::xid8)
                  AND c.id > $1::bigint AND c.id <= $2::bigint
                ORDER BY c.id LIMIT $4::int)
           ) AS u ORDER BY u.id LIMIT $4) AS r), '[]') AS rows
"""
_COLUMNS = (
    "c.id, c.relid::int8 AS relid, c.schema_name, c.table_name, c.op, c.record, c.old_record,"
    " {ts} AS ts"
)
READ_CHANGES = _READ.format(
    columns=_COLUMNS.format(ts="coalesce(pg_xact_commit_timestamp(xid(c.xid)), c.created_at)")
)
READ_CHANGES_NO_COMMIT_TS = _READ.format(columns=_COLUMNS.format(ts="c.created_at"))

# Columns of a captured table in attnum order with their type names, as Supabase reports them.
READ_COLUMNS = """
SELECT a.attname, t.typname
FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
