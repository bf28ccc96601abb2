"""Errors raised by the delivery package.

Tree::

    BroadcastError
    └── ProtocolError           the peer sent something that is not the Phoenix protocol
                                (an undecodable frame, a wrong shape, an unknown binary kind)

Kept apart on purpose (they predate this tree and are ``ValueError``/``Exception`` subclasses):
``broadcaster.auth.AuthError`` (a token was refused) and ``broadcaster.filters.FilterError`` (a
``postgres_changes`` filter is invalid). Both are the peer's fault and are answered on the
channel, never by closing the socket.

Our own bugs (an outbound topic longer than a binary frame can carry, a payload that is not
JSON) raise ``ValueError``/``TypeError`` and are never dressed up as a :class:`ProtocolError`.
"""

from __future__ import annotations

__all__ = ["BroadcastError", "ProtocolError"]


class BroadcastError(Exception):
    """Base class of every error defined by :mod:`broadcaster`."""


class ProtocolError(BroadcastError):
    """A frame from the peer is not valid Phoenix (``vsn`` 1.0.0 or 2.0.0).

    The peer misbehaved: the shell drops the frame or closes the socket (Phoenix closes it).
    ``str(error)`` says what was wrong, without echoing the frame.
    """
