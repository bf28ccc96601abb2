"""kill -9 of a replication-mode subscriber mid-stream, again and again: resuming from the position
it holds (the token of the last batch it wrote down), it ends up with every row exactly once.

The subscriber is a separate process (:mod:`tests.cdc.crash_consumer`) so that SIGKILL gives it no
chance to confirm, save or close anything. A row missing at the end would mean the slot was
confirmed past what the subscriber had acked; a row twice, that the resume position was ignored.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.cdc.crash_consumer import delivered

N = 3000
SLOT = "crash"
ROOT = Path(__file__).resolve().parents[2]


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def write_rows(dsn: str, seed: int, failed: list[BaseException]) -> None:
    """Ids 1..N in one-row transactions and multi-row statements, faster than the consumer."""
    rng = random.Random(seed)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            next_id = 1
            while next_id <= N:
                size = min(rng.choice((1, 1, 1, 1, 1, 1, 3, 10, 40)), N - next_id + 1)
                conn.execute(
                    "INSERT INTO public.crash SELECT generate_series(%s::int, %s::int)",
                    (next_id, next_id + size - 1),
                )
                next_id += size
    except BaseException as exc:  # re-raised by the test
        failed.append(exc)


class Consumer:
    """The subscriber process; its stderr goes to a file that a failure shows."""

    def __init__(self, dsn: str, out: Path) -> None:
        self.errors = out.with_suffix(f".stderr{time.monotonic_ns()}")
        with open(self.errors, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.cdc.crash_consumer", dsn, SLOT, str(out)],
                cwd=ROOT,
                stderr=err,
            )

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"consumer exited ({self.proc.returncode}): {self.errors.read_text()[-3000:]}"
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_until(done: Callable[[], bool], consumer: Consumer, seconds: float) -> bool:
    """Poll ``done`` until it holds (True) or ``seconds`` passed (False)."""
    deadline = time.monotonic() + seconds
    while not done():
        consumer.check_running()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def slot_released(dsn: str) -> bool:
    """The walsender of a killed consumer notices the closed socket and lets the slot go."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)
        ).fetchone()
    assert row is not None
    return row[0] is None


def test_sigkill_of_the_subscriber_mid_stream_loses_and_repeats_nothing(
    db: str, tmp_path: Path
) -> None:
    sql(
        db,
        "CREATE TABLE public.crash (id int PRIMARY KEY)",
        f"CREATE PUBLICATION {SLOT} FOR TABLE public.crash",
        f"SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')",
    )
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    out = tmp_path / "delivered.jsonl"
    failed: list[BaseException] = []
    writer = threading.Thread(target=write_rows, args=(db, seed, failed))
    consumer = Consumer(db, out)
    writer.start()
    kills = 0
    try:
        for threshold in (300, 1000, 1700, 2400):
            at = threshold + rng.randrange(300)
            assert wait_until(lambda at=at: lines(out) >= at, consumer, 60), f"{at} lines"
            time.sleep(rng.uniform(0, 0.03))
            consumer.kill()
            kills += 1
            assert len(delivered(out)[0]) < N, f"seed {seed}: killed after the end of the stream"
            deadline = time.monotonic() + 30
            while not slot_released(db):
                assert time.monotonic() < deadline, "the slot stayed active"
                time.sleep(0.05)
            consumer = Consumer(db, out)
        writer.join()
        assert not failed, failed
        # Rows lost show up as missing ids below.
        wait_until(lambda: len(delivered(out)[0]) >= N, consumer, 30)
        time.sleep(1.0)  # time for a repeat to show up
        consumer.check_running()
    finally:
        consumer.kill()
        writer.join()
    ids = delivered(out)[0]
    assert kills == 4
    missing = sorted(set(range(1, N + 1)) - set(ids))
    assert not missing, f"seed {seed}: {len(missing)} rows lost, e.g. {missing[:10]}"
    assert sorted(ids) == list(range(1, N + 1)), f"seed {seed}: {len(ids) - N} rows twice"
