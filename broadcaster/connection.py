"""One client socket, driven: frames in → :class:`~broadcaster.channel.SocketProtocol` → actions
out. :class:`RealtimeConnection`.

The WebSocket itself is behind the small :class:`WebSocket` protocol (``ws_server`` adapts the
websockets library to it), so this module imports no network library. Per socket it runs:

- a reader loop (:meth:`RealtimeConnection.run`): parses each frame with
  :func:`~broadcaster.phoenix.parse_frame`, feeds the channel state machine and performs its
  actions **in order**; a malformed frame is logged and ignored, never fatal;
- a write per event-loop iteration that has something to send: replies, system messages and
  change frames share the socket's :class:`~broadcaster.outbox.Outbox` (so their order is kept);
  when the first frame is queued the connection asks the server's :class:`Flusher` to write it,
  and at the end of the loop iteration everything queued by then goes out in one write. No task
  per socket waits to write;
- a token-expiry timer at :meth:`~broadcaster.channel.SocketProtocol.next_expiry`;
- an idle timeout: no frame at all for ``idle_timeout`` seconds closes the socket (Phoenix's
  60 s; clients heartbeat every 25 s).

**SUBSCRIBED means live**: a join's bindings are added to the hub and
:meth:`~broadcaster.channel.SocketProtocol.joined` is called with no ``await`` in between, and the
join reply is queued in the same outbox as every later change frame.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from broadcaster import phoenix
from broadcaster.auth import AuthError, Claims, Verifier
from broadcaster.bindings import ColumnLookup, resolve
from broadcaster.channel import (
    Action,
    Broadcast,
    Disconnect,
    PresenceSync,
    Reauthorize,
    SocketProtocol,
    Subscribe,
    Unsubscribe,
)
from broadcaster.errors import ProtocolError
from broadcaster.hub import Hub
from broadcaster.outbox import CloseRequest, Frame, Outbox

__all__ = [
    "IDLE_CLOSE_CODE",
    "BroadcastRelay",
    "Flusher",
    "NO_AUTH_CLAIMS",
    "TOO_MANY_MESSAGES",
    "ConnectionLimits",
    "RealtimeConnection",
    "WebSocket",
]

log = logging.getLogger(__name__)

TOO_MANY_MESSAGES = "Too many messages per second"
IDLE_CLOSE_CODE = 1000
POLICY_CLOSE_CODE = 1008
NO_AUTH_CLAIMS = Claims(role="anon", exp=math.inf, sub=None, raw={"role": "anon"})
"""The claims every channel gets when the server runs without auth (``--no-auth``)."""


class _ConnectionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with the connection id."""

    def process(self, msg: object, kwargs: Any) -> tuple[object, Any]:
        return f"[conn {self.extra['conn'] if self.extra else '?'}] {msg}", kwargs


class WebSocket(Protocol):
    """What a connection needs of its WebSocket."""

    async def recv(self) -> str | bytes | None:
        """The next frame (``str`` text, ``bytes`` binary), ``None`` once the socket closed."""
        ...

    def write(self, frames: list[Frame]) -> int:
        """Send text frames now, in order, without waiting; return the bytes the transport
        still holds unsent afterwards, or -1 if the socket is closed (nothing was sent)."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close (handshake, bounded in time; aborts the TCP connection when it runs out)."""
        ...


class BroadcastRelay:
    """Client broadcasts between the sockets of this process that joined the same topic.

    Payloads go out as JSON text (accepted by 1.0.0 and 2.0.0 clients); a broadcast whose payload
    is raw bytes (binary kind 3 with encoding 0) is not relayed.
    """

    __slots__ = ("_members",)

    def __init__(self) -> None:
        self._members: dict[str, dict[RealtimeConnection, None]] = {}

    def join(self, topic: str, member: RealtimeConnection) -> None:
        """``member`` receives the topic's broadcasts."""
        self._members.setdefault(topic, {})[member] = None

    def leave(self, topic: str, member: RealtimeConnection) -> None:
        """``member`` no longer receives the topic's broadcasts."""
        members = self._members.get(topic)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._members[topic]

    def send(
        self, sender: RealtimeConnection, topic: str, payload: dict[str, Any], include_self: bool
    ) -> None:
        """Queue ``payload`` (``{"type": "broadcast", "event", "payload"}``) for the topic's
        members (the sender only with ``include_self``)."""
        message = phoenix.push(topic, phoenix.Event.BROADCAST, payload)
        frames: dict[phoenix.Vsn, str] = {}
        for member in list(self._members.get(topic, ())):
            if member is sender and not include_self:
                continue
            frame = frames.get(member.vsn)
            if frame is None:
                try:
                    frame = frames[member.vsn] = phoenix.encode(member.vsn, message)
                except (TypeError, ValueError):
                    sender.log.info("not relaying a broadcast whose payload is not JSON")
                    return
            member.outbox.put(frame)


class Flusher:
    """Writes, once per event-loop iteration, every connection that queued frames in it.

    One per server: whatever runs in a loop iteration (the hub handling a batch, a socket's
    reader answering a frame) only queues; the first queued frame of a connection adds it here,
    and one callback at the end of the iteration writes each such connection once.
    """

    __slots__ = ("_dirty",)

    def __init__(self) -> None:
        self._dirty: list[RealtimeConnection] = []

    def mark(self, connection: RealtimeConnection) -> None:
        """Write ``connection`` at the end of this loop iteration."""
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self._dirty.append(connection)

    def flush(self) -> None:
        """Write every marked connection now."""
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            try:
                connection.flush()
            except Exception:  # our bug: never let one socket stop the others' writes
                connection.log.exception("writing to the socket failed")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-socket limits; defaults are Supabase's."""

    max_channels: int = 100
    max_joins_per_second: int = 100
    max_events_per_second: int = 100
    idle_timeout: float = 60.0
    buffer_bytes: int = 4 * 1_048_576


class RealtimeConnection:
    """The server side of one client socket.

    Args:
        ws: the socket.
        vsn: its serializer.
        hub: where bindings go.
        lookup: table columns, for binding filters.
        verifier: checks join tokens; ``None`` accepts every channel (no auth).
        token: the token the socket connected with (verified at the upgrade), if any.
        limits: see :class:`ConnectionLimits`.
        relay: where client broadcasts go (``None``: they are dropped).
        flusher: the server's :class:`Flusher` (by default one of the connection's own).
        conn_id: a number for log lines.
    """

    def __init__(
        self,
        ws: WebSocket,
        vsn: phoenix.Vsn,
        *,
        hub: Hub,
        lookup: ColumnLookup,
        verifier: Verifier | None,
        token: str | None,
        limits: ConnectionLimits = ConnectionLimits(),  # noqa: B008 - frozen
        relay: BroadcastRelay | None = None,
        flusher: Flusher | None = None,
        conn_id: int = 0,
    ) -> None:
        self._relay = relay
        self._ws = ws
        self._vsn = vsn
        self._hub = hub
        self._lookup = lookup
        self._verifier = verifier
        self._token = token
        self._limits = limits
        self.conn_id = conn_id
        self.log = _ConnectionLog(log, {"conn": conn_id})
        self._debug = log.isEnabledFor(logging.DEBUG)
        self.protocol = SocketProtocol(
            max_channels=limits.max_channels, max_joins_per_second=limits.max_joins_per_second
        )
        self._flusher = flusher if flusher is not None else Flusher()
        self.outbox = Outbox(limits.buffer_bytes, self._overflowed, self._ready)
        self._closer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._window_start = 0.0
        self._window_count = 0
        self._done = False
        self._closed: asyncio.Future[None] | None = None  # made when someone waits

    @property
    def vsn(self) -> phoenix.Vsn:
        """The socket's serializer."""
        return self._vsn

    def deliver(self, frame: bytes) -> None:
        """Queue a change frame (from the hub); never waits."""
        self.outbox.put(frame)

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued are sent (server drain)."""
        self.outbox.finish(code, reason)

    async def wait_closed(self) -> None:
        """Wait until :meth:`run` has finished (the socket is closed and unsubscribed)."""
        if self._done:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    # --- the socket's life ---------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the socket until it closes; everything it subscribed is removed at the end."""
        try:
            await self._read_loop()
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            self._perform_now(self.protocol.terminate())
            if self.outbox.closing is None:
                self.outbox.finish(1000, "")
            self.flush()
            if self._closer is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._closer), 30)
                except TimeoutError:  # pragma: no cover - the socket's close is bounded
                    self.log.warning("socket did not finish closing")
                except Exception:  # pragma: no cover - _close logs its own failures
                    pass
            self._done = True
            if self._closed is not None and not self._closed.done():
                self._closed.set_result(None)

    async def _read_loop(self) -> None:
        while self.outbox.closing is None:
            try:
                async with asyncio.timeout(self._limits.idle_timeout):
                    frame = await self._ws.recv()
            except TimeoutError:
                seconds = self._limits.idle_timeout
                self.log.info("closing idle socket (no message for %g s)", seconds)
                self.outbox.finish(IDLE_CLOSE_CODE, f"idle timeout: no message for {seconds:g} s")
                return
            if frame is None:
                return
            try:
                await self._on_frame(frame)
            except Exception:  # our bug: log it, keep the socket
                self.log.exception("handling a frame failed")

    async def _on_frame(self, frame: str | bytes) -> None:
        try:
            message = phoenix.parse_frame(self._vsn, frame)
        except ProtocolError as exc:
            self.log.info("ignoring malformed frame: %s", exc)
            return
        if self._debug:
            self.log.debug("< %s %s ref=%s", message.topic, message.event, message.ref)
        if not self._within_rate(message):
            return
        await self._perform(self.protocol.receive(message, time.monotonic()))

    def _within_rate(self, message: phoenix.Message) -> bool:
        """Supabase's events-per-second limit; heartbeats and joins (limited on their own) do
        not count. Over it the message is dropped and its channel shut down."""
        if message.topic == phoenix.PHOENIX_TOPIC or message.event == phoenix.Event.PHX_JOIN:
            return True
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        if self._window_count <= self._limits.max_events_per_second:
            return True
        if self._window_count == self._limits.max_events_per_second + 1:
            self.log.warning("over %d messages per second", self._limits.max_events_per_second)
        self._perform_now(self.protocol.shutdown(message.topic, TOO_MANY_MESSAGES))
        return False

    # --- actions -------------------------------------------------------------------------------

    async def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Subscribe):
                await self._subscribe(action)
            else:
                self._perform_now([action])
        self._schedule_expiry()

    def _perform_now(self, actions: list[Action]) -> None:
        """Carry out actions that need no waiting (everything but :class:`Subscribe`)."""
        for action in actions:
            if isinstance(action, phoenix.Message):
                self._send(action)
            elif isinstance(action, Unsubscribe):
                self._hub.remove(self, action.serial)
                current = self.protocol.channels.get(action.topic)
                if self._relay is not None and (current is None or current.serial == action.serial):
                    self._relay.leave(action.topic, self)
            elif isinstance(action, Broadcast):
                if self._relay is not None:
                    self._relay.send(self, action.topic, action.payload, action.include_self)
            elif isinstance(action, Reauthorize):
                self._perform_now(self._reauthorize(action))
            elif isinstance(action, PresenceSync):
                self._send(phoenix.presence_state(action.topic, {}))
            elif isinstance(action, Disconnect):
                self.outbox.finish(POLICY_CLOSE_CODE, action.reason)
            elif isinstance(action, Subscribe):  # pragma: no cover - a bug in the caller
                raise TypeError("Subscribe needs _perform")
            # Presence tracking is not kept: every presence_state is empty.

    def _send(self, message: phoenix.Message) -> None:
        if self._debug:
            self.log.debug("> %s %s ref=%s", message.topic, message.event, message.ref)
        self.outbox.put(phoenix.encode(self._vsn, message))

    def _verify(self, token: str | None) -> Claims:
        if self._verifier is None:
            return NO_AUTH_CLAIMS
        if token is None:
            raise AuthError("No token provided")
        return self._verifier.verify(token, time.time())

    async def _subscribe(self, request: Subscribe) -> None:
        try:
            claims = self._verify(request.token if request.token is not None else self._token)
        except AuthError as exc:
            self.log.info("join of %s refused: %s", request.topic, exc.detail or exc.reason)
            self._perform_now(self.protocol.join_refused(request, exc.join_reason))
            if self._relay is not None and request.topic not in self.protocol.channels:
                self._relay.leave(request.topic, self)
            return
        try:
            bindings, problem = await resolve(request.bindings, self._lookup)
        except Exception as exc:
            self.log.warning("looking up the tables of a join failed: %s", exc)
            bindings, problem = [], f"Unable to subscribe to changes: database error ({exc})"
        # From here to `joined` there is no await: no change can slip between the two.
        if problem is None and bindings:
            try:
                self._hub.add(self, request.serial, request.topic, bindings)
            except ValueError as exc:  # pragma: no cover - a bug (serials are unique)
                bindings, problem = [], str(exc)
        actions = self.protocol.joined(request, claims, problem)
        channel = self.protocol.channels.get(request.topic)
        if self._relay is not None and channel is not None and channel.serial == request.serial:
            self._relay.join(request.topic, self)
        self._perform_now(actions)

    def _reauthorize(self, request: Reauthorize) -> list[Action]:
        try:
            claims = self._verify(request.access_token)
        except AuthError as exc:
            return self.protocol.shutdown(request.topic, exc.reason)
        return self.protocol.reauthorized(request, claims)

    # --- token expiry --------------------------------------------------------------------------

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        expiry = self.protocol.next_expiry()
        if expiry is None or not math.isfinite(expiry):
            return
        leeway = self._verifier.leeway if self._verifier is not None else 0.0
        delay = max(0.0, expiry + leeway - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay + 0.001, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        leeway = self._verifier.leeway if self._verifier is not None else 0.0
        self._perform_now(self.protocol.expire_tokens(time.time(), leeway))
        self._schedule_expiry()

    # --- writing -------------------------------------------------------------------------------

    def _ready(self) -> None:
        self._flusher.mark(self)

    def flush(self) -> None:
        """Write everything queued in one go; once the outbox is closing and empty, start the
        closing handshake."""
        frames = self.outbox.take()
        if frames:
            unsent = self._ws.write(frames)
            if unsent < 0:  # the socket is gone; the reader sees it too
                return
            if not self.outbox.backlog(unsent):
                return  # overflowed: _overflowed started the close
        request = self.outbox.closing
        if request is not None and self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(
                self._ws.close(request.code, request.reason)
            )

    def _overflowed(self, request: CloseRequest) -> None:
        self.log.warning("disconnecting a slow client: %s", request.reason)
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(
                self._ws.close(request.code, request.reason)
            )
