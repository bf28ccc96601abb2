"""End-to-end helpers: the pgcast server as a subprocess, rows written with psycopg, and the
official realtime-js client driven through ``client.mjs``.

Every wait has a timeout, and every timeout fails with what was seen: the client's events (raw
frames included), its stderr, and the tail of the server log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from broadcaster.auth import make_token

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parent.parent
CLIENT_MJS = E2E_DIR / "client.mjs"
INSTALL_HINT = "run `npm ci --prefix tests/e2e` (or `.ci/install-e2e .venv`)"

WAIT = 15.0  # seconds for anything that should happen promptly
SERVER_START = 30.0

TABLE_DDL = """
CREATE TABLE public.messages (
    id bigserial PRIMARY KEY,
    room_id int,
    author text,
    body text,
    created_at timestamptz DEFAULT now()
)
"""
# pg_type.typname of each column, in attnum order: what `columns` must list.
COLUMNS = [
    {"name": "id", "type": "int8"},
    {"name": "room_id", "type": "int4"},
    {"name": "author", "type": "text"},
    {"name": "body", "type": "text"},
    {"name": "created_at", "type": "timestamptz"},
]
COMMIT_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the server ------------------------------------------------------------------------------


@dataclass
class RealtimeServer:
    """A running ``python -m broadcaster.cli serve``."""

    port: int
    secret: str
    dsn: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def endpoint(self) -> str:
        """The realtime-js endpoint (the client appends ``/websocket``)."""
        return f"ws://127.0.0.1:{self.port}/realtime/v1"

    @property
    def http_base(self) -> str:
        """The project URL for supabase-js and the Python client (they add the path)."""
        return f"http://127.0.0.1:{self.port}"

    def token(self, ttl: float = 3600, role: str = "anon") -> str:
        return make_token(self.secret, role=role, ttl=ttl)

    def expired_token(self) -> str:
        return make_token(self.secret, role="anon", ttl=-600)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no server log: {exc})"
        tail = text.splitlines()[-lines:]
        state = "running" if self.proc.poll() is None else f"EXITED rc={self.proc.returncode}"
        return f"server ({state}) log tail:\n" + "\n".join(tail)


def _health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def start_server(dsn: str, log_path: Path) -> Iterator[RealtimeServer]:
    """Start the server on a free port, wait for /health, yield it, stop it."""
    port = free_port()
    secret = "pgcast-e2e-secret-" + os.urandom(8).hex()
    log = log_path.open("wb")
    cmd = [
        sys.executable,
        "-m",
        "broadcaster.cli",
        "serve",
        "--db",
        dsn,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--jwt-secret",
        secret,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = RealtimeServer(port, secret, dsn, proc, log_path)
    try:
        deadline = time.monotonic() + SERVER_START
        last = "no answer"
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"`{' '.join(cmd[:4])}` exited with {proc.returncode} before "
                    f"/health answered\n{server.log_tail()}"
                )
            try:
                status, body = _health(port)
                if status == 200:
                    json.loads(body)  # the brief: /health returns JSON
                    break
                last = f"HTTP {status}: {body[:200]}"
            except (OSError, ValueError) as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                pytest.fail(
                    f"server /health not ready after {SERVER_START}s (last: {last})\n"
                    f"{server.log_tail()}"
                )
            time.sleep(0.1)  # polling an HTTP endpoint: nothing to wait on instead
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


# --- the database ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """A row change made by a test: rows as ``to_jsonb`` renders them (UTC session)."""

    new: dict[str, Any] | None
    old: dict[str, Any] | None
    xact_start: datetime


def _connect(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=False)
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


def insert(dsn: str, room_id: int | None, author: str, body: str) -> Written:
    with _connect(dsn) as conn:
        row = conn.execute(
            "INSERT INTO public.messages (room_id, author, body) VALUES (%s, %s, %s)"
            " RETURNING to_jsonb(messages.*), now()",
            (room_id, author, body),
        ).fetchone()
        assert row is not None
    return Written(new=row[0], old=None, xact_start=row[1])


def update(dsn: str, row_id: int, **values: Any) -> Written:
    sets = ", ".join(f"{name} = %({name})s" for name in values)
    with _connect(dsn) as conn:
        before = conn.execute(
            "SELECT to_jsonb(m.*) FROM public.messages m WHERE id = %s FOR UPDATE", (row_id,)
        ).fetchone()
        assert before is not None, f"no row {row_id}"
        row = conn.execute(
            f"UPDATE public.messages SET {sets} WHERE id = %(id)s"
            " RETURNING to_jsonb(messages.*), now()",
            {**values, "id": row_id},
        ).fetchone()
        assert row is not None
    return Written(new=row[0], old=before[0], xact_start=row[1])


def delete(dsn: str, row_id: int) -> Written:
    with _connect(dsn) as conn:
        row = conn.execute(
            "DELETE FROM public.messages WHERE id = %s RETURNING to_jsonb(messages.*), now()",
            (row_id,),
        ).fetchone()
        assert row is not None, f"no row {row_id}"
    return Written(new=None, old=row[0], xact_start=row[1])


def check_commit_timestamp(value: object, written: Written) -> None:
    """UTC with milliseconds and ``Z`` (spec §3), and close to the writing transaction."""
    assert isinstance(value, str) and COMMIT_TS.match(value), (
        f"commit_timestamp {value!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
    )
    ts = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    start = written.xact_start.astimezone(UTC)
    assert start - timedelta(seconds=1) <= ts <= start + timedelta(seconds=30), (
        f"commit_timestamp {value} is not at the writing transaction (started {start.isoformat()})"
    )


def js_expected(kind: str, written: Written) -> dict[str, Any]:
    """What realtime-js hands a postgres_changes callback (``commit_timestamp`` checked apart)."""
    return {
        "schema": "public",
        "table": "messages",
        "eventType": kind,
        "new": written.new if kind in ("INSERT", "UPDATE") else {},
        "old": written.old if kind in ("UPDATE", "DELETE") else {},
        "errors": None,
    }


def py_expected_data(kind: str, written: Written) -> dict[str, Any]:
    """``payload["data"]`` as the Python client hands it over (``commit_timestamp`` apart)."""
    data: dict[str, Any] = {
        "schema": "public",
        "table": "messages",
        "type": kind,
        "columns": COLUMNS,
        "errors": None,
    }
    if kind in ("INSERT", "UPDATE"):
        data["record"] = written.new
    if kind in ("UPDATE", "DELETE"):
        data["old_record"] = written.old
    return data


def without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


# --- realtime-js through client.mjs ----------------------------------------------------------


def require_node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed: {INSTALL_HINT}")
    for package in ("@supabase/realtime-js", "@supabase/supabase-js", "ws"):
        if not (E2E_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(
                f"npm package {package} is missing from tests/e2e/node_modules: {INSTALL_HINT}"
            )
    return node


def binding(event: str = "*", filter: str | None = None) -> dict[str, str]:
    b = {"event": event, "schema": "public", "table": "messages"}
    if filter is not None:
        b["filter"] = filter
    return b


Pred = Callable[[dict[str, Any]], bool]


@dataclass
class JsClient:
    """One ``node client.mjs`` process: a RealtimeClient with its channels."""

    server: RealtimeServer
    channels: list[dict[str, Any]]
    vsn: str = "2.0.0"
    token: str | None = None
    access_token: str | None = None
    lib: str = "realtime-js"
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        node = require_node()
        url = self.server.http_base if self.lib == "supabase-js" else self.server.endpoint
        cmd = [
            node,
            str(CLIENT_MJS),
            "--url",
            url,
            "--token",
            self.token or self.server.token(),
            "--vsn",
            self.vsn,
            "--lib",
            self.lib,
            "--channels",
            json.dumps(self.channels),
            "--trace",
        ]
        if self.access_token is not None:
            cmd += ["--access-token", self.access_token]
        self._cond = threading.Condition()
        self._taken: set[int] = set()
        self._done = False
        self.proc = subprocess.Popen(
            cmd,
            cwd=E2E_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"kind": "raw", "line": line.rstrip("\n")}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    # -- reporting

    def report(self) -> str:
        with self._cond:
            events = list(self.events)
        lines = [f"realtime-js client (vsn {self.vsn}, {self.lib}) events, raw frames included:"]
        for e in events:
            if e.get("kind") == "frame":
                arrow = "C->S" if e["dir"] == "out" else "S->C"
                lines.append(f"  {arrow} {json.dumps(e['data'])[:1500]}")
            else:
                lines.append(f"  {json.dumps(e)[:1500]}")
        if self.stderr:
            lines.append("client stderr:")
            lines += [f"  {s}" for s in self.stderr[-20:]]
        lines.append(self.server.log_tail())
        return "\n".join(lines)

    # -- waiting

    def _check_alive(self) -> None:
        for e in self.events:
            if e.get("kind") == "fatal":
                pytest.fail(f"client.mjs failed: {e['message']}\n{self.report()}")
        if self._done:
            pytest.fail(f"client.mjs exited (rc={self.proc.poll()})\n{self.report()}")

    def wait(self, pred: Pred, what: str, timeout: float = WAIT) -> dict[str, Any]:
        """The first event matching ``pred`` that no earlier ``wait`` returned."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, e in enumerate(self.events):
                    if i not in self._taken and pred(e):
                        self._taken.add(i)
                        return e
                self._check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.report()}")

    def seen(self, pred: Pred) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if pred(e)]

    def assert_none_within(self, pred: Pred, seconds: float, what: str) -> None:
        """Watch for ``seconds``; fail as soon as an event matching ``pred`` appears."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while (left := deadline - time.monotonic()) > 0:
                bad = [e for e in self.events if pred(e)]
                if bad:
                    pytest.fail(f"{what}: {json.dumps(bad[0])}\n{self.report()}")
                self._check_alive()
                self._cond.wait(left)

    def status(self, channel: str, status: str, timeout: float = WAIT) -> dict[str, Any]:
        return self.wait(
            lambda e: e.get("kind") == "status" and e["channel"] == channel,
            f"a subscribe status (expecting {status}) on channel {channel!r}",
            timeout,
        ) | {"expected": status}

    def subscribed(self, channel: str) -> None:
        event = self.status(channel, "SUBSCRIBED")
        if event["status"] != "SUBSCRIBED":
            pytest.fail(
                f"channel {channel!r}: {event['status']} ({event['error']}) instead of "
                f"SUBSCRIBED\n{self.report()}"
            )

    def change(
        self, channel: str, binding: int, kind: str, row_id: int, timeout: float = WAIT
    ) -> dict[str, Any]:
        def match(e: dict[str, Any]) -> bool:
            if e.get("kind") != "change" or e["channel"] != channel or e["binding"] != binding:
                return False
            p = e["payload"]
            return bool(
                p.get("eventType") == kind
                and row_id in ((p.get("new") or {}).get("id"), (p.get("old") or {}).get("id"))
            )

        event = self.wait(
            match, f"{kind} of row {row_id} on {channel!r} binding {binding}", timeout
        )
        payload: dict[str, Any] = event["payload"]
        return payload

    def changes_of(self, channel: str, row_id: int, binding: int | None = None) -> list[Any]:
        def match(e: dict[str, Any]) -> bool:
            if e.get("kind") != "change" or e["channel"] != channel:
                return False
            if binding is not None and e["binding"] != binding:
                return False
            p = e["payload"]
            return row_id in ((p.get("new") or {}).get("id"), (p.get("old") or {}).get("id"))

        return self.seen(match)

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def assert_js_change(
    client: JsClient, payload: dict[str, Any], kind: str, written: Written
) -> None:
    check_commit_timestamp(payload.get("commit_timestamp"), written)
    expected = js_expected(kind, written)
    actual = without(payload, "commit_timestamp")
    if actual != expected:
        pytest.fail(
            f"{kind} payload differs\n  got:      {json.dumps(actual, sort_keys=True)}\n"
            f"  expected: {json.dumps(expected, sort_keys=True)}\n{client.report()}"
        )
