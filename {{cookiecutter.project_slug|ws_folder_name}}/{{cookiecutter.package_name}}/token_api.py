"""``POST /api/tokens/connection`` and ``POST /api/tokens/subscription``: the tokens of the
channels endpoint, minted for the user of the request (README, "Channels in a browser").

A browser app's centrifuge-js asks for them in its ``getToken`` functions: the request
carries the user's session cookie (same origin), auth.py says who the user is, exactly as
for a websocket handshake, and the answer is ``200 {"token": "<JWT>"}``, signed with
``TOKEN_HMAC_SECRET_KEY`` (HS256) for ``CONNECTION_TOKEN_TTL_SECONDS`` or
``SUBSCRIPTION_TOKEN_TTL_SECONDS``. A subscription token is asked for with
``{"channel": "private:..."}``, for a channel of a namespace whose subscribe rule is
``TOKEN``, and given only where ``channels.grants_token`` says the user may have it.

Every refusal is a JSON ``{"detail": "<one sentence>"}``: 401 without a user (auth.py
found none, or refused the request), 403 from a page of another origin (the websocket's
Origin check) or for a channel the user may not have, 400 for a body that is not JSON,
422 for a channel that is unknown or takes no token, 405 for another method than POST, and
503 while the service has no HMAC secret to sign with (RS256 and ES256 tokens are minted
by whoever holds the private key, not by this service). Tokens are never logged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Final

from .websocket.asgi_types import Receive, Scope, Send
from .websocket.centrifuge_protocol import user_of
from .websocket.guard import Authenticator, Handshake, Refuse, origin_allowed
from .websocket.namespaces import TOKEN, ChannelRequest, Namespaces
from .websocket.publish_api import {% if cookiecutter.framework == "fastapi" %}openapi_answer, {% endif %}send_json
from .websocket.tokens import TokenSigner

CONNECTION_PATH: Final = "/api/tokens/connection"
SUBSCRIPTION_PATH: Final = "/api/tokens/subscription"
MAX_BODY_BYTES: Final = 4096

Grant = Callable[[ChannelRequest], Awaitable[bool]]


class TokenAPI:
    """The ASGI application of both paths (it tells them apart by the scope's path).

    ``signer`` is None when the service has no HMAC secret (then every call gets 503);
    ``grants`` decides who may have a subscription token for which channel.
    """

    def __init__(
        self,
        *,
        authenticate: Authenticator,
        namespaces: Namespaces,
        grants: Grant,
        signer: TokenSigner | None,
        connection_ttl: float,
        subscription_ttl: float,
        allowed_origins: frozenset[str] = frozenset(),
    ) -> None:
        self._authenticate = authenticate
        self._namespaces = namespaces
        self._grants = grants
        self._signer = signer
        self._connection_ttl = connection_ttl
        self._subscription_ttl = subscription_ttl
        self._allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"TokenAPI serves HTTP, not {scope['type']!r}")
        status, body = await self._answer(scope, receive)
        headers = [(b"allow", b"POST")] if status == HTTPStatus.METHOD_NOT_ALLOWED else []
        await send_json(send, status, body, headers)

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        if scope.get("method") != "POST":
            return _refused(HTTPStatus.METHOD_NOT_ALLOWED, "Ask for a token with POST.")
        handshake = Handshake.from_scope(scope)
        if not origin_allowed(handshake, scope.get("scheme", "http"), self._allowed_origins):
            return _refused(
                HTTPStatus.FORBIDDEN,
                "The request comes from a page of another origin: list it in ALLOWED_ORIGINS.",
            )
        try:
            identity = await self._authenticate(handshake)
        except Refuse:
            identity = None
        user = user_of(identity)
        if not user:
            return _refused(HTTPStatus.UNAUTHORIZED, "Sign in first: auth.py found no user.")
        if self._signer is None:
            return _refused(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "The service has no TOKEN_HMAC_SECRET_KEY to sign tokens with (RS256 and "
                "ES256 tokens are minted by whoever holds the private key).",
            )
        if scope["path"] == CONNECTION_PATH:
            token = self._signer.connection_token(user, self._connection_ttl)
            return HTTPStatus.OK, {"token": token}
        request = await _json_body(receive)
        channel = request.get("channel") if isinstance(request, dict) else None
        if request is None:
            return _refused(HTTPStatus.BAD_REQUEST, "The body is not JSON.")
        if not isinstance(channel, str):
            return _refused(HTTPStatus.UNPROCESSABLE_ENTITY, 'Send {"channel": "<channel>"}.')
        namespace = self._namespaces.find(channel)
        if namespace is None:
            return _refused(HTTPStatus.UNPROCESSABLE_ENTITY, f"{channel!r} is no known channel.")
        if namespace.subscribe is not TOKEN:
            return _refused(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"{channel!r} takes no subscription token: its namespace's rule decides.",
            )
        if not await self._grants(ChannelRequest(channel, namespace, user, identity, False)):
            return _refused(HTTPStatus.FORBIDDEN, f"{user!r} may not subscribe to {channel!r}.")
        token = self._signer.subscription_token(user, channel, self._subscription_ttl)
        return HTTPStatus.OK, {"token": token}


async def _json_body(receive: Receive) -> object | None:
    """The request's body as JSON (an empty body is ``{}``), or None if it is not JSON or
    longer than `MAX_BODY_BYTES`."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body"):
            break
    try:
        return json.loads(body) if body.strip() else {}
    except ValueError:
        return None


def _refused(status: HTTPStatus, reason: str) -> tuple[int, dict[str, Any]]:
    return status, {"detail": reason}
{%- if cookiecutter.framework == "fastapi" %}


def add_token_routes_to_openapi(document: dict[str, Any]) -> dict[str, Any]:
    """Add both routes to an OpenAPI 3.1 ``document`` (FastAPI's ``app.openapi()``, which
    does not see this raw ASGI app) after `publish_api.add_to_openapi` (its ``Refusal``
    schema serves here too), with their request and answer schemas. Returns ``document``,
    changed in place."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Token"] = {
        "type": "object",
        "properties": {"token": {"type": "string", "description": "A JWT (HS256)."}},
        "required": ["token"],
    }
    schemas["SubscriptionTokenRequest"] = {
        "type": "object",
        "properties": {
            "channel": {
                "type": "string",
                "description": "A channel of a namespace whose subscribe rule is TOKEN.",
                "examples": ["private:notes#alice"],
            }
        },
        "required": ["channel"],
    }
    refusals = {
        "401": openapi_answer("auth.py found no user in the request (its cookie).", "Refusal"),
        "403": openapi_answer("A page of another origin asked (ALLOWED_ORIGINS).", "Refusal"),
        "503": openapi_answer("The service has no TOKEN_HMAC_SECRET_KEY to sign with.", "Refusal"),
    }
    paths = document.setdefault("paths", {})
    paths[CONNECTION_PATH] = {
        "post": {
            "summary": "A connection token for the user of the request",
            "description": f"Valid for CONNECTION_TOKEN_TTL_SECONDS. {_ASKED}",
            "operationId": "connection_token",
            "responses": {"200": openapi_answer("The token.", "Token"), **refusals},
        }
    }
    paths[SUBSCRIPTION_PATH] = {
        "post": {
            "summary": "A subscription token for a channel, if channels.grants_token allows",
            "description": f"Valid for SUBSCRIPTION_TOKEN_TTL_SECONDS. {_ASKED}",
            "operationId": "subscription_token",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/SubscriptionTokenRequest"}
                    }
                },
            },
            "responses": {
                "200": openapi_answer("The token.", "Token"),
                "400": openapi_answer("The body is not JSON.", "Refusal"),
                **refusals,
                "403": openapi_answer(
                    "A page of another origin asked, or channels.grants_token refused.",
                    "Refusal",
                ),
                "422": openapi_answer("The channel is unknown or takes no token.", "Refusal"),
            },
        }
    }
    return document


_ASKED: Final = (
    "Asked by centrifuge-js's getToken from a page of the service's origin, with the "
    "user's session cookie: auth.py says who the user is, as for a websocket handshake."
)
{%- endif %}
