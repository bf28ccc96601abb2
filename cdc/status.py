"""``pgcast status``: the health model of a capturing database, its warnings and renderings.

Pure: no I/O (:mod:`cdc.monitor` reads the model from Postgres). A warning is something an
operator should act on; the CLI exits with status 2 when there is any, so monitoring can use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = [
    "DEFAULT_MAX_LAG_BYTES",
    "OutboxStatus",
    "SlotStatus",
    "Status",
    "as_json",
    "format_bytes",
    "render",
    "warnings",
]

DEFAULT_MAX_LAG_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """A replication slot; ``lag_source`` says where ``lag_seconds`` comes from."""

    name: str
    exists: bool
    database: str | None = None
    plugin: str | None = None
    active: bool = False
    active_pid: int | None = None
    confirmed_flush_lsn: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    lag_source: str = "unknown"
    wal_status: str | None = None
    safe_wal_size: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """The trigger-mode outbox ``pgcast.changes``."""

    rows: int
    oldest_age_seconds: float | None
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Status:
    database: str
    wal_level: str
    trigger_tables: tuple[str, ...]
    replication_tables: tuple[str, ...]
    publication_exists: bool
    outbox: OutboxStatus
    slot: SlotStatus
    notes: tuple[str, ...] = field(default=())
    identity_problems: tuple[str, ...] = field(default=())


def format_bytes(n: int | None) -> str:
    """``1536`` → ``1.5 KiB``; None → ``unknown``."""
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _seconds(s: float | None) -> str:
    return "unknown" if s is None else f"{s:.1f} s"


def warnings(status: Status, max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES) -> list[str]:
    """What an operator should act on, one line each."""
    found = []
    slot = status.slot
    if status.replication_tables and status.wal_level != "logical":
        found.append(
            f"wal_level is {status.wal_level} but replication-mode tables exist: set"
            " wal_level = logical (ALTER SYSTEM SET wal_level = logical) and restart Postgres"
        )
    found += [
        f"{problem}: re-run `pgcast tables add TABLE --mode replication` (with --old-values)"
        for problem in status.identity_problems
    ]
    if status.replication_tables and not status.publication_exists:
        found.append(
            'publication "pgcast" is missing: re-run `pgcast tables add TABLE --mode replication`'
        )
    if slot.exists and slot.lag_bytes is not None and slot.lag_bytes > max_lag_bytes:
        found.append(
            f'slot "{slot.name}" holds {format_bytes(slot.lag_bytes)} ({slot.lag_bytes} bytes) of'
            f" WAL not yet confirmed (limit {max_lag_bytes} bytes): is `pgcast serve --capture"
            " replication` running and keeping up? (`pgcast slot drop` frees it but loses"
            " those changes)"
        )
    if slot.wal_status == "lost":
        found.append(
            f'slot "{slot.name}" has lost WAL it needed (max_slot_wal_keep_size): changes were'
            " lost; drop it with `pgcast slot drop` and restart pgcast"
        )
    elif slot.wal_status == "unreserved":
        found.append(
            f'slot "{slot.name}" is about to lose WAL (wal_status unreserved): the consumer must'
            " catch up now or changes will be lost"
        )
    return found


def render(status: Status, warned: list[str]) -> list[str]:
    """Human-readable report lines."""
    slot, outbox = status.slot, status.outbox
    lines = [
        f"database: {status.database} (wal_level {status.wal_level})",
        f"trigger mode: {len(status.trigger_tables)} table(s)"
        + (f": {', '.join(status.trigger_tables)}" if status.trigger_tables else ""),
        f"  outbox: {outbox.rows} row(s), {format_bytes(outbox.size_bytes)}, oldest change "
        + ("none" if outbox.oldest_age_seconds is None else _seconds(outbox.oldest_age_seconds))
        + (" old" if outbox.oldest_age_seconds is not None else ""),
        f"replication mode: {len(status.replication_tables)} table(s)"
        + (f": {', '.join(status.replication_tables)}" if status.replication_tables else "")
        + ("" if status.publication_exists else ' (publication "pgcast" absent)'),
    ]
    if not slot.exists:
        lines.append(
            f'  slot "{slot.name}": absent (pgcast serve --capture replication creates it)'
        )
    else:
        state = f"active (pid {slot.active_pid})" if slot.active else "inactive"
        lines += [
            f'  slot "{slot.name}": {state}, plugin {slot.plugin}, database {slot.database}',
            f"  confirmed_flush_lsn {slot.confirmed_flush_lsn}, lag {format_bytes(slot.lag_bytes)},"
            f" {'time unknown' if slot.lag_seconds is None else _seconds(slot.lag_seconds)}"
            f" ({slot.lag_source})",
            f"  wal_status {slot.wal_status}, safe_wal_size "
            + ("unlimited" if slot.safe_wal_size is None else format_bytes(slot.safe_wal_size)),
        ]
    lines += [f"note: {n}" for n in status.notes]
    lines += [f"WARNING: {w}" for w in warned]
    return lines


def as_json(status: Status, warned: list[str]) -> dict[str, object]:
    """The report as a JSON-ready dict (``warnings`` included)."""
    return {**asdict(status), "warnings": list(warned)}
