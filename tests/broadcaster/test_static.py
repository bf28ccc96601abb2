"""The demo page's files and endpoints: ``static.lookup`` (pure) and, in a real server on a real
database, ``/``, ``/static/*``, ``/demo/config.json``, ``/demo/messages`` and ``/demo/write``
(token checked, every parameter validated, rows really written)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest

from broadcaster import demo_writes, static
from broadcaster.app import App, AppOptions
from broadcaster.auth import make_token
from broadcaster.config import Settings
from broadcaster.demo import page_routes, prepare
from cdc.embedded import free_port

SECRET = "static-test-secret-at-least-32-bytes"
TOKEN = make_token(SECRET, "anon", ttl=3600)
STATIC_DIR = Path(static.__file__).parent / "static"
E2E_PACKAGE = Path(__file__).resolve().parent.parent / "e2e" / "package.json"


# --- pure --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [("/", "index.html"), ("/index.html", "index.html"), ("/static/demo.js", "demo.js"),
     ("/static/realtime-js.mjs", "realtime-js.mjs"), ("/favicon.ico", "favicon.svg")],
)  # fmt: skip
def test_lookup_serves_the_listed_files(path: str, name: str) -> None:
    status, content_type, body = static.lookup(path)
    assert status == 200
    assert content_type == static.FILES[name]
    assert body == (STATIC_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    ["/static/../static.py", "/static/..%2Fstatic.py", "/static/", "/static/nope.js",
     "/static//etc/passwd", "/static/static/demo.js", "/demo.js", "/index.htm", "/static"],
)  # fmt: skip
def test_lookup_refuses_everything_else(path: str) -> None:
    assert static.lookup(path) == static.NOT_FOUND


def test_every_listed_file_is_shipped() -> None:
    shipped = {p.name for p in STATIC_DIR.iterdir()}
    assert set(static.FILES) <= shipped


def test_page_references_only_listed_files() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    js = (STATIC_DIR / "demo.js").read_text()
    referenced = set(re.findall(r'"/static/([^"]+)"', html)) | set(
        re.findall(r"from '\./([^']+)'", js)
    )
    assert referenced == {"favicon.svg", "demo.css", "demo.js", "realtime-js.mjs"}
    assert referenced <= set(static.FILES)
    assert "http://" not in js and "https://" not in js  # no CDN: the page works offline


def test_vendored_client_is_the_version_the_tests_pin() -> None:
    """The page's realtime-js bundle is the same release the end-to-end tests run."""
    pinned = json.loads(E2E_PACKAGE.read_text())["dependencies"]["@supabase/realtime-js"]
    banner = (STATIC_DIR / "realtime-js.mjs").read_text().splitlines()[0]
    assert banner.startswith(f"/* @supabase/realtime-js {pinned} (MIT)"), banner
    assert "export{" in (STATIC_DIR / "realtime-js.mjs").read_text().replace(" ", "")


# --- in a server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def demo_app(db: str) -> AsyncIterator[App]:
    await asyncio.to_thread(prepare, db)
    settings = Settings(database_url=db, port=0, jwt_secret=SECRET, consumer_name="static_test")
    app = App(settings, AppOptions(pages=True, routes=page_routes(db, TOKEN)))
    await app.start()
    yield app
    await app.stop()


@pytest.fixture(scope="module")
async def plain_app(db: str) -> AsyncIterator[App]:
    await asyncio.to_thread(prepare, db)
    settings = Settings(database_url=db, port=0, jwt_secret=SECRET, consumer_name="plain_test")
    app = App(settings)
    await app.start()
    yield app
    await app.stop()


def get(app: App, path: str, **params: Any) -> tuple[int, str, bytes]:
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    url = f"http://127.0.0.1:{app.server.port}{path}{query}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def aget(app: App, path: str, **params: Any) -> tuple[int, str, bytes]:
    return await asyncio.to_thread(get, app, path, **params)


async def test_page_and_assets_are_served(demo_app: App) -> None:
    status, content_type, body = await aget(demo_app, "/")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert b'<script type="module" src="/static/demo.js">' in body
    status, content_type, body = await aget(demo_app, "/static/realtime-js.mjs")
    assert (status, content_type) == (200, "text/javascript; charset=utf-8")
    assert body == (STATIC_DIR / "realtime-js.mjs").read_bytes()
    assert (await aget(demo_app, "/static/../broadcaster/demo.py"))[0] == 404
    assert (await aget(demo_app, "/health"))[0] == 200


async def test_serve_has_no_page_and_no_demo_endpoints(plain_app: App) -> None:
    for path in ("/", "/static/demo.js", "/demo/config.json", "/demo/write"):
        status, content_type, _ = await aget(plain_app, path, apikey=TOKEN)
        assert (status, content_type) == (404, "application/json"), path


async def test_config_hands_the_page_its_token(demo_app: App) -> None:
    status, _, body = await aget(demo_app, "/demo/config.json")
    assert status == 200
    config = json.loads(body)
    assert config["token"] == TOKEN
    assert (config["schema"], config["table"]) == ("public", "messages")


async def test_writes_need_a_valid_token(demo_app: App) -> None:
    params = {"op": "insert", "room_id": "1", "author": "a", "body": "b"}
    for token in (None, "not-a-jwt", make_token("another-secret-of-at-least-32-bytes", "anon", 60)):
        extra = {} if token is None else {"apikey": token}
        status, _, body = await aget(demo_app, "/demo/write", **params, **extra)
        assert status == 401, body
        assert "error" in json.loads(body)
    expired = make_token(SECRET, "anon", ttl=-10)
    assert (await aget(demo_app, "/demo/messages", room_id=1, apikey=expired))[0] == 401


async def test_insert_update_delete_really_write(demo_app: App, db: str) -> None:
    status, _, body = await aget(
        demo_app, "/demo/write", op="insert", room_id=9, author="zoe", body="hi there",
        apikey=TOKEN,
    )  # fmt: skip
    assert status == 200, body
    row_id = json.loads(body)["id"]
    conn = await asyncpg.connect(db)
    try:
        row = await conn.fetchrow(
            "SELECT room_id, author, body FROM public.messages WHERE id=$1", row_id
        )
        assert tuple(row) == (9, "zoe", "hi there")
        status, _, body = await aget(demo_app, "/demo/messages", room_id=9, apikey=TOKEN)
        assert status == 200
        listed = json.loads(body)["messages"]
        assert [(m["id"], m["author"], m["body"]) for m in listed] == [(row_id, "zoe", "hi there")]

        status, _, _ = await aget(
            demo_app, "/demo/write", op="update", id=row_id, body="edited", apikey=TOKEN
        )
        assert status == 200
        assert (
            await conn.fetchval("SELECT body FROM public.messages WHERE id=$1", row_id) == "edited"
        )

        status, _, _ = await aget(demo_app, "/demo/write", op="delete", id=row_id, apikey=TOKEN)
        assert status == 200
        assert await conn.fetchval("SELECT count(*) FROM public.messages WHERE id=$1", row_id) == 0
        status, _, body = await aget(demo_app, "/demo/write", op="delete", id=row_id, apikey=TOKEN)
        assert status == 404 and json.loads(body) == {"error": "no such message"}
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"op": "drop"}, "op must be insert, update or delete"),
        ({"op": "insert", "author": "a", "body": "b"}, "room_id is required"),
        (
            {"op": "insert", "room_id": "x", "author": "a", "body": "b"},
            "room_id must be an integer",
        ),
        ({"op": "insert", "room_id": "0", "author": "a", "body": "b"}, "room_id must be between"),
        ({"op": "insert", "room_id": "1", "author": " ", "body": "b"}, "author is required"),
        ({"op": "insert", "room_id": "1", "author": "a", "body": "b" * 501}, "body is longer than"),
        ({"op": "update", "id": "1"}, "body is required"),
        ({"op": "delete", "id": "99999999999999999999"}, "id must be between"),
    ],
)
async def test_bad_parameters_get_a_clear_400(
    demo_app: App, db: str, params: dict[str, str], error: str
) -> None:
    conn = await asyncpg.connect(db)
    try:
        before = await conn.fetchval("SELECT count(*) FROM public.messages")
        status, content_type, body = await aget(demo_app, "/demo/write", **params, apikey=TOKEN)
        assert (status, content_type) == (400, "application/json")
        assert json.loads(body)["error"].startswith(error), body
        assert await conn.fetchval("SELECT count(*) FROM public.messages") == before
    finally:
        await conn.close()


# --- `pgcast serve --demo-page` (the docker compose stack) --------------------------------------


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCAST_")}
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


async def test_serve_demo_page_hands_out_a_token_of_its_secret(db: str) -> None:
    await asyncio.to_thread(prepare, db)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCAST_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broadcaster.cli", "serve", "--db", db, "--port", str(port),
        "--jwt-secret", SECRET, "--demo-page",
        env={**env, "PGCAST_CONSUMER_NAME": "serve_demo_page"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60):
            while True:
                try:
                    config = json.loads(await asyncio.to_thread(fetch, base + "/demo/config.json"))
                    break
                except OSError:
                    assert proc.returncode is None, "pgcast serve --demo-page exited"
                    await asyncio.sleep(0.1)
        claims = jwt.decode(config["token"], SECRET, algorithms=["HS256"])
        assert claims["role"] == "anon" and claims["exp"] > time.time() + 86400
        assert b"<title>pgcast demo</title>" in await asyncio.to_thread(fetch, base + "/")
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0


def test_serve_demo_page_refuses_without_a_secret_to_sign_with(db: str, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    out = run_cli("serve", "--db", db, "--port", "0", "--jwks-file", str(jwks), "--demo-page")
    assert out.returncode == 1, out
    assert "--demo-page needs --jwt-secret" in out.stderr
    assert "Traceback" not in out.stderr


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


async def test_writes_without_the_demo_table_say_what_to_do(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        await conn.execute("DROP DATABASE IF EXISTS no_demo_table")
        await conn.execute("CREATE DATABASE no_demo_table")
    finally:
        await conn.close()
    other = re.sub(r"/[^/?]+(\?|$)", r"/no_demo_table\1", db, count=1)
    assert other != db
    routes = demo_writes.routes(other)
    write = {"op": "insert", "room_id": "1", "author": "a", "body": "b"}
    for path, params in (("/demo/write", write), ("/demo/messages", {"room_id": "1"})):
        status, _, body = await routes[path].handler(params)
        assert status == 503
        assert json.loads(body)["error"].startswith("public.messages does not exist")
