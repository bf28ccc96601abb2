"""The demo page's own reads and writes of ``public.messages`` (``pgcast demo`` only).

``GET /demo/messages?room_id=N`` lists a room's latest messages; ``GET /demo/write?op=insert&
room_id=N&author=A&body=B``, ``op=update&id=I&body=B`` and ``op=delete&id=I`` change them. Both
sit behind the server's token check (``ws_server.Route``), and every value is checked here
(400 with the reason otherwise). The rows' changes then reach the page the normal way, through
capture and the socket: these endpoints never talk to subscribers. Each call uses its own short
connection: the page writes at human speed, and nothing stays open when the demo stops.
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg
import orjson

from broadcaster.ws_server import HttpResult, Route

__all__ = ["MAX_AUTHOR", "MAX_BODY", "routes"]

MAX_AUTHOR: Final = 40
MAX_BODY: Final = 500
MAX_ROOM: Final = 1_000_000
LIST_LIMIT: Final = 50
JSON: Final = "application/json"


class BadRequest(ValueError):
    """A parameter is missing or out of range."""


class Unavailable(RuntimeError):
    """The demo table is missing."""


def _json(status: int, body: object) -> HttpResult:
    return status, JSON, orjson.dumps(body)


def _int(params: dict[str, str], name: str, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        raise BadRequest(f"{name} is required")
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _text(params: dict[str, str], name: str, limit: int) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise BadRequest(f"{name} is required")
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters")
    return value


def _row(record: asyncpg.Record) -> dict[str, Any]:
    row = dict(record)
    row["created_at"] = row["created_at"].isoformat()
    return row


class _Demo:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    async def _run(self, query: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self._dsn)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows
        except asyncpg.UndefinedTableError:
            raise Unavailable(
                "public.messages does not exist: create it (docker/demo-schema.sql) and run"
                " `pgcast tables add public.messages`, or use `pgcast demo`"
            ) from None
        finally:
            await conn.close()

    async def messages(self, params: dict[str, str]) -> HttpResult:
        try:
            room = _int(params, "room_id", 1, MAX_ROOM)
            rows = await self._run(
                "SELECT * FROM (SELECT id, room_id, author, body, created_at FROM public.messages"
                " WHERE room_id = $1 ORDER BY id DESC LIMIT $2) last ORDER BY id",
                room,
                LIST_LIMIT,
            )
        except BadRequest as exc:
            return _json(400, {"error": str(exc)})
        except Unavailable as exc:
            return _json(503, {"error": str(exc)})
        return _json(200, {"messages": [_row(r) for r in rows]})

    async def write(self, params: dict[str, str]) -> HttpResult:
        try:
            op = params.get("op")
            if op == "insert":
                rows = await self._run(
                    "INSERT INTO public.messages (room_id, author, body) VALUES ($1, $2, $3)"
                    " RETURNING id",
                    _int(params, "room_id", 1, MAX_ROOM),
                    _text(params, "author", MAX_AUTHOR),
                    _text(params, "body", MAX_BODY),
                )
            elif op == "update":
                rows = await self._run(
                    "UPDATE public.messages SET body = $2 WHERE id = $1 RETURNING id",
                    _int(params, "id", 1, 2**63 - 1),
                    _text(params, "body", MAX_BODY),
                )
            elif op == "delete":
                rows = await self._run(
                    "DELETE FROM public.messages WHERE id = $1 RETURNING id",
                    _int(params, "id", 1, 2**63 - 1),
                )
            else:
                raise BadRequest("op must be insert, update or delete")
        except BadRequest as exc:
            return _json(400, {"error": str(exc)})
        except Unavailable as exc:
            return _json(503, {"error": str(exc)})
        if not rows:
            return _json(404, {"error": "no such message"})
        return _json(200, {"op": op, "id": rows[0]["id"]})


def routes(dsn: str) -> dict[str, Route]:
    """The demo endpoints on the database ``dsn``."""
    demo = _Demo(dsn)
    return {
        "/demo/messages": Route(demo.messages),
        "/demo/write": Route(demo.write),
    }
