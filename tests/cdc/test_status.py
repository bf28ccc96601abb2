"""The pure status model: warnings, text and JSON renderings."""

from __future__ import annotations

import json

from cdc.status import (
    DEFAULT_MAX_LAG_BYTES,
    OutboxStatus,
    SlotStatus,
    Status,
    as_json,
    format_bytes,
    render,
    warnings,
)

SLOT = SlotStatus(
    "pgcast", True, "app", "pgoutput", True, 42, "0/16B3748", 2048, 0.25,
    "pg_stat_replication.flush_lag", "reserved", None,
)  # fmt: skip
OK = Status("app", "logical", ("public.a",), ("public.b",), True, OutboxStatus(3, 12.5, 8192), SLOT)


def with_(**changes: object) -> Status:
    from dataclasses import replace

    return replace(OK, **changes)  # type: ignore[arg-type]


def test_format_bytes() -> None:
    assert format_bytes(None) == "unknown"
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(DEFAULT_MAX_LAG_BYTES) == "1.0 GiB"
    assert format_bytes(5 << 40) == "5.0 TiB"
    assert format_bytes(5000 << 40) == "5000.0 TiB"


def test_healthy_has_no_warning_and_renders_everything() -> None:
    assert warnings(OK) == []
    text = "\n".join(render(OK, []))
    assert "database: app (wal_level logical)" in text
    assert "trigger mode: 1 table(s): public.a" in text
    assert "outbox: 3 row(s), 8.0 KiB, oldest change 12.5 s old" in text
    assert "replication mode: 1 table(s): public.b" in text
    assert 'slot "pgcast": active (pid 42), plugin pgoutput, database app' in text
    assert "confirmed_flush_lsn 0/16B3748, lag 2.0 KiB, 0.2 s (pg_stat_replication" in text
    assert "wal_status reserved, safe_wal_size unlimited" in text
    assert "WARNING" not in text


def test_empty_and_absent() -> None:
    status = with_(
        trigger_tables=(),
        replication_tables=(),
        publication_exists=False,
        outbox=OutboxStatus(0, None, 0),
        slot=SlotStatus("pgcast", False),
        notes=("a note",),
    )
    lines = render(status, warnings(status))
    assert "trigger mode: 0 table(s)" in lines
    assert "  outbox: 0 row(s), 0 B, oldest change none" in lines
    assert 'replication mode: 0 table(s) (publication "pgcast" absent)' in lines
    assert any("absent (pgcast serve --capture replication creates it)" in x for x in lines)
    assert "note: a note" in lines
    assert warnings(status) == []


def test_lag_over_limit_warns() -> None:
    assert warnings(OK, max_lag_bytes=2048) == []
    warned = warnings(OK, max_lag_bytes=2047)
    assert (
        len(warned) == 1
        and "holds 2.0 KiB (2048 bytes) of WAL not yet confirmed (limit 2047 bytes)" in warned[0]
    )
    assert render(OK, warned)[-1].startswith("WARNING: slot")


def test_wal_level_publication_and_wal_status_warnings() -> None:
    status = with_(
        wal_level="replica",
        publication_exists=False,
        slot=SlotStatus("s", True, "app", "pgoutput", False, None, "0/1", 10, None,
                        "unknown", "lost", 0),
    )  # fmt: skip
    warned = warnings(status)
    assert len(warned) == 3
    assert "wal_level is replica" in warned[0] and "restart Postgres" in warned[1 - 1]
    assert 'publication "pgcast" is missing' in warned[1]
    assert "has lost WAL" in warned[2]
    unreserved = with_(slot=SlotStatus("s", True, wal_status="unreserved", lag_bytes=1))
    assert "about to lose WAL" in warnings(unreserved)[0]
    # No replication tables: wal_level does not matter.
    assert warnings(with_(wal_level="replica", replication_tables=())) == []
    text = "\n".join(render(status, []))
    assert (
        "inactive" in text
        and "lag 10 B, time unknown (unknown)" in text
        and "safe_wal_size 0 B" in text
    )


def test_json_round_trips() -> None:
    doc = json.loads(json.dumps(as_json(OK, ["w"])))
    assert doc["warnings"] == ["w"]
    assert doc["slot"]["lag_bytes"] == 2048 and doc["slot"]["active_pid"] == 42
    assert doc["outbox"] == {"rows": 3, "oldest_age_seconds": 12.5, "size_bytes": 8192}
    assert doc["replication_tables"] == ["public.b"]
