"""The README's "use it from your app" snippets, extracted from README.md (not copied) and run
against a live pgcast: each must print the INSERT of a row committed while it listens.

Substitutions: ``YOUR_JWT`` becomes a token of the test server and ``http://localhost:4000`` its
URL. The JavaScript snippet runs under the Node that the e2e tests use; Node before 22 has no
global ``WebSocket``, so the test defines one from the ``ws`` package first (browsers and Node 22+
do not need that line)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.helpers import RealtimeServer, insert, require_node

ROOT = Path(__file__).resolve().parent.parent.parent
E2E = Path(__file__).resolve().parent


def snippet(name: str) -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(
        rf"<!-- snippet: {re.escape(name)} -->\n```\w+\n(.*?)```\n<!-- /snippet -->", readme, re.S
    )
    assert found, f"README.md has no snippet {name!r}"
    return found.group(1)


def personalise(code: str, server: RealtimeServer) -> str:
    assert "YOUR_JWT" in code and "http://localhost:4000" in code
    return code.replace("YOUR_JWT", server.token()).replace(
        "http://localhost:4000", server.http_base
    )


def watch(proc: subprocess.Popen[str], server: RealtimeServer, room: int, body: str) -> list[str]:
    """Insert a row of ``room`` every half second until the snippet prints it; its output."""
    assert proc.stdout is not None
    stdout = proc.stdout
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    next_insert = 0.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            reader.join(5)
            pytest.fail(f"the snippet exited with {proc.returncode}:\n{''.join(out)}")
        if time.monotonic() >= next_insert:
            insert(server.dsn, room + 1, "other", "not for room 1")  # filtered out
            insert(server.dsn, room, "readme", body)
            next_insert = time.monotonic() + 0.5
        if any(body in line for line in list(out)):
            return [line.rstrip("\n") for line in list(out)]
        time.sleep(0.05)
    pytest.fail(f"the snippet never printed the row:\n{''.join(out)}\n{server.log_tail()}")


def run(cmd: list[str], cwd: Path, server: RealtimeServer, body: str) -> list[str]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        return watch(proc, server, 1, body)
    finally:
        proc.kill()
        proc.wait(10)


def test_the_python_snippet_prints_inserts(realtime_server: RealtimeServer, tmp_path: Path) -> None:
    code = personalise(snippet("python"), realtime_server)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    body = f"python {uuid.uuid4().hex}"
    lines = run([sys.executable, str(script)], tmp_path, realtime_server, body)
    assert any(line.startswith("RealtimeSubscribeStates.SUBSCRIBED") for line in lines), lines
    printed = [line for line in lines if body in line]
    assert printed[0].startswith("INSERT ") and "'room_id': 1" in printed[0], printed
    assert not any("not for room 1" in line for line in lines), lines


def test_the_supabase_js_snippet_prints_inserts(realtime_server: RealtimeServer) -> None:
    node = require_node()
    code = personalise(snippet("supabase-js"), realtime_server)
    shim = "import WebSocket from 'ws'\nglobalThis.WebSocket ??= WebSocket\n"
    script = E2E / f".readme-snippet-{uuid.uuid4().hex}.mjs"  # here, to resolve node_modules
    script.write_text(shim + code)
    try:
        body = f"js {uuid.uuid4().hex}"
        lines = run([node, str(script)], E2E, realtime_server, body)
    finally:
        script.unlink()
    assert "SUBSCRIBED" in lines, lines
    printed = [line for line in lines if body in line]
    assert printed[0].startswith("INSERT {") and '"room_id":1' in printed[0], printed
    assert not any("not for room 1" in line for line in lines), lines
