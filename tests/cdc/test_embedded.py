"""The ``pgcast[embedded]`` path: PostgreSQL from the ``pgserver`` wheel alone starts a throwaway
cluster with logical decoding (what ``pgcast demo`` and the test harness fall back to when no
system PostgreSQL is installed)."""

from __future__ import annotations

from pathlib import Path

import pgserver  # type: ignore[import-not-found,unused-ignore]
import psycopg
import pytest

from cdc.embedded import find_bindir, throwaway_cluster
from cdc.errors import ConfigurationError

PGSERVER_BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"


def test_pgserver_binaries_run_a_logical_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCAST_PG_BINDIR", str(PGSERVER_BIN))
    assert find_bindir() == PGSERVER_BIN
    with throwaway_cluster(prefix="pgcast-pgserver-") as cluster:
        assert cluster.bindir == PGSERVER_BIN
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
            version = conn.execute("SHOW server_version_num").fetchone()
            assert version is not None and int(version[0]) >= 160000
            row = conn.execute(
                "SELECT slot_name FROM pg_create_logical_replication_slot('t', 'pgoutput')"
            ).fetchone()
            assert row == ("t",)
        base = cluster.base
    assert not base.exists()


def test_a_bindir_without_initdb_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGCAST_PG_BINDIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match="has no initdb/pg_ctl"):
        find_bindir()
