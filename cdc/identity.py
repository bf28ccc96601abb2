"""Replica identity planning for replication-mode capture: what the old row of UPDATE/DELETE
will carry, and what ``ALTER TABLE … REPLICA IDENTITY`` (if any) gets it there.

Pure: no I/O. Postgres refuses UPDATE and DELETE on a published table whose replica identity has
no columns (``DEFAULT`` without a primary key, or ``NOTHING``), so such a plan is an error rather
than a silent break of the application's writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdc.errors import ConfigurationError

__all__ = ["IDENTITY_NAMES", "IdentityPlan", "plan_identity"]

# pg_class.relreplident → the keyword ALTER TABLE takes.
IDENTITY_NAMES = {"d": "default", "n": "nothing", "f": "full", "i": "index"}


@dataclass(frozen=True, slots=True)
class IdentityPlan:
    """``alter_to`` is ``"FULL"``, ``"DEFAULT"`` or None (leave it); ``old_values`` is what the
    old row will carry: ``full`` (every column) or ``key`` (the key columns)."""

    alter_to: str | None
    old_values: str


def plan_identity(table: str, current: str, has_pk: bool, requested: str | None) -> IdentityPlan:
    """Plan the replica identity for ``--old-values requested`` (None keeps the table's own).

    Raises:
        ConfigurationError: the table would have no usable identity (UPDATE/DELETE would fail).
    """
    if current not in IDENTITY_NAMES:
        raise ConfigurationError(f"unknown replica identity {current!r} on {table}")
    if requested not in (None, "full", "key"):
        raise ConfigurationError("old values must be 'full' or 'key'")
    if requested == "full":
        return IdentityPlan(None if current == "f" else "FULL", "full")
    if requested is None and current == "f":
        return IdentityPlan(None, "full")
    if current == "i" or (current == "d" and has_pk):
        return IdentityPlan(None, "key")
    if has_pk:  # key requested on FULL or NOTHING: back to the primary key
        return IdentityPlan("DEFAULT", "key")
    raise ConfigurationError(
        f"{table} has no primary key or replica identity index, so UPDATE and DELETE on it would"
        " fail once published: use --old-values full, or add a primary key"
    )
