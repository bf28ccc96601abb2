"""The trigger-mode reader against a real server: concurrency, connection loss, restarts,
wake-ups, stored positions and retention."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import psycopg
import pytest

from cdc import admin
from cdc.changes import Change, Operation
from cdc.embedded import Cluster, throwaway_cluster
from cdc.errors import PositionLostError
from cdc.listen import OutboxSource
from cdc.migrate import migrate
from tests.cdc.helpers import collecting


@pytest.fixture(scope="module")
async def setup(db: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(db)
    await conn.execute(
        "CREATE TABLE public.events (id bigserial PRIMARY KEY, writer int, n int);"
        "CREATE TABLE public.counters (key int PRIMARY KEY, v int NOT NULL);"
        "INSERT INTO public.counters SELECT g, 0 FROM generate_series(0, 19) g;"
    )
    await conn.close()
    admin.add_table(db, "public.events")
    admin.add_table(db, "public.counters")
    yield db


def check_exactly_once_in_commit_order(
    changes: list[Change], inserted: set[tuple[int, int]], updates_per_key: dict[int, int]
) -> None:
    """Every insert once; per counter key the UPDATEs arrive as v = 1, 2, 3 … (commit order)."""
    got = [(c.record["writer"], c.record["n"]) for c in changes if c.table == "events"]  # type: ignore[index]
    assert len(got) == len(set(got)), "an insert was emitted twice"
    assert set(got) == inserted
    positions = [c.position for c in changes]
    assert len(positions) == len(set(positions))
    seen: dict[int, list[int]] = defaultdict(list)
    for c in changes:
        if c.table == "counters":
            assert c.operation is Operation.UPDATE and c.record is not None
            seen[c.record["key"]].append(c.record["v"])  # type: ignore[index,arg-type]
    for key, count in updates_per_key.items():
        assert seen[key] == list(range(1, count + 1)), f"key {key} out of order or missing"


async def writer(
    dsn: str, writer_id: int, txns: int, rng: random.Random, counts: dict[int, int]
) -> set[tuple[int, int]]:
    done: set[tuple[int, int]] = set()
    conn = await asyncpg.connect(dsn)
    try:
        for n in range(txns):
            key = rng.randrange(20)
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO public.events (writer, n) VALUES ($1, $2)", writer_id, n
                )
                await conn.execute("UPDATE public.counters SET v = v + 1 WHERE key = $1", key)
                # Hold the transaction open so ids commit out of order across writers.
                await asyncio.sleep(rng.random() * 0.002)
            counts[key] += 1
            done.add((writer_id, n))
    finally:
        await conn.close()
    return done


async def test_concurrent_writers_exactly_once_in_commit_order(setup: str) -> None:
    dsn = setup
    counts: dict[int, int] = defaultdict(int)
    base = await asyncpg.connect(dsn)
    start_v = dict(await base.fetch("SELECT key, v FROM public.counters"))
    await base.close()
    async with collecting(dsn) as reader:
        results = await asyncio.gather(
            *(writer(dsn, w, 1000, random.Random(w), counts) for w in range(8))
        )
        inserted = set().union(*results)
        await reader.wait_count(2 * len(inserted), seconds=120)
        await asyncio.sleep(0.2)  # anything extra (a duplicate) would arrive now
    assert len(inserted) == 8000
    changes = reader.changes
    assert len(changes) == 16000
    # The counters started at start_v; rebase the expected sequences.
    for c in changes:
        if c.table == "counters":
            c.record["v"] -= start_v[c.record["key"]]  # type: ignore[index,operator]
    check_exactly_once_in_commit_order(changes, inserted, counts)


async def terminate_reader(admin_conn: asyncpg.Connection) -> int:
    return int(
        await admin_conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'pgcast' AND pid <> pg_backend_pid()"
        )
    )


async def test_reader_connection_terminated_mid_stream(setup: str) -> None:
    dsn = setup
    counts: dict[int, int] = defaultdict(int)
    killer = await asyncpg.connect(dsn)
    start_v = dict(await killer.fetch("SELECT key, v FROM public.counters"))
    async with collecting(dsn) as reader:
        write = asyncio.gather(
            *(writer(dsn, 100 + w, 300, random.Random(w), counts) for w in range(4))
        )
        killed = 0
        while not write.done():
            await asyncio.sleep(0.05)
            killed += await terminate_reader(killer)
        inserted = set().union(*await write)
        await reader.wait_count(2 * len(inserted), seconds=120)
        await asyncio.sleep(0.2)
    await killer.close()
    assert killed >= 3, "the test must actually kill the reader's connection"
    assert reader.source.reconnects >= 3
    for c in reader.changes:
        if c.table == "counters":
            c.record["v"] -= start_v[c.record["key"]]  # type: ignore[index,operator]
    check_exactly_once_in_commit_order(reader.changes, inserted, counts)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own, since it gets restarted."""
    with throwaway_cluster(settings={"fsync": "off"}) as cluster:
        yield cluster


async def test_postgres_restart_mid_stream(own_cluster: Cluster) -> None:
    dsn = own_cluster.dsn()
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.events (id bigserial PRIMARY KEY, writer int, n int)")
    admin.add_table(dsn, "public.events")
    confirmed: set[int] = set()
    attempted: set[int] = set()
    stop = asyncio.Event()

    async def write() -> None:
        n = 0
        conn = None
        while not stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(dsn, timeout=5)
                attempted.add(n)
                await conn.execute(
                    "INSERT INTO public.events (writer, n) VALUES (0, $1)", n, timeout=5
                )
                confirmed.add(n)
                n += 1
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ):
                if conn is not None:
                    conn.terminate()
                conn = None
                n += 1
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.001)
        if conn is not None:
            await conn.close()

    async with collecting(dsn, safety_interval=0.5) as reader:
        task = asyncio.create_task(write())
        await reader.wait_count(100)
        for mode in ("fast", "immediate"):
            await asyncio.to_thread(own_cluster.restart, mode)
            before = len(confirmed)
            async with asyncio.timeout(30):
                while len(confirmed) < before + 100:  # noqa: ASYNC110 - polls another task's set
                    await asyncio.sleep(0.05)
        stop.set()
        await task
        await reader.wait_for(
            lambda cs: {c.record["n"] for c in cs} >= confirmed,  # type: ignore[index]
            seconds=60,
        )
        await asyncio.sleep(0.3)
    got = [c.record["n"] for c in reader.changes]  # type: ignore[index]
    assert len(got) == len(set(got)), "nothing emitted twice"
    assert confirmed <= set(got) <= attempted
    assert reader.source.reconnects >= 2


async def test_idle_reader_is_woken_by_notify(setup: str) -> None:
    dsn = setup
    # With a 60 s safety poll, only a NOTIFY can deliver within the wait below.
    async with collecting(dsn, safety_interval=60) as reader:
        conn = await asyncpg.connect(dsn)
        for i in range(3):
            await asyncio.sleep(0.3)  # the reader is idle and armed by now
            armed = await conn.fetchval("SELECT last_value FROM pgcast.wakeup")
            assert armed == 1
            began = time.monotonic()
            await conn.execute("INSERT INTO public.events (writer, n) VALUES (-1, $1)", i)
            await reader.wait_count(i + 1, seconds=10)
            assert time.monotonic() - began < 10
        await conn.close()
    assert [c.record["n"] for c in reader.changes] == [0, 1, 2]  # type: ignore[index]


async def test_reader_switches_between_notify_and_polling(setup: str) -> None:
    """Idle: armed (writers NOTIFY). A burst: disarmed (writers skip NOTIFY). Idle again: armed."""
    dsn = setup
    async with collecting(dsn) as reader:
        probe = await asyncpg.connect(dsn)
        await asyncio.sleep(0.3)
        assert await probe.fetchval("SELECT last_value FROM pgcast.wakeup") == 1
        flags: set[int] = set()

        async def burst(w: int) -> None:
            conn = await asyncpg.connect(dsn)
            for i in range(300):
                await conn.execute(
                    "INSERT INTO public.events (writer, n) VALUES ($1, $2)", -10 - w, i
                )
            await conn.close()

        writes = asyncio.gather(*(burst(w) for w in range(4)))
        while not writes.done():
            flags.add(await probe.fetchval("SELECT last_value FROM pgcast.wakeup"))
            await asyncio.sleep(0.002)
        await writes
        await reader.wait_count(1200)
        assert 0 in flags, "the reader should poll (disarmed) during a burst"
        await asyncio.sleep(0.3)
        assert await probe.fetchval("SELECT last_value FROM pgcast.wakeup") == 1
        await probe.close()


async def test_resumes_from_acknowledged_position(setup: str) -> None:
    dsn = setup
    name = "resume-test"
    async with collecting(dsn, consumer=name, ack_interval=0) as first:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "INSERT INTO public.events (writer, n) SELECT -3, g FROM generate_series(0, 9) g"
        )
        await first.wait_count(10)
    # While no reader runs, more changes commit.
    await conn.execute(
        "INSERT INTO public.events (writer, n) SELECT -3, g FROM generate_series(10, 19) g"
    )
    await conn.close()
    # start=None: resume from the position stored under the consumer name.
    async with collecting(dsn, start=None, consumer=name) as second:
        await second.wait_count(10)
        await asyncio.sleep(0.2)
    assert [c.record["n"] for c in second.changes] == list(range(10, 20))  # type: ignore[index]


async def test_pruned_position_is_refused_explicitly(setup: str) -> None:
    dsn = setup
    source = OutboxSource(dsn)
    old = await source.current_position()
    conn = await asyncpg.connect(dsn)
    await conn.execute("INSERT INTO public.events (writer, n) VALUES (-4, 0)")
    await conn.execute("UPDATE pgcast.changes SET created_at = now() - interval '2 hours'")
    deleted = admin.prune(dsn, timedelta(hours=1))
    assert deleted >= 1
    assert await conn.fetchval("SELECT count(*) FROM pgcast.changes") == 0
    await conn.close()
    with pytest.raises(PositionLostError, match="cannot be resumed"):
        async for _ in source.batches(old):
            pass
    await source.close()
    # A position taken after the prune resumes fine.
    async with collecting(dsn) as reader:
        conn = await asyncpg.connect(dsn)
        await conn.execute("INSERT INTO public.events (writer, n) VALUES (-4, 1)")
        await reader.wait_count(1)
        await conn.close()


async def test_server_side_retention_prunes_automatically(setup: str) -> None:
    dsn = setup
    conn = await asyncpg.connect(dsn)
    await conn.execute("INSERT INTO public.events (writer, n) VALUES (-5, 0)")
    await conn.execute("UPDATE pgcast.changes SET created_at = now() - interval '3 hours'")
    async with collecting(dsn, retention=timedelta(hours=1), prune_interval=0.05):
        async with asyncio.timeout(10):
            while await conn.fetchval("SELECT count(*) FROM pgcast.changes"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    await conn.close()
