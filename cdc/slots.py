"""``pgcast slot create|drop``: operator actions on the logical replication slot.

A slot in use is never dropped from under its consumer unless the operator asks for ``force``,
which terminates the consuming connection first (a running pgcast server would reconnect and
create a fresh slot: stop it first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from cdc.errors import ConfigurationError, DatabaseError, PrivilegeError

__all__ = ["SlotInfo", "create_slot", "drop_slot", "slot_info"]


@dataclass(frozen=True, slots=True)
class SlotInfo:
    name: str
    database: str | None
    active_pid: int | None
    lag_bytes: int | None


def _fail(exc: psycopg.Error, doing: str) -> Exception:
    if exc.sqlstate == "42501":
        return PrivilegeError(
            f"{doing}: the role needs the REPLICATION attribute (ALTER ROLE … REPLICATION)"
            " or superuser"
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseError(f"{doing}: {first}", exc.sqlstate)


def _info(conn: psycopg.Connection, name: str) -> SlotInfo | None:
    row = conn.execute(
        "SELECT database, active_pid,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    ).fetchone()
    return None if row is None else SlotInfo(name, row[0], row[1], row[2])


def slot_info(dsn: str, name: str) -> SlotInfo:
    """The slot, or a one-line error when it does not exist."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            info = _info(conn, name)
    except psycopg.Error as exc:
        raise _fail(exc, f'could not read slot "{name}"') from exc
    if info is None:
        raise ConfigurationError(f'replication slot "{name}" does not exist')
    return info


def create_slot(dsn: str, name: str) -> str:
    """Create a durable pgoutput slot; returns its starting LSN."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            level = conn.execute("SELECT current_setting('wal_level')").fetchone()
            if level and level[0] != "logical":
                raise ConfigurationError(
                    f"wal_level is {level[0]}: set wal_level = logical and restart Postgres"
                )
            if _info(conn, name) is not None:
                raise ConfigurationError(f'replication slot "{name}" already exists')
            row = conn.execute(
                "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (name,)
            ).fetchone()
    except psycopg.Error as exc:
        raise _fail(exc, f'could not create slot "{name}"') from exc
    return str(row[0]) if row else ""


def drop_slot(dsn: str, name: str, *, force: bool = False, wait: float = 10.0) -> SlotInfo:
    """Drop the slot; with ``force`` terminate its consumer first. Returns what it was.

    Raises:
        ConfigurationError: the slot does not exist, is in another database, or is in use.
    """
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            info = _info(conn, name)
            if info is None:
                raise ConfigurationError(f'replication slot "{name}" does not exist')
            db = conn.execute("SELECT current_database()").fetchone()
            if db and info.database != db[0]:
                raise ConfigurationError(
                    f'slot "{name}" belongs to database {info.database}: connect to that one'
                )
            if info.active_pid is not None:
                if not force:
                    raise ConfigurationError(
                        f'slot "{name}" is in use by pid {info.active_pid}: stop the pgcast'
                        " server first, or pass --force to terminate that connection"
                    )
                conn.execute("SELECT pg_terminate_backend(%s)", (info.active_pid,))
                deadline = time.monotonic() + wait
                while (now := _info(conn, name)) is not None and now.active_pid is not None:
                    if time.monotonic() > deadline:
                        raise ConfigurationError(
                            f'slot "{name}" is still in use by pid {now.active_pid}'
                        )
                    time.sleep(0.05)
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    except psycopg.Error as exc:
        raise _fail(exc, f'could not drop slot "{name}"') from exc
    return info
