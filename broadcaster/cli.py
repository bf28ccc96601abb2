"""The ``pgcast`` command line: operators migrate, choose captured tables, prune and serve."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click

from broadcaster.slot_cli import slot, status
from cdc import admin
from cdc.errors import CdcError
from cdc.migrate import migrate as run_migrations

__all__ = ["main", "parse_duration"]

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` → timedelta.

    Raises:
        ValueError: the text is not a number followed by one of s, m, h, d, w.
    """
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h, 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _db_option(func: F) -> F:
    return click.option(
        "--db",
        "dsn",
        envvar="PGCAST_DATABASE_URL",
        required=True,
        help="PostgreSQL URL (env PGCAST_DATABASE_URL).",
    )(func)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.group()
@click.version_option(package_name="pgcast")
def main() -> None:
    """pgcast: Postgres row changes, live, over the Supabase Realtime protocol."""


@main.command()
@_db_option
@click.option("--dry-run", is_flag=True, help="Print the migrations that would be applied.")
def migrate(dsn: str, dry_run: bool) -> None:
    """Create or upgrade the pgcast schema in the database."""
    try:
        done = run_migrations(dsn, dry_run=dry_run)
    except CdcError as exc:
        _fail(exc)
        return
    verb = "would apply" if dry_run else "applied"
    for m in done:
        click.echo(f"{verb} {m.name}")
    if not done:
        click.echo("database is up to date")


@main.group()
def tables() -> None:
    """Choose which tables are captured."""


def _events(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    events = tuple(e.strip().lower() for e in value.split(",") if e.strip())
    bad = [e for e in events if e not in admin.EVENTS]
    if bad or not events:
        raise click.BadParameter(f"use a comma-separated subset of {','.join(admin.EVENTS)}")
    return events


@tables.command("add")
@_db_option
@click.argument("table")
@click.option(
    "--events",
    default="insert,update,delete",
    show_default=True,
    callback=_events,
    help="Which operations to capture.",
)
@click.option(
    "--old-values",
    type=click.Choice(["full", "key"]),
    help="Old row of UPDATE/DELETE: all columns, or only the primary key (default: full in"
    " trigger mode; the table's replica identity in replication mode).",
)
@click.option(
    "--granularity",
    type=click.Choice(["row", "statement"]),
    default="row",
    show_default=True,
    help="Fire per row (cheapest for small transactions) or per statement (bulk writes).",
)
@click.option(
    "--mode",
    type=click.Choice(["trigger", "replication"]),
    default="trigger",
    show_default=True,
    help="Capture by triggers or through publication pgcast (switches a captured table).",
)
def tables_add(
    dsn: str,
    table: str,
    events: tuple[str, ...],
    old_values: str | None,
    granularity: str,
    mode: str,
) -> None:
    """Capture TABLE (schema.table; quote mixed case: 'public."MyTable"')."""
    try:
        added = admin.add_table(dsn, table, events, old_values, granularity, mode)
    except CdcError as exc:
        _fail(exc)
        return
    how = f"per {added.granularity}"
    if mode == "replication":
        how = f"replica identity {added.identity}, publication pgcast"
    click.echo(
        f"capturing {added.schema}.{added.table} ({','.join(added.events)}, "
        f"old values: {added.old_values}, {how})"
    )
    if mode == "replication":
        try:
            level = admin.wal_level(dsn)
        except CdcError as exc:
            _fail(exc)
            return
        if level != "logical":
            click.echo(
                f"warning: wal_level is {level}: set wal_level = logical and restart Postgres"
                " before `pgcast serve --capture replication`",
                err=True,
            )


@tables.command("remove")
@_db_option
@click.argument("table")
def tables_remove(dsn: str, table: str) -> None:
    """Stop capturing TABLE."""
    try:
        admin.remove_table(dsn, table)
    except CdcError as exc:
        _fail(exc)
        return
    click.echo(f"no longer capturing {table}")


@tables.command("list")
@_db_option
def tables_list(dsn: str) -> None:
    """Show captured tables, their events, mode and outbox backlog."""
    try:
        rows = admin.list_tables(dsn)
    except CdcError as exc:
        _fail(exc)
        return
    header = ("schema", "table", "events", "old values", "per", "mode", "backlog", "identity")
    data = [
        (
            t.schema,
            t.table,
            ",".join(t.events),
            t.old_values,
            t.granularity,
            t.mode,
            str(t.backlog) if t.mode == "trigger" else "-",
            t.identity if t.mode == "replication" else "-",
        )
        for t in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *data, strict=False)]
    for line in (header, *data):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


@main.command()
@_db_option
@click.option(
    "--older-than",
    default="1h",
    show_default=True,
    help="Delete outbox rows older than this (30m, 1h, 7d).",
)
def prune(dsn: str, older_than: str) -> None:
    """Delete old rows from the trigger-mode outbox."""
    try:
        window = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    try:
        deleted = admin.prune(dsn, window)
    except CdcError as exc:
        _fail(exc)
        return
    click.echo(f"pruned {deleted} outbox rows older than {older_than}")


@main.command()
@click.option("--db", help="Use this database instead of a throwaway local PostgreSQL.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=4000, show_default=True, help="Port to listen on.")
@click.option(
    "--jwt-secret", envvar="PGCAST_JWT_SECRET", help="Token secret (default: random per run)."
)
def demo(db: str | None, host: str, port: int, jwt_secret: str | None) -> None:
    """Try pgcast: a local database with a captured demo table, served on --port."""
    from broadcaster.config import ConfigError
    from broadcaster.demo import demo as run_demo

    try:
        code = run_demo(db, host, port, jwt_secret)
    except (ConfigError, CdcError, OSError, psycopg_errors()) as exc:
        _fail(exc)
        return
    sys.exit(code)


def psycopg_errors() -> type[Exception]:
    import psycopg

    return psycopg.Error


@main.command()
@click.option("--db", "database_url", help="PostgreSQL URL (env PGCAST_DATABASE_URL).")
@click.option("--host", help="Address to listen on (env PGCAST_HOST; default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (env PGCAST_PORT; default 4000).")
@click.option(
    "--capture",
    type=click.Choice(["trigger", "replication"]),
    help="Capture mode (env PGCAST_CAPTURE; default trigger).",
)
@click.option("--jwt-secret", help="HS256/384/512 secret (env PGCAST_JWT_SECRET).")
@click.option("--jwks-url", help="URL of a JWKS document (env PGCAST_JWKS_URL).")
@click.option("--jwks-file", help="Path of a JWKS document (env PGCAST_JWKS_FILE).")
@click.option(
    "--no-auth", is_flag=True, default=None, help="Accept every client without a token (dev only)."
)
@click.option(
    "--compression",
    is_flag=True,
    envvar="PGCAST_COMPRESSION",
    help="Negotiate permessage-deflate (off by default: it slows fan-out ~3x).",
)
@click.option(
    "--demo-page",
    is_flag=True,
    envvar="PGCAST_DEMO_PAGE",
    help="Also serve the demo page at / on public.messages, handing out a development token "
    "(local use only; needs --jwt-secret or --no-auth).",
)
@click.option("--log-level", help="DEBUG, INFO, WARNING, ERROR (env PGCAST_LOG_LEVEL).")
def serve(compression: bool, demo_page: bool, **options: Any) -> None:
    """Serve the Supabase Realtime protocol over WebSocket."""
    from broadcaster.app import AppOptions, run
    from broadcaster.config import ConfigError, Settings
    from broadcaster.demo import page_options

    if options.get("no_auth") is False:
        options["no_auth"] = None  # an absent flag leaves PGCAST_NO_AUTH in charge
    try:
        settings = Settings.from_cli(**options)
        if demo_page:
            app_options, _token = page_options(settings, compression)
        else:
            app_options = AppOptions(compression=compression)
        code = run(settings, app_options)
    except (ConfigError, CdcError, OSError) as exc:
        _fail(exc)
        return
    sys.exit(code)


main.add_command(status)
main.add_command(slot)

if __name__ == "__main__":  # pragma: no cover - `python -m broadcaster.cli`
    main()
