"""Connection tokens: JWTs verified with the service's keys, and nothing else."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..tokens import TokenExpired, TokenInvalid, TokenMismatch, TokenSigner, TokenVerifier

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


def test_the_signer_mints_tokens_the_verifier_takes_for_their_lifetime() -> None:
    signer, verifier = TokenSigner(SECRET), TokenVerifier(SECRET)
    before = time.time()
    claims = verifier.verify(signer.connection_token("alice", 30, info={"name": "Alice"}))
    assert (claims["sub"], claims["info"]) == ("alice", {"name": "Alice"})
    assert before + 30 <= claims["exp"] <= time.time() + 31
    assert before - 1 <= claims["iat"] <= time.time()
    token = signer.subscription_token("alice", "private:a", 30)
    claims = verifier.verify_subscription(token, "private:a", "alice")
    assert (claims["sub"], claims["channel"]) == ("alice", "private:a")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_the_signer_refuses_what_cannot_make_a_good_token() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        TokenSigner("short")
    with pytest.raises(ValueError, match="more than 0"):
        TokenSigner(SECRET).connection_token("alice", 0)
    with pytest.raises(ValueError, match="channel"):
        TokenSigner(SECRET).subscription_token("alice", "", 30)


@pytest.mark.parametrize(
    ("claims", "refusal"),
    [
        ({"sub": "alice", "channel": "private:b"}, "another channel"),
        ({"sub": "alice"}, "another channel"),
        ({"sub": "bob", "channel": "private:a"}, "another user"),
        ({"channel": "private:a"}, "another user"),
        ({"sub": "alice", "channel": "private:a", "client": "c2"}, "another connection"),
    ],
    ids=["channel", "no-channel", "user", "anonymous", "client"],
)
def test_a_subscription_token_for_another_channel_user_or_connection_is_a_mismatch(
    claims: dict[str, str], refusal: str
) -> None:
    with pytest.raises(TokenMismatch, match=refusal):
        TokenVerifier(SECRET).verify_subscription(
            jwt.encode(claims, SECRET), "private:a", "alice", "c1"
        )
    claims = {"sub": "alice", "channel": "private:a", "client": "c1"}
    assert TokenVerifier(SECRET).verify_subscription(
        jwt.encode(claims, SECRET), "private:a", "alice", "c1"
    )


def test_a_subscription_token_expired_or_signed_by_another_key_is_not_a_mismatch() -> None:
    claims = {"sub": "alice", "channel": "private:a"}
    with pytest.raises(TokenExpired):
        TokenVerifier(SECRET).verify_subscription(
            jwt.encode({**claims, "exp": time.time() - 1}, SECRET), "private:a", "alice"
        )
    with pytest.raises(TokenInvalid) as refused:
        TokenVerifier(SECRET).verify_subscription(
            jwt.encode(claims, "another secret of thirty-two bytes"), "private:a", "alice"
        )
    assert not isinstance(refused.value, TokenMismatch)
