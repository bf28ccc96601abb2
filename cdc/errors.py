"""Errors raised by the capture package.

Tree::

    CdcError
    ├── ConfigurationError      an operator must change something (one-line, actionable message)
    │   ├── UnknownTableError
    │   └── PrivilegeError
    ├── PositionLostError       a resume position points at changes that were pruned
    ├── DecodeError             malformed pgoutput bytes (replication mode)
    └── DatabaseError           Postgres refused; carries the SQLSTATE
"""

from __future__ import annotations

__all__ = [
    "CdcError",
    "ConfigurationError",
    "DatabaseError",
    "PositionLostError",
    "PrivilegeError",
    "UnknownTableError",
]


class CdcError(Exception):
    """Base class of every error raised by :mod:`cdc`."""


class ConfigurationError(CdcError):
    """Something an operator has to change; the message says what."""


class UnknownTableError(ConfigurationError):
    """The named table or schema does not exist."""


class PrivilegeError(ConfigurationError):
    """The database role lacks a privilege pgcast needs."""


class PositionLostError(CdcError):
    """The requested resume position is older than what the outbox still holds."""


class DatabaseError(CdcError):
    """Postgres refused an operation."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DecodeError(CdcError):
    """The replication stream is malformed: bytes that are not pgoutput v1, or messages in an
    impossible order (a row change outside a transaction, for a relation never described).

    The peer (or whatever sits between it and us) misbehaved; the shell drops the connection.
    Tree position: ``CdcError`` → ``DecodeError``.
    """


__all__ += ["DecodeError"]
