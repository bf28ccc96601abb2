"""``pgcast demo``: a working pgcast in one command. A composition root, like ``app``.

Without ``--db`` it starts a throwaway PostgreSQL (``cdc.embedded``: the test harness's launcher;
binaries from a system install or the ``pgcast[embedded]`` extra), then on either database: runs
the migrations, creates ``public.messages`` if missing, captures it, prints the socket URL, a
development token and a ``psql`` line to insert rows, and serves until Ctrl-C or SIGTERM. On the
way out the throwaway cluster is stopped and its directory removed.

It also serves the demo page at ``/`` (``broadcaster/static``, the official realtime-js client):
``/demo/config.json`` hands the page its development token (this endpoint exists only in the
demo), ``/demo/messages`` and ``/demo/write`` (``demo_writes``) let it list and change rows.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
from collections.abc import Iterator
from types import FrameType

import click
import orjson
import psycopg

from broadcaster import app, demo_writes
from broadcaster.auth import make_token
from broadcaster.config import ConfigError, Settings
from broadcaster.ws_server import HttpResult, Route
from cdc import admin
from cdc.embedded import throwaway_cluster
from cdc.migrate import migrate

__all__ = ["DEMO_TABLE", "demo", "page_options", "page_routes"]

DEMO_TABLE = "public.messages"
DEMO_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS public.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    room_id int NOT NULL,
    author text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
TOKEN_TTL = 30 * 24 * 3600.0


@contextlib.contextmanager
def _database(db: str | None) -> Iterator[tuple[str, str | None]]:
    """(DSN, data directory or ``None``) of the database to use."""
    if db is not None:
        yield db, None
        return
    with throwaway_cluster(prefix="pgcast-demo-") as cluster:
        yield cluster.dsn(), str(cluster.base)


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # before the server runs: clean up as Ctrl-C does


def prepare(dsn: str) -> None:
    """Migrate, create the demo table if missing and capture it (all idempotent)."""
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DEMO_TABLE_SQL)
    admin.add_table(dsn, DEMO_TABLE)


def page_routes(dsn: str, token: str) -> dict[str, Route]:
    """The demo page's endpoints: its configuration (with the token) and its reads/writes."""
    config = orjson.dumps(
        {"token": token, "schema": "public", "table": "messages", "rooms": [1, 2, 3, 4, 5]}
    )

    async def page_config(_params: dict[str, str]) -> HttpResult:
        return 200, "application/json", config

    return {"/demo/config.json": Route(page_config, token=False), **demo_writes.routes(dsn)}


def page_options(settings: Settings, compression: bool = False) -> tuple[app.AppOptions, str]:
    """The demo page on a server of ``settings`` (``pgcast demo``; ``pgcast serve --demo-page``,
    e.g. the docker compose stack): its options and the development token, signed by the
    server's HS secret, that the page is handed.

    Raises:
        ConfigError: the server has no HS secret to sign the page's token with (and has auth).
    """
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
    elif settings.no_auth:
        secret = secrets.token_urlsafe(32)  # never checked
    else:
        raise ConfigError(
            "--demo-page needs --jwt-secret (it signs the page's development token) or --no-auth"
        )
    token = make_token(secret, "anon", TOKEN_TTL)
    routes = page_routes(settings.database_url, token)
    return app.AppOptions(compression=compression, pages=True, routes=routes), token


def demo(db: str | None, host: str, port: int, jwt_secret: str | None) -> int:
    """Run the demo; the process exit code."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with _database(db) as (dsn, datadir):
            prepare(dsn)
            settings = Settings.from_cli(
                database_url=dsn,
                host=host,
                port=port,
                jwt_secret=jwt_secret or secrets.token_urlsafe(32),
                consumer_name="pgcast_demo",
            )
            options, token = page_options(settings)
            shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            where = f"throwaway cluster in {datadir}" if datadir else "the database given"
            click.echo(
                f"pgcast demo: {DEMO_TABLE} is captured ({where})\n"
                f"  page:    http://{shown}:{port}/\n"
                f"  socket:  ws://{host}:{port}/realtime/v1/websocket?apikey=<token>&vsn=1.0.0\n"
                f"  health:  http://{host}:{port}/health\n"
                f"  token:   {token}\n"
                f"  insert:  psql '{dsn}' -c \"INSERT INTO {DEMO_TABLE} (room_id, author, body)"
                " VALUES (1, 'me', 'hello')\"\n"
                "  Ctrl-C stops everything" + (" and removes the cluster" if datadir else ""),
                err=False,
            )
            sys.stdout.flush()
            return app.run(settings, options)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
