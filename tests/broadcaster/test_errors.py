"""Tests for broadcaster.errors: the tree its docstring draws."""

from __future__ import annotations

import broadcaster.errors as errors
from broadcaster.errors import BroadcastError, ProtocolError


def test_exports() -> None:
    assert sorted(errors.__all__) == ["BroadcastError", "ProtocolError"]


def test_tree() -> None:
    assert issubclass(BroadcastError, Exception)
    assert issubclass(ProtocolError, BroadcastError)
    assert str(ProtocolError("bad frame")) == "bad frame"
