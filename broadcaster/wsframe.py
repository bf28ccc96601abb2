"""Server-to-client WebSocket text frames (RFC 6455 §5.2), built directly.

Pure: bytes in, bytes out. A frame from a server is never masked, so the same bytes serve every
socket that is sent the same payload; the connection's writer puts the header before each queued
payload and hands a socket all that it has in one transport write. Frames are final
(``FIN``), uncompressed text frames (opcode 1): the writer uses this only when no extension
(permessage-deflate) was negotiated.
"""

from __future__ import annotations

from typing import Final

__all__ = ["text_frame", "text_header"]

_FIN_TEXT: Final = 0x81
_SMALL: Final = tuple(bytes((_FIN_TEXT, n)) for n in range(126))
_MAX_16: Final = 0xFFFF


def text_header(length: int) -> bytes:
    """The header of an unmasked final text frame whose payload is ``length`` bytes.

    Raises:
        ValueError: ``length`` is negative or does not fit 63 bits.
    """
    if length < 126:
        if length < 0:
            raise ValueError("a payload length cannot be negative")
        return _SMALL[length]
    if length <= _MAX_16:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    if length >= 1 << 63:
        raise ValueError("a payload length must fit in 63 bits")
    return b"\x81\x7f" + length.to_bytes(8, "big")


def text_frame(payload: bytes) -> bytes:
    """``payload`` (UTF-8 text) as one complete unmasked final text frame."""
    return text_header(len(payload)) + payload
