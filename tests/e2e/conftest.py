"""Fixtures for the end-to-end tests: a captured ``public.messages`` table and a running server."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from cdc.admin import add_table
from tests.e2e.helpers import TABLE_DDL, RealtimeServer, start_server


@pytest.fixture(scope="module")
def messages_db(db: str) -> str:
    """The module's database with ``public.messages`` created and captured."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
    add_table(db, "public.messages")
    return db


@pytest.fixture(scope="module")
def realtime_server(
    messages_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealtimeServer]:
    """``python -m broadcaster.cli serve`` on a free port; killed at module teardown."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    yield from start_server(messages_db, log_path)
