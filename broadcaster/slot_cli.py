"""``pgcast status`` and ``pgcast slot create|drop``: the replication-mode operator commands.

Part of the composition root (registered on the group in :mod:`broadcaster.cli`).
"""

from __future__ import annotations

import json
import sys

import click

from cdc.errors import CdcError
from cdc.monitor import read_status
from cdc.slots import create_slot, drop_slot, slot_info
from cdc.status import DEFAULT_MAX_LAG_BYTES, as_json, format_bytes, render, warnings

__all__ = ["slot", "status"]

_db = click.option(
    "--db",
    "dsn",
    envvar="PGCAST_DATABASE_URL",
    required=True,
    help="PostgreSQL URL (env PGCAST_DATABASE_URL).",
)
_slot = click.option(
    "--slot", "name", default="pgcast", show_default=True, help="Replication slot name."
)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.command()
@_db
@_slot
@click.option(
    "--max-lag-bytes",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_LAG_BYTES,
    envvar="PGCAST_MAX_LAG_BYTES",
    show_default=True,
    help="Warn (exit 2) when the slot holds more unconfirmed WAL (env PGCAST_MAX_LAG_BYTES).",
)
@click.option("--json", "as_json_", is_flag=True, help="Print one JSON object.")
def status(dsn: str, name: str, max_lag_bytes: int, as_json_: bool) -> None:
    """Captured tables, outbox and slot health; exit 2 when there is a WARNING."""
    try:
        report = read_status(dsn, name)
    except CdcError as exc:
        _fail(exc)
        return
    warned = warnings(report, max_lag_bytes)
    if as_json_:
        click.echo(json.dumps(as_json(report, warned)))
    else:
        for line in render(report, warned):
            click.echo(line)
    sys.exit(2 if warned else 0)


@click.group()
def slot() -> None:
    """Manage the logical replication slot of replication mode."""


@slot.command("create")
@_db
@_slot
def slot_create(dsn: str, name: str) -> None:
    """Create the slot now, so WAL is kept from this point (the server creates it otherwise)."""
    try:
        lsn = create_slot(dsn, name)
    except CdcError as exc:
        _fail(exc)
        return
    click.echo(f'created slot "{name}" at {lsn}')


@slot.command("drop")
@_db
@_slot
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Terminate the connection using the slot first.")
def slot_drop(dsn: str, name: str, yes: bool, force: bool) -> None:
    """Drop the slot: frees its WAL; changes not yet confirmed are lost."""
    try:
        info = slot_info(dsn, name)
        if not yes:
            click.confirm(
                f'Drop replication slot "{name}"? Changes not yet confirmed'
                f" ({format_bytes(info.lag_bytes)} of WAL) are lost",
                abort=True,
            )
        drop_slot(dsn, name, force=force)
    except CdcError as exc:
        _fail(exc)
        return
    click.echo(f'dropped slot "{name}"')
