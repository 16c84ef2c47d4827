"""Connection tokens: JSON Web Tokens that say who a client of a `channels` endpoint is.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Verified with PyJWT. The application mints a token for its user (``sub``
the user's id, ``exp`` when it stops being accepted) and the client sends it in its
``connect`` command, as Centrifugo's clients do. HS256 tokens are signed with a shared
secret of at least 32 bytes (``TOKEN_HMAC_SECRET_KEY``); RS256 and ES256 ones with a
private key whose public half the service is given (``TOKEN_PUBLIC_KEY``, PEM). A token
that is not signed (``alg: none``), signed with another key or algorithm, or whose claims
are malformed is refused; so is every token while no key is configured.
"""

from __future__ import annotations

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


class TokenVerifier:
    """Checks connection tokens with the service's keys (either may be empty)."""

    def __init__(self, hmac_secret: str = "", public_key: str = "") -> None:
        if hmac_secret and len(hmac_secret.encode()) < MIN_HMAC_SECRET_BYTES:
            raise ValueError(
                f"The token HMAC secret has {len(hmac_secret.encode())} bytes; "
                f"use at least {MIN_HMAC_SECRET_BYTES} random ones."
            )
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
