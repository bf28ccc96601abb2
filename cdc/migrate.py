"""Apply ``migrations/NNNN_*.sql`` in order and record them in ``pgcast.schema_migrations``.

Safe to run twice (applied files are skipped) and from two processes at once (a session-level
advisory lock serialises them). Each file runs in its own transaction. A file that was applied
and has changed since is refused: shipped migrations are never edited.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

from cdc.errors import ConfigurationError, DatabaseError

__all__ = ["Migration", "applied", "available", "migrate", "pending"]

# Arbitrary constant: the advisory lock key that serialises concurrent `pgcast migrate` runs.
_LOCK_KEY = 0x7067636173740001
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def _directory() -> Path:
    packaged = Path(str(resources.files("cdc"))) / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "migrations"


def available(directory: Path | None = None) -> list[Migration]:
    """Every migration shipped with pgcast, in version order."""
    found = []
    for path in sorted((directory or _directory()).glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ConfigurationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigurationError("two migration files share a version number")
    return found


def applied(conn: psycopg.Connection) -> dict[int, str]:
    """Version → checksum of the migrations recorded in the database."""
    exists = conn.execute("SELECT to_regclass('pgcast.schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM pgcast.schema_migrations").fetchall()
    return {int(v): str(c) for v, c in rows}


def pending(conn: psycopg.Connection, directory: Path | None = None) -> list[Migration]:
    """Migrations not yet applied.

    Raises:
        ConfigurationError: an applied migration's file has changed since.
    """
    done = applied(conn)
    todo = []
    for m in available(directory):
        if m.version in done:
            if done[m.version] != m.checksum:
                raise ConfigurationError(
                    f"migration {m.name} was changed after it was applied; restore it and add a"
                    " new migration instead"
                )
        else:
            todo.append(m)
    return todo


def migrate(dsn: str, *, dry_run: bool = False, directory: Path | None = None) -> list[Migration]:
    """Apply pending migrations (or, with ``dry_run``, only report them). Returns them."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                todo = pending(conn, directory)
                if dry_run:
                    return todo
                for m in todo:
                    with conn.transaction():
                        conn.execute("CREATE SCHEMA IF NOT EXISTS pgcast")
                        conn.execute(
                            "CREATE TABLE IF NOT EXISTS pgcast.schema_migrations ("
                            " version integer PRIMARY KEY, name text NOT NULL,"
                            " checksum text NOT NULL,"
                            " applied_at timestamptz NOT NULL DEFAULT now())"
                        )
                        conn.execute(m.sql.encode())
                        conn.execute(
                            "INSERT INTO pgcast.schema_migrations (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (m.version, m.name, m.checksum),
                        )
                return todo
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.Error as exc:
        raise DatabaseError(
            f"migrate failed: {str(exc).strip().splitlines()[0]}", exc.sqlstate
        ) from exc
