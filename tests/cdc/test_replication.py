"""Replication mode against a real Postgres: what the slot streams equals what trigger mode
captures, resumes without loss or repeats, survives a terminated walsender, advances an idle slot
and fails clearly when the publication is missing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cdc import admin
from cdc.changes import Change
from cdc.embedded import Cluster, throwaway_cluster
from cdc.errors import ConfigurationError
from cdc.listen import OutboxSource
from cdc.migrate import migrate
from cdc.replication import ReplicationSource
from tests.cdc.helpers import Collector

TABLE = """
CREATE TABLE public.par (
    id int PRIMARY KEY, n numeric, t text, ts timestamptz, j jsonb, a int[], b bool, f float8,
    big text
)
"""


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def slot_lsn(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def advances(dsn: str, slot: str, before: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while slot_lsn(dsn, slot) <= before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture(scope="module")
def published(db: str) -> str:
    sql(db, TABLE, "CREATE TABLE public.busy (id serial PRIMARY KEY, x int)")
    sql(db, 'CREATE TABLE public."Two Words" (id int PRIMARY KEY, "Label" text)')
    admin.add_table(db, "public.par")  # trigger mode, full old rows
    admin.add_table(db, 'public."Two Words"')
    sql(
        db,
        'CREATE PUBLICATION pgcast FOR TABLE public.par, public."Two Words"',
        "ALTER TABLE public.par REPLICA IDENTITY FULL",
        'ALTER TABLE public."Two Words" REPLICA IDENTITY FULL',
    )
    return db


@pytest.fixture(scope="module")
def db2(published: str) -> str:
    """The same database with a table published at identity DEFAULT (no old rows)."""
    sql(
        published,
        "CREATE TABLE public.plain (id int PRIMARY KEY, big text, note text)",
        "ALTER TABLE public.plain ALTER COLUMN big SET STORAGE EXTERNAL",
        "ALTER PUBLICATION pgcast ADD TABLE public.plain",
    )
    return published


def shape(change: Change) -> tuple[Any, ...]:
    return (
        change.schema, change.table, change.operation, change.record, change.old_record,
        tuple((c.name, c.type) for c in change.columns),
    )  # fmt: skip


def count(changes: list[Change], n: int) -> bool:
    return len(changes) >= n


async def test_replication_equals_trigger_mode(published: str) -> None:
    repl = ReplicationSource(published, slot="parity", consumer="parity_r")
    outbox = OutboxSource(published, consumer="parity_t")
    r = Collector(repl, None)
    t = Collector(outbox)
    await asyncio.sleep(1.0)  # the slot exists once preflight ran
    sql(
        published,
        "INSERT INTO public.par VALUES (1, 1.50, 'a', '2026-01-02 03:04:05.123456+00',"
        " '{\"k\": [1, null]}', '{1,2,NULL}', true, 0.1, NULL)",
        "INSERT INTO public.par (id, t) SELECT g, 'multi' FROM generate_series(2, 4) g",
        "UPDATE public.par SET t = 'changed', n = NULL WHERE id = 1",
        "INSERT INTO public.par (id, big) VALUES (5, repeat('x', 1000000))",
        "UPDATE public.par SET t = 'toast untouched' WHERE id = 5",
        "DELETE FROM public.par WHERE id = 2",
    )
    with psycopg.connect(published) as conn:  # one transaction, two tables
        conn.execute("INSERT INTO public.par (id, t) VALUES (6, 'together')")
        conn.execute("INSERT INTO public.\"Two Words\" VALUES (1, 'x')")
        conn.execute("UPDATE public.par SET t = 'then' WHERE id = 6")
    try:
        await r.wait_for(lambda c: count(c, 11))
        await t.wait_for(lambda c: count(c, 11))
        assert [shape(c) for c in r.changes] == [shape(c) for c in t.changes]
        assert len(r.changes) == 11
        assert [c.table for c in r.changes[-3:]] == ["par", "Two Words", "par"]
        assert len(r.batches[-1].changes) == 3  # the transaction is one batch
        positions = [c.position for c in r.changes]
        assert positions == sorted(set(positions))
    finally:
        await repl.close()
        await outbox.close()


async def test_resume_after_restart_loses_and_repeats_nothing(published: str) -> None:
    source = ReplicationSource(published, slot="resume", consumer="resume_r")
    first = Collector(source, None)
    await asyncio.sleep(1.0)
    sql(published, "INSERT INTO public.par (id, t) SELECT g, 'r1' FROM generate_series(100, 109) g")
    await first.wait_for(lambda c: count(c, 10))
    await source.close()
    sql(published, "INSERT INTO public.par (id, t) SELECT g, 'r2' FROM generate_series(110, 114) g")
    again = ReplicationSource(published, slot="resume", consumer="resume_r")
    second = Collector(again, None)
    try:
        await second.wait_for(lambda c: count(c, 5))
        await asyncio.sleep(0.5)
        assert [c.record["id"] for c in second.changes if c.record] == list(range(110, 115))
        assert min(c.position for c in second.changes) > max(c.position for c in first.changes)
    finally:
        await again.close()


async def test_a_terminated_walsender_loses_and_repeats_nothing(published: str) -> None:
    source = ReplicationSource(published, slot="term", consumer="term_r")
    got = Collector(source, None)
    await asyncio.sleep(1.0)
    try:
        for k in range(3):
            base = 200 + 10 * k
            sql(
                published,
                f"INSERT INTO public.par (id, t) SELECT g, 'k' FROM generate_series({base},"
                f" {base + 4}) g",
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE slot_name = 'term' AND active_pid IS NOT NULL",
            )
            await asyncio.sleep(0.3)
        await got.wait_for(lambda c: count(c, 15))
        await asyncio.sleep(1.0)
        ids = [c.record["id"] for c in got.changes if c.record]
        assert sorted(ids) == [b + i for b in (200, 210, 220) for i in range(5)]
        assert len(ids) == len(set(ids))
    finally:
        await source.close()


async def test_an_idle_slot_advances_while_other_tables_are_busy(published: str) -> None:
    source = ReplicationSource(published, slot="idle", consumer="idle_r", status_interval=0.2)
    got = Collector(source, None)
    try:
        await asyncio.sleep(1.0)
        before = slot_lsn(published, "idle")
        for _ in range(5):
            sql(published, "INSERT INTO public.busy (x) SELECT g FROM generate_series(1, 500) g")
            await asyncio.sleep(0.3)
        assert await asyncio.to_thread(advances, published, "idle", before, 20)
        assert got.changes == []
    finally:
        await source.close()


def stored_position(dsn: str, consumer: str) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT position FROM pgcast.consumers WHERE name = %s", (consumer,)
        ).fetchone()
    return None if row is None else str(row[0])


async def test_an_ack_is_saved_and_confirmed_within_a_second_without_close(published: str) -> None:
    # status_interval is the default 10 s: only the prompt path can make it in time.
    source = ReplicationSource(published, slot="prompt", consumer="prompt_r")
    got = Collector(source, None)  # acks every batch as soon as it has it
    await asyncio.sleep(1.0)
    try:
        for k in range(3):
            sql(published, f"INSERT INTO public.par (id, t) VALUES ({300 + k}, 'prompt')")
            await got.wait_for(lambda c, n=k + 1: count(c, n))
            acked = got.batches[-1].position
            deadline = time.monotonic() + 1.0
            while (
                stored_position(published, "prompt_r") != acked.token
                or slot_lsn(published, "prompt") < acked.seq
            ):
                assert time.monotonic() < deadline, (k, stored_position(published, "prompt_r"))
                await asyncio.sleep(0.02)
    finally:
        await source.close()
    assert stored_position(published, "prompt_r") == acked.token


async def test_a_failed_background_save_is_logged_and_retried_on_the_next_ack(
    published: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = ReplicationSource(published, slot="resave", consumer="resave_r")
    got = Collector(source, None)
    await asyncio.sleep(1.0)
    try:
        sql(published, "INSERT INTO public.par (id, t) VALUES (310, 'before')")
        await got.wait_for(lambda c: count(c, 1))
        sql(  # the query connection dies; the walsender stays
            published,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
            " current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        with caplog.at_level(logging.WARNING, logger="cdc.replication"):
            sql(published, "INSERT INTO public.par (id, t) VALUES (311, 'save fails')")
            await got.wait_for(lambda c: count(c, 2))
            deadline = time.monotonic() + 5
            while "could not save the replication position" not in caplog.text:
                assert time.monotonic() < deadline, caplog.text
                await asyncio.sleep(0.02)
        sql(published, "INSERT INTO public.par (id, t) VALUES (312, 'saved again')")
        await got.wait_for(lambda c: count(c, 3))
        acked = got.batches[-1].position
        deadline = time.monotonic() + 2
        while stored_position(published, "resave_r") != acked.token:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert [c.record["id"] for c in got.changes if c.record] == [310, 311, 312]
    finally:
        await source.close()


async def test_a_missing_publication_is_a_clear_error(published: str) -> None:
    source = ReplicationSource(published, slot="nopub", publication="nosuch")
    with pytest.raises(ConfigurationError, match='publication "nosuch" does not exist'):
        async for _ in source.batches():
            pass
    await source.close()


async def test_serve_with_replication_capture_delivers_changes(published: str) -> None:
    from broadcaster.app import App
    from broadcaster.config import Settings
    from tests.broadcaster.test_server import Client, postgres_changes

    settings = Settings(
        database_url=published, port=0, no_auth=True, capture="replication", consumer_name="srv"
    )
    app = App(settings)
    await app.start()
    try:
        client = await Client.connect(app.server.port, token=None)
        binding = {"event": "*", "schema": "public", "table": "par", "filter": "id=eq.777"}
        reply, _ = await client.join("repl", [binding], token=None)
        assert reply.payload["status"] == "ok"
        sql(published, "INSERT INTO public.par (id, t) VALUES (776, 'no'), (777, 'via slot')")
        message = await client.recv_until(postgres_changes)
        data = message.payload["data"]
        assert (data["type"], data["record"]["id"], data["record"]["t"]) == (
            "INSERT",
            777,
            "via slot",
        )
        await client.close()
    finally:
        await app.stop()
    assert slot_lsn(published, "srv") > 0


async def test_alter_table_between_inserts_and_toast_without_full_identity(db2: str) -> None:
    source = ReplicationSource(db2, slot="alter", consumer="alter_r")
    got = Collector(source, None)
    await asyncio.sleep(1.0)
    try:
        sql(
            db2,
            "INSERT INTO public.plain VALUES (1, repeat('y', 100000), 'a')",
            "ALTER TABLE public.plain ADD COLUMN extra int DEFAULT 7",
            "INSERT INTO public.plain VALUES (2, 'small', 'b', 8)",
            "UPDATE public.plain SET note = 'touched' WHERE id = 1",
        )
        await got.wait_for(lambda c: count(c, 3))
        first, second, update = got.changes[:3]
        assert first.record is not None and "extra" not in first.record
        assert second.record == {"id": 2, "big": "small", "note": "b", "extra": 8}
        assert [c.name for c in second.columns] == ["id", "big", "note", "extra"]
        # Identity DEFAULT: the untouched TOASTed value is not sent; it is left out, never null.
        assert update.record is not None and update.record["note"] == "touched"
        assert "big" not in update.record and update.old_record is None
    finally:
        await source.close()


async def test_a_slot_in_use_and_a_role_without_replication_are_clear_errors(db2: str) -> None:
    first = ReplicationSource(db2, slot="busy_slot", consumer="busy_1")
    got = Collector(first, None)
    try:
        await asyncio.sleep(1.5)
        second = ReplicationSource(db2, slot="busy_slot", consumer="busy_2")
        with pytest.raises(ConfigurationError, match='"busy_slot" is in use by process'):
            await second.check()
        await second.close()
    finally:
        await first.close()
    assert got.changes == []
    sql(db2, "CREATE ROLE plainrole LOGIN NOREPLICATION", "GRANT pg_read_all_data TO plainrole")
    url = db2.replace("postgres@", "plainrole@", 1)
    source = ReplicationSource(url, slot="denied", consumer="denied")
    with pytest.raises(ConfigurationError, match="no REPLICATION privilege"):
        await source.check()
    await source.close()


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of this test's own, since it gets restarted."""
    with throwaway_cluster(settings={"fsync": "off"}) as cluster:
        yield cluster


async def test_postgres_restarts_mid_stream_lose_and_repeat_nothing(own_cluster: Cluster) -> None:
    dsn = own_cluster.dsn()
    migrate(dsn)
    sql(
        dsn,
        'CREATE TABLE public."Mixed Case" (id int PRIMARY KEY, v text)',
        'CREATE PUBLICATION pgcast FOR TABLE public."Mixed Case"',
    )
    source = ReplicationSource(dsn, slot="restart", consumer="restart_r", max_backoff=0.5)
    got = Collector(source, None)
    await asyncio.sleep(1.0)
    try:
        for k, mode in enumerate(("fast", "immediate", None)):
            base = 100 * k
            sql(
                dsn,
                f"INSERT INTO public.\"Mixed Case\" SELECT g, 'v' FROM generate_series({base},"
                f" {base + 49}) g",
            )
            await got.wait_for(lambda c, n=50 * (k + 1): count(c, n), seconds=60)
            if mode is not None:
                await asyncio.to_thread(own_cluster.restart, mode)
        await asyncio.sleep(1.0)
        ids = [c.record["id"] for c in got.changes if c.record]
        assert sorted(ids) == [100 * k + i for k in range(3) for i in range(50)]
        assert len(ids) == len(set(ids))
        assert {c.table for c in got.changes} == {"Mixed Case"}
    finally:
        await source.close()
