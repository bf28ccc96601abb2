"""Tests for broadcaster.config: environment, CLI overrides, validation, JWKS (no network)."""

from __future__ import annotations

import io
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from pydantic import ValidationError

import broadcaster.config as config_module
from broadcaster.auth import Verifier, make_token
from broadcaster.config import (
    ConfigError,
    Settings,
    build_verifier,
    load_jwks,
    parse_duration,
)

DB = "postgresql://pgcast:pw@localhost:5432/app"
SECRET = "a-development-secret-of-at-least-32-bytes"
MISSING_AUTH = (
    "set PGCAST_JWT_SECRET (or PGCAST_JWKS_URL / PGCAST_JWKS_FILE), "
    "or pass --no-auth for local development"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No PGCAST_* variable from the outer environment leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("PGCAST_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def settings(**overrides: Any) -> Settings:
    return Settings.from_cli(**{"database_url": DB, "jwt_secret": SECRET, **overrides})


@pytest.fixture(scope="module")
def jwks_document() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{**jwk, "kid": "ec-1"}]}


def test_exports() -> None:
    assert sorted(config_module.__all__) == [
        "ConfigError",
        "ENV_PREFIX",
        "JWKS_MAX_BYTES",
        "Settings",
        "build_verifier",
        "load_jwks",
        "parse_duration",
    ]


# -- sources -----------------------------------------------------------------------------------


def test_defaults() -> None:
    s = settings()
    assert (s.host, s.port, s.capture, s.no_auth, s.jwt_leeway) == (
        "127.0.0.1",
        4000,
        "trigger",
        False,
        0,
    )
    assert (s.max_channels_per_socket, s.max_joins_per_second, s.max_events_per_second) == (
        100,
        100,
        100,
    )
    assert (s.max_frame_bytes, s.max_record_bytes, s.max_socket_buffer_bytes) == (
        5_000_000,
        1_048_576,
        4 * 1_048_576,
    )
    assert s.heartbeat_timeout_s == 60
    assert s.retention == timedelta(hours=24)
    assert (s.consumer_name, s.log_level) == ("pgcast", "INFO")
    assert (s.jwks_url, s.jwks_file) == (None, None)


def test_environment(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PGCAST_DATABASE_URL": DB,
        "PGCAST_HOST": "0.0.0.0",
        "PGCAST_PORT": "8080",
        "pgcast_capture": "replication",  # names are case-insensitive
        "PGCAST_JWT_SECRET": SECRET,
        "PGCAST_JWT_LEEWAY": "5",
        "PGCAST_MAX_CHANNELS_PER_SOCKET": "10",
        "PGCAST_RETENTION": "7d",
        "PGCAST_LOG_LEVEL": "debug",
        "PGCAST_CONSUMER_NAME": "pgcast_2",
        "PGCAST_JWKS_URL": "",  # empty counts as unset
    }.items():
        clean_env.setenv(name, value)
    s = Settings.from_cli()
    assert s.database_url == DB
    assert (s.host, s.port, s.capture) == ("0.0.0.0", 8080, "replication")
    assert s.jwt_secret is not None and s.jwt_secret.get_secret_value() == SECRET
    assert (s.jwt_leeway, s.max_channels_per_socket) == (5, 10)
    assert s.retention == timedelta(days=7)
    assert (s.log_level, s.consumer_name, s.jwks_url) == ("DEBUG", "pgcast_2", None)


def test_cli_overrides_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PGCAST_DATABASE_URL", DB)
    clean_env.setenv("PGCAST_PORT", "8080")
    clean_env.setenv("PGCAST_NO_AUTH", "true")
    s = Settings.from_cli(port=9000, host=None, no_auth=None, retention="90")
    assert (s.port, s.host, s.no_auth) == (9000, "127.0.0.1", True)  # None: not given
    assert s.retention == timedelta(seconds=90)
    assert Settings.from_cli(port=None).port == 8080


def test_frozen_and_secrets_hidden() -> None:
    s = settings()
    with pytest.raises(ValidationError):
        s.port = 1
    assert SECRET not in repr(s) and "pw@" not in repr(s)
    assert "database_url" not in repr(s)


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (3600, 3600),
        (1.5, 1.5),
        ("3600", 3600),
        ("45s", 45),
        ("30m", 1800),
        ("1h", 3600),
        (" 1.5H ", 5400),
        ("7d", 604800),
        ("2w", 1209600),
        (timedelta(minutes=5), 300),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)
    assert settings(retention=value).retention == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["1y", "-1h", "h", "", True, [1], "1h30m"])
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError, match="is not a duration like 3600, 30m, 1h or 7d"):
        parse_duration(value)


@pytest.mark.parametrize("value", [0, "0s", timedelta(0), -5, float("nan")])
def test_duration_must_be_positive(value: Any) -> None:
    with pytest.raises(ValueError, match="the duration must be positive"):
        parse_duration(value)
    with pytest.raises(ConfigError, match="PGCAST_RETENTION: the duration must be positive"):
        settings(retention=value)


@pytest.mark.parametrize("value", [float("inf"), 1e20, "1000000000000w"])
def test_duration_too_long(value: Any) -> None:
    with pytest.raises(ValueError, match="the duration is too long"):
        parse_duration(value)


# -- validation --------------------------------------------------------------------------------


def test_auth_is_required() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_cli(database_url=DB)
    assert str(info.value) == MISSING_AUTH


def test_no_auth_needs_no_key() -> None:
    s = Settings.from_cli(database_url=DB, no_auth=True)
    assert s.no_auth and s.jwt_secret is None


@pytest.mark.parametrize(
    "keys",
    [{"jwt_secret": SECRET}, {"jwks_url": "https://x.supabase.co/auth/v1/.well-known/jwks.json"}],
)
def test_any_key_is_enough(keys: dict[str, str], tmp_path: Path) -> None:
    assert Settings.from_cli(database_url=DB, **keys).no_auth is False
    assert Settings.from_cli(database_url=DB, jwks_file=tmp_path / "jwks.json")


def test_empty_secret_is_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PGCAST_JWT_SECRET", "")
    with pytest.raises(ConfigError, match="set PGCAST_JWT_SECRET"):
        Settings.from_cli(database_url=DB)
    with pytest.raises(ConfigError, match="set PGCAST_JWT_SECRET"):
        Settings.from_cli(database_url=DB, jwt_secret="")


def test_blank_secret() -> None:
    with pytest.raises(ConfigError, match="^PGCAST_JWT_SECRET must not be blank$"):
        settings(jwt_secret="   ")


def test_one_jwks_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set PGCAST_JWKS_URL or PGCAST_JWKS_FILE, not both"):
        settings(jwks_url="https://example.com/jwks.json", jwks_file=tmp_path / "j.json")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"database_url": None}, "PGCAST_DATABASE_URL: Field required"),
        ({"database_url": "mysql://x"}, "PGCAST_DATABASE_URL: must be a postgresql"),
        ({"jwks_url": "file:///etc/jwks"}, "PGCAST_JWKS_URL: must be an http://"),
        ({"port": 70000}, "PGCAST_PORT: Input should be less than or equal to 65535"),
        ({"port": "abc"}, "PGCAST_PORT: Input should be a valid integer"),
        ({"capture": "wal2json"}, "PGCAST_CAPTURE: Input should be 'trigger' or 'replication'"),
        ({"jwt_leeway": -1}, "PGCAST_JWT_LEEWAY: Input should be greater than or equal to 0"),
        ({"max_frame_bytes": 0}, "PGCAST_MAX_FRAME_BYTES: Input should be greater than 0"),
        ({"consumer_name": "Bad-Name"}, "PGCAST_CONSUMER_NAME: use 1 to 63"),
        ({"log_level": "loud"}, "PGCAST_LOG_LEVEL: Input should be 'DEBUG'"),
        ({"log_level": 10}, "PGCAST_LOG_LEVEL: Input should be 'DEBUG'"),
        ({"bogus": 1}, "PGCAST_BOGUS: unknown setting"),
    ],
)
def test_invalid_settings(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**overrides)
    assert str(info.value).startswith(message)


def test_errors_are_joined() -> None:
    with pytest.raises(ConfigError) as info:
        settings(port=-1, heartbeat_timeout_s=0)
    assert str(info.value) == (
        "PGCAST_PORT: Input should be greater than or equal to 0; "
        "PGCAST_HEARTBEAT_TIMEOUT_S: Input should be greater than 0"
    )


# -- JWKS --------------------------------------------------------------------------------------


def test_no_jwks() -> None:
    assert load_jwks(settings()) is None


def test_jwks_file(tmp_path: Path, jwks_document: dict[str, Any]) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_document))
    assert load_jwks(settings(jwks_file=path)) == jwks_document


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b"[]", 'is not an object with a "keys" list'),
        (b'{"keys": {}}', 'is not an object with a "keys" list'),
        (b" " * (1_048_576 + 1), "is larger than 1048576 bytes"),
    ],
)
def test_bad_jwks_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_jwks(settings(jwks_file=path))


def test_missing_jwks_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError) as info:
        load_jwks(settings(jwks_file=path))
    assert str(info.value) == f"cannot read JWKS file {path}: No such file or directory"


class FakeResponse(io.BytesIO):
    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


URL = "https://project.supabase.co/auth/v1/.well-known/jwks.json"


def test_jwks_url(clean_env: pytest.MonkeyPatch, jwks_document: dict[str, Any]) -> None:
    seen: list[tuple[urllib.request.Request, float]] = []

    def urlopen(request: urllib.request.Request, timeout: float) -> FakeResponse:
        seen.append((request, timeout))
        return FakeResponse(json.dumps(jwks_document).encode())

    clean_env.setattr(urllib.request, "urlopen", urlopen)
    assert load_jwks(settings(jwks_url=URL), timeout=3) == jwks_document
    request, timeout = seen[0]
    assert (request.full_url, timeout) == (URL, 3)
    assert request.get_header("Accept") == "application/json"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            urllib.error.HTTPError(URL, 404, "Not Found", Message(), None),
            f"cannot fetch JWKS from {URL}: HTTP 404 Not Found",
        ),
        (
            urllib.error.URLError("[Errno -2] Name or service not known"),
            f"cannot fetch JWKS from {URL}: [Errno -2] Name or service not known",
        ),
        (TimeoutError(), f"cannot fetch JWKS from {URL}: timed out"),
        (ConnectionResetError("reset by peer"), f"cannot fetch JWKS from {URL}: reset by peer"),
    ],
)
def test_jwks_url_errors(clean_env: pytest.MonkeyPatch, error: Exception, message: str) -> None:
    def urlopen(request: urllib.request.Request, timeout: float) -> FakeResponse:
        raise error

    clean_env.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(ConfigError) as info:
        load_jwks(settings(jwks_url=URL))
    assert str(info.value) == message


def test_jwks_url_too_large(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(
        urllib.request, "urlopen", lambda request, timeout: FakeResponse(b" " * 2_000_000)
    )
    with pytest.raises(ConfigError, match="is larger than 1048576 bytes"):
        load_jwks(settings(jwks_url=URL))


# -- verifier ----------------------------------------------------------------------------------


def test_build_verifier_from_secret() -> None:
    verifier = build_verifier(settings(jwt_leeway=2.5))
    assert isinstance(verifier, Verifier)
    assert verifier.leeway == 2.5 and verifier.algorithms == {"HS256", "HS384", "HS512"}
    assert verifier.verify(make_token(SECRET, now=1000), 1001).role == "anon"


def test_build_verifier_with_jwks(tmp_path: Path, jwks_document: dict[str, Any]) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_document))
    verifier = build_verifier(Settings.from_cli(database_url=DB, jwks_file=path))
    assert verifier is not None and verifier.algorithms == {"ES256"}


def test_build_verifier_no_auth() -> None:
    assert build_verifier(settings(no_auth=True)) is None


def test_build_verifier_unusable_jwks(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text('{"keys": [{"kty": "oct", "kid": "a"}]}')
    with pytest.raises(ConfigError, match="^JWT keys: JWKS key 'a' \\(oct\\) is invalid"):
        build_verifier(settings(jwks_file=path))
    path.write_text('{"keys": []}')
    with pytest.raises(ConfigError, match="^JWT keys: no JWT secret and no usable JWKS key$"):
        build_verifier(Settings.from_cli(database_url=DB, jwks_file=path))
