"""The service's websocket API as an AsyncAPI 3.0 document, served at ``GET /asyncapi.json``.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Standard library only.

A handler declares what its clients send and what it sends them with `declares`; the
document (`document`) has one channel per mounted endpoint whose handler declared its
messages, each message with a JSON Schema payload, and a ``send`` operation (what the
service sends) and a ``receive`` operation (what it receives) per channel::

    SHOUT = Messages(
        client={"keepalive": KEEPALIVE, "shout": {"type": "object", "required": ["text"],
                "properties": {"text": {"type": "string"}}}},
        server={"keepalive_ack": KEEPALIVE_ACK, "error": ERROR, "shouted": {...}},
    )

    @declares(SHOUT)
    async def shout(websocket: WebSocket) -> None: ...

`KEEPALIVE_ENDPOINT`, `ECHO_ENDPOINT`, `TICKER_ENDPOINT` and `BROADCAST_ENDPOINT` are the
messages of the template's endpoint kinds; the broadcast one also declares the
``since``/``epoch`` query of a resume in the channel's ``ws`` binding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

Schema = Mapping[str, Any]
Handler = TypeVar("Handler", bound=Callable[..., Any])

ATTRIBUTE: Final = "__asyncapi_messages__"
VERSION: Final = "3.0.0"


@dataclass(frozen=True)
class Messages:
    """An endpoint's protocol: message name -> JSON Schema of its payload, each way."""

    client: Mapping[str, Schema]
    """What clients send."""
    server: Mapping[str, Schema]
    """What the service sends."""
    query: Schema | None = None
    """The query string's parameters (a JSON Schema of an object), if it takes any."""
    description: str = ""
    names: Mapping[str, str] = field(default_factory=dict)
    """A one-line summary of each message, by name."""


def declares(messages: Messages) -> Callable[[Handler], Handler]:
    """Mark a handler with its endpoint's `Messages`, for the AsyncAPI document."""

    def mark(handler: Handler) -> Handler:
        setattr(handler, ATTRIBUTE, messages)
        return handler

    return mark


def messages_of(handler: object) -> Messages | None:
    """The `Messages` a handler declared (through wrappers that keep ``__wrapped__``)."""
    while handler is not None:
        declared = getattr(handler, ATTRIBUTE, None)
        if isinstance(declared, Messages):
            return declared
        handler = getattr(handler, "__wrapped__", None)
    return None


def _object(
    properties: Mapping[str, Schema], required: Iterable[str], *, extra: bool = True
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": extra,
    }


def _typed(name: str, properties: Mapping[str, Schema], required: Iterable[str]) -> dict[str, Any]:
    """A message with ``"type": name`` and the given fields."""
    return _object({"type": {"const": name}, **properties}, ["type", *required])


INTEGER: Final = {"type": "integer"}
OFFSET: Final = {"type": "integer", "minimum": 0}
EPOCH: Final = {"type": "string", "minLength": 1, "maxLength": 64}
ANY_OBJECT: Final = {"type": "object"}

KEEPALIVE: Final = _typed("keepalive", {}, [])
KEEPALIVE_ACK: Final = _typed("keepalive_ack", {"server_ns": INTEGER}, ["server_ns"])
ERROR: Final = _typed("error", {"reason": {"type": "string"}}, ["reason"])
TICK: Final = _typed("tick", {"seq": OFFSET, "server_ns": INTEGER}, ["seq", "server_ns"])
SUBSCRIBED: Final = _object(
    {
        "type": {"const": "subscribed"},
        "channel": {"type": "string"},
        "offset": OFFSET,
        "epoch": EPOCH,
        "client_id": {"type": "string", "minLength": 16},
        "recovered": {"type": "boolean"},
    },
    ["type", "channel", "offset", "epoch", "client_id"],
    extra=False,
)
CLIENT: Final = _object(
    {"client_id": {"type": "string", "minLength": 16}, "user": {}},
    ["client_id", "user"],
    extra=False,
)
"""A connection in a presence list: its client_id, and its user (any JSON; null: anonymous)."""
PRESENCE_REQUEST: Final = _typed("presence", {}, [])
PRESENCE: Final = _object(
    {
        "type": {"const": "presence"},
        "channel": {"type": "string"},
        "count": OFFSET,
        "clients": {"type": "array", "items": CLIENT},
        "cut": {"type": "boolean"},
    },
    ["type", "channel", "count", "clients", "cut"],
    extra=False,
)
JOIN: Final = _object(
    {"type": {"const": "join"}, "channel": {"type": "string"}, "client": CLIENT},
    ["type", "channel", "client"],
    extra=False,
)
LEAVE: Final = _object(
    {"type": {"const": "leave"}, "channel": {"type": "string"}, "client": CLIENT},
    ["type", "channel", "client"],
    extra=False,
)
DIRECT: Final = _object(
    {"type": {"const": "direct"}, "server_ns": INTEGER, "message": ANY_OBJECT},
    ["type", "server_ns", "message"],
    extra=False,
)
BROADCAST: Final = _object(
    {
        "type": {"const": "broadcast"},
        "channel": {"type": "string"},
        "offset": {"type": "integer", "minimum": 1},
        "epoch": EPOCH,
        "server_ns": INTEGER,
        "message": ANY_OBJECT,
    },
    ["type", "channel", "offset", "epoch", "server_ns", "message"],
    extra=False,
)
DROPPED: Final = _object(
    {
        "type": {"const": "dropped"},
        "channel": {"type": "string"},
        "count": {"type": ["integer", "null"], "minimum": 1},
        "offset": OFFSET,
        "epoch": EPOCH,
    },
    ["type", "channel", "count", "offset", "epoch"],
    extra=False,
)
RESUME_QUERY: Final = {
    **_object(
        {
            "since": {"type": "string", "pattern": "^[0-9]{1,18}$"},
            "epoch": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
        },
        [],
        extra=True,  # the app's own parameters, a token for auth.py say, may come along
    ),
    "dependencies": {"since": ["epoch"], "epoch": ["since"]},  # both or neither
}

SUMMARIES: Final = {
    "keepalive": "A keepalive; the service answers it with keepalive_ack.",
    "keepalive_ack": "The answer to a keepalive: its fields, and the server's time.",
    "error": "A message the service could not take: the connection goes on.",
    "echo": "Any JSON object, sent back unchanged.",
    "tick": "A tick, every TICK_SECONDS: its number on the connection and the time.",
    "publish": "Any JSON object, published to every connection of the channel.",
    "broadcast": "A message of the channel, with its position (offset and epoch).",
    "subscribed": "The connection receives the channel's messages from this position.",
    "dropped": "Messages lost just before this position (count null: unknown).",
    "presence_request": 'A request for the presence list: {"type": "presence"}.',
    "presence": "Who is on the channel, on every process (cut: the list is not whole).",
    "join": "Another connection subscribed to the channel.",
    "leave": "Another connection left the channel.",
    "direct": "A message sent to this connection's user (POST /api/publish with a user).",
}

KEEPALIVE_ENDPOINT: Final = Messages(
    client={"keepalive": KEEPALIVE},
    server={"keepalive_ack": KEEPALIVE_ACK, "error": ERROR},
    description="Answers each keepalive with a keepalive_ack.",
)
ECHO_ENDPOINT: Final = Messages(
    client={"keepalive": KEEPALIVE, "echo": ANY_OBJECT},
    server={"keepalive_ack": KEEPALIVE_ACK, "echo": ANY_OBJECT, "error": ERROR},
    description="Sends every JSON object back unchanged.",
)
TICKER_ENDPOINT: Final = Messages(
    client={"keepalive": KEEPALIVE},
    server={"tick": TICK, "keepalive_ack": KEEPALIVE_ACK, "error": ERROR},
    description="Sends a tick every TICK_SECONDS, and answers keepalives.",
)
BROADCAST_ENDPOINT: Final = Messages(
    client={
        "keepalive": KEEPALIVE,
        "presence_request": PRESENCE_REQUEST,
        "publish": ANY_OBJECT,
    },
    server={
        "subscribed": SUBSCRIBED,
        "broadcast": BROADCAST,
        "dropped": DROPPED,
        "presence": PRESENCE,
        "join": JOIN,
        "leave": LEAVE,
        "direct": DIRECT,
        "keepalive_ack": KEEPALIVE_ACK,
        "error": ERROR,
    },
    query=RESUME_QUERY,
    description=(
        "Every JSON object a client sends goes to every client on the same path, the sender "
        "included, with the channel's position. ?since=OFFSET&epoch=EPOCH resumes after a "
        'position, from the channel\'s history. {"type": "presence"} asks who is on '
        "the channel; join and leave tell the others who comes and goes; direct messages "
        "reach every connection of one user."
    ),
)


def document(
    endpoints: Iterable[tuple[str, object]],
    *,
    title: str,
    version: str = "0.1.0",
    description: str = "",
    host: str = "127.0.0.1:8000",
    secure: bool = False,
) -> dict[str, Any]:
    """The AsyncAPI document of ``endpoints`` (path, handler); handlers that declared no
    `Messages` are left out. ``host`` and ``secure`` (wss) name the server that serves it."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    components: dict[str, Any] = {}
    for path, handler in endpoints:
        messages = messages_of(handler)
        if messages is None:
            continue
        key = _key(path, channels)
        channel: dict[str, Any] = {
            "address": path,
            "title": path,
            "description": messages.description or f"The websocket endpoint {path}.",
            "messages": {},
        }
        parameters = re.findall(r"\{(\w+)\}", path)
        if parameters:
            channel["parameters"] = {
                name: {"description": f"One path segment: the {name}."} for name in parameters
            }
        if messages.query is not None:
            channel["bindings"] = {"ws": {"query": dict(messages.query), "bindingVersion": "0.1.0"}}
        for direction, declared in (("client", messages.client), ("server", messages.server)):
            for name, schema in declared.items():
                component = _component(name, schema, components, messages.names)
                channel["messages"].setdefault(
                    component, {"$ref": f"#/components/messages/{component}"}
                )
                action = "receive" if direction == "client" else "send"
                operation = operations.setdefault(
                    f"{key}_{action}",
                    {
                        "action": action,
                        "channel": {"$ref": f"#/channels/{key}"},
                        "summary": (
                            f"What clients send on {path}."
                            if action == "receive"
                            else f"What the service sends on {path}."
                        ),
                        "messages": [],
                    },
                )
                operation["messages"].append({"$ref": f"#/channels/{key}/messages/{component}"})
        channels[key] = channel
    return {
        "asyncapi": VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": description or f"The websocket API of {title}.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "service": {
                "host": host,
                "protocol": "wss" if secure else "ws",
                "description": "The server that served this document.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": components},
    }


def _key(path: str, taken: Mapping[str, Any]) -> str:
    """A channel id for ``path``: its letters and digits, unique in the document."""
    base = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    key, number = base, 2
    while key in taken:
        key, number = f"{base}_{number}", number + 1
    return key


def _component(
    name: str, schema: Schema, components: dict[str, Any], names: Mapping[str, str]
) -> str:
    """The component message for ``name`` and ``schema``: one per distinct pair."""
    key, number = name, 2
    while key in components and components[key]["payload"] != dict(schema):
        key, number = f"{name}_{number}", number + 1
    components.setdefault(
        key,
        {
            "name": name,
            "title": name,
            "summary": names.get(name) or SUMMARIES.get(name, f"The {name} message."),
            "contentType": "application/json",
            "payload": dict(schema),
        },
    )
    return key
