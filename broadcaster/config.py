"""Server settings: environment variables ``PGCAST_*``, overridden by command-line options.

:class:`Settings` is frozen and validated once at start-up; every error names the variable to
change (:class:`ConfigError`). Limits default to Supabase Realtime's server defaults.

The only I/O here is :func:`load_jwks` (a file, or an HTTP GET with a timeout), called by the
composition root through :func:`build_verifier`; the settings themselves read nothing but the
environment.

Errors: :class:`ConfigError` (an operator has to change something; the message says what). It
subclasses :class:`Exception` directly: ``broadcaster.errors`` did not exist when this was
written.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broadcaster.auth import Verifier

__all__ = [
    "ENV_PREFIX",
    "JWKS_MAX_BYTES",
    "ConfigError",
    "Settings",
    "build_verifier",
    "load_jwks",
    "parse_duration",
]

ENV_PREFIX = "PGCAST_"
JWKS_MAX_BYTES = 1_048_576
"""Largest JWKS document :func:`load_jwks` accepts."""

_MISSING_AUTH = (
    "set PGCAST_JWT_SECRET (or PGCAST_JWKS_URL / PGCAST_JWKS_FILE), "
    "or pass --no-auth for local development"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_SECONDS = timedelta.max.total_seconds()
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting to change."""


def parse_duration(value: object) -> timedelta:
    """A positive duration from seconds (``90``, ``"90"``) or ``30s``/``15m``/``1h``/``7d``/``2w``.

    Raises:
        ValueError: anything else, or a duration that is not positive.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value.strip().lower()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{value!r} is not a duration like 3600, 30m, 1h or 7d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:  # NaN too
        raise ValueError("the duration must be positive")
    if seconds > _MAX_SECONDS:
        raise ValueError("the duration is too long")
    return timedelta(seconds=seconds)


class Settings(BaseSettings):
    """Everything ``pgcast serve`` needs. Environment: ``PGCAST_<FIELD>`` (any case)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    database_url: str = Field(repr=False, description="postgresql:// URL of the database.")
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(4000, ge=0, le=65535, description="Port to listen on (0: any free port).")
    capture: Literal["trigger", "replication"] = "trigger"

    jwt_secret: SecretStr | None = Field(None, description="HS256/384/512 secret.")
    jwks_url: str | None = Field(None, description="http(s) URL of a JWKS document.")
    jwks_file: Path | None = Field(None, description="Path of a JWKS document.")
    no_auth: bool = Field(False, description="Accept every client without a token.")
    jwt_leeway: float = Field(0.0, ge=0, allow_inf_nan=False, description="Seconds after exp.")

    max_channels_per_socket: int = Field(100, gt=0)
    max_joins_per_second: int = Field(100, gt=0)
    max_events_per_second: int = Field(100, gt=0, description="Per socket.")
    max_frame_bytes: int = Field(5_000_000, gt=0, description="Largest inbound WebSocket frame.")
    max_record_bytes: int = Field(1_048_576, gt=0, description="Larger change records shrink.")
    max_socket_buffer_bytes: int = Field(4 * 1_048_576, gt=0, description="Unsent bytes/socket.")
    heartbeat_timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)

    retention: timedelta = Field(timedelta(hours=24), description="Outbox retention (24h).")
    consumer_name: str = Field("pgcast", description="Names this server's outbox cursor/slot.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("jwt_secret", "jwks_url", "jwks_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("retention", mode="before")
    @classmethod
    def _parse_retention(cls, value: object) -> timedelta:
        return parse_duration(value)

    @field_validator("consumer_name")
    @classmethod
    def _check_consumer_name(cls, value: str) -> str:
        if _SLOT_NAME.fullmatch(value) is None:
            raise ValueError("use 1 to 63 lower-case letters, digits and underscores")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_auth(self) -> Self:
        if self.jwks_url is not None and self.jwks_file is not None:
            raise ValueError("set PGCAST_JWKS_URL or PGCAST_JWKS_FILE, not both")
        if self.jwt_secret is not None and not self.jwt_secret.get_secret_value().strip():
            raise ValueError("PGCAST_JWT_SECRET must not be blank")
        keyless = self.jwt_secret is None and self.jwks_url is None and self.jwks_file is None
        if keyless and not self.no_auth:
            raise ValueError(_MISSING_AUTH)
        return self

    @classmethod
    def from_cli(cls, **overrides: Any) -> Settings:
        """The environment, with every override that is not None on top (CLI options).

        Raises:
            ConfigError: a setting is missing or invalid; every problem names its
                environment variable, and problems are joined with ``; ``.
        """
        given = {name: value for name, value in overrides.items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            field = str(error["loc"][0])
            if error["type"] == "extra_forbidden":
                message = "unknown setting"
            message = f"{ENV_PREFIX}{field.upper()}: {message}"
        lines.append(message)
    return "; ".join(lines)


def load_jwks(settings: Settings, *, timeout: float = 10.0) -> dict[str, Any] | None:
    """Read the JWKS named by ``jwks_file`` or fetched from ``jwks_url``; None when neither.

    Raises:
        ConfigError: the document cannot be read or fetched, is larger than
            :data:`JWKS_MAX_BYTES`, or is not JSON with a ``keys`` list.
    """
    if settings.jwks_file is not None:
        source = str(settings.jwks_file)
        try:
            data = settings.jwks_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read JWKS file {source}: {exc.strerror or exc}") from None
    elif settings.jwks_url is not None:
        source = settings.jwks_url
        data = _fetch(source, timeout)
    else:
        return None
    if len(data) > JWKS_MAX_BYTES:
        raise ConfigError(f"JWKS from {source} is larger than {JWKS_MAX_BYTES} bytes")
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"JWKS from {source} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigError(f'JWKS from {source} is not an object with a "keys" list')
    return document


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "pgcast"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read(JWKS_MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"cannot fetch JWKS from {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ConfigError(f"cannot fetch JWKS from {url}: {exc.reason}") from None
    except OSError as exc:  # TimeoutError included
        raise ConfigError(f"cannot fetch JWKS from {url}: {str(exc) or 'timed out'}") from None
    return body


def build_verifier(settings: Settings, *, timeout: float = 10.0) -> Verifier | None:
    """The token verifier the settings describe; None with ``no_auth``.

    Loads the JWKS (:func:`load_jwks`), so this does I/O when ``jwks_url`` is set.

    Raises:
        ConfigError: the JWKS cannot be loaded, or holds no key pgcast can use.
    """
    if settings.no_auth:
        return None
    jwks = load_jwks(settings, timeout=timeout)
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    try:
        return Verifier(secret=secret, jwks=jwks, leeway=settings.jwt_leeway)
    except ValueError as exc:
        raise ConfigError(f"JWT keys: {exc}") from None
