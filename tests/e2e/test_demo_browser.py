"""The demo page in a real headless Chromium (``browser.mjs``: playwright-core driving Debian's
``/usr/bin/chromium``), served by ``pgcast demo --db`` and using the vendored official
realtime-js client.

A row inserted with psycopg appears in the page within a second; after switching rooms, a row of
another room does not; the page's own form inserts, edits and deletes; the filter box shows only
matching events and says why a filter is refused; the indicator goes to "reconnecting" while the
server is down and back to "connected" (and the room live again) when it returns. A screenshot
is saved to ``$PGCAST_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from broadcaster.demo import prepare
from tests.e2e.helpers import E2E_DIR, INSTALL_HINT, REPO, free_port

BROWSER_MJS = E2E_DIR / "browser.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SECRET = "browser-test-secret-at-least-32-bytes-long"
ARTIFACTS = Path(os.environ.get("PGCAST_ARTIFACTS", REPO / "test-artifacts"))


class Browser:
    """``browser.mjs`` as a subprocess: one JSON command per line, one answer per command."""

    def __init__(self) -> None:
        if not (E2E_DIR / "node_modules" / "playwright-core").is_dir():
            pytest.fail(f"playwright-core is not installed: {INSTALL_HINT}")
        if not Path(CHROMIUM).exists():
            pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/install-e2e)")
        node = shutil.which("node")
        assert node is not None, "node is missing (.ci/install-e2e installs it)"
        self.proc = subprocess.Popen(
            [node, str(BROWSER_MJS), "--executable", CHROMIUM],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=E2E_DIR,
        )  # fmt: skip

    def __call__(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            pytest.fail(f"browser driver exited: {self.proc.stderr.read()[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ok(self, cmd: str, **args: Any) -> dict[str, Any]:
        answer = self(cmd, **args)
        assert answer["ok"], f"{cmd} {args}: {answer.get('error')}\npage: {self.page_text()}"
        return answer

    def page_text(self) -> str:
        answer = self("text", selector="body")
        return str(answer.get("value", ""))[:2000]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write('{"cmd":"quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@dataclass
class Demo:
    dsn: str
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGCAST_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broadcaster.cli", "demo", "--db", self.dsn,
             "--port", str(self.port), "--jwt-secret", SECRET],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, "pgcast demo exited"
            assert time.monotonic() < deadline, "pgcast demo did not come up"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def insert(dsn: str, room: int, body: str, author: str = "psql") -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO public.messages (room_id, author, body) VALUES (%s, %s, %s) RETURNING id",
            (room, author, body),
        ).fetchone()
    assert row is not None
    return int(row[0])


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def demo(db: str) -> Iterator[Demo]:
    prepare(db)
    server = Demo(db, free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def page(demo: Demo) -> Iterator[Browser]:
    browser = Browser()
    try:
        browser.ok("goto", url=demo.url)
        browser.ok("waitAttr", selector="#status", name="data-state", value="connected")
        browser.ok("waitAttr", selector="#room-state", name="data-state", value="live")
        yield browser
        # Chromium logs each refused connection attempt while a test has the server down.
        errors = [e for e in browser.ok("errors")["value"] if "ERR_CONNECTION_REFUSED" not in e]
        assert errors == [], errors
    finally:
        browser.close()


def test_rows_appear_live_and_other_rooms_stay_out(demo: Demo, page: Browser) -> None:
    first = unique("from-psql")
    insert(demo.dsn, 1, first)
    started = time.monotonic()
    answer = page("waitText", selector="#messages", text=first, timeout=1000)
    assert answer["ok"], f"row not shown within 1 s of its commit: {answer.get('error')}"
    assert time.monotonic() - started < 1.0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.ok("screenshot", path=str(ARTIFACTS / "demo-page.png"))
    assert (ARTIFACTS / "demo-page.png").stat().st_size > 10_000

    page.ok("select", selector="#room", value="2")
    page.ok("waitText", selector="#room-state", text="live: room_id=eq.2")
    other = unique("room-3-row")
    mine = unique("room-2-row")
    insert(demo.dsn, 3, other)
    insert(demo.dsn, 2, mine)  # committed after `other`: once it shows, `other` had its chance
    page.ok("waitText", selector="#messages", text=mine, timeout=1000)
    shown = page.ok("text", selector="#messages")["value"]
    assert other not in shown and first not in shown, shown


def test_room_list_holds_earlier_rows(demo: Demo, page: Browser) -> None:
    earlier = unique("before-joining")
    insert(demo.dsn, 4, earlier)
    page.ok("select", selector="#room", value="4")
    page.ok("waitText", selector="#messages", text=earlier)


def test_form_inserts_edits_and_deletes(demo: Demo, page: Browser) -> None:
    page.ok("select", selector="#room", value="5")
    page.ok("waitText", selector="#room-state", text="live: room_id=eq.5")
    body = unique("typed-in-the-page")
    page.ok("fill", selector="#author", value="ann")
    page.ok("fill", selector="#body", value=body)
    page.ok("click", selector="#send button")
    page.ok("waitText", selector="#messages", text=body)
    with psycopg.connect(demo.dsn) as conn:
        row = conn.execute(
            "SELECT id, room_id, author FROM public.messages WHERE body = %s", (body,)
        ).fetchone()
    assert row is not None and row[1:] == (5, "ann")
    item = f'#messages li[data-id="{row[0]}"]'

    edited = unique("edited")
    page.ok("click", selector=f"{item} button.edit")
    page.ok("fill", selector=f"{item} input.edit-body", value=edited)
    page.ok("press", selector=f"{item} input.edit-body", key="Enter")
    page.ok("waitText", selector=item, text=edited)
    with psycopg.connect(demo.dsn) as conn:
        stored = conn.execute("SELECT body FROM public.messages WHERE id = %s", (row[0],))
        assert stored.fetchone() == (edited,)

    page.ok("click", selector=f"{item} button.delete")
    deadline = time.monotonic() + 5
    while page.ok("count", selector=item)["value"] != 0:
        assert time.monotonic() < deadline, "the deleted message is still shown"
        time.sleep(0.05)
    with psycopg.connect(demo.dsn) as conn:
        gone = conn.execute("SELECT count(*) FROM public.messages WHERE id = %s", (row[0],))
        assert gone.fetchone() == (0,)


def test_filter_box_shows_only_matching_events(demo: Demo, page: Browser) -> None:
    page.ok("fill", selector="#filter", value="room_id=gt.3,author=eq.bob")
    page.ok("select", selector="#filter-event", value="INSERT")
    page.ok("click", selector="#filter-form button")
    page.ok("waitText", selector="#filter-state", text="live: INSERT room_id=gt.3,author=eq.bob")
    low = unique("room-1-bob")
    other_author = unique("room-7-carl")
    match = unique("room-7-bob")
    insert(demo.dsn, 1, low, author="bob")
    insert(demo.dsn, 7, other_author, author="carl")
    insert(demo.dsn, 7, match, author="bob")
    page.ok("waitText", selector="#events", text=match, timeout=1000)
    events = page.ok("text", selector="#events")["value"]
    assert low not in events and other_author not in events, events
    assert page.ok("count", selector="#events li")["value"] == 1


@pytest.mark.parametrize(
    ("expression", "reason"),
    [("room_id=zz.1", "Error parsing `filter` params"), ("nosuch=eq.1", "nosuch")],
)
def test_filter_box_says_why_a_filter_is_refused(
    demo: Demo, page: Browser, expression: str, reason: str
) -> None:
    page.ok("fill", selector="#filter", value=expression)
    page.ok("click", selector="#filter-form button")
    page.ok("waitAttr", selector="#filter-state", name="data-state", value="error")
    state = page.ok("text", selector="#filter-state")["value"]
    assert state.startswith("refused:") and reason in state, state
    # The room channel on the same socket is unharmed.
    body = unique("still-live")
    insert(demo.dsn, 1, body)
    page.ok("waitText", selector="#messages", text=body, timeout=1000)


def test_indicator_shows_reconnecting_and_recovers(demo: Demo, page: Browser) -> None:
    demo.stop()
    page.ok("waitAttr", selector="#status", name="data-state", value="reconnecting", timeout=10000)
    missed = unique("while-down")
    insert(demo.dsn, 1, missed)
    demo.start()
    page.ok("waitAttr", selector="#status", name="data-state", value="connected", timeout=30000)
    page.ok("waitAttr", selector="#room-state", name="data-state", value="live", timeout=30000)
    # The rejoined room lists what was committed while the server was down, then goes on live.
    page.ok("waitText", selector="#messages", text=missed, timeout=5000)
    after = unique("after-restart")
    insert(demo.dsn, 1, after)
    page.ok("waitText", selector="#messages", text=after, timeout=1000)
