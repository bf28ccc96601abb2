"""Replication-mode table management against a real server: publication membership, replica
identity, switching modes, partitioned tables and clear errors (via the CLI, as operators use it).
"""

from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner

from broadcaster.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def rdb(db: str) -> str:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.items (id int PRIMARY KEY, body text);"
            "CREATE TABLE public.nokey (a int, b text);"
            'CREATE TABLE public."Mixed Case" (id int PRIMARY KEY);'
            "CREATE TABLE public.events (id int, at date, v text, PRIMARY KEY (id, at))"
            " PARTITION BY RANGE (at);"
            "CREATE TABLE public.events_2024 PARTITION OF public.events"
            " FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
            "CREATE TABLE public.events_2025 PARTITION OF public.events"
            " FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
        )
    return db


def published(db: str) -> list[tuple[str, str]]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables"
            " WHERE pubname = 'pgcast' ORDER BY 1, 2"
        ).fetchall()
    return [(s, t) for s, t in rows]


def identity(db: str, table: str) -> str:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT relreplident::text FROM pg_class WHERE oid = %s::regclass", (table,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def triggers(db: str, table: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            (table,),
        ).fetchone()
    return int(row[0]) if row else -1


def registry(db: str, table: str) -> tuple[str, str] | None:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT mode, old_values FROM pgcast.tables WHERE relid = %s::regclass", (table,)
        ).fetchone()
    return None if row is None else (row[0], row[1])


def test_add_replication_keeps_identity_then_full(rdb: str) -> None:
    code, out = run("tables", "add", "public.items", "--mode", "replication", "--db", rdb)
    assert code == 0, out
    assert "old values: key, replica identity default, publication pgcast" in out
    assert "wal_level" not in out  # logical here: nothing to warn about
    assert published(rdb) == [("public", "items")]
    assert identity(rdb, "public.items") == "d"
    with psycopg.connect(rdb) as conn:
        row = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = 'pgcast'")
        assert row.fetchone() == (True,)
    # Again with --old-values full: idempotent membership, identity becomes FULL.
    code, out = run(
        "tables", "add", "public.items", "--mode", "replication", "--old-values", "full",
        "--db", rdb,
    )  # fmt: skip
    assert code == 0, out
    assert "old values: full, replica identity full" in out
    assert identity(rdb, "public.items") == "f"
    assert published(rdb) == [("public", "items")]
    assert registry(rdb, "public.items") == ("replication", "full")
    # Without --old-values the table's (now FULL) identity is kept; key goes back to DEFAULT.
    code, out = run("tables", "add", "public.items", "--mode", "replication", "--db", rdb)
    assert code == 0 and identity(rdb, "public.items") == "f", out
    code, out = run(
        "tables", "add", "public.items", "--mode", "replication", "--old-values", "key",
        "--db", rdb,
    )  # fmt: skip
    assert code == 0 and identity(rdb, "public.items") == "d", out
    assert registry(rdb, "public.items") == ("replication", "key")


def test_keyless_table_refused_unless_full(rdb: str) -> None:
    code, out = run("tables", "add", "public.nokey", "--mode", "replication", "--db", rdb)
    assert code == 1
    assert "has no primary key or replica identity index" in out and "--old-values full" in out
    assert len(out.strip().splitlines()) == 1
    assert ("public", "nokey") not in published(rdb) and registry(rdb, "public.nokey") is None
    code, out = run(
        "tables", "add", "public.nokey", "--mode", "replication", "--old-values", "full",
        "--db", rdb,
    )  # fmt: skip
    assert code == 0, out
    assert identity(rdb, "public.nokey") == "f"
    with psycopg.connect(rdb, autocommit=True) as conn:  # UPDATE still works once published
        conn.execute("INSERT INTO public.nokey VALUES (1, 'x')")
        conn.execute("UPDATE public.nokey SET b = 'y'")
        conn.execute("DELETE FROM public.nokey")
    code, _ = run("tables", "remove", "public.nokey", "--db", rdb)
    assert code == 0 and ("public", "nokey") not in published(rdb)


def test_switch_modes_both_ways_and_remove(rdb: str) -> None:
    t = '"Mixed Case"'
    code, out = run("tables", "add", f"public.{t}", "--db", rdb)
    assert code == 0 and triggers(rdb, f"public.{t}") == 3, out
    code, out = run("tables", "add", f"public.{t}", "--mode", "replication", "--db", rdb)
    assert code == 0, out
    assert triggers(rdb, f"public.{t}") == 0
    assert ("public", "Mixed Case") in published(rdb)
    assert registry(rdb, f"public.{t}") == ("replication", "key")
    code, out = run("tables", "list", "--db", rdb)
    assert code == 0
    line = next(x for x in out.splitlines() if "Mixed" in x)
    assert line.split() == [
        "public", "Mixed", "Case", "insert,update,delete", "key", "-", "replication", "-",
        "default",
    ]  # fmt: skip
    assert out.splitlines()[0].split()[-1] == "identity"
    # Back to triggers: publication membership removed in the same transaction.
    code, out = run("tables", "add", f"public.{t}", "--mode", "trigger", "--db", rdb)
    assert code == 0, out
    assert triggers(rdb, f"public.{t}") == 3
    assert ("public", "Mixed Case") not in published(rdb)
    assert registry(rdb, f"public.{t}") == ("trigger", "full")
    # Remove works from either mode.
    code, _ = run("tables", "add", f"public.{t}", "--mode", "replication", "--db", rdb)
    assert code == 0
    code, out = run("tables", "remove", f"public.{t}", "--db", rdb)
    assert code == 0, out
    assert ("public", "Mixed Case") not in published(rdb)
    assert registry(rdb, f"public.{t}") is None and triggers(rdb, f"public.{t}") == 0


def test_events_only_in_trigger_mode(rdb: str) -> None:
    code, out = run(
        "tables", "add", "public.items", "--mode", "replication", "--events", "insert",
        "--db", rdb,
    )  # fmt: skip
    assert code == 1 and "--events applies to trigger mode only" in out


def test_partitioned_table_reports_parent(rdb: str) -> None:
    with psycopg.connect(rdb, autocommit=True) as conn:  # a pre-existing publication without it
        conn.execute("ALTER PUBLICATION pgcast SET (publish_via_partition_root = false)")
    code, out = run(
        "tables", "add", "public.events", "--mode", "replication", "--old-values", "full",
        "--db", rdb,
    )  # fmt: skip
    assert code == 0, out
    with psycopg.connect(rdb) as conn:
        row = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = 'pgcast'")
        assert row.fetchone() == (True,)
    # With publish_via_partition_root, pg_publication_tables lists the root, not the partitions.
    assert ("public", "events") in published(rdb)
    assert ("public", "events_2024") not in published(rdb)
    assert [identity(rdb, t) for t in ("events", "events_2024", "events_2025")] == ["f"] * 3
    # A decoded change names the parent: read it through a pgoutput slot.
    with psycopg.connect(rdb, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('t_part_root', 'pgoutput')")
        try:
            conn.execute("INSERT INTO public.events VALUES (1, '2024-05-01', 'x')")
            rows = conn.execute(
                "SELECT data FROM pg_logical_slot_get_binary_changes('t_part_root', NULL, NULL,"
                " 'proto_version', '1', 'publication_names', 'pgcast')"
            ).fetchall()
        finally:
            conn.execute("SELECT pg_drop_replication_slot('t_part_root')")
    # pgoutput describes the partition too, but the Insert names the root's relation id.
    messages = [bytes(r[0]) for r in rows]
    names = {
        int.from_bytes(m[1:5], "big"): m[5:].split(b"\x00")[1].decode()
        for m in messages
        if m[:1] == b"R"
    }
    inserts = [int.from_bytes(m[1:5], "big") for m in messages if m[:1] == b"I"]
    assert [names[relid] for relid in inserts] == ["events"]


def test_errors_are_one_line(rdb: str) -> None:
    cases = [
        (("public.nope",), 'table "public"."nope" does not exist'),
        (("public.items", "--db", "postgresql://127.0.0.1:1/none"), "error:"),
    ]
    for args, message in cases:
        full = ["tables", "add", *args, "--mode", "replication"]
        if "--db" not in args:
            full += ["--db", rdb]
        code, out = run(*full)
        assert code == 1 and message in out and len(out.strip().splitlines()) == 1, out


def test_not_owner_is_told(rdb: str) -> None:
    with psycopg.connect(rdb, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pgcast_pub_weak")
        conn.execute("CREATE ROLE pgcast_pub_weak LOGIN")
        conn.execute("GRANT USAGE ON SCHEMA pgcast TO pgcast_pub_weak")
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA pgcast TO pgcast_pub_weak")
        conn.execute("GRANT ALL ON public.items TO pgcast_pub_weak")
    weak = psycopg.conninfo.make_conninfo(rdb, user="pgcast_pub_weak")
    code, out = run("tables", "add", "public.items", "--mode", "replication", "--db", weak)
    assert code == 1 and "role does not own" in out and "connect as the owner" in out, out
    # Owning the table is not enough: the publication belongs to someone else.
    with psycopg.connect(rdb, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.weak_owned (id int PRIMARY KEY)")
        conn.execute("ALTER TABLE public.weak_owned OWNER TO pgcast_pub_weak")
    code, out = run("tables", "add", "public.weak_owned", "--mode", "replication", "--db", weak)
    assert code == 1 and 'role does not own publication "pgcast"' in out, out
    assert len(out.strip().splitlines()) == 1


def test_unmigrated_database(blank_db: str) -> None:
    with psycopg.connect(blank_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.t (id int PRIMARY KEY)")
    code, out = run("tables", "add", "public.t", "--mode", "replication", "--db", blank_db)
    assert code == 1 and "run `pgcast migrate --db URL` first" in out
