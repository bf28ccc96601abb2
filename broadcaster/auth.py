"""JWT verification as Supabase Realtime does it (``RealtimeWeb.JwtVerification``).

Pure: no I/O and no clock. The caller passes the time in; :func:`verify_now` is the one thin
wrapper that reads the wall clock.

A :class:`Verifier` holds the keys: an HS secret and/or a JWKS document that is already loaded.
Which key checks a token follows Supabase:

- ``HS256/384/512``: the ``oct`` JWK whose ``kid`` matches the token's, else the HS secret.
- ``RS256/384/512``, ``ES256/384/512``, ``EdDSA`` (also spelled ``Ed25519``/``Ed448``): the
  ``RSA``/``EC``/``OKP`` JWK whose ``kid`` matches; a token without ``kid`` is refused.

Only the algorithms that the configured keys can check are accepted, so ``none`` never is, and
a public key is never used as an HMAC secret (algorithm confusion): HS tokens are checked only
with the secret or ``oct`` keys. Then, as Supabase does: ``exp`` must be a number later than
now (minus the leeway), ``iat`` must be a number if present, and ``role`` and ``exp`` must be
present. ``aud``, ``iss`` and ``nbf`` are not checked (Supabase does not either).

Every failure is an :class:`AuthError` whose message is Supabase's text;
:attr:`AuthError.join_reason` adds the prefix used in a ``phx_reply`` join error
(``InvalidJWTToken: Token has expired 12 seconds ago``).
"""

from __future__ import annotations

import base64
import enum
import hmac
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from jwt import algorithms as jwa
from jwt.exceptions import InvalidKeyError

__all__ = [
    "ALGORITHMS",
    "AuthError",
    "AuthFailure",
    "Claims",
    "Verifier",
    "expires_in",
    "is_opaque_key",
    "make_token",
    "verify_now",
]

_HS = ("HS256", "HS384", "HS512")
_RS = ("RS256", "RS384", "RS512")
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_ED_CURVES = ("Ed25519", "Ed448")

ALGORITHMS = frozenset((*_HS, *_RS, *_EC_CURVES, "EdDSA", *_ED_CURVES))
"""Every ``alg`` a :class:`Verifier` can accept, given keys for it."""

_IMPLEMENTATIONS: dict[str, jwa.Algorithm] = jwa.get_default_algorithms()
_LOADERS: dict[str, Any] = {
    "oct": jwa.HMACAlgorithm.from_jwk,
    "RSA": jwa.RSAAlgorithm.from_jwk,
    "EC": jwa.ECAlgorithm.from_jwk,
    "OKP": jwa.OKPAlgorithm.from_jwk,
}
_WHITESPACE = re.compile(r"\s")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


class AuthFailure(enum.StrEnum):
    """Why a token was refused; the values are Supabase's error atoms."""

    MALFORMED = "token_malformed"
    SIGNER = "error_generating_signer"
    SIGNATURE = "signature_error"
    EXPIRED = "expired_token"
    MISSING_CLAIMS = "missing_claims"
    INVALID_CLAIMS = "invalid_claims"


_CODES = {
    AuthFailure.MALFORMED: "MalformedJWT",
    AuthFailure.SIGNER: "JwtSignerError",
    AuthFailure.SIGNATURE: "JwtSignatureError",
    AuthFailure.EXPIRED: "InvalidJWTToken",
    AuthFailure.MISSING_CLAIMS: "InvalidJWTToken",
    AuthFailure.INVALID_CLAIMS: "InvalidJWTToken",
}

_MALFORMED = "The token provided is not a valid JWT"
_SIGNATURE = "Failed to validate JWT signature"
_MISSING = "Fields `role` and `exp` are required in JWT"
_BAD_EXP = "Token expiration time is invalid"
_BAD_IAT = "Token issued-at time (iat) is invalid"
_BAD_ROLE = "Field `role` must be a non-empty string"


class AuthError(Exception):
    """A token was refused (the peer erred). ``str(error)`` is the message for the client.

    Args:
        reason: Supabase's message, e.g. ``Token has expired 12 seconds ago``.
        kind: the failure class; chooses :attr:`code`.
        detail: more precise text for the server log only (never sent to the client).
    """

    def __init__(
        self,
        reason: str,
        kind: AuthFailure = AuthFailure.INVALID_CLAIMS,
        detail: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.detail = detail

    @property
    def code(self) -> str:
        """Supabase's error code for logs and join replies, e.g. ``InvalidJWTToken``."""
        return _CODES[self.kind]

    @property
    def join_reason(self) -> str:
        """The ``reason`` of a join error reply: ``<code>: <message>``."""
        return f"{self.code}: {self.reason}"

    @property
    def http_message(self) -> str:
        """The ``{"error": ...}`` text of a refused WebSocket upgrade (HTTP 401)."""
        return "Token has expired" if self.kind is AuthFailure.EXPIRED else self.reason


def _signer_error(kid: object, detail: str) -> AuthError:
    message = "Failed to generate JWT signer"
    if isinstance(kid, str):  # Elixir's inspect/1 of the kid
        message += f" for key ID (kid) {json.dumps(kid, ensure_ascii=False)}"
    return AuthError(
        message + ", check your JWT secret or JWKS configuration", AuthFailure.SIGNER, detail
    )


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of a token. ``raw`` is every claim, read-only."""

    role: str
    exp: float
    sub: str | None
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Key:
    key: Any
    algorithms: frozenset[str]


def _key_algorithms(kty: str, jwk: Mapping[str, Any]) -> frozenset[str]:
    if kty == "oct":
        algs = frozenset(_HS)
    elif kty == "RSA":
        algs = frozenset(_RS)
    elif kty == "EC":
        algs = frozenset(a for a, crv in _EC_CURVES.items() if crv == jwk.get("crv"))
    else:
        crv = jwk.get("crv")
        algs = frozenset(("EdDSA", crv)) if crv in _ED_CURVES else frozenset()
    pinned = jwk.get("alg", "")  # a key pinned to one algorithm checks only that one
    if not isinstance(pinned, str):
        return frozenset()
    # For an OKP key, "EdDSA" and the curve's name are one algorithm.
    return algs if not pinned or (kty == "OKP" and pinned in algs) else algs & {pinned}


def _parse_jwks(jwks: Mapping[str, Any]) -> dict[tuple[str, str], _Key]:
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise ValueError('a JWKS must be an object with a "keys" list')
    parsed: dict[tuple[str, str], _Key] = {}
    for jwk in keys:
        if not isinstance(jwk, dict):
            raise ValueError("every JWKS key must be a JSON object")
        kty, kid = jwk.get("kty"), jwk.get("kid")
        # Keys no token can select, or that are not for signatures, are left out.
        if not isinstance(kid, str) or not isinstance(kty, str) or kty not in _LOADERS:
            continue
        algorithms = _key_algorithms(kty, jwk)
        if not algorithms or jwk.get("use", "sig") != "sig" or (kty, kid) in parsed:
            continue
        try:
            key = _LOADERS[kty](jwk)
        except (InvalidKeyError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"JWKS key {kid!r} ({kty}) is invalid: {exc}") from None
        if hasattr(key, "public_key"):  # a private JWK: only its public half is needed
            key = key.public_key()
        parsed[(kty, kid)] = _Key(key, algorithms)
    return parsed


def _kty(alg: str) -> str:
    if alg in _HS:
        return "oct"
    if alg in _RS:
        return "RSA"
    return "EC" if alg in _EC_CURVES else "OKP"


def _b64decode(segment: str) -> bytes:
    if "=" in segment:
        raise ValueError("padded base64")
    return base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(segment: str) -> dict[str, Any]:
    value = json.loads(_b64decode(segment).decode("utf-8"), parse_constant=_reject_constant)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _is_number(value: object) -> bool:
    """A JSON number; ``1e400`` parses to infinity, which is not one."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _clean(token: str) -> str:
    """Percent-decode and drop whitespace, as Supabase's ``clean_token`` does."""
    if "%" in token:
        token = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), token)
    return _WHITESPACE.sub("", token)


class Verifier:
    """Checks tokens with the configured keys.

    Args:
        secret: the HS secret (Supabase's ``jwt_secret``), used as its UTF-8 bytes.
        jwks: a JWKS document (``{"keys": [...]}``); keys without ``kid``, with ``use`` other
            than ``sig`` or of unsupported types/curves are ignored.
        leeway: seconds a token stays valid after its ``exp``.

    Raises:
        ValueError: no key at all, an empty secret, a negative leeway or a broken JWKS key.
    """

    __slots__ = ("_keys", "_secret", "algorithms", "leeway")

    def __init__(
        self,
        secret: str | bytes | None = None,
        jwks: Mapping[str, Any] | None = None,
        leeway: float = 0.0,
    ) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and not secret:
            raise ValueError("the JWT secret must not be empty")
        if leeway < 0 or not math.isfinite(leeway):
            raise ValueError("the JWT leeway must be a finite number of seconds >= 0")
        self._secret = secret
        self._keys = _parse_jwks(jwks) if jwks is not None else {}
        algorithms = set(_HS) if secret is not None else set()
        for key in self._keys.values():
            algorithms |= key.algorithms
        if not algorithms:
            raise ValueError("no JWT secret and no usable JWKS key")
        self.algorithms: frozenset[str] = frozenset(algorithms)
        """The ``alg`` values this verifier accepts."""
        self.leeway = float(leeway)

    def __repr__(self) -> str:
        return (
            f"Verifier(secret={'set' if self._secret else 'unset'}, "
            f"jwks_keys={len(self._keys)}, algorithms={sorted(self.algorithms)})"
        )

    def verify(self, token: str, now: float) -> Claims:
        """Check the signature and the claims of ``token`` at Unix time ``now``.

        Raises:
            AuthError: the token is refused; the message says why in Supabase's words.
        """
        if not isinstance(token, str):
            raise AuthError(_MALFORMED, AuthFailure.MALFORMED, "the token is not a string")
        parts = _clean(token).split(".")
        if len(parts) != 3:
            raise AuthError(_MALFORMED, AuthFailure.MALFORMED, "not three dot-separated parts")
        try:
            header = _json_object(parts[0])
            payload = _json_object(parts[1])
            signature = _b64decode(parts[2])
        except ValueError as exc:  # binascii, UnicodeDecodeError and JSON errors included
            raise AuthError(_MALFORMED, AuthFailure.MALFORMED, str(exc)) from None
        if "crit" in header:  # RFC 7515 §4.1.11: no extension is understood here
            raise AuthError(_MALFORMED, AuthFailure.MALFORMED, "unsupported crit header")
        alg = header.get("alg")
        key = self._select_key(alg, header.get("kid"))
        implementation = _IMPLEMENTATIONS[alg if alg in _IMPLEMENTATIONS else "EdDSA"]
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
        if not implementation.verify(signing_input, key, signature):
            raise AuthError(_SIGNATURE, AuthFailure.SIGNATURE, f"{alg} signature mismatch")
        return self._check_claims(payload, now)

    def _select_key(self, alg: object, kid: object) -> Any:
        if not isinstance(alg, str) or alg not in self.algorithms:
            accepted = ", ".join(sorted(self.algorithms))
            raise _signer_error(kid, f"algorithm {alg!r} is not accepted (accepted: {accepted})")
        kty = _kty(alg)
        found = self._keys.get((kty, kid)) if isinstance(kid, str) else None
        if found is not None:
            if alg not in found.algorithms:
                raise _signer_error(kid, f"JWKS key {kid!r} is not for {alg}")
            return found.key
        if kty == "oct" and self._secret is not None:
            return self._secret
        if not isinstance(kid, str):
            raise _signer_error(kid, f"JWT has no kid; {alg} needs a JWKS key")
        raise _signer_error(kid, f"no {kty} key with kid {kid!r} in the JWKS")

    def _check_claims(self, payload: dict[str, Any], now: float) -> Claims:
        exp = payload.get("exp")
        if exp is not None:
            if not _is_number(exp):
                raise AuthError(_BAD_EXP, AuthFailure.INVALID_CLAIMS, "exp is not a number")
            if exp + self.leeway <= now:
                seconds = math.floor(now - exp)
                raise AuthError(f"Token has expired {seconds} seconds ago", AuthFailure.EXPIRED)
        if "iat" in payload and not _is_number(payload["iat"]):
            raise AuthError(_BAD_IAT, AuthFailure.INVALID_CLAIMS, "iat is not a number")
        role = payload.get("role")
        if role is None or exp is None:
            raise AuthError(_MISSING, AuthFailure.MISSING_CLAIMS)
        if not isinstance(role, str) or not role:
            raise AuthError(_BAD_ROLE, AuthFailure.INVALID_CLAIMS)
        sub = payload.get("sub")
        return Claims(role, exp, sub if isinstance(sub, str) else None, MappingProxyType(payload))


def verify_now(verifier: Verifier, token: str) -> Claims:
    """:meth:`Verifier.verify` at the current wall-clock time."""
    return verifier.verify(token, time.time())


def expires_in(claims: Claims, now: float, leeway: float = 0.0) -> float:
    """Seconds until ``claims`` stop verifying (≤ 0 once they have).

    Pass the verifier's :attr:`Verifier.leeway`: a token checked with a leeway is still valid
    for that long after ``exp``, and a timer set without it would fire while the token still
    verifies.
    """
    return claims.exp + leeway - now


def is_opaque_key(token: str) -> bool:
    """True for Supabase's new ``sb_…`` publishable/secret API keys, which are not JWTs.

    At join Supabase replaces such an ``access_token`` with the token the socket connected with.
    """
    return token.startswith("sb_")


def make_token(
    secret: str | bytes,
    role: str | None = "anon",
    ttl: float = 3600,
    *,
    now: float | None = None,
    **claims: Any,
) -> str:
    """Mint an HS256 token for development and tests (``pgcast demo``).

    ``iat`` is ``now`` (default: the wall clock) and ``exp`` is ``now + ttl``, both whole
    seconds; ``role=None`` leaves ``role`` out; ``claims`` are added last and win.
    """
    issued = math.floor(time.time() if now is None else now)
    payload: dict[str, Any] = {"iat": issued, "exp": math.floor(issued + ttl)}
    if role is not None:
        payload["role"] = role
    payload.update(claims)
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    header = _b64encode(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    signature = hmac.digest(key, f"{header}.{body}".encode("ascii"), "sha256")
    return f"{header}.{body}.{_b64encode(signature)}"
