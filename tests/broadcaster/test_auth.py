"""Tests for broadcaster.auth: Supabase-compatible JWT verification, no clock, no network."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

import broadcaster.auth as auth_module
from broadcaster.auth import (
    ALGORITHMS,
    AuthError,
    AuthFailure,
    Claims,
    Verifier,
    expires_in,
    is_opaque_key,
    make_token,
    verify_now,
)

SECRET = "super-secret-jwt-token-with-at-least-64-characters-long-for-hs512-0123456"
NOW = 1_700_000_000.0
EXP = int(NOW) + 3600
CLAIMS = {"role": "authenticated", "exp": EXP, "sub": "user-1", "iat": int(NOW)}

MALFORMED = "The token provided is not a valid JWT"
SIGNATURE = "Failed to validate JWT signature"
MISSING = "Fields `role` and `exp` are required in JWT"
SIGNER = "Failed to generate JWT signer, check your JWT secret or JWKS configuration"


def signer_message(kid: str) -> str:
    return (
        f'Failed to generate JWT signer for key ID (kid) "{kid}", '
        "check your JWT secret or JWKS configuration"
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return b64(raw)


def hs_token(
    payload: Any,
    secret: str | bytes = SECRET,
    alg: str = "HS256",
    **header: Any,
) -> str:
    """A token signed by hand, so that headers and payloads may be anything."""
    key = secret.encode() if isinstance(secret, str) else secret
    signing_input = f"{segment({'alg': alg, 'typ': 'JWT', **header})}.{segment(payload)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def public_jwk(algorithm: Any, private_key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, **extra}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def jwks(rsa_key: Any, ec_key: Any, ed_key: Any) -> dict[str, Any]:
    return {
        "keys": [
            public_jwk(RSAAlgorithm, rsa_key, "rsa-1", alg="RS256", use="sig"),
            public_jwk(ECAlgorithm, ec_key, "ec-1"),
            public_jwk(OKPAlgorithm, ed_key, "ed-1", alg="EdDSA"),
            {"kty": "oct", "kid": "oct-1", "k": b64(b"o" * 32)},
        ]
    }


def refused(verifier: Verifier, token: Any, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token, now)
    return info.value


def test_exports() -> None:
    assert sorted(auth_module.__all__) == [
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
    assert "none" not in ALGORITHMS and "PS256" not in ALGORITHMS


# -- HS secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hs_algorithms(alg: str) -> None:
    token = jwt.encode(CLAIMS, SECRET, algorithm=alg)
    claims = Verifier(secret=SECRET).verify(token, NOW)
    assert claims == Claims(role="authenticated", exp=EXP, sub="user-1", raw=claims.raw)
    assert dict(claims.raw) == CLAIMS
    with pytest.raises(TypeError):
        claims.raw["role"] = "service_role"  # type: ignore[index]


def test_bytes_secret_and_kid_without_jwks() -> None:
    # Supabase Auth HS tokens carry a kid but the JWKS has no oct key: the secret checks them.
    token = hs_token(CLAIMS, kid="some-kid")
    assert Verifier(secret=SECRET.encode()).verify(token, NOW).role == "authenticated"


def test_wrong_secret() -> None:
    error = refused(Verifier(secret=SECRET[::-1]), hs_token(CLAIMS))
    assert (str(error), error.kind, error.code) == (
        SIGNATURE,
        AuthFailure.SIGNATURE,
        "JwtSignatureError",
    )
    assert error.join_reason == f"JwtSignatureError: {SIGNATURE}"


def test_tampered_payload() -> None:
    header, _, signature = hs_token(CLAIMS).split(".")
    forged = f"{header}.{segment({**CLAIMS, 'role': 'service_role'})}.{signature}"
    assert refused(Verifier(secret=SECRET), forged).kind is AuthFailure.SIGNATURE


def test_token_is_cleaned_like_supabase() -> None:
    token = hs_token(CLAIMS)
    messy = " " + token[:10] + "\n" + token[10:].replace(".", "%2E", 1) + "\t"
    assert Verifier(secret=SECRET).verify(messy, NOW).sub == "user-1"


# -- JWKS --------------------------------------------------------------------------------------


def test_rs256_via_jwks(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = jwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert Verifier(jwks=jwks).verify(token, NOW).role == "authenticated"


def test_rsa_key_pinned_to_rs256(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = jwt.encode(CLAIMS, rsa_key, algorithm="RS384", headers={"kid": "rsa-1"})
    verifier = Verifier(jwks=jwks)
    assert "RS384" not in verifier.algorithms
    error = refused(verifier, token)
    assert (str(error), error.kind) == (signer_message("rsa-1"), AuthFailure.SIGNER)
    # Another RSA key accepts RS384; the pinned one still refuses it.
    other = public_jwk(RSAAlgorithm, rsa.generate_private_key(65537, 2048), "rsa-2")
    error = refused(Verifier(jwks={"keys": [*jwks["keys"], other]}), token)
    assert error.detail == "JWKS key 'rsa-1' is not for RS384"


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_rs_algorithms_with_unpinned_key(rsa_key: Any, alg: str) -> None:
    verifier = Verifier(jwks={"keys": [public_jwk(RSAAlgorithm, rsa_key, "r")]})
    token = jwt.encode(CLAIMS, rsa_key, algorithm=alg, headers={"kid": "r"})
    assert verifier.verify(token, NOW).exp == EXP


def test_es256_via_jwks(ec_key: Any, jwks: dict[str, Any]) -> None:
    token = jwt.encode(CLAIMS, ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    verifier = Verifier(jwks=jwks)
    assert verifier.verify(token, NOW).role == "authenticated"
    header, payload, _ = token.split(".")
    assert refused(verifier, f"{header}.{payload}.{b64(b'x' * 64)}").kind is AuthFailure.SIGNATURE


@pytest.mark.parametrize(
    ("curve", "alg", "crv"),
    [(ec.SECP384R1(), "ES384", "P-384"), (ec.SECP521R1(), "ES512", "P-521")],
)
def test_es384_and_es512(curve: ec.EllipticCurve, alg: str, crv: str) -> None:
    key = ec.generate_private_key(curve)
    verifier = Verifier(jwks={"keys": [public_jwk(ECAlgorithm, key, "k")]})
    assert verifier.algorithms == {alg}
    token = jwt.encode(CLAIMS, key, algorithm=alg, headers={"kid": "k"})
    assert verifier.verify(token, NOW).role == "authenticated"


def test_ec_curve_must_match_algorithm(jwks: dict[str, Any]) -> None:
    # The P-256 key "ec-1" cannot check an ES384 token, even though a secret is configured.
    p384 = ec.generate_private_key(ec.SECP384R1())
    token = jwt.encode(CLAIMS, p384, algorithm="ES384", headers={"kid": "ec-1"})
    extra = {"keys": [*jwks["keys"], public_jwk(ECAlgorithm, p384, "ec-384")]}
    error = refused(Verifier(jwks=extra), token)
    assert (error.kind, error.detail) == (AuthFailure.SIGNER, "JWKS key 'ec-1' is not for ES384")


def test_eddsa_via_jwks(ed_key: Any, jwks: dict[str, Any]) -> None:
    verifier = Verifier(jwks=jwks)
    token = jwt.encode(CLAIMS, ed_key, algorithm="EdDSA", headers={"kid": "ed-1"})
    assert verifier.verify(token, NOW).role == "authenticated"
    # RFC 8037 names the algorithm EdDSA; JOSE libraries also use the curve's name.
    header = segment({"alg": "Ed25519", "kid": "ed-1"})
    body = segment(CLAIMS)
    signature = ed_key.sign(f"{header}.{body}".encode())
    assert verifier.verify(f"{header}.{body}.{b64(signature)}", NOW).exp == EXP
    wrong_curve = segment({"alg": "Ed448", "kid": "ed-1"})
    ed448_key = public_jwk(OKPAlgorithm, ed448.Ed448PrivateKey.generate(), "ed-448")
    with_ed448 = Verifier(jwks={"keys": [*jwks["keys"], ed448_key]})
    error = refused(with_ed448, f"{wrong_curve}.{body}.{b64(signature)}")
    assert (error.kind, error.detail) == (AuthFailure.SIGNER, "JWKS key 'ed-1' is not for Ed448")


def test_ed448_key_pinned_by_curve_name() -> None:
    key = ed448.Ed448PrivateKey.generate()
    verifier = Verifier(jwks={"keys": [public_jwk(OKPAlgorithm, key, "e", alg="Ed448")]})
    assert verifier.algorithms == {"EdDSA", "Ed448"}
    token = jwt.encode(CLAIMS, key, algorithm="EdDSA", headers={"kid": "e"})
    assert verifier.verify(token, NOW).role == "authenticated"


def test_oct_jwk_with_matching_kid(jwks: dict[str, Any]) -> None:
    verifier = Verifier(secret=SECRET, jwks=jwks)
    assert verifier.verify(hs_token(CLAIMS, secret=b"o" * 32, kid="oct-1"), NOW).exp == EXP
    # The oct key, not the secret, checks tokens naming its kid.
    assert refused(verifier, hs_token(CLAIMS, kid="oct-1")).kind is AuthFailure.SIGNATURE
    # Without a secret, HS tokens need a known oct kid.
    only_jwks = Verifier(jwks=jwks)
    assert only_jwks.verify(hs_token(CLAIMS, secret=b"o" * 32, alg="HS512", kid="oct-1"), NOW)
    error = refused(only_jwks, hs_token(CLAIMS, kid="nope"))
    assert (str(error), error.detail) == (
        signer_message("nope"),
        "no oct key with kid 'nope' in the JWKS",
    )
    error = refused(only_jwks, hs_token(CLAIMS))
    assert (str(error), error.detail) == (SIGNER, "JWT has no kid; HS256 needs a JWKS key")


def test_unknown_kid(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = jwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": "rotated-away"})
    error = refused(Verifier(secret=SECRET, jwks=jwks), token)
    assert (str(error), error.kind, error.code) == (
        signer_message("rotated-away"),
        AuthFailure.SIGNER,
        "JwtSignerError",
    )
    assert error.detail == "no RSA key with kid 'rotated-away' in the JWKS"


def test_asymmetric_token_without_kid(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = jwt.encode(CLAIMS, rsa_key, algorithm="RS256")
    error = refused(Verifier(jwks=jwks), token)
    assert (str(error), error.detail) == (SIGNER, "JWT has no kid; RS256 needs a JWKS key")
    # A kid that is not a string counts as none.
    header = segment({"alg": "RS256", "kid": 7})
    token = f"{header}.{segment(CLAIMS)}.{b64(b'sig')}"
    assert str(refused(Verifier(jwks=jwks), token)) == SIGNER


def test_private_jwk_is_reduced_to_its_public_half(rsa_key: Any) -> None:
    private = {**RSAAlgorithm.to_jwk(rsa_key, as_dict=True), "kid": "p"}
    token = jwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": "p"})
    assert Verifier(jwks={"keys": [private]}).verify(token, NOW).role == "authenticated"


def test_jwks_keys_that_are_ignored(rsa_key: Any, ec_key: Any) -> None:
    k1 = ec.generate_private_key(ec.SECP256K1())
    jwks = {
        "keys": [
            public_jwk(RSAAlgorithm, rsa_key, "dup"),
            public_jwk(RSAAlgorithm, rsa.generate_private_key(65537, 2048), "dup"),  # 2nd: unused
            {**public_jwk(RSAAlgorithm, rsa_key, "x"), "kid": None},  # no kid
            public_jwk(RSAAlgorithm, rsa_key, "enc", use="enc"),  # not for signatures
            {"kty": "X", "kid": "unknown-type"},
            {"kty": ["RSA"], "kid": "unhashable-type"},
            {**public_jwk(OKPAlgorithm, ed25519.Ed25519PrivateKey.generate(), "o"), "alg": []},
            {**public_jwk(ECAlgorithm, k1, "k1")},  # secp256k1: unsupported curve
            {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": b64(b"\0" * 32)},
            public_jwk(ECAlgorithm, ec_key, "pinned-odd", alg="RS256"),  # pin contradicts type
            public_jwk(ECAlgorithm, ec_key, "pinned-junk", alg=["ES256"]),
        ]
    }
    verifier = Verifier(jwks=jwks)
    assert verifier.algorithms == {"RS256", "RS384", "RS512"}
    token = jwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": "dup"})
    assert verifier.verify(token, NOW).role == "authenticated"
    for kid in ("enc", "x"):
        token = jwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": kid})
        assert refused(verifier, token).kind is AuthFailure.SIGNER


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        ([], 'a JWKS must be an object with a "keys" list'),
        ({"keys": {}}, 'a JWKS must be an object with a "keys" list'),
        ({"keys": ["k"]}, "every JWKS key must be a JSON object"),
        ({"keys": [{"kty": "oct", "kid": "a"}]}, "JWKS key 'a' (oct) is invalid: 'k'"),
        ({"keys": [{"kty": "RSA", "kid": "b", "n": "!", "e": "AQAB"}]}, "JWKS key 'b' (RSA)"),
    ],
)
def test_broken_jwks(jwks: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Verifier(jwks=jwks)
    assert str(info.value).startswith(message)


# -- what is never accepted ------------------------------------------------------------------


def test_alg_none_rejected() -> None:
    unsigned = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(CLAIMS)}."
    error = refused(Verifier(secret=SECRET), unsigned)
    assert (str(error), error.kind) == (SIGNER, AuthFailure.SIGNER)
    assert error.detail == "algorithm 'none' is not accepted (accepted: HS256, HS384, HS512)"
    assert error.join_reason == f"JwtSignerError: {SIGNER}"


@pytest.mark.parametrize("header", [{}, {"alg": 256}, {"alg": "PS256"}, {"alg": "RS256"}])
def test_algorithms_without_keys_rejected(header: dict[str, Any]) -> None:
    token = f"{segment(header)}.{segment(CLAIMS)}.{b64(b'sig')}"
    assert refused(Verifier(secret=SECRET), token).kind is AuthFailure.SIGNER


def test_algorithm_confusion_rejected(rsa_key: Any, jwks: dict[str, Any]) -> None:
    # An attacker signs an HS256 token with the RSA *public* key PEM as the HMAC secret.
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = hs_token({**CLAIMS, "role": "service_role"}, secret=pem, kid="rsa-1")
    error = refused(Verifier(jwks=jwks), forged)  # oct-1 is the only HS key; kid differs
    assert error.kind is AuthFailure.SIGNER
    rsa_only = Verifier(jwks={"keys": [public_jwk(RSAAlgorithm, rsa_key, "rsa-1")]})
    assert "HS256" not in rsa_only.algorithms
    assert refused(rsa_only, forged).kind is AuthFailure.SIGNER
    # With a secret configured, HS tokens are checked with the secret, never the RSA key.
    assert refused(Verifier(SECRET, jwks), forged).kind is AuthFailure.SIGNATURE


def test_crit_header_rejected() -> None:
    token = hs_token(CLAIMS, crit=["b64"], b64=False)
    assert refused(Verifier(secret=SECRET), token).kind is AuthFailure.MALFORMED


NOT_UTF8 = b"\xff\xfe"
NAN_EXP = b'{"role": "anon", "exp": NaN}'


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        f"{segment({'alg': 'HS256'})}.e30=.c2ln",  # padded base64
        f"{segment({'alg': 'HS256'})}.{segment(b'not json')}.c2ln",
        f"{segment({'alg': 'HS256'})}.{segment([1, 2])}.c2ln",  # claims are not an object
        f"{segment(NOT_UTF8)}.{segment(CLAIMS)}.c2ln",  # header is not UTF-8
        f"{segment({'alg': 'HS256'})}.{segment(NAN_EXP)}.c2ln",
        f"{segment({'alg': 'HS256'})}.{segment(CLAIMS)}.a",  # signature: 1 base64 char
    ],
)
def test_garbage_token(token: str) -> None:
    error = refused(Verifier(secret=SECRET), token)
    assert (str(error), error.kind, error.code) == (
        MALFORMED,
        AuthFailure.MALFORMED,
        "MalformedJWT",
    )
    assert error.http_message == MALFORMED


def test_non_string_token() -> None:
    error = refused(Verifier(secret=SECRET), 12345)
    assert (str(error), error.detail) == (MALFORMED, "the token is not a string")


# -- claims ------------------------------------------------------------------------------------


def test_expired_message_counts_whole_seconds() -> None:
    verifier = Verifier(secret=SECRET)
    token = hs_token({**CLAIMS, "exp": 1000})
    error = refused(verifier, token, now=1012.7)
    assert (str(error), error.kind) == ("Token has expired 12 seconds ago", AuthFailure.EXPIRED)
    assert error.join_reason == "InvalidJWTToken: Token has expired 12 seconds ago"
    assert error.http_message == "Token has expired"
    # exp must be later than now: a token expiring this very second is refused.
    assert str(refused(verifier, token, now=1000)) == "Token has expired 0 seconds ago"
    assert verifier.verify(token, now=999.9).exp == 1000


def test_leeway() -> None:
    verifier = Verifier(secret=SECRET, leeway=30)
    token = hs_token({**CLAIMS, "exp": 1000})
    assert verifier.verify(token, 1029.5).role == "authenticated"
    assert str(refused(verifier, token, 1030)) == "Token has expired 30 seconds ago"


@pytest.mark.parametrize("leeway", [-1, float("inf"), float("nan")])
def test_bad_leeway(leeway: float) -> None:
    with pytest.raises(ValueError, match="leeway"):
        Verifier(secret=SECRET, leeway=leeway)


@pytest.mark.parametrize("missing", ["role", "exp"])
def test_missing_role_or_exp(missing: str) -> None:
    payload = {k: v for k, v in CLAIMS.items() if k != missing}
    error = refused(Verifier(secret=SECRET), hs_token(payload))
    assert (str(error), error.kind) == (MISSING, AuthFailure.MISSING_CLAIMS)
    assert error.join_reason == f"InvalidJWTToken: {MISSING}"


def test_null_role_counts_as_missing() -> None:
    assert str(refused(Verifier(secret=SECRET), hs_token({**CLAIMS, "role": None}))) == MISSING


@pytest.mark.parametrize("exp", ['"1700003600"', "true", "[1]", '{"t": 1}', "1e400"])
def test_non_numeric_exp(exp: str) -> None:
    # 1e400 is valid JSON that Python reads as infinity: a token that would never expire.
    payload = f'{{"role": "anon", "exp": {exp}}}'.encode()
    error = refused(Verifier(secret=SECRET), hs_token(payload))
    assert (str(error), error.kind) == (
        "Token expiration time is invalid",
        AuthFailure.INVALID_CLAIMS,
    )


@pytest.mark.parametrize("iat", ["now", None, False])
def test_non_numeric_iat(iat: Any) -> None:
    error = refused(Verifier(secret=SECRET), hs_token({**CLAIMS, "iat": iat}))
    assert (str(error), error.detail) == (
        "Token issued-at time (iat) is invalid",
        "iat is not a number",
    )
    assert error.join_reason == "InvalidJWTToken: Token issued-at time (iat) is invalid"


def test_float_exp_and_iat_accepted() -> None:
    claims = Verifier(secret=SECRET).verify(hs_token({**CLAIMS, "exp": EXP + 0.5, "iat": 1.5}), NOW)
    assert claims.exp == EXP + 0.5


@pytest.mark.parametrize("role", ["", 7, ["anon"]])
def test_role_must_be_a_string(role: Any) -> None:
    error = refused(Verifier(secret=SECRET), hs_token({**CLAIMS, "role": role}))
    assert (str(error), error.kind) == (
        "Field `role` must be a non-empty string",
        AuthFailure.INVALID_CLAIMS,
    )


def test_sub_kept_only_when_a_string() -> None:
    claims = Verifier(secret=SECRET).verify(hs_token({**CLAIMS, "sub": 42}), NOW)
    assert claims.sub is None and claims.raw["sub"] == 42


# -- construction and helpers ----------------------------------------------------------------


def test_verifier_needs_a_key() -> None:
    with pytest.raises(ValueError, match="no JWT secret and no usable JWKS key"):
        Verifier()
    with pytest.raises(ValueError, match="no JWT secret and no usable JWKS key"):
        Verifier(jwks={"keys": []})
    with pytest.raises(ValueError, match="must not be empty"):
        Verifier(secret="")


def test_repr_hides_the_secret(jwks: dict[str, Any]) -> None:
    assert SECRET not in repr(Verifier(secret=SECRET))
    assert repr(Verifier(secret=SECRET)) == (
        "Verifier(secret=set, jwks_keys=0, algorithms=['HS256', 'HS384', 'HS512'])"
    )
    assert repr(Verifier(jwks=jwks)).startswith("Verifier(secret=unset, jwks_keys=4, ")


def test_auth_error_defaults() -> None:
    error = AuthError("Token expiration time is invalid")
    assert (error.reason, error.kind, error.detail) == (
        "Token expiration time is invalid",
        AuthFailure.INVALID_CLAIMS,
        None,
    )
    assert error.join_reason == "InvalidJWTToken: Token expiration time is invalid"


def test_make_token_round_trip() -> None:
    token = make_token(SECRET, now=NOW, sub="u1", room=3)
    claims = Verifier(secret=SECRET).verify(token, NOW + 10)
    assert dict(claims.raw) == {
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
        "role": "anon",
        "sub": "u1",
        "room": 3,
    }
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    assert jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert make_token(SECRET.encode(), role="service_role", ttl=60, now=NOW) == make_token(
        SECRET, "service_role", 60, now=NOW
    )


def test_make_token_without_role_and_with_clock() -> None:
    verifier = Verifier(secret=SECRET)
    assert str(refused(verifier, make_token(SECRET, role=None, now=NOW))) == MISSING
    before = time.time()
    claims = verify_now(verifier, make_token(SECRET, ttl=5))
    assert claims.role == "anon"
    assert before - 1 <= claims.raw["iat"] <= time.time()


def test_expires_in() -> None:
    claims = Verifier(secret=SECRET).verify(hs_token({**CLAIMS, "exp": 1000}), 900)
    assert expires_in(claims, 900) == 100
    assert expires_in(claims, 1010) == -10
    assert expires_in(claims, 1010, leeway=30) == 20


def test_is_opaque_key() -> None:
    assert is_opaque_key("sb_publishable_abc123")
    assert is_opaque_key("sb_secret_abc123")
    assert not is_opaque_key(make_token(SECRET, now=NOW))
    assert not is_opaque_key("")


def test_hmac_jwk_helper_agrees() -> None:
    # The oct JWK "k" is the base64url of the secret bytes, as PyJWT writes it.
    jwk = HMACAlgorithm.to_jwk(SECRET, as_dict=True)
    verifier = Verifier(jwks={"keys": [{**jwk, "kid": "k"}]})
    assert verifier.verify(hs_token(CLAIMS, kid="k"), NOW).role == "authenticated"
