"""``pgcast demo`` from nothing: a throwaway cluster, the demo table captured, a subscriber gets a
change; SIGINT leaves no PostgreSQL process and no directory behind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import websockets

from cdc.embedded import free_port

REPO = Path(__file__).resolve().parent.parent.parent


def postmasters_of(directory: str) -> list[int]:
    """Pids of processes whose command line mentions ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if directory in cmdline and "postgres" in cmdline:
            found.append(int(entry.name))
    return found


def cluster_running(directory: str) -> bool:
    return Path(directory).is_dir() and bool(postmasters_of(directory))


def cluster_gone(directory: str, seconds: float) -> bool:
    """Whether, within ``seconds``, no process uses ``directory`` and it no longer exists."""
    deadline = time.monotonic() + seconds
    while postmasters_of(directory) or Path(directory).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


async def read_banner(proc: asyncio.subprocess.Process) -> dict[str, str]:
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(90):
        while not any("Ctrl-C" in line for line in lines):
            line = await proc.stdout.readline()
            assert line, "pgcast demo exited early:\n" + "".join(lines)
            lines.append(line.decode())
    text = "".join(lines)
    directory = re.search(r"throwaway cluster in (\S+)\)", text)
    token = re.search(r"token:\s+(\S+)", text)
    dsn = re.search(r"psql '([^']+)'", text)
    page = re.search(r"page:\s+(\S+)", text)
    assert directory and token and dsn and page, text
    return {
        "dir": directory.group(1), "token": token.group(1), "dsn": dsn.group(1),
        "page": page.group(1),
    }  # fmt: skip


async def test_demo_serves_changes_and_cleans_up_on_sigint() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broadcaster.cli", "demo", "--port", str(port),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("PGCAST_")},
    )  # fmt: skip
    try:
        banner = await read_banner(proc)
        assert cluster_running(banner["dir"])
        url = f"ws://127.0.0.1:{port}/realtime/v1/websocket?apikey={banner['token']}&vsn=1.0.0"
        async with asyncio.timeout(60):
            while True:  # the banner comes just before the server listens
                try:
                    ws = await websockets.connect(url)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        assert banner["page"] == f"http://127.0.0.1:{port}/"
        page = await asyncio.to_thread(fetch, banner["page"])
        assert b"./realtime-js.mjs" in await asyncio.to_thread(
            fetch, banner["page"] + "static/demo.js"
        )
        assert b"<title>pgcast demo</title>" in page
        binding = {
            "event": "INSERT",
            "schema": "public",
            "table": "messages",
            "filter": "room_id=eq.3",
        }
        await ws.send(json.dumps({
            "topic": "realtime:room3", "event": "phx_join", "ref": "1", "join_ref": "1",
            "payload": {"config": {"postgres_changes": [binding]}},
        }))  # fmt: skip
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await ws.recv())
                if message["event"] == "system":
                    assert message["payload"]["status"] == "ok", message
                    break
        conn = await asyncpg.connect(banner["dsn"])
        await conn.execute(
            "INSERT INTO public.messages (room_id, author, body) VALUES (4, 'x', 'other room'),"
            " (3, 'ann', 'hello room 3')"
        )
        await conn.close()
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await ws.recv())
                if message["event"] == "postgres_changes":
                    break
        record = message["payload"]["data"]["record"]
        assert record["room_id"] == 3 and record["author"] == "ann"
        await ws.close()
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            assert await proc.wait() == 0
        assert await asyncio.to_thread(cluster_gone, banner["dir"], 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_demo_without_postgres_binaries_names_both_fixes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCAST_")}
    env["PGCAST_PG_BINDIR"] = str(tmp_path)  # a directory with no initdb
    result = subprocess.run(
        [sys.executable, "-m", "broadcaster.cli", "demo", "--port", str(free_port())],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "has no initdb/pg_ctl" in result.stderr
