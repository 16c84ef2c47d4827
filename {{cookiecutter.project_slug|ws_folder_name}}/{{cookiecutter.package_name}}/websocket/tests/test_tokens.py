"""Connection tokens: JWTs verified with the service's keys, and nothing else."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..tokens import TokenExpired, TokenInvalid, TokenVerifier

SECRET = "k" * 64  # long enough for HS512 too (PyJWT warns below 64 bytes)


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_an_hs256_token_gives_its_claims_until_it_expires() -> None:
    verifier = TokenVerifier(SECRET)
    claims = verifier.verify(jwt.encode({"sub": "alice", "exp": time.time() + 60}, SECRET))
    assert claims["sub"] == "alice"
    with pytest.raises(TokenExpired):
        verifier.verify(jwt.encode({"sub": "alice", "exp": time.time() - 1}, SECRET))


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode({"sub": "alice"}, "another secret of thirty-two bytes"),
        jwt.encode({"sub": "alice"}, "", "none"),
        jwt.encode({"sub": "alice"}, SECRET, "HS512"),
        jwt.encode({"sub": ["alice"]}, SECRET),
        "not-a-token",
    ],
    ids=["another-key", "alg-none", "another-algorithm", "sub-not-a-string", "garbage"],
)
def test_tokens_that_cannot_be_trusted_are_invalid(token: str) -> None:
    with pytest.raises(TokenInvalid) as refused:
        TokenVerifier(SECRET).verify(token)
    assert not isinstance(refused.value, TokenExpired)
    assert token not in str(refused.value)  # never echoed (logs)


def test_without_a_key_every_token_is_refused_and_a_short_secret_is_not_taken() -> None:
    assert not TokenVerifier().enabled
    with pytest.raises(TokenInvalid, match="no token key"):
        TokenVerifier().verify(jwt.encode({"sub": "alice"}, SECRET))
    with pytest.raises(ValueError, match="at least 32"):
        TokenVerifier("short")


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
def test_a_public_key_verifies_tokens_signed_with_its_private_half(kind: str) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    verifier = TokenVerifier(SECRET, public_key=pem_of(key))
    assert verifier.verify(jwt.encode({"sub": "bob"}, key, kind))["sub"] == "bob"
    assert verifier.verify(jwt.encode({"sub": "carol"}, SECRET))["sub"] == "carol"
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenInvalid):
        verifier.verify(jwt.encode({"sub": "bob"}, other, "ES256"))


def test_a_public_key_that_is_not_one_is_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="not a PEM public key"):
        TokenVerifier(public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")
