"""The WebSocket server: the websockets library (asyncio API) around
:class:`~broadcaster.connection.RealtimeConnection`. :class:`RealtimeServer`.

The only module that imports websockets. It serves:

- ``/realtime/v1/websocket`` and ``/socket/websocket``: the Supabase Realtime socket. At the HTTP
  upgrade (websockets' ``process_request`` hook) it reads ``vsn`` (default ``1.0.0``; another
  value is refused with 400) and the token (``apikey`` query parameter or ``x-api-key`` header)
  and verifies it: a missing, malformed or expired token is refused with 401 and a JSON body
  ``{"error": "..."}``, as Supabase does, unless the server runs without auth;
- ``GET /health``: JSON with the database's reachability, the capture lag, open sockets and
  subscriptions (200 when healthy, else 503);
- with ``pages`` on (``pgcast demo``): the demo page, ``/`` and ``/static/<file>`` (``static``);
- extra ``routes`` given by the composition root (``pgcast demo``'s config and writes), each
  behind the same token check as the socket when the route asks for it;
- anything else: 404 JSON.

Client broadcasts are relayed between the sockets of this process (:class:`BroadcastRelay`).

Frames to clients are written straight to the transport, each socket's frames of one event-loop
iteration in one write (``connection.Flusher``, ``wsframe``); websockets keeps the handshake,
reading, control frames and closing. permessage-deflate is off unless asked for (it makes fan-out
~3.4× slower and costs ~45 KiB per socket, ``python-tech.md`` §4). Frames larger than
``max_frame_bytes`` close the socket (1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from broadcaster import phoenix, static
from broadcaster.auth import AuthError, Verifier
from broadcaster.bindings import DatabaseProbe
from broadcaster.connection import BroadcastRelay, ConnectionLimits, Flusher, RealtimeConnection
from broadcaster.errors import ProtocolError
from broadcaster.hub import Hub
from broadcaster.outbox import Frame
from broadcaster.wsframe import text_header

__all__ = ["HEALTH_PATH", "SOCKET_PATHS", "HttpResult", "RealtimeServer", "Route", "ServerOptions"]

log = logging.getLogger(__name__)

SOCKET_PATHS: Final = frozenset({"/realtime/v1/websocket", "/socket/websocket"})
HEALTH_PATH: Final = "/health"
GOING_AWAY: Final = 1001


HttpResult = tuple[int, str, bytes]
"""An HTTP answer: status code, content type, body."""


@dataclass(frozen=True, slots=True)
class Route:
    """An extra ``GET`` endpoint.

    Attributes:
        handler: called with the query parameters (the first value of each).
        token: the ``apikey`` query parameter must pass the server's token check (401 if not).
    """

    handler: Callable[[dict[str, str]], Awaitable[HttpResult]]
    token: bool = True


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How the server listens and what it allows.

    Attributes:
        host, port: where to listen (port 0: any free port, see :attr:`RealtimeServer.port`).
        compression: negotiate permessage-deflate (off by default).
        max_frame_bytes: largest inbound frame.
        write_limit: the transport write buffer's high and low water marks, in bytes.
        close_timeout: seconds a closing handshake may take before the TCP connection is aborted.
        limits: per-socket limits.
        pages: serve the demo page (``static``).
        routes: extra endpoints by exact path.
    """

    host: str = "127.0.0.1"
    port: int = 4000
    compression: bool = False
    max_frame_bytes: int = 5_000_000
    write_limit: tuple[int, int] = (64 * 1024, 16 * 1024)
    close_timeout: float = 5.0
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    pages: bool = False
    routes: Mapping[str, Route] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Upgrade:
    vsn: phoenix.Vsn
    token: str | None


class _Socket:
    """websockets' connection as a :class:`~broadcaster.connection.WebSocket`."""

    __slots__ = ("_close_timeout", "_raw", "_ws")

    def __init__(self, ws: ServerConnection, close_timeout: float) -> None:
        self._ws = ws
        self._close_timeout = close_timeout
        self._raw = not ws.protocol.extensions

    async def recv(self) -> str | bytes | None:
        try:
            return await self._ws.recv()
        except ConnectionClosed:
            return None

    def write(self, frames: list[Frame]) -> int:
        ws = self._ws
        if ws.protocol.state is not State.OPEN:
            return -1
        transport = ws.transport
        if self._raw:
            # No extension: frames are plain unmasked text frames, built here (``wsframe``).
            parts: list[bytes] = []
            for frame in frames:
                payload = frame.encode() if isinstance(frame, str) else frame
                parts.append(text_header(len(payload)))
                parts.append(payload)
            transport.write(b"".join(parts))
        else:  # permessage-deflate: the library frames and compresses them
            protocol = ws.protocol
            for frame in frames:
                protocol.send_text(frame.encode() if isinstance(frame, str) else frame)
            for data in protocol.data_to_send():
                transport.write(data)
        return transport.get_write_buffer_size()

    async def close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._ws.close(code, reason)
        except TimeoutError:  # e.g. a client that stopped reading: its buffers stay full
            self._ws.transport.abort()


def _json_response(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    response = connection.respond(status, json.dumps(body))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def _response(result: HttpResult) -> Response:
    status, content_type, body = result
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-cache"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Connection"] = "close"
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class RealtimeServer:
    """Listens for clients and runs one :class:`RealtimeConnection` per socket.

    Args:
        hub: the fan-out the sockets subscribe to.
        catalog: table columns, also the database health check.
        verifier: token checks; ``None`` runs without auth.
        options: see :class:`ServerOptions`.
        capture_running: whether the capture loop is alive (for ``/health``).
    """

    def __init__(
        self,
        hub: Hub,
        catalog: DatabaseProbe,
        verifier: Verifier | None,
        options: ServerOptions = ServerOptions(),  # noqa: B008 - frozen
        *,
        capture_running: Callable[[], bool] = lambda: True,
    ) -> None:
        self.hub = hub
        self.catalog = catalog
        self.verifier = verifier
        self.options = options
        self.capture_running = capture_running
        self.connections: set[RealtimeConnection] = set()
        self.relay = BroadcastRelay()
        self.flusher = Flusher()
        self._upgrades: weakref.WeakKeyDictionary[ServerConnection, _Upgrade] = (
            weakref.WeakKeyDictionary()
        )
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._empty = asyncio.Event()  # set while no socket is open
        self._empty.set()

    @property
    def port(self) -> int:
        """The port actually listened on.

        Raises:
            RuntimeError: the server is not started.
        """
        if self._server is None:
            raise RuntimeError("the server is not started")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    async def start(self) -> None:
        """Start listening."""
        options = self.options
        self._server = await serve(
            self._handle,
            options.host,
            options.port,
            process_request=self._process_request,
            compression="deflate" if options.compression else None,
            max_size=options.max_frame_bytes,
            write_limit=options.write_limit,
            close_timeout=options.close_timeout,
            ping_interval=None,  # the idle timeout (heartbeats) finds dead clients
            server_header="pgcast",
        )

    async def drain(self) -> None:
        """Stop accepting, send every socket what it has queued and a close frame (1001), then
        stop. Bounded by twice the close timeout."""
        server = self._server
        if server is None:
            return
        server.close(close_connections=False)
        for connection in list(self.connections):
            connection.close(GOING_AWAY, "server shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * self.options.close_timeout):
                await self._empty.wait()
        server.close(close_connections=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.close_timeout + 1):
                await server.wait_closed()

    # --- HTTP ----------------------------------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        url = urlsplit(request.path)
        if url.path == HEALTH_PATH:
            status, body = await self.health()
            return _json_response(connection, status, body)
        if url.path not in SOCKET_PATHS:
            return await self._http(connection, url.path, url.query)
        query = parse_qs(url.query)
        try:
            vsn = phoenix.Vsn.from_query(query.get("vsn", [None])[0])
        except ProtocolError as exc:
            return _json_response(connection, http.HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        token = query.get("apikey", [None])[0] or request.headers.get("x-api-key") or None
        if self.verifier is not None:
            if token is None:
                return _json_response(
                    connection, http.HTTPStatus.UNAUTHORIZED, {"error": "No api key provided"}
                )
            try:
                self.verifier.verify(token, time.time())
            except AuthError as exc:
                log.info("refused a socket: %s", exc.detail or exc.reason)
                return _json_response(
                    connection, http.HTTPStatus.UNAUTHORIZED, {"error": exc.http_message}
                )
        self._upgrades[connection] = _Upgrade(vsn, token)
        return None

    async def _http(self, connection: ServerConnection, path: str, query: str) -> Response:
        """A plain HTTP ``GET`` that is not the socket nor ``/health``."""
        route = self.options.routes.get(path)
        if route is None:
            if self.options.pages:
                return _response(static.lookup(path))
            return _json_response(connection, http.HTTPStatus.NOT_FOUND, {"error": "Not found"})
        params = {key: values[0] for key, values in parse_qs(query).items()}
        if route.token and self.verifier is not None:
            try:
                self.verifier.verify(params.get("apikey", ""), time.time())
            except AuthError as exc:
                return _json_response(
                    connection, http.HTTPStatus.UNAUTHORIZED, {"error": exc.http_message}
                )
        try:
            return _response(await route.handler(params))
        except Exception:
            log.exception("%s failed", path)
            return _json_response(
                connection, http.HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"}
            )

    async def health(self) -> tuple[int, dict[str, Any]]:
        """The ``/health`` status code and body."""
        reachable = await self.catalog.ping()
        running = self.capture_running()
        stats = self.hub.stats
        lag = stats.lag_seconds()
        body: dict[str, Any] = {
            "status": "ok" if reachable and running else "degraded",
            "database": {"reachable": reachable},
            "capture": {
                "running": running,
                "lag_seconds": None if lag is None else round(lag, 6),
                "batches": stats.batches,
                "changes": stats.changes,
                "position": None if stats.position is None else stats.position.seq,
            },
            "sockets": len(self.connections),
            "subscriptions": self.hub.subscriptions,
            "bindings": len(self.hub),
        }
        healthy = reachable and running
        status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
        return status, body

    # --- sockets -------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        upgrade = self._upgrades.pop(ws, None)
        # The handshake's request and response (headers) are not needed any more: on many
        # idle sockets they are about 2 KiB each.
        for message in (ws.request, ws.response):
            if message is not None:
                message.headers.clear()
        if upgrade is None:  # pragma: no cover - process_request always records one
            await ws.close(1011, "internal error")
            return
        connection = RealtimeConnection(
            _Socket(ws, self.options.close_timeout),
            upgrade.vsn,
            hub=self.hub,
            lookup=self.catalog,
            verifier=self.verifier,
            token=upgrade.token,
            limits=self.options.limits,
            relay=self.relay,
            flusher=self.flusher,
            conn_id=next(self._ids),
        )
        self.connections.add(connection)
        self._empty.clear()
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            if not self.connections:
                self._empty.set()
