"""A server with ``wal_level = replica``, end to end: the replication source, ``pgcast serve
--capture replication`` and ``pgcast status`` each say that wal_level must be logical."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdc import admin
from cdc.embedded import throwaway_cluster
from cdc.errors import ConfigurationError
from cdc.migrate import migrate
from cdc.replication import ReplicationSource

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def replica_dsn() -> Iterator[str]:
    """A cluster of its own at wal_level replica, migrated, with a replication-mode table."""
    with throwaway_cluster(settings={"wal_level": "replica", "fsync": "off"}) as cluster:
        dsn = cluster.dsn()
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.items (id int PRIMARY KEY)")
        admin.add_table(dsn, "public.items", mode="replication")
        yield dsn


def pgcast(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_replication_source_refuses(replica_dsn: str) -> None:
    source = ReplicationSource(replica_dsn)
    try:
        with pytest.raises(
            ConfigurationError, match="wal_level is replica: set wal_level = logical"
        ):
            await source.check()
    finally:
        await source.close()
    with psycopg.connect(replica_dsn) as conn:  # and left nothing behind
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)


def test_serve_exits_with_a_one_line_error(replica_dsn: str) -> None:
    out = pgcast(
        "serve", "--db", replica_dsn, "--capture", "replication", "--no-auth", "--port", "0"
    )
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: wal_level is replica: set wal_level = logical and restart Postgres"]
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_status_warns_and_exits_2(replica_dsn: str) -> None:
    out = pgcast("status", "--db", replica_dsn)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "(wal_level replica)" in lines[0]
    warnings = [line for line in lines if line.startswith("WARNING:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("WARNING: wal_level is replica but replication-mode tables exist")
    assert "set wal_level = logical" in warnings[0]


def test_tables_add_replication_warns(replica_dsn: str) -> None:
    with psycopg.connect(replica_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.more (id int PRIMARY KEY)")
    out = pgcast("tables", "add", "public.more", "--mode", "replication", "--db", replica_dsn)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("capturing public.more")
    assert out.stderr.strip() == (
        "warning: wal_level is replica: set wal_level = logical and restart Postgres before"
        " `pgcast serve --capture replication`"
    )
