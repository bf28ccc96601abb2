"""Trigger-mode capture benchmark: write overhead, reader throughput and lag, commit latency.

Starts its own throwaway cluster (fsync on, as in production), drives writes with pgbench in
separate processes and reads with pgcast's OutboxSource in this process. Prints tables.

    python bench/capture.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from cdc import admin
from cdc.changes import Position
from cdc.embedded import Cluster, throwaway_cluster
from cdc.listen import OutboxSource
from cdc.migrate import migrate
from cdc.replication import ReplicationSource

TABLE = """
CREATE TABLE items (id bigserial PRIMARY KEY, a int, b text, c text, d text, n numeric,
                    f bool, t timestamptz);
"""
ALWAYS_NOTIFY = """
CREATE FUNCTION bench_notify_capture() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET IntervalStyle = 'postgres'
SET extra_float_digits = 1 AS $$
BEGIN
    INSERT INTO pgcast.changes (relid, schema_name, table_name, op, record)
    SELECT TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'I', to_jsonb(n.*) FROM pgcast_new AS n;
    PERFORM pg_notify('pgcast', '');
    RETURN NULL;
END $$;
"""
INSERT_1 = (
    "INSERT INTO items (a, b, c, d, n, f, t) "
    "VALUES (:aid, 'hello world', 'some text', 'more', 12.5, true, now());\n"
)
INSERT_1000 = (
    "INSERT INTO items (a, b, c, d, n, f, t) "
    "SELECT g, 'hello world', 'some text', 'more', 12.5, true, now() "
    "FROM generate_series(1, 1000) g;\n"
)


@dataclass
class Run:
    label: str
    writer_rows_per_s: float
    reader_rows_per_s: float | None
    catch_up_s: float | None


async def reset(dsn: str, capture: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "DROP TABLE IF EXISTS items; DROP FUNCTION IF EXISTS bench_notify_capture();"
    )
    await conn.execute(
        "TRUNCATE pgcast.changes; DELETE FROM pgcast.tables; DELETE FROM pgcast.consumers;"
    )
    await conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
        " WHERE slot_name LIKE 'bench%'; DROP PUBLICATION IF EXISTS pgcast"
    )
    await conn.execute(TABLE)
    await conn.execute("SELECT setval('pgcast.wakeup', 0)")
    await conn.close()
    if capture in ("row", "statement"):
        admin.add_table(dsn, "public.items", events=("insert",), granularity=capture)
    elif capture in ("repl-key", "repl-full"):
        old_values = "full" if capture == "repl-full" else "key"
        admin.add_table(dsn, "public.items", old_values=old_values, mode="replication")
    elif capture == "notify":
        conn = await asyncpg.connect(dsn)
        await conn.execute(ALWAYS_NOTIFY)
        await conn.execute(
            "CREATE TRIGGER bench AFTER INSERT ON items REFERENCING NEW TABLE AS pgcast_new "
            "FOR EACH STATEMENT EXECUTE FUNCTION bench_notify_capture()"
        )
        await conn.close()


async def open_source(dsn: str, capture: str, name: str) -> tuple[Any, Position | None]:
    """A source reading from "now" for ``capture``, and its start position."""
    if capture.startswith("repl"):
        repl = ReplicationSource(dsn, slot=name.replace("-", "_"), consumer=name)
        await repl.check()  # creates the slot: changes from here on
        return repl, None
    source = OutboxSource(dsn, consumer=name)
    return source, await source.current_position()


async def pgbench(
    cluster: Cluster, script: str, clients: int, seconds: int, rate: int = 0
) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(("\\set aid random(1, 100000)\n" if ":aid" in script else "") + script)
    os.chmod(f.name, 0o644)
    args = [
        str(cluster.bindir / "pgbench"), "-n", "-h", str(cluster.socket_dir),
        "-p", str(cluster.port), "-U", "postgres", "-c", str(clients), "-j", str(min(clients, 2)),
        "-T", str(seconds), "-f", f.name, "postgres",
    ]  # fmt: skip
    if rate:
        args[1:1] = ["-R", str(rate)]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    os.unlink(f.name)
    match = re.search(r"tps = ([\d.]+)", out.decode())
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed: {err.decode()}")
    return float(match.group(1))


async def run_write(
    cluster: Cluster, capture: str, script: str, rows_per_txn: int, clients: int, seconds: int,
    with_reader: bool,
) -> Run:  # fmt: skip
    dsn = cluster.dsn()
    await reset(dsn, capture)
    received = 0
    source, start = await open_source(dsn, capture, "bench")

    async def read() -> None:
        nonlocal received
        async for batch in source.batches(start):
            received += len(batch.changes)

    task = asyncio.create_task(read()) if with_reader else None
    t0 = time.monotonic()
    tps = await pgbench(cluster, script, clients, seconds)
    written = tps * seconds * rows_per_txn
    t_end = time.monotonic()
    catch_up = None
    reader_rate = None
    if task is not None:
        conn = await asyncpg.connect(dsn)
        total = await conn.fetchval("SELECT count(*) FROM items")
        await conn.close()
        while received < total:  # noqa: ASYNC110 - counts what another task reads
            await asyncio.sleep(0.01)
        catch_up = time.monotonic() - t_end
        reader_rate = received / (time.monotonic() - t0)
        task.cancel()
    await source.close()
    label = {
        "none": "no capture",
        "row": "pgcast --granularity row (default)",
        "statement": "pgcast --granularity statement",
        "notify": "statement-level + NOTIFY every txn",
        "repl-key": "replication, REPLICA IDENTITY DEFAULT",
        "repl-full": "replication, REPLICA IDENTITY FULL",
    }
    return Run(label[capture], written / seconds, reader_rate, catch_up)


def _paced_writer(dsn: str, rate: int, seconds: int, out: str) -> None:
    """Separate process: 1-row INSERT transactions at ``rate``/s over 4 connections; records
    the wall-clock time each commit was acknowledged."""

    async def run() -> None:
        acks: dict[int, float] = {}
        conns = [await asyncpg.connect(dsn) for _ in range(4)]
        start = time.monotonic()

        async def one(i: int) -> None:
            n = i
            while n < rate * seconds:
                due = start + n / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await conns[i].execute(
                    "INSERT INTO items (a, b, c, d, n, f, t) "
                    "VALUES ($1, 'hello world', 'some text', 'more', 12.5, true, now())",
                    n,
                )
                acks[n] = time.time()
                n += 4

        await asyncio.gather(*(one(i) for i in range(4)))
        Path(out).write_text(json.dumps(acks))  # noqa: ASYNC240 - once, after the run

    asyncio.run(run())


async def latency(
    cluster: Cluster, seconds: int, rate: int, capture: str = "row"
) -> tuple[list[float], list[float]]:
    """(commit-ack -> reader, commit timestamp -> reader) in ms for each change."""
    dsn = cluster.dsn()
    await reset(dsn, capture)
    source, start = await open_source(dsn, capture, "bench-latency")
    received: dict[int, float] = {}
    from_commit_ts: list[float] = []

    async def read() -> None:
        async for batch in source.batches(start):
            now = time.time()
            for c in batch.changes:
                received[c.record["a"]] = now  # type: ignore[index]
                from_commit_ts.append((now - c.commit_timestamp.timestamp()) * 1000)

    task = asyncio.create_task(read())
    out = os.path.join(tempfile.mkdtemp(), "acks.json")
    proc = multiprocessing.get_context("spawn").Process(
        target=_paced_writer, args=(dsn, rate, seconds, out)
    )
    proc.start()
    await asyncio.to_thread(proc.join)
    await asyncio.sleep(0.5)
    task.cancel()
    await source.close()
    acks = {int(k): v for k, v in json.loads(Path(out).read_text()).items()}  # noqa: ASYNC240
    from_ack = [(received[n] - t) * 1000 for n, t in acks.items() if n in received]
    if len(from_ack) != len(acks):
        raise RuntimeError(f"{len(acks) - len(from_ack)} changes never arrived")
    return from_ack, from_commit_ts


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def main(seconds: int, latency_only: bool = False, mode: str = "trigger") -> None:
    settings = {"shared_buffers": "256MB", "max_wal_size": "4GB"}
    with throwaway_cluster(settings=settings) as cluster:
        migrate(cluster.dsn())
        if not latency_only:
            await throughput(cluster, seconds, mode)
        capture = "repl-key" if mode == "replication" else "row"
        from_ack, from_ts = await latency(cluster, seconds, 1000, capture)
        print(f"\nCommit -> reader latency at 1,000 changes/s ({len(from_ack)} changes)\n")
        rows = [["measured from", "p50 ms", "p90 ms", "p99 ms", "max ms"]]
        for label, samples in (
            ("writer's commit acknowledged", from_ack),
            ("commit timestamp (before WAL flush)", from_ts),
        ):
            q = statistics.quantiles(samples, n=100)
            rows.append(
                [label, f"{q[49]:.2f}", f"{q[89]:.2f}", f"{q[98]:.2f}", f"{max(samples):.2f}"]
            )
        print(table(rows))


async def throughput(cluster: Cluster, seconds: int, mode: str = "trigger") -> None:
    runs: list[tuple[str, Run]] = []
    small = ("none", "row", "statement", "notify")
    large = ("none", "row", "statement")
    if mode == "replication":
        small = large = ("none", "repl-key", "repl-full")
    for capture in small:
        runs.append(("1-row txns, 4 clients", await run_write(
            cluster, capture, INSERT_1, 1, 4, seconds, capture != "none")))  # fmt: skip
    for capture in large:
        runs.append(("1,000-row statements, 1 client", await run_write(
            cluster, capture, INSERT_1000, 1000, 1, seconds, capture != "none")))  # fmt: skip
    base = {w: r.writer_rows_per_s for w, r in runs if r.label == "no capture"}
    rows = [["workload", "capture", "writer rows/s", "vs none", "reader rows/s", "catch-up s"]]
    for workload, r in runs:
        rows.append([
            workload, r.label, f"{r.writer_rows_per_s:,.0f}",
            f"{r.writer_rows_per_s / base[workload]:.2f}x",
            "-" if r.reader_rows_per_s is None else f"{r.reader_rows_per_s:,.0f}",
            "-" if r.catch_up_s is None else f"{r.catch_up_s:.2f}",
        ])  # fmt: skip
    print(f"\nWrite overhead and reader throughput ({seconds}s per run, fsync on)\n")
    print(table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--mode", choices=("trigger", "replication"), default="trigger")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.latency_only, args.mode))
