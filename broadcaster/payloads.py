"""Inbound payloads of the Supabase Realtime channel events, validated leniently at the edge.

Pure: pydantic only. Supabase logs an invalid join payload and goes on with whatever did
validate (``RealtimeWeb.Channels.Payloads.Join``), so validation here never fails either: a
value of the wrong type is dropped and its default used. Unknown keys are ignored. Booleans
accept ``true``/``false`` and the strings ``"true"``/``"false"`` in any case
(``FlexibleBoolean``). ``config.postgres_changes`` of ``null`` is ``[]`` and ``null`` entries
are dropped.

Each ``postgres_changes`` entry becomes a :class:`PostgresChange` that keeps the entry exactly
as sent (the join reply echoes it) and gets its binding id (:func:`binding_id`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from broadcaster.auth import is_opaque_key

__all__ = [
    "AccessTokenPayload",
    "BroadcastConfig",
    "JoinConfig",
    "JoinPayload",
    "PostgresChange",
    "PresenceConfig",
    "binding_id",
]

_POSTGRES_CHANGE_KEYS = ("event", "schema", "table", "filter")


def binding_id(params: Mapping[str, Any]) -> int:
    """The id of a ``postgres_changes`` binding, as Supabase's ``:erlang.phash2(params)``.

    A pure function of the entry as sent (every key, so ``select`` counts too): identical
    entries get identical ids, in any process. The value is in ``1 .. 2**31 - 1``: it fits a
    signed 32-bit integer, and it is never 0, which the Python client treats as "no id".
    """
    canonical = json.dumps(
        params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    )
    digest = hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF or 1


def _flexible_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("expected a boolean")


def _presence_key(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _entries(value: object) -> list[object]:
    if not isinstance(value, list):
        return []
    return [entry for entry in value if isinstance(entry, dict)]


FlexibleBool = Annotated[bool, BeforeValidator(_flexible_bool)]


class _Lenient(BaseModel):
    """Never fails: invalid fields take their defaults, a non-object is ``{}``."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @model_validator(mode="wrap")
    @classmethod
    def _drop_invalid(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(data, dict):
            data = {}
        try:
            return handler(data)
        except ValidationError as exc:
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
        # Every field is checked on its own, so without the bad ones validation passes.
        return handler({k: v for k, v in data.items() if k not in bad})


class BroadcastConfig(_Lenient):
    """``config.broadcast``: ``ack`` asks for a reply to each broadcast, ``self`` for an echo."""

    ack: FlexibleBool = False
    self_: FlexibleBool = Field(default=False, alias="self")


class PresenceConfig(_Lenient):
    """``config.presence``: ``key`` (``None`` or ``""``: the server picks one) and ``enabled``."""

    enabled: FlexibleBool = False
    key: Annotated[str | None, BeforeValidator(_presence_key)] = None


class PostgresChange(BaseModel):
    """One ``config.postgres_changes`` entry.

    Attributes:
        params: the entry exactly as sent; the join reply echoes it plus ``"id"``.
        id: :func:`binding_id` of ``params``.
        event, schema, table, filter: the values sent, ``None`` when absent. What they mean
            (``*``, defaults, the filter grammar) is for the shell to decide.
        problem: why the entry cannot be used (a key of the wrong type), else ``None``.
    """

    model_config = ConfigDict(frozen=True)

    params: dict[str, Any]
    id: int
    event: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    table: str | None = None
    filter: str | None = None
    problem: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_entry(cls, entry: Any) -> Any:
        if not isinstance(entry, dict):
            raise ValueError("a postgres_changes entry must be an object")  # filtered earlier
        fields: dict[str, Any] = {"params": entry, "id": binding_id(entry)}
        wrong = []
        for key in _POSTGRES_CHANGE_KEYS:
            value = entry.get(key)
            if value is None or isinstance(value, str):
                fields[key] = value
            else:
                wrong.append(key)
        if wrong:
            fields["problem"] = (
                "Unable to parse `postgres_changes` params: "
                + ", ".join(f"`{key}`" for key in wrong)
                + (" must be a string" if len(wrong) == 1 else " must be strings")
            )
        return fields

    @property
    def reply_entry(self) -> dict[str, Any]:
        """The entry of the join reply: the params as sent, plus ``"id"``."""
        return {**self.params, "id": self.id}


class JoinConfig(_Lenient):
    """``config`` of a ``phx_join``."""

    broadcast: BroadcastConfig = Field(default_factory=BroadcastConfig)
    presence: PresenceConfig = Field(default_factory=PresenceConfig)
    postgres_changes: Annotated[tuple[PostgresChange, ...], BeforeValidator(_entries)] = ()
    private: FlexibleBool = False


class JoinPayload(_Lenient):
    """The payload of a ``phx_join``; ``JoinPayload.model_validate(payload)`` never raises."""

    config: JoinConfig = Field(default_factory=JoinConfig)
    access_token: StrictStr | None = Field(default=None, repr=False)
    user_token: StrictStr | None = Field(default=None, repr=False)

    @property
    def token(self) -> str | None:
        """The JWT to verify the join with; ``None``: the token the socket connected with.

        As Supabase: an ``sb_…`` key is replaced by the connect token, ``user_token`` (legacy
        clients) wins over ``access_token``.
        """
        first = self.access_token if self.access_token is not None else self.user_token
        if first is None or is_opaque_key(first):
            return None
        return self.user_token if self.user_token is not None else self.access_token


class AccessTokenPayload(_Lenient):
    """The payload of an ``access_token`` event: a refreshed JWT for a joined channel."""

    access_token: StrictStr | None = Field(default=None, repr=False)
