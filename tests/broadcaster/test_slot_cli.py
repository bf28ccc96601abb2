"""``pgcast status`` and ``pgcast slot create|drop`` against a real server.

Slot names are cluster-wide, so every test uses its own and drops it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner

from broadcaster.cli import main


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=stdin, env=env)
    return result.exit_code, result.output


def new_slot() -> str:
    return "t_" + uuid.uuid4().hex[:12]


def slot_exists(db: str, name: str) -> bool:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,))
        return row.fetchone() is not None


@pytest.fixture(scope="module")
def sdb(db: str) -> str:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.trig (id int PRIMARY KEY, v text);"
            "CREATE TABLE public.repl (id int PRIMARY KEY, v text);"
            "CREATE TABLE public.other (id serial PRIMARY KEY, pad text);"
        )
    assert run("tables", "add", "public.trig", "--db", db)[0] == 0
    assert run("tables", "add", "public.repl", "--mode", "replication", "--db", db)[0] == 0
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO public.trig VALUES (1, 'a'), (2, 'b')")
    return db


@pytest.fixture
def slot(sdb: str) -> Iterator[str]:
    name = new_slot()
    with psycopg.connect(sdb, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    yield name
    with psycopg.connect(sdb, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            (name,),
        )


def write_wal(db: str, kib: int) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.other (pad) SELECT repeat('x', 1000) FROM generate_series(1, %s)",
            (kib,),
        )


@contextlib.contextmanager
def consuming(db: str, name: str) -> Iterator[int]:
    """Hold the slot active with pg_recvlogical; yields the walsender's pid."""
    binary = shutil.which("pg_recvlogical")
    assert binary is not None, "pg_recvlogical is part of the PostgreSQL client tools"
    proc = subprocess.Popen(
        [binary, "-d", db, "-S", name, "--start", "-f", "/dev/null",
         "-o", "proto_version=1", "-o", "publication_names=pgcast"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with psycopg.connect(db) as conn:
                row = conn.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (name,)
                ).fetchone()
            if row and row[0]:
                yield int(row[0])
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert time.monotonic() < deadline, "pg_recvlogical never became active"
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)


def test_status_without_slot(sdb: str) -> None:
    code, out = run("status", "--slot", new_slot(), "--db", sdb)
    assert code == 0, out
    assert "trigger mode: 1 table(s): public.trig" in out
    assert "outbox: 2 row(s)" in out and "oldest change" in out
    assert "replication mode: 1 table(s): public.repl" in out
    assert "absent (pgcast serve --capture replication creates it)" in out
    assert "WARNING" not in out


def test_status_with_slot_lag_threshold_and_json(sdb: str, slot: str) -> None:
    write_wal(sdb, 512)  # ~0.5 MiB of WAL the slot has not confirmed
    code, out = run("status", "--slot", slot, "--db", sdb)
    assert code == 0, out
    assert f'slot "{slot}": inactive, plugin pgoutput' in out
    assert (
        "time unknown (slot inactive, no consumer to measure)" in out
        and "wal_status reserved" in out
    )
    code, out = run("status", "--slot", slot, "--max-lag-bytes", "100000", "--db", sdb)
    assert code == 2, out
    assert out.strip().splitlines()[-1].startswith(f'WARNING: slot "{slot}" holds')
    code, out = run(
        "status", "--slot", slot, "--json", "--db", sdb, env={"PGCAST_MAX_LAG_BYTES": "100000"}
    )
    assert code == 2
    doc = json.loads(out)
    assert doc["slot"]["exists"] is True and doc["slot"]["active"] is False
    assert doc["slot"]["lag_bytes"] > 500_000 and doc["slot"]["confirmed_flush_lsn"]
    assert doc["slot"]["plugin"] == "pgoutput" and doc["wal_level"] == "logical"
    assert doc["trigger_tables"] == ["public.trig"] and doc["outbox"]["rows"] == 2
    assert len(doc["warnings"]) == 1 and "not yet confirmed" in doc["warnings"][0]


def test_active_slot_status_and_drop_refusal(sdb: str, slot: str) -> None:
    with consuming(sdb, slot) as pid:
        code, out = run("status", "--slot", slot, "--json", "--db", sdb)
        doc = json.loads(out)
        assert code == 0 and doc["slot"]["active"] is True and doc["slot"]["active_pid"] == pid
        assert doc["slot"]["lag_source"] in (
            "caught up",
            "pg_stat_replication.flush_lag",
            "no feedback measured yet",
        )
        code, out = run("slot", "drop", "--slot", slot, "--yes", "--db", sdb)
        assert code == 1
        assert f"is in use by pid {pid}" in out and "--force" in out
        assert len(out.strip().splitlines()) == 1 and slot_exists(sdb, slot)
        code, out = run("slot", "drop", "--slot", slot, "--yes", "--force", "--db", sdb)
        assert code == 0 and f'dropped slot "{slot}"' in out, out
        assert not slot_exists(sdb, slot)


def test_drop_asks_for_confirmation(sdb: str, slot: str) -> None:
    write_wal(sdb, 64)
    code, out = run("slot", "drop", "--slot", slot, "--db", sdb, stdin="n\n")
    assert code == 1 and f'Drop replication slot "{slot}"?' in out and "KiB of WAL" in out
    assert "Aborted" in out and slot_exists(sdb, slot)
    code, out = run("slot", "drop", "--slot", slot, "--db", sdb, stdin="y\n")
    assert code == 0 and f'dropped slot "{slot}"' in out
    assert not slot_exists(sdb, slot)


def test_drop_missing_or_foreign_slot(sdb: str, pg_server: object) -> None:
    missing = new_slot()
    code, out = run("slot", "drop", "--slot", missing, "--yes", "--db", sdb)
    assert code == 1 and out.strip() == f'error: replication slot "{missing}" does not exist'
    from tests.conftest import Server

    assert isinstance(pg_server, Server)
    foreign = new_slot()
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (foreign,))
        try:
            code, out = run("slot", "drop", "--slot", foreign, "--yes", "--db", sdb)
            assert code == 1 and "belongs to database postgres" in out
            assert slot_exists(sdb, foreign)
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (foreign,))


def test_slot_create(sdb: str) -> None:
    name = new_slot()
    code, out = run("slot", "create", "--slot", name, "--db", sdb)
    assert code == 0 and out.startswith(f'created slot "{name}" at ') and "/" in out
    try:
        with psycopg.connect(sdb) as conn:
            row = conn.execute(
                "SELECT plugin, temporary FROM pg_replication_slots WHERE slot_name = %s", (name,)
            ).fetchone()
        assert row == ("pgoutput", False)
        code, out = run("slot", "create", "--slot", name, "--db", sdb)
        assert code == 1 and "already exists" in out
    finally:
        assert run("slot", "drop", "--slot", name, "--yes", "--db", sdb)[0] == 0


def test_without_replication_privilege(sdb: str) -> None:
    with psycopg.connect(sdb, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pgcast_noslot")
        conn.execute("CREATE ROLE pgcast_noslot LOGIN")
    weak = psycopg.conninfo.make_conninfo(sdb, user="pgcast_noslot")
    code, out = run("slot", "create", "--slot", new_slot(), "--db", weak)
    assert code == 1 and "REPLICATION attribute" in out, out


def test_status_warns_about_replica_identity_drift(sdb: str) -> None:
    with psycopg.connect(sdb, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.parts (id int, k int, PRIMARY KEY (id, k)) PARTITION BY LIST (k);"
            "CREATE TABLE public.parts_1 PARTITION OF public.parts FOR VALUES IN (1);"
        )
    args = ("tables", "add", "public.parts", "--mode", "replication", "--old-values", "full")
    assert run(*args, "--db", sdb)[0] == 0
    assert run("status", "--slot", new_slot(), "--db", sdb)[0] == 0
    with psycopg.connect(sdb, autocommit=True) as conn:  # attached later: identity DEFAULT
        conn.execute("CREATE TABLE public.parts_2 PARTITION OF public.parts FOR VALUES IN (2)")
    code, out = run("status", "--slot", new_slot(), "--db", sdb)
    assert code == 2
    assert "WARNING: replica identity of public.parts_2 is not FULL: re-run" in out
    assert run(*args, "--db", sdb)[0] == 0  # re-adding sets the new partition too
    assert run("status", "--slot", new_slot(), "--db", sdb)[0] == 0
    with psycopg.connect(sdb, autocommit=True) as conn:  # someone sets NOTHING on a key table
        conn.execute("ALTER TABLE public.repl REPLICA IDENTITY NOTHING")
    try:
        code, out = run("status", "--slot", new_slot(), "--json", "--db", sdb)
        assert code == 2
        assert json.loads(out)["warnings"] == [
            "replica identity of public.repl is without columns: re-run `pgcast tables add"
            " TABLE --mode replication` (with --old-values)"
        ]
    finally:
        with psycopg.connect(sdb, autocommit=True) as conn:
            conn.execute("ALTER TABLE public.repl REPLICA IDENTITY DEFAULT")
        assert run("tables", "remove", "public.parts", "--db", sdb)[0] == 0


def test_status_unmigrated(blank_db: str) -> None:
    code, out = run("status", "--db", blank_db)
    assert code == 1 and "run `pgcast migrate --db URL` first" in out
    code, out = run("status", "--db", "postgresql://127.0.0.1:1/none")
    assert code == 1 and out.startswith("error: could not read status")
