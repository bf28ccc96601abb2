"""The operator CLI against a real database: migrate, tables add/list/remove, prune."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from click.testing import CliRunner

from broadcaster.cli import main, parse_duration


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def tables_db(db: str) -> str:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.messages (id bigserial PRIMARY KEY, room int, body text);"
            'CREATE SCHEMA "Chat";'
            'CREATE TABLE "Chat"."Room Log" ("Id" int PRIMARY KEY, "Text" text);'
            "CREATE VIEW public.v AS SELECT 1 AS x;"
        )
    return db


def trigger_names(db: str, table: str) -> list[str]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal"
            " ORDER BY 1",
            (table,),
        ).fetchall()
    return [r[0] for r in rows]


def test_migrate_twice_via_cli(blank_db: str) -> None:
    code, out = run("migrate", "--db", blank_db, "--dry-run")
    assert code == 0 and "would apply 0001_outbox.sql" in out
    code, out = run("migrate", "--db", blank_db)
    assert code == 0 and "applied 0001_outbox.sql" in out
    code, out = run("migrate", "--db", blank_db)
    assert code == 0 and "up to date" in out


def test_add_list_remove_round_trip(tables_db: str) -> None:
    code, out = run("tables", "add", "public.messages", "--db", tables_db)
    assert code == 0, out
    assert "capturing public.messages (insert,update,delete, old values: full, per row)" in out
    assert trigger_names(tables_db, "public.messages") == [
        "pgcast_capture_delete",
        "pgcast_capture_insert",
        "pgcast_capture_update",
    ]
    code, out = run(
        "tables", "add", '"Chat"."Room Log"', "--events", "insert,delete", "--old-values", "key",
        "--granularity", "statement", "--db", tables_db,
    )  # fmt: skip
    assert code == 0, out
    with psycopg.connect(tables_db, autocommit=True) as conn:
        conn.execute("INSERT INTO public.messages (room, body) VALUES (1, 'x'), (2, 'y')")
    code, out = run("tables", "list", "--db", tables_db)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == [
        "schema",
        "table",
        "events",
        "old",
        "values",
        "per",
        "mode",
        "backlog",
        "identity",
    ]
    assert any(
        line.split()
        == ["Chat", "Room", "Log", "insert,delete", "key", "statement", "trigger", "0", "-"]
        for line in lines
    )
    assert any(
        line.split()
        == ["public", "messages", "insert,update,delete", "full", "row", "trigger", "2", "-"]
        for line in lines
    )
    # Re-adding replaces the triggers (idempotent, new event set).
    code, _ = run("tables", "add", "public.messages", "--events", "insert", "--db", tables_db)
    assert code == 0
    assert trigger_names(tables_db, "public.messages") == ["pgcast_capture_insert"]
    code, out = run("tables", "remove", "public.messages", "--db", tables_db)
    assert code == 0
    assert trigger_names(tables_db, "public.messages") == []
    code, out = run("tables", "list", "--db", tables_db)
    assert "messages" not in out and "Room" in out
    code, out = run("tables", "remove", "public.messages", "--db", tables_db)
    assert code == 1 and "is not captured" in out


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("public.nope", 'table "public"."nope" does not exist'),
        ("nosuchschema.messages", 'schema "nosuchschema" does not exist'),
        ("public.v", "is not a table"),
        ("a.b.c", "more than two parts"),
        ('"unterminated', "unterminated quoted identifier"),
        # Injection attempts are just odd names that do not exist.
        ("public.messages; DROP TABLE public.messages", "more than two parts"),
        ("messages; DROP TABLE messages", 'table "public"."messages; drop table messages" does'),
        ('public."messages""; DROP TABLE public.messages; --"', "does not exist"),
    ],
)
def test_bad_table_names_fail_cleanly(tables_db: str, name: str, message: str) -> None:
    code, out = run("tables", "add", name, "--db", tables_db)
    assert code == 1
    assert message in out
    assert len(out.strip().splitlines()) == 1, "one-line error"
    with psycopg.connect(tables_db) as conn:
        assert conn.execute("SELECT to_regclass('public.messages')").fetchone() != (None,)


def test_injection_in_table_name_is_quoted(tables_db: str) -> None:
    evil = 'x"; DROP TABLE public.messages; --'
    with psycopg.connect(tables_db, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE public."{evil.replace(chr(34), chr(34) * 2)}" (id int)')
    quoted = 'public."' + evil.replace('"', '""') + '"'
    code, out = run("tables", "add", quoted, "--db", tables_db)
    assert code == 0, out
    with psycopg.connect(tables_db, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.messages')").fetchone() != (None,)
        conn.execute(f"INSERT INTO {quoted} VALUES (1)")
        row = conn.execute(
            "SELECT table_name, record FROM pgcast.changes ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row == (evil, {"id": 1})


def test_missing_privilege_fails_with_advice(tables_db: str) -> None:
    with psycopg.connect(tables_db, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pgcast_weak")
        conn.execute("CREATE ROLE pgcast_weak LOGIN")
        conn.execute("GRANT USAGE ON SCHEMA pgcast TO pgcast_weak")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA pgcast TO pgcast_weak")
    weak = psycopg.conninfo.make_conninfo(tables_db, user="pgcast_weak")
    code, out = run("tables", "add", "public.messages", "--db", weak)
    assert code == 1
    assert "lacks the TRIGGER privilege" in out and "GRANT TRIGGER" in out


def test_not_migrated_database_says_what_to_do(pg_server: object) -> None:
    from tests.conftest import Server, create_database, drop_database

    assert isinstance(pg_server, Server)
    name = create_database(pg_server, "not_migrated")
    dsn = pg_server.dsn(name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.t (id int)")
        code, out = run("tables", "add", "public.t", "--db", dsn)
        assert code == 1 and "run `pgcast migrate --db URL` first" in out
    finally:
        drop_database(pg_server, name)
    code, out = run("tables", "add", "public.t", "--db", "postgresql://127.0.0.1:1/none")
    assert code == 1 and out.startswith("error:") and len(out.strip().splitlines()) == 1


def test_prune_cli(tables_db: str) -> None:
    code, out = run("prune", "--older-than", "1h", "--db", tables_db)
    assert code == 0 and out.startswith("pruned ")
    code, out = run("prune", "--older-than", "soon", "--db", tables_db)
    assert code == 2 and "is not a duration" in out
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("1.5h").total_seconds() == 5400
    assert parse_duration("2w").days == 14


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "broadcaster.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "tables" in out.stdout
