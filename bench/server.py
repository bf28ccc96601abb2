"""Server benchmark: chat-like latency, fan-out throughput and memory per idle socket.

Starts its own throwaway cluster and runs ``python -m broadcaster.cli serve --no-auth`` in its
own process (a fresh one per scenario), on 127.0.0.1 only. Load comes from separate processes:
client processes holding the WebSockets (minimal asyncio clients on raw streams, vsn 1.0.0 JSON)
and a writer process inserting rows. Prints tables.

    python bench/server.py [--sockets 10000] [--chat-seconds 10] [--rates 5,10,20,40]

1. Chat-like: ``--chat-sockets`` sockets in ``--rooms`` rooms (``room_id=eq.N`` on
   ``public.messages``) over 2 client processes, ``--chat-rate`` single-row INSERT transactions
   per second from a writer process. Latency = client receive wall time - writer's commit-ack
   wall time, per (socket, row id).
2. Memory: server RSS (``/proc/<pid>/status`` VmRSS) before and after ``--sockets`` idle sockets,
   each joined to one channel with one unfiltered binding on ``public.messages``.
3. Fan-out: on those same sockets, rows at increasing rates (``--rates``, ``--step-seconds``
   each); clients count ``postgres_changes`` frames. Kept up = every delivery arrived and the
   last one came at most ``--keep-up-s`` after the last commit. deliveries/s = deliveries /
   (first insert -> last delivery), so for a rate it did not keep up with it is what the server
   sustains while saturated. Each step waits for its backlog (up to ``--drain-s``) before the
   next; by default the steps stop after the first rate it did not keep up with.
4. Ceiling (same table): after pgcast stops, a bare asyncio+uvloop server process accepts the same
   number of sockets from the same client processes and writes ``--ceiling-messages``
   pre-encoded change frames of the same size straight to every transport (one write per
   socket per frame): what pure Python can deliver here, the yardstick for pgcast's rate.

The server gets ``PGCAST_HEARTBEAT_TIMEOUT_S=3600`` so the clients need not heartbeat, and
``--log-level WARNING``. Everything is bounded: every wait has a timeout, every child process has
a watchdog, and the whole run stops (cleaning up) after ``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from broadcaster.wsframe import text_frame
from cdc import admin
from cdc.embedded import Cluster, free_port, throwaway_cluster
from cdc.migrate import migrate

REPO = Path(__file__).resolve().parent.parent
TABLE_DDL = """
CREATE TABLE public.messages (
    id bigserial PRIMARY KEY,
    room_id int,
    author text,
    body text,
    created_at timestamptz DEFAULT now()
)
"""
INSERT = "INSERT INTO public.messages (room_id, author, body) VALUES ($1, 'bench', $2) RETURNING id"
BODY = "hello from the benchmark writer, a message of about chat size"
SERVER_ENV = {"PGCAST_HEARTBEAT_TIMEOUT_S": "3600", "PYTHONUNBUFFERED": "1"}
CHILD_MAX_S = 900.0  # a child process older than this exits by itself


def raise_nofile() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; return it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def watchdog(loop: asyncio.AbstractEventLoop, parent: int) -> None:
    """Exit if the parent is gone or this process has lived too long."""
    started = time.monotonic()

    def check() -> None:
        if os.getppid() != parent or time.monotonic() - started > CHILD_MAX_S:
            os._exit(3)
        loop.call_later(1.0, check)

    loop.call_later(1.0, check)


# --- the client processes ----------------------------------------------------------------------


def _mask(payload: bytes) -> bytes:
    """A masked client text frame."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 65536:
        header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return header + key + masked


class Client(asyncio.Protocol):
    """One WebSocket: upgrade, join one channel, then count (or record) change frames."""

    def __init__(self, owner: Worker, topic: str, filter_: str | None) -> None:
        self.owner = owner
        self.topic = topic
        self.filter = filter_
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.joined: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /realtime/v1/websocket?vsn=1.0.0 HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{self.owner.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def _join(self) -> None:
        binding: dict[str, str] = {"event": "*", "schema": "public", "table": "messages"}
        if self.filter is not None:
            binding["filter"] = self.filter
        message = {
            "topic": self.topic,
            "event": "phx_join",
            "payload": {"config": {"postgres_changes": [binding]}},
            "ref": "1",
            "join_ref": "1",
        }
        assert self.transport is not None
        self.transport.write(_mask(orjson.dumps(message)))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._fail(bytes(buf[: buf.find(b"\r\n")]).decode(errors="replace"))
                return
            del buf[: end + 4]
            self.upgraded = True
            self._join()
        pos = 0
        size = len(buf)
        owner = self.owner
        counted = 0
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            start = pos + head
            if opcode == 1:
                if buf.find(b'"event":"postgres_changes"', start, min(end, start + 200)) >= 0:
                    counted += 1
                    if owner.record:
                        message = orjson.loads(bytes(buf[start:end]))
                        owner.samples.append(
                            (message["payload"]["data"]["record"]["id"], time.time())
                        )
                elif not self.joined.done():
                    self._control(orjson.loads(bytes(buf[start:end])))
            elif opcode == 8:
                self._fail("closed by the server")
            pos = end
        if pos:
            del buf[:pos]
        if counted:
            owner.frames += counted
            owner.last_recv = time.time()

    def _control(self, message: dict[str, Any]) -> None:
        event, payload = message.get("event"), message.get("payload") or {}
        if event == "system" and payload.get("extension") == "postgres_changes":
            if payload.get("status") == "ok":
                self.joined.set_result(None)
            else:
                self.joined.set_result(f"system error: {payload.get('message')}")
        elif event == "phx_reply" and payload.get("status") != "ok":
            self.joined.set_result(f"join refused: {payload.get('response')}")

    def _fail(self, why: str) -> None:
        if not self.joined.done():
            self.joined.set_result(why)
        if not self.closed:
            self.closed = True
            self.owner.closed += 1
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}")


@dataclass
class Worker:
    """A client process's state."""

    port: int
    record: bool = False
    frames: int = 0
    closed: int = 0
    last_recv: float = 0.0
    samples: list[tuple[int, float]] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)

    async def open(self, specs: list[tuple[str, str | None]], concurrency: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        errors: dict[str, int] = {}

        async def one(topic: str, filter_: str | None) -> bool:
            async with gate:
                try:
                    async with asyncio.timeout(30):
                        _t, client = await loop.create_connection(
                            lambda: Client(self, topic, filter_), "127.0.0.1", self.port
                        )
                        self.clients.append(client)
                        problem = await client.joined
                except (OSError, TimeoutError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if problem is not None:
                    key = problem[:120]
                    errors[key] = errors.get(key, 0) + 1
                    return False
                return True

        results = await asyncio.gather(*(one(t, f) for t, f in specs))
        return {"ok": sum(results), "failed": len(results) - sum(results), "errors": errors}

    def close(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                client.closed = True
                client.transport.abort()
        self.clients.clear()


def client_process(conn: multiprocessing.connection.Connection, port: int, record: bool) -> None:
    """Child: holds sockets; obeys commands from the pipe."""
    raise_nofile()
    parent = os.getppid()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        watchdog(loop, parent)
        worker = Worker(port, record)
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            if command == "open":
                reply: Any = await worker.open(*args)
            elif command == "stats":
                open_ = sum(1 for c in worker.clients if not c.closed)
                reply = (worker.frames, worker.last_recv, worker.closed, open_)
            elif command == "samples":
                reply, worker.samples = worker.samples, []
            elif command == "close":
                worker.close()
                await asyncio.sleep(0.2)
                conn.send(None)
                return
            else:
                reply = f"unknown command {command!r}"
            conn.send(reply)

    import uvloop

    uvloop.run(run())


class Clients:
    """The parent's handle on the client processes."""

    def __init__(self, count: int, port: int, record: bool = False) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_process, args=(child, port, record), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def ask(
        self, command: str, args: list[Any] | tuple[Any, ...] = (), timeout: float = 30
    ) -> list[Any]:
        """Send a command to every client process (``args`` per process if a list)."""
        for i, pipe in enumerate(self.pipes):
            pipe.send((command, args[i] if isinstance(args, list) else args))
        replies = []
        deadline = time.monotonic() + timeout
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"client process did not answer {command!r} in {timeout}s")
            replies.append(pipe.recv())
        return replies

    def open(self, specs: list[tuple[str, str | None]], timeout: float) -> dict[str, Any]:
        parts = [specs[i :: len(self.pipes)] for i in range(len(self.pipes))]
        replies = self.ask("open", [(part, 100) for part in parts], timeout)
        errors: dict[str, int] = {}
        for r in replies:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return {
            "ok": sum(r["ok"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "errors": errors,
        }

    def stats(self) -> tuple[int, float, int, int]:
        replies = self.ask("stats", (), 30)
        return (
            sum(r[0] for r in replies),
            max(r[1] for r in replies),
            sum(r[2] for r in replies),
            sum(r[3] for r in replies),
        )

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.procs:
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.ask("close", (), 15)
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()


# --- the writer process ------------------------------------------------------------------------


def writer_process(
    conn: multiprocessing.connection.Connection,
    dsn: str,
    rate: float,
    seconds: float,
    rooms: int,
    connections: int,
) -> None:
    """Child: single-row INSERT transactions at ``rate``/s for ``seconds``, room ``n % rooms``;
    sends back (start, end, {row id: (commit-ack wall time, room)})."""
    parent = os.getppid()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        watchdog(loop, parent)
        acks: dict[int, tuple[float, int]] = {}
        total = int(rate * seconds)
        conns = [await asyncpg.connect(dsn) for _ in range(connections)]
        start = time.monotonic()
        wall_start = time.time()

        async def one(i: int) -> None:
            n = i
            while n < total and time.monotonic() - start < seconds + 30:
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                row_id = await conns[i].fetchval(INSERT, n % rooms, BODY, timeout=30)
                acks[row_id] = (time.time(), n % rooms)
                n += connections

        await asyncio.gather(*(one(i) for i in range(connections)))
        wall_end = time.time()
        for c in conns:
            await c.close()
        conn.send((wall_start, wall_end, acks))

    import uvloop

    uvloop.run(run())


Acks = dict[int, tuple[float, int]]


def write(dsn: str, rate: float, seconds: float, rooms: int) -> tuple[float, float, Acks]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    connections = max(1, min(8, int(rate // 100) + 1))
    proc = ctx.Process(
        target=writer_process, args=(child, dsn, rate, seconds, rooms, connections), daemon=True
    )
    proc.start()
    child.close()
    try:
        if not parent.poll(seconds + 60):
            raise TimeoutError("the writer did not finish")
        result: tuple[float, float, Acks] = parent.recv()
        return result
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        parent.close()


# --- the server process ------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body: dict[str, Any] = orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = orjson.loads(exc.read())
        return body

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


def start_server(dsn: str, workdir: Path, name: str) -> Server:
    port = free_port()
    log = workdir / f"{name}.log"
    cmd = [
        sys.executable, "-m", "broadcaster.cli", "serve", "--db", dsn, "--host", "127.0.0.1",
        "--port", str(port), "--no-auth", "--log-level", "WARNING",
    ]  # fmt: skip
    with log.open("wb") as out:
        # RLIMIT_NOFILE was raised in this process; the server inherits it.
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **SERVER_ENV}
        )
    server = Server(proc, port, log)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{server.tail()}")
        with contextlib.suppress(OSError, ValueError):
            if server.health().get("status") == "ok":
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the server's /health is not ok after 30 s:\n{server.tail()}")
        time.sleep(0.2)


# --- the ceiling: pre-encoded frames written straight to the transports --------------------------


def ceiling_frames() -> tuple[bytes, bytes]:
    """The system "subscribed" frame and one postgres_changes frame shaped like pgcast's for a
    row of ``public.messages`` (same fields, same size), as unmasked text frames."""
    subscribed = orjson.dumps({
        "topic": "realtime:fanout", "event": "system", "ref": None,
        "payload": {"extension": "postgres_changes", "status": "ok", "channel": "fanout",
                    "message": "Subscribed to PostgreSQL"},
    })  # fmt: skip
    columns = [
        {"name": "id", "type": "int8"}, {"name": "room_id", "type": "int4"},
        {"name": "author", "type": "text"}, {"name": "body", "type": "text"},
        {"name": "created_at", "type": "timestamptz"},
    ]  # fmt: skip
    change = orjson.dumps({
        "topic": "realtime:fanout", "event": "postgres_changes", "ref": None,
        "payload": {"ids": [1], "data": {
            "schema": "public", "table": "messages", "type": "INSERT",
            "commit_timestamp": "2026-11-23T23:59:59.123Z", "columns": columns,
            "record": {"id": 123456, "room_id": 0, "author": "bench", "body": BODY,
                       "created_at": "2026-11-23T23:59:59.123456+00:00"},
            "old_record": None, "errors": None}},
    })  # fmt: skip
    return text_frame(subscribed), text_frame(change)


class RawSocket(asyncio.Protocol):
    """The ceiling server's side of one socket: a hand-written upgrade, a canned join answer."""

    def __init__(self, live: list[asyncio.Transport], subscribed: bytes) -> None:
        self.live = live
        self.subscribed = subscribed
        self.buf = b""
        self.state = 0  # 0: upgrading, 1: waiting for the join, 2: joined
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.state == 0:
            self.buf += data
            if b"\r\n\r\n" not in self.buf:
                return
            key = next(
                line.split(b":", 1)[1].strip()
                for line in self.buf.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(
                hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.state, self.buf = 1, b""
        elif self.state == 1:  # the join (not parsed: the answer is canned)
            self.transport.write(self.subscribed)
            self.live.append(self.transport)
            self.state = 2

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == 2 and self.transport in self.live:
            self.live.remove(self.transport)


def ceiling_process(conn: multiprocessing.connection.Connection, port: int) -> None:
    """Child: the ceiling server. On ``("blast", n)`` writes ``n`` pre-encoded change frames to
    every joined transport, one ``transport.write`` per socket per frame, yielding to the loop
    after each frame (as a server interleaving reads would); answers with the send time."""
    raise_nofile()
    parent = os.getppid()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        watchdog(loop, parent)
        subscribed, change = ceiling_frames()
        live: list[asyncio.Transport] = []
        server = await loop.create_server(
            lambda: RawSocket(live, subscribed), "127.0.0.1", port, backlog=4096
        )
        conn.send("ready")
        while True:
            command, arg = await loop.run_in_executor(None, conn.recv)
            if command == "blast":
                start = time.time()
                for _ in range(arg):
                    for transport in live:
                        transport.write(change)
                    await asyncio.sleep(0)
                conn.send((start, time.time(), len(live)))
            else:
                server.close()
                conn.send(None)
                return

    import uvloop

    uvloop.run(run())


def ceiling(args: argparse.Namespace) -> list[list[str]]:
    """Rows for the fan-out table: the ceiling at ``args.sockets`` sockets, same clients."""
    ctx = multiprocessing.get_context("spawn")
    pipe, child = ctx.Pipe()
    port = free_port()
    proc = ctx.Process(target=ceiling_process, args=(child, port), daemon=True)
    proc.start()
    child.close()
    rows: list[list[str]] = []
    clients: Clients | None = None
    try:
        if not pipe.poll(30) or pipe.recv() != "ready":
            raise RuntimeError("the ceiling server did not start")
        clients = Clients(args.client_procs, port)
        opened = clients.open([("realtime:fanout", None)] * args.sockets, 300)
        time.sleep(1.0)
        messages = args.ceiling_messages
        pipe.send(("blast", messages))
        if not pipe.poll(120):
            raise TimeoutError("the ceiling server did not finish sending")
        start, sent, live = pipe.recv()
        expected = messages * live
        frames, last, _closed, _open = wait_for(clients, expected, args.drain_s)
        rows.append([
            "ceiling", f"{messages} msgs", f"{frames:,}", f"{expected:,}",
            f"{frames / (max(last, sent) - start):,.0f}", f"{max(0.0, last - sent):.2f}",
            "-", "-", f"{opened['ok']:,} sockets",
        ])  # fmt: skip
    finally:
        if clients is not None:
            clients.shutdown()
        with contextlib.suppress(Exception):
            pipe.send(("stop", None))
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    return rows


# --- scenarios ---------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def wait_for(clients: Clients, expected: int, timeout: float) -> tuple[int, float, int, int]:
    """Poll the clients' counters until ``expected`` frames arrived or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        stats = clients.stats()
        if stats[0] >= expected or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def chat(dsn: str, workdir: Path, args: argparse.Namespace) -> None:
    server = start_server(dsn, workdir, "chat")
    clients = Clients(2, server.port, record=True)
    try:
        specs = [
            (f"realtime:room-{i % args.rooms}", f"room_id=eq.{i % args.rooms}")
            for i in range(args.chat_sockets)
        ]
        opened = clients.open(specs, 120)
        if opened["failed"]:
            print(f"chat: {opened['failed']} sockets failed: {opened['errors']}")
        if not opened["ok"]:
            raise RuntimeError(f"chat: no socket subscribed\n{server.tail()}")
        per_room = [0] * args.rooms
        for i in range(args.chat_sockets):
            per_room[i % args.rooms] += 1
        start, _end, acks = write(dsn, args.chat_rate, args.chat_seconds, args.rooms)
        expected = sum(per_room[room] for _t, room in acks.values())
        frames, *_ = wait_for(clients, expected, 15)
        samples = [s for part in clients.ask("samples", (), 60) for s in part]
        warm = start + args.warmup
        latencies = [
            (t - acks[i][0]) * 1000 for i, t in samples if i in acks and acks[i][0] >= warm
        ]
        health = server.health()
    finally:
        clients.shutdown()
        server.stop()
    if len(latencies) < 2:
        raise RuntimeError(f"chat: {len(latencies)} latency samples ({frames} frames)")
    q = statistics.quantiles(latencies, n=100)
    rate = len(acks) / args.chat_seconds
    print(
        f"\nChat-like: {opened['ok']:,} sockets in {args.rooms} rooms (room_id=eq.N), "
        f"{rate:,.0f} changes/s for {args.chat_seconds:g} s, 2 client processes\n"
    )
    rows = [["measured", "deliveries", "missing", "p50 ms", "p90 ms", "p99 ms", "max ms"]]
    rows.append([
        "commit-ack -> client receive", f"{len(latencies):,}", f"{max(0, expected - frames):,}",
        f"{q[49]:.2f}", f"{q[89]:.2f}", f"{q[98]:.2f}", f"{max(latencies):.2f}",
    ])  # fmt: skip
    print(table(rows))
    print(
        f"(first {args.warmup:g} s of changes not counted; server capture lag at the end: "
        f"{health['capture']['lag_seconds']} s)"
    )


def memory_and_fanout(dsn: str, workdir: Path, args: argparse.Namespace) -> None:
    server = start_server(dsn, workdir, "fanout")
    clients = Clients(args.client_procs, server.port)
    mem_rows = [["sockets", "server RSS MiB", "KiB/socket vs 0", "KiB/socket vs first step"]]
    fan_rows = [[
        "rows/s", "offered deliveries/s", "delivered", "expected", "deliveries/s",
        "last after commit s", "server CPU %", "clients CPU %", "kept up",
    ]]  # fmt: skip
    try:
        time.sleep(1.0)
        rss0 = server.rss_kib()
        mem_rows.append(["0", f"{rss0 / 1024:.1f}", "-", "-"])
        first_step = max(1, args.sockets // 10)
        live = 0
        first_rss = None
        errors: dict[str, int] = {}
        for target in (first_step, args.sockets):
            specs = [("realtime:fanout", None)] * (target - live)
            opened = clients.open(specs, 300)
            live += opened["ok"]
            for k, v in opened["errors"].items():
                errors[k] = errors.get(k, 0) + v
            time.sleep(2.0)
            rss = server.rss_kib()
            step = (
                "-" if first_rss is None else f"{(rss - first_rss[1]) / (live - first_rss[0]):.1f}"
            )
            mem_rows.append([f"{live:,}", f"{rss / 1024:.1f}", f"{(rss - rss0) / live:.1f}", step])
            if first_rss is None:
                first_rss = (live, rss)
        frames, _last, closed, open_ = clients.stats()
        health = server.health()
        fan_note = (
            f"{open_:,} sockets open of {args.sockets:,} asked"
            f" (server: {health['sockets']:,} sockets, {health['subscriptions']:,} subscriptions)"
        )
        if errors:
            fan_note += f"; failures: {errors}"
        for rate in args.rates:
            before, _last, closed_before, open_ = clients.stats()
            cpu0, ccpu0, t0 = server.cpu_seconds(), clients.cpu_seconds(), time.monotonic()
            wall_start, wall_end, acks = write(dsn, rate, args.step_seconds, 1)
            expected = len(acks) * open_
            frames, last, closed, _open = wait_for(clients, before + expected, args.drain_s)
            elapsed = time.monotonic() - t0
            cpu = (server.cpu_seconds() - cpu0) / elapsed * 100
            ccpu = (clients.cpu_seconds() - ccpu0) / elapsed * 100
            delivered = frames - before
            span = max(last, wall_end) - wall_start
            behind = last - wall_end
            kept = delivered >= expected and behind <= args.keep_up_s and closed == closed_before
            fan_rows.append([
                f"{len(acks) / args.step_seconds:,.1f}", f"{rate * open_:,.0f}",
                f"{delivered:,}", f"{expected:,}", f"{delivered / span:,.0f}", f"{behind:.2f}",
                f"{cpu:.0f}", f"{ccpu:.0f}",
                "yes" if kept else f"no ({closed - closed_before} closed)",
            ])  # fmt: skip
            if delivered < expected:
                fan_note += (
                    f"\nat {rate:g} rows/s the backlog did not drain within {args.drain_s:g} s;"
                    " later rates not run"
                )
                break
            if not kept and not args.all_rates:
                fan_note += f"\nbehind at {rate:g} rows/s: higher rates not run (--all-rates)"
                break
    finally:
        clients.shutdown()
        server.stop()
    print("\nMemory: server RSS with idle subscribed sockets (1 channel, 1 binding each)\n")
    print(table(mem_rows))
    print(
        f"\nFan-out: every socket subscribed to public.messages without a filter, "
        f"{args.step_seconds:g} s per rate, {args.client_procs} client processes\n"
    )
    if not args.skip_ceiling:
        fan_rows.extend(ceiling(args))
        fan_note += (
            "\nceiling: a bare asyncio+uvloop server in its own process writes the same-sized"
            " pre-encoded frame to every transport, one write per socket per frame; same clients"
        )
    print(table(fan_rows))
    print(fan_note)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=10_000, help="fan-out/memory sockets")
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--rates", default="1,2,5,10,20,40", help="fan-out rows/s, ascending")
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--keep-up-s", type=float, default=1.0)
    parser.add_argument("--drain-s", type=float, default=60.0, help="most wait after a step")
    parser.add_argument(
        "--all-rates", action="store_true", help="go on after a rate the server did not keep up"
    )
    parser.add_argument("--chat-sockets", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--chat-rate", type=float, default=1000.0)
    parser.add_argument("--chat-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0, help="chat seconds not counted")
    parser.add_argument("--skip", default="", help="comma separated: chat, fanout")
    parser.add_argument("--skip-ceiling", action="store_true", help="no bare-transport ceiling")
    parser.add_argument("--ceiling-messages", type=int, default=40, help="frames per socket")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r]
    skip = set(args.skip.split(","))

    def out_of_time(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"the benchmark ran over its {args.budget:g} s budget")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.budget))
    limit = raise_nofile()
    print(f"RLIMIT_NOFILE {limit:,}; {os.cpu_count()} CPUs (server, clients, writer, Postgres)")
    with (
        tempfile.TemporaryDirectory(prefix="pgcast-bench-") as tmp,
        throwaway_cluster(settings={"shared_buffers": "256MB", "max_wal_size": "4GB"}) as cluster,
    ):
        dsn = cluster.dsn()
        prepare(cluster)
        if "chat" not in skip:
            chat(dsn, Path(tmp), args)
        if "fanout" not in skip:
            memory_and_fanout(dsn, Path(tmp), args)
    signal.alarm(0)


def prepare(cluster: Cluster) -> None:
    dsn = cluster.dsn()
    migrate(dsn)

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute(TABLE_DDL)
        await conn.close()

    asyncio.run(create())
    admin.add_table(dsn, "public.messages")


if __name__ == "__main__":
    main()
