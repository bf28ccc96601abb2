"""Migrations: ordered, recorded, idempotent, safe when run concurrently, shipped in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from cdc.errors import ConfigurationError
from cdc.migrate import applied, available, migrate, pending

ROOT = Path(__file__).resolve().parents[2]


def test_available_migrations_are_numbered_in_order() -> None:
    found = available()
    assert found, "no migrations shipped"
    assert [m.version for m in found] == sorted({m.version for m in found})
    assert found[0].name == "0001_outbox.sql"


def test_migrate_records_versions_and_is_idempotent(blank_db: str) -> None:
    assert [m.name for m in migrate(blank_db, dry_run=True)] == [m.name for m in available()]
    with psycopg.connect(blank_db) as conn:
        assert applied(conn) == {}  # dry run changed nothing
    first = migrate(blank_db)
    assert [m.version for m in first] == [m.version for m in available()]
    assert migrate(blank_db) == []
    with psycopg.connect(blank_db) as conn:
        assert set(applied(conn)) == {m.version for m in available()}
        assert pending(conn) == []


def test_two_concurrent_migrates_apply_once(pg_server: object, blank_db: str) -> None:
    from tests.conftest import Server, create_database, drop_database

    assert isinstance(pg_server, Server)
    name = create_database(pg_server, "concurrent_migrate")
    dsn = pg_server.dsn(name)
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: migrate(dsn), range(4)))
        applied_counts = sorted(len(r) for r in results)
        assert applied_counts == [0, 0, 0, len(available())]
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT count(*) FROM pgcast.schema_migrations").fetchone()
            assert rows == (len(available()),)
    finally:
        drop_database(pg_server, name)


def test_edited_applied_migration_is_refused(db: str, tmp_path: Path) -> None:
    for m in available():
        (tmp_path / m.name).write_text(m.sql)
    first = available()[0]
    (tmp_path / first.name).write_text(first.sql + "\n-- edited\n")
    with pytest.raises(ConfigurationError, match="changed after it was applied"):
        migrate(db, directory=tmp_path)


def test_bad_migration_file_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1")
    with pytest.raises(ConfigurationError, match="NNNN_name.sql"):
        available(tmp_path)


def test_wheel_ships_the_migrations(tmp_path: Path) -> None:
    """A non-editable install must find its migrations inside the package."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path), str(ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0 and "hatchling" in out.stderr:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("pgcast-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for m in available():
        assert f"cdc/_migrations/{m.name}" in names
    assert "cdc/py.typed" in names and "broadcaster/py.typed" in names
    # The demo page runs from the wheel: no build step, no CDN.
    for name in ("index.html", "demo.js", "demo.css", "realtime-js.mjs", "favicon.svg"):
        assert f"broadcaster/static/{name}" in names
