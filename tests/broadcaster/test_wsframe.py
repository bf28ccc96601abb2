"""Server text frames built by ``wsframe`` are what the websockets library parses as such."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import OP_TEXT, Frame
from websockets.streams import StreamReader

from broadcaster.wsframe import text_frame, text_header


def parse(data: bytes) -> tuple[Frame, bytes]:
    """One frame as a client parses it (unmasked, no extensions), and what is left over."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None, extensions=[])
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    else:  # pragma: no cover - the frame was incomplete
        raise AssertionError("frame incomplete")
    rest = reader.buffer[:]
    return frame, bytes(rest)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_every_length_encoding_round_trips(size: int) -> None:
    payload = (b"x" * size)[:size]
    frame, rest = parse(text_frame(payload) + b"next")
    assert frame.opcode == OP_TEXT and frame.fin and not frame.rsv1
    assert frame.data == payload and rest == b"next"


@given(st.text(max_size=300))
def test_utf8_text_round_trips(text: str) -> None:
    payload = text.encode("utf-8", "surrogatepass")
    frame, rest = parse(text_frame(payload))
    assert frame.data == payload and rest == b""


def test_bad_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        text_header(-1)
    with pytest.raises(ValueError):
        text_header(1 << 63)
    assert text_header((1 << 63) - 1)[:2] == b"\x81\x7f"
