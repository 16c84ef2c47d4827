"""`PublishAPI`: ``POST /api/publish`` and ``GET /api/presence``, the service's HTTP API.

How code outside the service publishes to a channel, sends to one user, and asks who is on
a channel.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). A raw ASGI application, standard library only, mounted by the app of
both faces (FastAPI's ``app.add_route``, the `Router`'s ``add_http_route``)::

    POST /api/publish
    Authorization: Bearer <PUBLISH_API_KEY>
    Content-Type: application/json

    {"channel": "/ws/rooms/lobby", "message": {"text": "hello"}}

answers ``200 {"channel": ..., "offset": ..., "epoch": ...}`` once the hub has published
the message: every client of the channel receives it as if a client had sent it. The
channel is the path of a broadcast endpoint, or, in a service with a channels endpoint,
a channel of one of its namespaces (``{"channel": "news:sport", ...}``), whose Centrifuge
subscribers receive the message as the ``data`` of a publication. With a
``user`` instead of a channel, ``{"user": "alice", "message": {...}}``, every connection of
that user (the identity auth.py returned, compared as JSON) on every broadcast endpoint of
every process receives ``{"type": "direct", "server_ns", "message"}``; in a service whose
channels endpoint has a *personal* namespace (``user:#alice``), the message is also
published to the user's channel there (a user given as a string or number), which every
channels connection of the user is subscribed to by the server: it arrives there once, as
a publication it can recover after a reconnect, and not also as a ``message`` push
(`send_to_user` does the same from Python). The answer is ``200 {"user": ..., "channels":
[{"channel", "offset", "epoch"}, ...]}`` (the personal channels it was published to, with
its positions; none without a personal namespace) whether or not the user is connected. ::

    GET /api/presence?channel=/ws/rooms/lobby
    Authorization: Bearer <PUBLISH_API_KEY>

answers ``200 {"type": "presence", "channel", "count", "clients", "cut"}``, what a client
of the channel gets for ``{"type": "presence"}``. Every refusal is a JSON ``{"detail":
"<one sentence>"}`` and publishes nothing:

- 403 while no key is configured (the API is off until then), or for a wrong key, and 401
  for a missing one; keys are compared in constant time, and neither keys nor messages
  are ever logged;
- 400 for a body that is not JSON, 422 for one that is not ``{"channel": "...",
  "message": {...}}`` or ``{"user": ..., "message": {...}}``, or whose channel matches no
  broadcast endpoint and no namespace (or a presence query without one ``channel``), 413 for a message
  over ``max_message_bytes`` (the limit clients have). A channel is the path a client is on,
  as the server decoded it: ``/ws/rooms/café``, never ``/ws/rooms/caf%C3%A9``, a query string
  (``?since=1``) or a ``{name}`` left unfilled; the 422 names the endpoints' paths and the
  namespaces, and says which of those mistakes the channel makes;
- 405 for another method than POST (GET for presence), 404 for presence while the service
  keeps none (``PRESENCE_ENABLED=no``), 503 when the hub cannot publish or read presence
  (Redis is down).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, unquote

from .asgi_types import Receive, Scope, Send
from .broadcast import Hub, HubUnavailable, JSONValue, Position, PresenceOff, hub_of
from .session import dumps, loads

logger = logging.getLogger(__name__)

PATH: Final = "/api/publish"
PRESENCE_PATH: Final = "/api/presence"
BODY_OVERHEAD: Final = 4096
"""Bytes a request body may have besides its message (the channel, the JSON around)."""
_NOT_IN_A_SEGMENT: Final = re.compile(r"[?#{}]|%[0-9A-Fa-f]{2}")
"""What a channel's parameter segment cannot hold: a query, a fragment, an unfilled
``{name}``, a percent-escape (a client of ``/ws/rooms/caf%C3%A9`` is on ``/ws/rooms/café``)."""


class ChannelNamespaces(Protocol):
    """What `PublishAPI` asks of the namespaces of channels endpoints (``namespaces.py``'s
    `Namespaces`): the namespace a channel name belongs to, or None, and their names."""

    def find(self, channel: str) -> object | None: ...

    @property
    def names(self) -> list[str]: ...

    def personal_channels(self, user: str) -> list[str]: ...


async def send_to_user(
    hub: Hub,
    user: JSONValue,
    message: Mapping[str, Any],
    namespaces: ChannelNamespaces | None = None,
) -> list[tuple[str, Position]]:
    """Send ``message`` to ``user`` everywhere they are: published to each of their personal
    channels (``user:#alice``, in the personal namespaces of ``namespaces``; a user given as
    a string or number), which their channels connections are subscribed to and recover, and
    sent as a direct message to their connections of broadcast endpoints (and of channels
    endpoints without a personal namespace), each connection once. Returns the channels
    published to, with the message's position on each.

    From Python, as ``POST /api/publish`` does: ``await send_to_user(hub_of(request),
    "alice", {"text": "hi"}, NAMESPACES)`` (the project's ``channels.py``). Raises
    `HubUnavailable` when the hub cannot send it (what was published before stays; its
    ``maybe_published`` says if this one may have been published all the same), and
    TypeError or ValueError for a message that is not JSON."""
    published = []
    if namespaces is not None and isinstance(user, str | int) and not isinstance(user, bool):
        for channel in namespaces.personal_channels(str(user)):
            published.append((channel, await hub.publish(channel, message)))
    await hub.publish_to_user(user, message)
    return published


class PublishAPI:
    """The ASGI application of ``POST /api/publish`` and ``GET /api/presence`` (see the
    module's docs): mount it on both paths; it tells them apart by the scope's path.

    ``channels`` are the path templates of the broadcast endpoints (``/ws/rooms/{room}``):
    a channel is published to only if it matches one, each ``{name}`` matching one path
    segment that has no ``?``, ``#``, ``{``, ``}`` or percent-escape, or if ``namespaces`` (those of the channels endpoints, if the service has
    one) finds its namespace (``news:sport``). ``api_key`` empty turns the API off. ``hub``
    finds the hub from the scope.
    """

    def __init__(
        self,
        channels: Sequence[str],
        *,
        api_key: str,
        max_message_bytes: int,
        namespaces: ChannelNamespaces | None = None,
        hub: Callable[[Mapping[str, Any]], Hub] = hub_of,
    ) -> None:
        self._channels = list(channels)
        self._templates = [template.split("/") for template in channels]
        self._namespaces = namespaces
        self._key = api_key.encode()
        self._max_message_bytes = max_message_bytes
        self._hub = hub

    @property
    def enabled(self) -> bool:
        return bool(self._key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"PublishAPI serves HTTP, not {scope['type']!r}")
        presence = scope["path"] == PRESENCE_PATH
        if presence:
            status, body = await self._presence(scope)
        else:
            status, body = await self._publish(scope, receive)
        headers = []
        if status == HTTPStatus.UNAUTHORIZED:
            headers.append((b"www-authenticate", b'Bearer realm="publish"'))
        elif status == HTTPStatus.METHOD_NOT_ALLOWED:
            headers.append((b"allow", b"GET" if presence else b"POST"))
        await send_json(send, status, body, headers)

    def matches(self, channel: str) -> bool:
        """Whether ``channel`` is the path of a broadcast endpoint or a channel of a namespace."""
        if self._namespaces is not None and self._namespaces.find(channel) is not None:
            return True
        segments = channel.split("/")
        return any(
            len(template) == len(segments)
            and all(_fills(part, segment) for part, segment in zip(template, segments, strict=True))
            for template in self._templates
        )

    def _unknown(self, channel: object) -> str:
        """The sentence refusing ``channel``, which `matches` no endpoint: what the channels
        are, and the mistake it makes if it is a near miss."""
        sentence = f"The channel {dumps(channel)[:200]} is the path of no broadcast endpoint"
        if self._namespaces is not None:
            names = ", ".join(self._namespaces.names)
            sentence += f" and in no namespace of the channels endpoints (channels.py: {names})"
        if self._channels:
            sentence += (
                f"; the broadcast endpoints are {', '.join(self._channels)}, each "
                "{name} filled in with one path segment"
            )
        return f"{sentence}{self._mistake(channel) if isinstance(channel, str) else ''}."

    def _mistake(self, channel: str) -> str:
        """What makes ``channel`` miss a path that a client can be on, if that is all."""
        path, question_mark, _ = channel.partition("?")
        if question_mark and self.matches(path):
            return f": leave out the query string ({dumps(path)})"
        try:
            decoded = unquote(channel, errors="strict")
        except UnicodeDecodeError:  # not UTF-8 once decoded: no client's path
            decoded = channel
        if decoded != channel and self.matches(decoded):
            return f": give the path decoded, as clients are on it ({dumps(decoded)})"
        if re.search(r"/\{[^/]*\}(/|$)", channel):
            return ": fill in each {name} with the room, user, ... a client connects to"
        return ""

    def _refusal(self, scope: Scope, api: str) -> tuple[int, dict[str, Any]] | None:
        """Why the request may not use the ``api`` (its key), or None if it may."""
        if not self._key:
            return _refused(
                HTTPStatus.FORBIDDEN, f"The {api} API is off: set PUBLISH_API_KEY to turn it on."
            )
        given = _bearer(scope)
        if given is None:
            return _refused(
                HTTPStatus.UNAUTHORIZED, "Send the key as Authorization: Bearer <PUBLISH_API_KEY>."
            )
        if not hmac.compare_digest(given, self._key):
            return _refused(HTTPStatus.FORBIDDEN, f"The {api} API key is wrong.")
        return None

    async def _presence(self, scope: Scope) -> tuple[int, dict[str, Any]]:
        if scope["method"] != "GET":
            return _refused(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{PRESENCE_PATH} takes GET requests only."
            )
        refusal = self._refusal(scope, "presence")
        if refusal is not None:
            return refusal
        try:
            query = parse_qs(bytes(scope.get("query_string", b"")).decode(), errors="strict")
        except UnicodeDecodeError:
            query = {}
        channels = query.get("channel", [])
        if len(channels) != 1:
            return _refused(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                "Give the channel once: GET /api/presence?channel=<path>.",
            )
        channel = channels[0]
        if not self.matches(channel):
            return _refused(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                self._unknown(channel),
            )
        try:
            presence = await self._hub(scope).presence(channel)
        except PresenceOff as error:
            reason = str(error)
            return _refused(HTTPStatus.NOT_FOUND, f"{reason[:1].upper()}{reason[1:]}.")
        except HubUnavailable as error:
            return _refused(HTTPStatus.SERVICE_UNAVAILABLE, f"{str(error).capitalize()}.")
        return HTTPStatus.OK, presence.answer(channel)

    async def _publish(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        if scope["method"] != "POST":
            return _refused(HTTPStatus.METHOD_NOT_ALLOWED, f"{PATH} takes POST requests only.")
        refusal = self._refusal(scope, "publish")
        if refusal is not None:
            return refusal
        body = await _body(receive, self._max_message_bytes + BODY_OVERHEAD)
        if body is None:
            return _refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"The message is over MAX_MESSAGE_BYTES ({self._max_message_bytes} bytes).",
            )
        try:
            request = loads(body.decode("utf-8"))
        except ValueError:
            return _refused(HTTPStatus.BAD_REQUEST, "The body is not JSON (UTF-8).")
        if not isinstance(request, dict) or set(request) not in (
            {"channel", "message"},
            {"user", "message"},
        ):
            return _refused(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                'The body must be {"channel": "<path>", "message": {...}} or {"user": ..., '
                '"message": {...}}, nothing else.',
            )
        if "user" in request:
            return await self._send_to_user(scope, request["user"], request["message"])
        channel, message = request["channel"], request["message"]
        if not isinstance(channel, str) or not self.matches(channel):
            return _refused(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                self._unknown(channel),
            )
        refusal = self._refusal_of(message)
        if refusal is not None:
            return refusal
        try:
            position = await self._hub(scope).publish(channel, message)
        except HubUnavailable as error:
            return _refused(HTTPStatus.SERVICE_UNAVAILABLE, f"{str(error).capitalize()}.")
        return HTTPStatus.OK, {
            "channel": channel,
            "offset": position.offset,
            "epoch": position.epoch,
        }

    async def _send_to_user(
        self, scope: Scope, user: Any, message: Any
    ) -> tuple[int, dict[str, Any]]:
        if user is None:
            return _refused(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                "The user must be who auth.py returned for them, not null.",
            )
        refusal = self._refusal_of(message)
        if refusal is not None:
            return refusal
        try:
            published = await send_to_user(self._hub(scope), user, message, self._namespaces)
        except HubUnavailable as error:
            return _refused(HTTPStatus.SERVICE_UNAVAILABLE, f"{str(error).capitalize()}.")
        channels = [
            {"channel": channel, "offset": position.offset, "epoch": position.epoch}
            for channel, position in published
        ]
        return HTTPStatus.OK, {"user": user, "channels": channels}

    def _refusal_of(self, message: Any) -> tuple[int, dict[str, Any]] | None:
        """Why ``message`` cannot be sent, as an answer; None if it can."""
        if not isinstance(message, dict):
            return _refused(HTTPStatus.UNPROCESSABLE_ENTITY, "The message must be a JSON object.")
        if len(dumps(message).encode()) > self._max_message_bytes:
            return _refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"The message is over MAX_MESSAGE_BYTES ({self._max_message_bytes} bytes).",
            )
        return None


def _fills(part: str, segment: str) -> bool:
    """Whether ``segment`` of a channel fills ``part`` of a path template: the same text, or
    for a ``{name}`` one segment a client's path can have (see `_NOT_IN_A_SEGMENT`)."""
    if part.startswith("{") and part.endswith("}"):
        return segment != "" and _NOT_IN_A_SEGMENT.search(segment) is None
    return part == segment


def _refused(status: HTTPStatus, reason: str) -> tuple[int, dict[str, Any]]:
    return status, {"detail": reason}


def _bearer(scope: Scope) -> bytes | None:
    """The key of the request's ``Authorization: Bearer <key>`` header, if it has one."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = bytes(value).strip().partition(b" ")
            if scheme.lower() == b"bearer" and key.strip():
                return key.strip()
    return None


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The request's body; None once it is over ``limit`` bytes (the rest is not read)."""
    body = bytearray()
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":  # gone before the end: publish nothing
            return b""
        body += event.get("body", b"")
        if len(body) > limit:
            return None
        if not event.get("more_body", False):
            return bytes(body)


def openapi_answer(description: str, schema: str) -> dict[str, Any]:
    """An OpenAPI response: JSON of the document's component schema ``schema``."""
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return {"description": description, "content": content}


def add_to_openapi(document: dict[str, Any], channels: Sequence[str] = ()) -> dict[str, Any]:
    """Add ``POST /api/publish`` and ``GET /api/presence`` to an OpenAPI 3.1 ``document``
    (FastAPI's ``app.openapi()``, which does not see this raw ASGI app), with their request
    and answer schemas and the bearer key; ``channels``, the broadcast endpoints' path
    templates, go in the channel's description. Returns ``document``, changed in place."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemes = document["components"].setdefault("securitySchemes", {})
    schemes["PublishAPIKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "The service's PUBLISH_API_KEY (the API is off until it is set).",
    }
    where = f" ({', '.join(channels)}, each " + "{name} filled in)" if channels else ""
    channel = {
        "type": "string",
        "description": f"The path a client is on, decoded{where}, or a channel of a "
        "namespace of the channels endpoints (news:today).",
        "examples": [channels[0] if channels else "news:today"],
    }
    schemas["PublishToChannel"] = {
        "type": "object",
        "properties": {"channel": channel, "message": {"type": "object"}},
        "required": ["channel", "message"],
        "additionalProperties": False,
    }
    schemas["PublishToUser"] = {
        "type": "object",
        "properties": {
            "user": {"description": "Who auth.py returned for the user (compared as JSON)."},
            "message": {"type": "object"},
        },
        "required": ["user", "message"],
        "additionalProperties": False,
    }
    schemas["Published"] = {
        "type": "object",
        "properties": {
            "channel": {"type": "string"},
            "offset": {"type": "integer"},
            "epoch": {"type": "string"},
        },
        "required": ["channel", "offset", "epoch"],
    }
    schemas["SentToUser"] = {
        "type": "object",
        "properties": {
            "user": {},
            "channels": {
                "type": "array",
                "description": "The user's personal channels (user:#alice) the message was "
                "published to, with its position on each; none without a personal namespace.",
                "items": {"$ref": "#/components/schemas/Published"},
            },
        },
        "required": ["user", "channels"],
    }
    schemas["Presence"] = {
        "type": "object",
        "properties": {
            "type": {"const": "presence"},
            "channel": {"type": "string"},
            "count": {"type": "integer", "description": "Connections on every process."},
            "clients": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"client_id": {"type": "string"}, "user": {}},
                    "required": ["client_id", "user"],
                },
            },
            "cut": {"type": "boolean", "description": "The list is shorter than count."},
        },
        "required": ["type", "channel", "count", "clients", "cut"],
    }
    schemas["Refusal"] = {
        "type": "object",
        "properties": {"detail": {"type": "string", "description": "One sentence: why."}},
        "required": ["detail"],
    }

    refusals = {
        "401": openapi_answer("No key was sent.", "Refusal"),
        "403": openapi_answer(
            "The API is off (no PUBLISH_API_KEY) or the key is wrong.", "Refusal"
        ),
        "422": openapi_answer(
            "The request is not one of the shapes above, or no client can be on the channel.",
            "Refusal",
        ),
        "503": openapi_answer(
            "The hub cannot answer (Redis is down): nothing was done, unless the detail says "
            "the message may have been published (Redis took it and did not answer; sending "
            "it again may publish it twice).",
            "Refusal",
        ),
    }
    paths = document.setdefault("paths", {})
    paths[PATH] = {
        "post": {
            "summary": "Publish to a channel, or send to a user",
            "description": "Every client of the channel receives the message as if a client had "
            "sent it; with a user, each of the user's connections receives it once: on the "
            "user's personal channels (user:#alice, recoverable) where the channels endpoint "
            "has a personal namespace, else as a direct message (200 whether or not the user "
            "is connected).",
            "operationId": "publish",
            "security": [{"PublishAPIKey": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/PublishToChannel"},
                                {"$ref": "#/components/schemas/PublishToUser"},
                            ]
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Published: the message's position, or the user.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/Published"},
                                    {"$ref": "#/components/schemas/SentToUser"},
                                ]
                            }
                        }
                    },
                },
                "400": openapi_answer("The body is not JSON (UTF-8).", "Refusal"),
                **refusals,
                "413": openapi_answer("The message is over MAX_MESSAGE_BYTES.", "Refusal"),
            },
        }
    }
    paths[PRESENCE_PATH] = {
        "get": {
            "summary": "Who is on a channel",
            "description": 'What a client of the channel gets for {"type": "presence"}.',
            "operationId": "presence",
            "security": [{"PublishAPIKey": []}],
            "parameters": [{"name": "channel", "in": "query", "required": True, "schema": channel}],
            "responses": {
                "200": openapi_answer("Who is on the channel.", "Presence"),
                **refusals,
                "404": openapi_answer(
                    "The service keeps no presence (PRESENCE_ENABLED=no).", "Refusal"
                ),
            },
        }
    }
    return document


async def send_json(
    send: Send, status: int, body: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer an HTTP request with ``body`` as JSON, not to be cached (these APIs' answers)."""
    content = dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
