"""The channels of one socket: what each inbound message does. :class:`SocketProtocol`.

Pure: no I/O and no clock; the time comes in as an argument. Messages go in
(:meth:`SocketProtocol.receive`), *actions* come out: outbound :class:`~broadcaster.phoenix.Message`
frames and effects the shell performs. The shell carries the actions out **in order**.

How the shell drives it::

    protocol = SocketProtocol(max_channels=100, max_joins_per_second=100)

    def run(actions):
        for action in actions:
            match action:
                case Message():      send(encode(vsn, action))
                case Subscribe():    # verify action.token (None: the connect token), check
                                     # every binding (action.bindings), add them to the index,
                                     # and only then:
                                     run(protocol.joined(action, claims, problem=None))
                                     # or, token refused:
                                     # run(protocol.join_refused(action, error.join_reason))
                case Unsubscribe():  # remove the bindings of action.serial from the index
                case Reauthorize():  # verify action.access_token, then
                                     run(protocol.reauthorized(action, claims))
                                     # or run(protocol.shutdown(action.topic, error.reason))
                case Disconnect():   # close the socket (after the frames before it)
                case _:              # Broadcast / Presence*: optional, may be ignored

    run(protocol.receive(parse_frame(vsn, frame), now=time.monotonic()))  # per frame
    run(protocol.expire_tokens(time.time()))       # at protocol.next_expiry()
    run(protocol.terminate())                      # when the socket is gone

**SUBSCRIBED means live.** A ``phx_join`` yields a :class:`Subscribe` and no reply. The join
reply (which the client takes as SUBSCRIBED) comes only out of :meth:`SocketProtocol.joined`,
which the shell calls after the bindings are in the subscription index; add them and call
``joined`` with no ``await`` in between, so no change can slip between the two. If the
bindings are unusable (bad filter, unknown table or column), the shell adds none and passes
``problem``: the join still succeeds, then a ``system`` error says why (Supabase does the same).

Every join gets a per-socket ``serial``; effects carry it, so a confirmation that arrives after
the client left or re-joined is recognised as stale (``joined`` then answers with an
:class:`Unsubscribe` that undoes it). Key index entries by the serial, not the client's
``join_ref``, which clients may reuse.
"""

from __future__ import annotations

import bisect
import enum
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeAlias

from broadcaster.auth import Claims, is_opaque_key
from broadcaster.payloads import AccessTokenPayload, JoinPayload, PostgresChange
from broadcaster.phoenix import (
    PHOENIX_TOPIC,
    TOPIC_PREFIX,
    Event,
    Message,
    ReplyStatus,
    phx_close,
    reply_error,
    reply_ok,
    system,
)

__all__ = [
    "PRESENCE_PAYLOAD_NOT_A_MAP",
    "SUBSCRIBED_TO_POSTGRES",
    "TOO_MANY_CHANNELS",
    "TOO_MANY_JOINS",
    "TOPIC_NAME_REQUIRED",
    "UNMATCHED_TOPIC",
    "Action",
    "Broadcast",
    "Channel",
    "ChannelState",
    "Disconnect",
    "Effect",
    "PresenceSync",
    "PresenceTrack",
    "PresenceUntrack",
    "Reauthorize",
    "SocketProtocol",
    "Subscribe",
    "Unsubscribe",
]

TOPIC_NAME_REQUIRED = "TopicNameRequired: You must provide a topic name"
TOO_MANY_CHANNELS = "ChannelRateLimitReached: Too many channels"
TOO_MANY_JOINS = "ClientJoinRateLimitReached: Too many joins per second"
UNMATCHED_TOPIC = "unmatched topic"
PRESENCE_PAYLOAD_NOT_A_MAP = "Presence track payload must be a map"
SUBSCRIBED_TO_POSTGRES = "Subscribed to PostgreSQL"

_POSTGRES_CHANGES = "postgres_changes"  # the extension named in system messages
_SYSTEM = "system"


class ChannelState(enum.Enum):
    """Where a channel is in its life; a channel that left or was shut down is forgotten."""

    JOINING = "joining"  # Subscribe emitted, the shell has not confirmed yet
    JOINED = "joined"  # the join reply went out


@dataclass(frozen=True, slots=True)
class Channel:
    """One joined (or joining) topic of the socket.

    Attributes:
        topic: ``realtime:<name>``.
        serial: unique per join on this socket; effects carry it.
        join_ref: the client's join ref (its ``ref`` when it sent none); replies carry it.
        join_message_ref: the ``ref`` of the ``phx_join``, answered by the join reply.
        bindings: the ``postgres_changes`` bindings, in the order the client sent them.
        broadcast_ack, broadcast_self: ``config.broadcast``'s ``ack`` and ``self``.
        state: see :class:`ChannelState`.
        presence_key: ``config.presence.key``, or a generated one when it is empty.
        presence_enabled: presence is on (configured, or turned on by a ``track``).
        presence_meta: the last tracked presence payload, if any.
        claims: the verified token claims (``None`` until joined).
        access_token: the token the claims come from; ``None``: the socket's connect token.
    """

    topic: str
    serial: int
    join_ref: str | None
    join_message_ref: str | None
    bindings: tuple[PostgresChange, ...] = field(repr=False)
    broadcast_ack: bool
    broadcast_self: bool
    state: ChannelState
    presence_key: str
    presence_enabled: bool
    presence_meta: dict[str, Any] | None = None
    claims: Claims | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Verify the join's token and make its bindings live, then call
    :meth:`SocketProtocol.joined` (or :meth:`SocketProtocol.join_refused`) with this object."""

    topic: str
    serial: int
    join_ref: str | None
    join: JoinPayload = field(repr=False)

    @property
    def bindings(self) -> tuple[PostgresChange, ...]:
        """The bindings to add (each has ``problem`` set if a key has the wrong type)."""
        return self.join.config.postgres_changes

    @property
    def token(self) -> str | None:
        """The JWT to verify; ``None``: use the token the socket connected with."""
        return self.join.token


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Remove the bindings of join ``serial`` (there may be none: then do nothing)."""

    topic: str
    serial: int


@dataclass(frozen=True, slots=True)
class Reauthorize:
    """Verify a refreshed token, then call :meth:`SocketProtocol.reauthorized` with this object,
    or :meth:`SocketProtocol.shutdown` the channel with the error's message."""

    topic: str
    serial: int
    access_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A client broadcast to relay to the topic's other sockets (and this one if
    ``include_self``). ``payload`` is ``{"type": "broadcast", "event", "payload", "meta"?}``."""

    topic: str
    serial: int
    payload: dict[str, Any]
    include_self: bool


@dataclass(frozen=True, slots=True)
class PresenceTrack:
    """Track (or update) this channel's presence under ``key`` with ``meta``."""

    topic: str
    serial: int
    key: str
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PresenceUntrack:
    """Stop tracking this channel's presence under ``key``."""

    topic: str
    serial: int
    key: str


@dataclass(frozen=True, slots=True)
class PresenceSync:
    """Send the topic's ``presence_state`` now (``phoenix.presence_state(topic, {})`` when the
    server keeps no presence); clients ignore presence diffs until they get one."""

    topic: str
    serial: int


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the socket once the frames before this action are sent."""

    reason: str


Effect: TypeAlias = (
    Subscribe
    | Unsubscribe
    | Reauthorize
    | Broadcast
    | PresenceTrack
    | PresenceUntrack
    | PresenceSync
    | Disconnect
)
Action: TypeAlias = Message | Effect


def _new_presence_key() -> str:
    return str(uuid.uuid4())


class SocketProtocol:
    """The channel state of one socket.

    Args:
        max_channels: channels a socket may have at once (Supabase default 100).
        max_joins_per_second: joins accepted in any one-second window (Supabase default 100);
            one more is refused and the socket disconnected, as Supabase does.
        presence_key_factory: makes a presence key for a join that gave none.

    Raises:
        ValueError: a limit below 1.
    """

    __slots__ = (
        "_channels",
        "_joins",
        "_new_key",
        "_serial",
        "max_channels",
        "max_joins_per_second",
    )

    def __init__(
        self,
        *,
        max_channels: int = 100,
        max_joins_per_second: int = 100,
        presence_key_factory: Callable[[], str] = _new_presence_key,
    ) -> None:
        if max_channels < 1 or max_joins_per_second < 1:
            raise ValueError("channel and join limits must be at least 1")
        self.max_channels = max_channels
        self.max_joins_per_second = max_joins_per_second
        self._new_key = presence_key_factory
        self._channels: dict[str, Channel] = {}
        # Times of the joins in the last second (a list: at most max_joins_per_second short,
        # and an empty list costs a tenth of an empty deque on each of many sockets).
        self._joins: list[float] = []
        self._serial = 0

    @property
    def channels(self) -> Mapping[str, Channel]:
        """The socket's channels by topic (read-only)."""
        return MappingProxyType(self._channels)

    # --- input ----------------------------------------------------------------------------

    def receive(self, message: Message, now: float) -> list[Action]:
        """Handle one inbound message.

        Args:
            message: a parsed client message.
            now: seconds on any clock that never goes back (only the join rate uses it).
        """
        if message.event == Event.PHX_JOIN:
            return self._join(message, now)
        if message.topic == PHOENIX_TOPIC and message.event == Event.HEARTBEAT:
            return [reply_ok(message.join_ref, message.ref, PHOENIX_TOPIC)]
        channel = self._channels.get(message.topic)
        if channel is None:
            return [reply_error(message.join_ref, message.ref, message.topic, UNMATCHED_TOPIC)]
        handler = _CHANNEL_EVENTS.get(message.event)
        if handler is None:  # Supabase ignores events it does not know
            return []
        return handler(self, channel, message)

    def _join(self, message: Message, now: float) -> list[Action]:
        topic, ref = message.topic, message.ref
        join_ref = message.join_ref if message.join_ref is not None else ref
        if not topic.startswith(TOPIC_PREFIX):  # Phoenix has no channel for it
            return [reply_error(message.join_ref, ref, topic, UNMATCHED_TOPIC)]
        actions: list[Action] = []
        old = self._channels.pop(topic, None)
        if old is not None:  # Phoenix closes the existing channel, then joins again
            actions += (Unsubscribe(topic, old.serial), phx_close(topic, old.join_ref))
        if topic == TOPIC_PREFIX:
            actions.append(reply_error(join_ref, ref, topic, TOPIC_NAME_REQUIRED))
            return actions
        joins = self._joins
        if joins and joins[0] <= now - 1.0:
            del joins[: bisect.bisect_right(joins, now - 1.0)]
        if len(self._joins) >= self.max_joins_per_second:
            actions += (
                reply_error(join_ref, ref, topic, TOO_MANY_JOINS),
                Disconnect(TOO_MANY_JOINS),
            )
            return actions
        self._joins.append(now)
        if len(self._channels) >= self.max_channels:
            actions.append(reply_error(join_ref, ref, topic, TOO_MANY_CHANNELS))
            return actions
        join = JoinPayload.model_validate(message.payload)
        self._serial += 1
        presence = join.config.presence
        channel = Channel(
            topic=topic,
            serial=self._serial,
            join_ref=join_ref,
            join_message_ref=ref,
            bindings=join.config.postgres_changes,
            broadcast_ack=join.config.broadcast.ack,
            broadcast_self=join.config.broadcast.self_,
            state=ChannelState.JOINING,
            presence_key=presence.key or self._new_key(),
            presence_enabled=presence.enabled,
            access_token=join.token,
        )
        self._channels[topic] = channel
        actions.append(Subscribe(topic, channel.serial, join_ref, join))
        return actions

    def _leave(self, channel: Channel, message: Message) -> list[Action]:
        del self._channels[channel.topic]
        return [
            Unsubscribe(channel.topic, channel.serial),
            reply_ok(channel.join_ref, message.ref, channel.topic),
            phx_close(channel.topic, channel.join_ref),
        ]

    def _access_token(self, channel: Channel, message: Message) -> list[Action]:
        # Ignored as Supabase does: null, an sb_ key, the current token; and before the join
        # is confirmed (the shell is verifying the join's token right now).
        token = AccessTokenPayload.model_validate(message.payload).access_token
        if (
            token is None
            or is_opaque_key(token)
            or token == channel.access_token
            or channel.state is not ChannelState.JOINED
        ):
            return []
        return [Reauthorize(channel.topic, channel.serial, token)]

    def _broadcast(self, channel: Channel, message: Message) -> list[Action]:
        actions: list[Action] = [
            Broadcast(channel.topic, channel.serial, message.payload, channel.broadcast_self)
        ]
        if channel.broadcast_ack:
            actions.append(reply_ok(channel.join_ref, message.ref, channel.topic))
        return actions

    def _presence(self, channel: Channel, message: Message) -> list[Action]:
        topic, serial = channel.topic, channel.serial
        ok = reply_ok(channel.join_ref, message.ref, topic)
        event = message.payload.get("event")
        if not isinstance(event, str):
            return [ok]
        event = event.lower()
        if event == "track":
            meta = message.payload.get("payload", {})
            if not isinstance(meta, dict):
                return [
                    reply_error(channel.join_ref, message.ref, topic, PRESENCE_PAYLOAD_NOT_A_MAP)
                ]
            if meta == channel.presence_meta:  # an identical track is a no-op
                return [ok]
            actions: list[Action] = [PresenceTrack(topic, serial, channel.presence_key, meta), ok]
            if not channel.presence_enabled and channel.state is ChannelState.JOINED:
                actions.append(PresenceSync(topic, serial))  # track turned presence on
            self._channels[topic] = replace(channel, presence_enabled=True, presence_meta=meta)
            return actions
        if event == "untrack":
            self._channels[topic] = replace(channel, presence_meta=None)
            return [PresenceUntrack(topic, serial, channel.presence_key), ok]
        return [reply_error(channel.join_ref, message.ref, topic)]  # unknown presence event

    # --- confirmations from the shell -----------------------------------------------------

    def _pending(self, effect: Subscribe | Reauthorize) -> Channel | None:
        channel = self._channels.get(effect.topic)
        return channel if channel is not None and channel.serial == effect.serial else None

    def joined(
        self, request: Subscribe, claims: Claims, problem: str | None = None
    ) -> list[Action]:
        """The shell verified the token and made the bindings live: release the join reply.

        Args:
            request: the :class:`Subscribe` being confirmed.
            claims: the verified claims of the join's token.
            problem: why the bindings could not be subscribed (none were added); sent as a
                ``system`` error after the (successful) join reply.

        Returns:
            The join reply (``postgres_changes`` echoes every binding with its ``id``), then a
            ``system`` message if there are bindings or a problem, then :class:`PresenceSync`
            if presence is on. For a stale request (the client left or joined again): an
            :class:`Unsubscribe` that undoes what the shell just added.

        Raises:
            ValueError: ``request`` was already confirmed (a bug in the shell).
        """
        channel = self._pending(request)
        if channel is None:
            return [Unsubscribe(request.topic, request.serial)]
        if channel.state is not ChannelState.JOINING:
            raise ValueError(f"join {request.serial} of {request.topic!r} is already confirmed")
        channel = replace(channel, state=ChannelState.JOINED, claims=claims)
        self._channels[channel.topic] = channel
        topic = channel.topic
        response = {"postgres_changes": [binding.reply_entry for binding in channel.bindings]}
        actions: list[Action] = [
            reply_ok(channel.join_ref, channel.join_message_ref, topic, response)
        ]
        if problem is not None:
            actions.append(system(topic, _POSTGRES_CHANGES, ReplyStatus.ERROR, problem))
        elif channel.bindings:
            actions.append(system(topic, _POSTGRES_CHANGES, ReplyStatus.OK, SUBSCRIBED_TO_POSTGRES))
        if channel.presence_enabled:
            actions.append(PresenceSync(topic, channel.serial))
        return actions

    def join_refused(self, request: Subscribe, reason: str) -> list[Action]:
        """The shell refused the join (e.g. ``InvalidJWTToken: Token has expired 3 seconds
        ago``): the join error reply, nothing for a stale request.

        Supabase waits 5 s before sending a join error; the shell may delay it too.
        """
        channel = self._pending(request)
        if channel is None or channel.state is not ChannelState.JOINING:
            return []
        del self._channels[channel.topic]
        return [reply_error(channel.join_ref, channel.join_message_ref, channel.topic, reason)]

    def reauthorized(self, request: Reauthorize, claims: Claims) -> list[Action]:
        """The refreshed token verified: the channel now runs on ``claims``. No output."""
        channel = self._pending(request)
        if channel is not None:
            self._channels[channel.topic] = replace(
                channel, claims=claims, access_token=request.access_token
            )
        return []

    # --- server-initiated -----------------------------------------------------------------

    def shutdown(self, topic: str, message: str) -> list[Action]:
        """Close a channel from the server side: ``system`` error (extension ``system``) then
        ``phx_close``. The client does not rejoin by itself. Nothing if ``topic`` is unknown."""
        channel = self._channels.pop(topic, None)
        if channel is None:
            return []
        return [
            Unsubscribe(topic, channel.serial),
            system(topic, _SYSTEM, ReplyStatus.ERROR, message),
            phx_close(topic, channel.join_ref),
        ]

    def expire_tokens(self, now: float, leeway: float = 0.0) -> list[Action]:
        """Shut down every channel whose token has expired at Unix time ``now``, with
        Supabase's ``Token has expired N seconds ago``.

        Args:
            now: Unix time in seconds.
            leeway: the verifier's leeway: a token stays valid that long after ``exp``.
        """
        actions: list[Action] = []
        for topic, channel in list(self._channels.items()):
            claims = channel.claims
            if claims is not None and claims.exp + leeway <= now:
                seconds = math.floor(now - claims.exp)
                actions += self.shutdown(topic, f"Token has expired {seconds} seconds ago")
        return actions

    def next_expiry(self) -> float | None:
        """The earliest ``exp`` of the joined channels' tokens (Unix time), or ``None``."""
        expiries = [c.claims.exp for c in self._channels.values() if c.claims is not None]
        return min(expiries, default=None)

    def terminate(self) -> list[Action]:
        """The socket is gone: an :class:`Unsubscribe` for every channel, which are forgotten."""
        actions: list[Action] = [Unsubscribe(c.topic, c.serial) for c in self._channels.values()]
        self._channels.clear()
        return actions


_Handler: TypeAlias = Callable[[SocketProtocol, Channel, Message], list[Action]]

_CHANNEL_EVENTS: dict[str, _Handler] = {
    Event.PHX_LEAVE: SocketProtocol._leave,
    Event.ACCESS_TOKEN: SocketProtocol._access_token,
    Event.BROADCAST: SocketProtocol._broadcast,
    Event.PRESENCE: SocketProtocol._presence,
}
"""What a message on a known topic does; other events are ignored (as Supabase does)."""
