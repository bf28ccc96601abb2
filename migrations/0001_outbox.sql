-- pgcast 0001: the trigger-mode outbox, its wake-up flag, the capture registry and retention state.
-- Shipped migrations are never edited; add a new numbered file instead.

-- (the runner creates schema pgcast and pgcast.schema_migrations before this file)

-- One row per changed row, written by the capture triggers. Ids are allocated when the trigger
-- runs, not at commit, so readers must not assume id order is commit order (see cdc/cursor.py).
CREATE SEQUENCE pgcast.changes_id_seq AS bigint;

CREATE TABLE pgcast.changes (
    id          bigint      NOT NULL DEFAULT nextval('pgcast.changes_id_seq') PRIMARY KEY,
    xid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    relid       oid         NOT NULL,
    schema_name text        NOT NULL,
    table_name  text        NOT NULL,
    op          "char"      NOT NULL CHECK (op IN ('I', 'U', 'D')),
    record      jsonb,
    old_record  jsonb
);
ALTER SEQUENCE pgcast.changes_id_seq OWNED BY pgcast.changes.id;

-- The reader looks up rows of transactions that were still in flight at its previous read.
CREATE INDEX changes_xid_idx ON pgcast.changes (xid);
-- Retention deletes by age; rows arrive in roughly created_at order, so BRIN is enough.
CREATE INDEX changes_created_at_idx ON pgcast.changes USING brin (created_at);

-- Wake-up flag. A sequence because reading and setting it is not transactional: a trigger sees a
-- reader's setval at once, whatever its snapshot or isolation level. 1 = a reader is asleep and
-- wants a NOTIFY on channel 'pgcast'; 0 = readers are polling, do not notify.
CREATE SEQUENCE pgcast.wakeup MINVALUE 0 MAXVALUE 1 START 0 NO CYCLE;

-- Tables under capture.
CREATE TABLE pgcast.tables (
    relid       oid         PRIMARY KEY,
    schema_name text        NOT NULL,
    table_name  text        NOT NULL,
    events      text[]      NOT NULL,
    old_values  text        NOT NULL CHECK (old_values IN ('full', 'key')),
    mode        text        NOT NULL DEFAULT 'trigger' CHECK (mode IN ('trigger', 'replication')),
    granularity text        NOT NULL DEFAULT 'row' CHECK (granularity IN ('row', 'statement')),
    added_at    timestamptz NOT NULL DEFAULT now()
);

-- Acknowledged positions of readers, so a restarted server resumes where it stopped.
CREATE TABLE pgcast.consumers (
    name        text        PRIMARY KEY,
    position    text        NOT NULL,
    acked_at    timestamptz NOT NULL DEFAULT now()
);

-- Retention bookkeeping: the highest id and xid ever pruned, so a reader resuming from a position
-- older than that is told it cannot resume instead of silently skipping changes.
CREATE TABLE pgcast.state (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_id   bigint      NOT NULL DEFAULT 0,
    pruned_xid  xid8        NOT NULL DEFAULT '0'
);
INSERT INTO pgcast.state DEFAULT VALUES;

-- The old row as configured: all columns ('full') or only the key columns given as trigger args.
CREATE FUNCTION pgcast.old_image(old jsonb, args text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- TG_ARGV is indexed from 0, so read the bounds instead of assuming 1.
    SELECT CASE WHEN args[array_lower(args, 1)] = 'full' THEN old
                ELSE (SELECT coalesce(jsonb_object_agg(k, old -> k), '{}'::jsonb)
                      FROM unnest(args[array_lower(args, 1) + 1:]) AS k)
           END
$$;

-- Row-level capture trigger (the default: cheapest for the 1-row transactions most
-- applications write; bench/capture.py measures both kinds).
CREATE FUNCTION pgcast.capture_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pgcast.changes (relid, schema_name, table_name, op, record)
        VALUES (TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'I', to_jsonb(NEW));
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pgcast.changes (relid, schema_name, table_name, op, record, old_record)
        VALUES (TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'U', to_jsonb(NEW),
                pgcast.old_image(to_jsonb(OLD), TG_ARGV));
    ELSE
        INSERT INTO pgcast.changes (relid, schema_name, table_name, op, old_record)
        VALUES (TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'D',
                pgcast.old_image(to_jsonb(OLD), TG_ARGV));
    END IF;
    IF (SELECT last_value FROM pgcast.wakeup) > 0 THEN
        PERFORM pg_notify('pgcast', '');
    END IF;
    RETURN NULL;
END
$$;

-- Statement-level capture triggers (--granularity statement: far cheaper for large statements). Transition tables make one INSERT ... SELECT per statement.
-- Session settings are pinned so to_jsonb renders values the same whoever writes. Whole rows
-- are written alias.* so that a column named like the alias cannot shadow the row.
CREATE FUNCTION pgcast.capture_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
AS $$
BEGIN
    INSERT INTO pgcast.changes (relid, schema_name, table_name, op, record)
    SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'I', to_jsonb(n.*) FROM pgcast_new AS n;
    IF FOUND AND (SELECT last_value FROM pgcast.wakeup) > 0 THEN
        PERFORM pg_notify('pgcast', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION pgcast.capture_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
AS $$
BEGIN
    INSERT INTO pgcast.changes (relid, schema_name, table_name, op, old_record)
    SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'D', pgcast.old_image(to_jsonb(o.*), TG_ARGV)
    FROM pgcast_old AS o;
    IF FOUND AND (SELECT last_value FROM pgcast.wakeup) > 0 THEN
        PERFORM pg_notify('pgcast', '');
    END IF;
    RETURN NULL;
END
$$;

-- UPDATE pairs old and new rows by their position in the transition tables: PostgreSQL appends
-- the old and the new image of each updated row to the two tuplestores together, so the n-th old
-- row belongs to the n-th new row. This works for tables without a primary key and for updates
-- that change the key (tests/cdc/test_capture_types.py checks both). Zipping two arrays with
-- unnest is linear; a join on row numbers would get a cached nested-loop plan from a 1-row
-- statement and turn quadratic on the next large one.
CREATE FUNCTION pgcast.capture_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
AS $$
BEGIN
    INSERT INTO pgcast.changes (relid, schema_name, table_name, op, record, old_record)
    SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'U', p.n, pgcast.old_image(p.o, TG_ARGV)
    FROM unnest(ARRAY(SELECT to_jsonb(x.*) FROM pgcast_new AS x),
                ARRAY(SELECT to_jsonb(x.*) FROM pgcast_old AS x)) AS p(n, o);
    IF FOUND AND (SELECT last_value FROM pgcast.wakeup) > 0 THEN
        PERFORM pg_notify('pgcast', '');
    END IF;
    RETURN NULL;
END
$$;

-- Retention: delete rows older than the window, remember the highest id and xid removed.
CREATE FUNCTION pgcast.prune(older_than interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    max_id bigint;
    max_xid xid8;
BEGIN
    WITH d AS (
        DELETE FROM pgcast.changes WHERE created_at < now() - older_than RETURNING id, xid
    )
    SELECT count(*), max(id), max(xid) INTO n, max_id, max_xid FROM d;
    IF n > 0 THEN
        UPDATE pgcast.state
           SET pruned_id = greatest(pruned_id, max_id),
               pruned_xid = greatest(pruned_xid, max_xid);
    END IF;
    RETURN n;
END
$$;
