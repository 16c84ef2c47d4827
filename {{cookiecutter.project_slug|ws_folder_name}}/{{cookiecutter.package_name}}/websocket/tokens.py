"""Connection and subscription tokens: JSON Web Tokens for the clients of a `channels` endpoint.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Signed and verified with PyJWT, with Centrifugo's claims. The application
mints a *connection token* for its user (``sub`` the user's id, ``exp`` when it stops being
accepted) and the client sends it in its ``connect`` command (and a new one in ``refresh``
before it expires); a *subscription token* (``sub``, ``channel``, ``exp``) lets that user
subscribe to that one channel (namespaces whose rule is ``TOKEN``), sent in ``subscribe``
and renewed by ``sub_refresh``. `TokenSigner` mints both (HS256); `TokenVerifier` checks
them. HS256 tokens are signed with a shared secret of at least 32 bytes
(``TOKEN_HMAC_SECRET_KEY``); RS256 and ES256 ones with a private key whose public half the
service is given (``TOKEN_PUBLIC_KEY``, PEM). A token that is not signed (``alg: none``),
signed with another key or algorithm, or whose claims are malformed is refused; so is every
token while no key is configured.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

import jwt

MIN_HMAC_SECRET_BYTES: Final = 32
"""An HS256 secret shorter than this can be guessed offline from one token (RFC 7518 3.2)."""
LEEWAY_SECONDS: Final = 0


class TokenInvalid(Exception):
    """The token cannot be trusted: malformed, unsigned, signed with another key, or no
    key is configured. The message says which, without the token."""


class TokenExpired(TokenInvalid):
    """The token was valid, but its ``exp`` has passed: the client should get a new one."""


class TokenMismatch(TokenInvalid):
    """A subscription token, signed by a key of the service, for another channel, another
    user or another connection: not a token this client should hold."""


def _check_secret(hmac_secret: str) -> None:
    if len(hmac_secret.encode()) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(
            f"The token HMAC secret has {len(hmac_secret.encode())} bytes; "
            f"use at least {MIN_HMAC_SECRET_BYTES} random ones."
        )


class TokenSigner:
    """Mints HS256 tokens with the service's HMAC secret, for the application to hand to its
    users (a route that knows who the user of a request is)."""

    def __init__(self, hmac_secret: str) -> None:
        _check_secret(hmac_secret)
        self._secret = hmac_secret

    def connection_token(self, user: str, ttl: float, **claims: Any) -> str:
        """A connection token for ``user`` (``sub``), valid ``ttl`` seconds from now; extra
        ``claims`` (``info``, say) go in as they are."""
        return self._sign({**claims, "sub": user}, ttl)

    def subscription_token(self, user: str, channel: str, ttl: float, **claims: Any) -> str:
        """A token that lets ``user``'s connections subscribe to ``channel`` for ``ttl``
        seconds from now (and a subscription made with it live that long, unless renewed)."""
        if not channel:
            raise ValueError("A subscription token needs the channel it is for.")
        return self._sign({**claims, "sub": user, "channel": channel}, ttl)

    def _sign(self, claims: dict[str, Any], ttl: float) -> str:
        if not ttl > 0:
            raise ValueError(f"A token's ttl must be more than 0 seconds (was {ttl}).")
        now = time.time()
        claims.update(iat=int(now), exp=math.ceil(now + ttl))  # at least ttl seconds
        return jwt.encode(claims, self._secret, algorithm="HS256")


class TokenVerifier:
    """Checks connection tokens with the service's keys (either may be empty)."""

    def __init__(self, hmac_secret: str = "", public_key: str = "") -> None:
        if hmac_secret:
            _check_secret(hmac_secret)
        self._keys: list[tuple[Any, list[str]]] = []
        if hmac_secret:
            self._keys.append((hmac_secret, ["HS256"]))
        if public_key:
            self._keys.append(_public_key(public_key))

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (without one, every token is refused)."""
        return bool(self._keys)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token``, once its signature and ``exp`` are checked.

        Raises `TokenExpired` for an expired token, `TokenInvalid` for any other problem.
        ``sub`` must be a string when present; the user is ``sub`` ("" or none: anonymous).
        """
        if not self._keys:
            raise TokenInvalid("tokens are not accepted: the service has no token key")
        problem = "the token's signature does not match any key"
        for key, algorithms in self._keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=algorithms,
                    options={"require": [], "verify_aud": False},
                    leeway=LEEWAY_SECONDS,
                )
            except jwt.ExpiredSignatureError:
                raise TokenExpired("the token has expired") from None
            except jwt.InvalidAlgorithmError:
                problem = "the token is signed with an algorithm this key does not accept"
                continue
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as error:
                raise TokenInvalid(f"the token is invalid: {error}") from None
            if not isinstance(claims.get("sub", ""), str):
                raise TokenInvalid("the token's sub claim is not a string")
            return claims
        raise TokenInvalid(problem)

    def verify_subscription(
        self, token: str, channel: str, user: str, client_id: str = ""
    ) -> dict[str, Any]:
        """The claims of subscription ``token``, once checked as `verify` does and found to
        be for ``channel`` and ``user`` (and, if it names one in ``client``, for the
        connection ``client_id``); else `TokenMismatch` (the others as `verify`)."""
        claims = self.verify(token)
        if claims.get("channel") != channel:
            raise TokenMismatch("the subscription token is for another channel")
        if claims.get("sub", "") != user:
            raise TokenMismatch("the subscription token is for another user")
        client = claims.get("client")
        if client and client != client_id:
            raise TokenMismatch("the subscription token is for another connection")
        return claims


def _public_key(pem: str) -> tuple[Any, list[str]]:
    """The key in ``pem`` and the one algorithm it verifies (RS256 or ES256)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as error:
        raise ValueError(f"The token public key is not a PEM public key: {error}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, ["ES256"]
    raise ValueError("The token public key must be an RSA key (RS256) or a P-256 key (ES256).")
