"""Loads tests/fixtures/pgoutput_session.json (made by tests/fixtures/make_pgoutput.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cdc.values import TypeInfo, TypeKind

__all__ = ["GoldenMessage", "binary_messages", "document", "messages", "steps", "types"]

PATH = Path(__file__).parents[1] / "fixtures" / "pgoutput_session.json"


@dataclass(frozen=True, slots=True)
class GoldenMessage:
    lsn: str
    xid: int
    data: bytes


@cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(PATH.read_text())
    return loaded


def _load(key: str) -> tuple[GoldenMessage, ...]:
    return tuple(
        GoldenMessage(m["lsn"], m["xid"], bytes.fromhex(m["hex"])) for m in document()[key]
    )


def messages() -> tuple[GoldenMessage, ...]:
    """Every message of the scripted session, in stream order."""
    return _load("messages")


def binary_messages() -> tuple[GoldenMessage, ...]:
    """One INSERT transaction read with ``binary 'true'``."""
    return _load("binary_messages")


def steps() -> dict[str, tuple[bytes, ...]]:
    """The messages of each step, split at the non-transactional ``step`` markers ('M', flags 0,
    prefix "step"), markers left out."""
    result: dict[str, list[bytes]] = {}
    current: list[bytes] = []
    for message in messages():
        data = message.data
        if data[:2] == b"M\x00" and data[10:15] == b"step\x00":
            current = result.setdefault(data[19:].decode(), [])
        else:
            current.append(data)
    return {name: tuple(items) for name, items in result.items()}


def types() -> list[TypeInfo]:
    """The custom types of the scratch database, as the catalog lookup returns them."""
    return [
        TypeInfo(
            t["oid"], t["name"], TypeKind(t["kind"]), t["element"], t["base"], t["delimiter"],
            tuple((name, oid) for name, oid in t["fields"]),
        )
        for t in document()["types"]
    ]  # fmt: skip
