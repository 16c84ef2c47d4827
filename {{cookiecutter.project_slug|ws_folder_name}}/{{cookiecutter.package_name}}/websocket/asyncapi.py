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

`KEEPALIVE_ENDPOINT`, `ECHO_ENDPOINT`, `TICKER_ENDPOINT`, `BROADCAST_ENDPOINT` and
`CHANNELS_ENDPOINT` are the messages of the template's endpoint kinds; the broadcast one also
declares the ``since``/``epoch`` query of a resume and ``last`` in the channel's ``ws``
binding. The
channels one is the Centrifuge client protocol v2 (JSON) as ``centrifuge_protocol.py``
serves it: each command, reply and push is one message (a frame may carry several, one a
line). `channels_endpoint` adds the RPC methods of an endpoint (``rpc.RpcMethods``), each
with its ``rpc`` command and reply (the schemas of its params and result), and ``send``
when a handler takes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

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
            "last": {"type": "string", "pattern": "^[0-9]{1,9}$"},
        },
        [],
        extra=True,  # the app's own parameters, a token for auth.py say, may come along
    ),
    "dependencies": {  # since and epoch both or neither; last without them
        "since": ["epoch"],
        "epoch": ["since"],
        "last": {"not": {"anyOf": [{"required": ["since"]}, {"required": ["epoch"]}]}},
    },
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
        "included, with the channel's position; the endpoint may change a message first (the "
        "generated project's stamp_sender sets its user to the sender's identity) or refuse "
        "it with an error. ?since=OFFSET&epoch=EPOCH resumes after a position, from the "
        "channel's history; ?last=N starts with the channel's last N messages it still holds. "
        '{"type": "presence"} asks who is on the channel; join and leave tell the others who '
        "comes and goes; direct messages "
        "reach every connection of one user."
    ),
)

# The Centrifuge client protocol v2, JSON: commands {"id": N, "<method>": {...}}, replies
# with the same id and a result or an error, pushes {"push": {...}} with no id, and {} as the
# server's ping and the client's pong. Bodies allow fields beyond those listed: the SDKs send
# some that are not served (flag, delta), and a result may gain some.
COMMAND_ID: Final = {"type": "integer", "minimum": 1, "maximum": 4294967295}
CHANNEL_NAME: Final = {"type": "string", "minLength": 1, "maxLength": 255}
ANY_JSON: Final[Schema] = {}
"""Any JSON value: Centrifuge's data fields are the application's JSON, as it is."""
CLIENT_INFO: Final = _object(
    {
        "user": {"type": "string"},
        "client": {"type": "string", "minLength": 1},
        "conn_info": ANY_JSON,
        "chan_info": ANY_JSON,
    },
    ["user", "client"],
)
"""Who published, joined or left: its user ("" when anonymous) and its connection's id."""
PUBLICATION: Final = _object(
    {
        "data": ANY_JSON,
        "offset": {"type": "integer", "minimum": 1},
        "info": CLIENT_INFO,
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    ["data"],
)
STREAM_POSITION: Final = _object({"offset": OFFSET, "epoch": {"type": "string"}}, ["offset"])
EMPTY: Final = _object({}, [], extra=False)
"""``{}``: the server's ping, the client's pong, and the results that carry nothing."""


def _command(method: str, body: Mapping[str, Schema], required: Iterable[str]) -> dict[str, Any]:
    """A Centrifuge command: ``{"id": N, method: {...}}``."""
    return _object({"id": COMMAND_ID, method: _object(body, required)}, ["id", method], extra=False)


def _reply(method: str, result: Schema) -> dict[str, Any]:
    """A Centrifuge reply to a command: ``{"id": N, method: result}``."""
    return _object({"id": COMMAND_ID, method: result}, ["id", method], extra=False)


def _push(kind: str, body: Schema, *, channel: bool = True) -> dict[str, Any]:
    """A Centrifuge push: ``{"push": {"channel": ..., kind: body}}``."""
    fields = {"channel": CHANNEL_NAME, kind: body} if channel else {kind: body}
    required = ["channel", kind] if channel else [kind]
    return _object({"push": _object(fields, required, extra=False)}, ["push"], extra=False)


RECOVERY: Final[Mapping[str, Schema]] = {
    "recover": {"type": "boolean"},
    "offset": OFFSET,
    "epoch": {"type": "string"},
}
LIFETIME: Final[Mapping[str, Schema]] = {
    "expires": {"type": "boolean"},
    "ttl": {"type": "integer", "minimum": 1},
}
"""A token's lifetime in a reply: ``expires``, and ``ttl`` seconds to renew it in."""
TOKEN: Final = {"type": "string", "minLength": 1}
CONNECT_COMMAND: Final = _command(
    "connect",
    {"token": {"type": "string"}, "data": ANY_JSON, "name": {"type": "string"}},
    [],
)
SUBSCRIBE_COMMAND: Final = _command(
    "subscribe",
    {
        "channel": CHANNEL_NAME,
        "token": {"type": "string"},
        "data": ANY_JSON,
        "positioned": {"type": "boolean"},
        "recoverable": {"type": "boolean"},
        "join_leave": {"type": "boolean"},
        **RECOVERY,
    },
    ["channel"],
)
CHANNEL_COMMANDS: Final = {
    "unsubscribe_command": _command("unsubscribe", {"channel": CHANNEL_NAME}, ["channel"]),
    "publish_command": _command(
        "publish", {"channel": CHANNEL_NAME, "data": ANY_JSON}, ["channel", "data"]
    ),
    "presence_command": _command("presence", {"channel": CHANNEL_NAME}, ["channel"]),
    "presence_stats_command": _command("presence_stats", {"channel": CHANNEL_NAME}, ["channel"]),
    "history_command": _command(
        "history",
        {
            "channel": CHANNEL_NAME,
            "limit": {"type": "integer"},
            "since": STREAM_POSITION,
            "reverse": {"type": "boolean"},
        },
        ["channel"],
    ),
    "refresh_command": _command("refresh", {"token": TOKEN}, ["token"]),
    "sub_refresh_command": _command(
        "sub_refresh", {"channel": CHANNEL_NAME, "token": TOKEN}, ["channel", "token"]
    ),
}
CONNECT_RESULT: Final = _object(
    {
        "client": {"type": "string", "minLength": 1},
        "version": {"type": "string"},
        "data": ANY_JSON,
        "ping": {"type": "integer", "minimum": 0},
        "pong": {"type": "boolean"},
        **LIFETIME,
    },
    ["client"],
)
SUBSCRIBE_RESULT: Final = _object(
    {
        "recoverable": {"type": "boolean"},
        "positioned": {"type": "boolean"},
        "epoch": {"type": "string"},
        "offset": OFFSET,
        "publications": {"type": "array", "items": PUBLICATION},
        "recovered": {"type": "boolean"},
        "was_recovering": {"type": "boolean"},
        "data": ANY_JSON,
        **LIFETIME,
    },
    [],
)
PRESENCE_RESULT: Final = _object(
    {"presence": {"type": ["object", "null"], "additionalProperties": CLIENT_INFO}},
    ["presence"],
)
PRESENCE_STATS_RESULT: Final = _object(
    {"num_clients": OFFSET, "num_users": OFFSET}, ["num_clients", "num_users"]
)
HISTORY_RESULT: Final = _object(
    {
        "publications": {"type": ["array", "null"], "items": PUBLICATION},
        "epoch": {"type": "string"},
        "offset": OFFSET,
    },
    ["publications", "epoch", "offset"],
)
CENTRIFUGE_ERROR: Final = _object(
    {"code": {"type": "integer"}, "message": {"type": "string"}, "temporary": {"type": "boolean"}},
    ["code", "message"],
)
CENTRIFUGE_SUMMARIES: Final = {
    "connect_command": "Opens the session: anonymous, or with a connection token (a JWT).",
    "subscribe_command": "Subscribes to a channel, recovering from a position if asked.",
    "unsubscribe_command": "Leaves a channel.",
    "publish_command": "Publishes data to a channel its namespace lets the client publish to.",
    "presence_command": "Asks who is on a channel (namespaces with presence).",
    "presence_stats_command": "Asks how many clients and users are on a channel.",
    "history_command": "Asks for a channel's stream position and its last publications.",
    "refresh_command": "Renews the connection token before its ttl is up.",
    "sub_refresh_command": "Renews a subscription token before its ttl is up.",
    "send_command": "Data for the service's send handler, with no reply (and no id).",
    "pong": "{}: the client's answer to a ping (the connect result says pong: true).",
    "ping": "{}: the server's ping, every ping seconds of the connect result.",
    "connect_reply": "The session is open: the client's id, the ping period, pong: true; "
    "expires and ttl when the token has an exp.",
    "subscribe_reply": "Subscribed: the stream position, and recovered publications if any.",
    "unsubscribe_reply": "Unsubscribed.",
    "publish_reply": "Published.",
    "presence_reply": "The clients on the channel, by client id.",
    "presence_stats_reply": "How many clients and distinct users are on the channel.",
    "history_reply": "The channel's stream position and the publications asked for.",
    "refresh_reply": "The connection token is renewed: its new ttl (none: it does not expire).",
    "sub_refresh_reply": "The subscription token is renewed: its new ttl.",
    "error_reply": "The command was refused: code (101 unauthorized, 102 unknown channel, "
    "103 permission denied, 104 method not found, 107 bad request, 109 token expired, "
    "110 expired, 400-1999 an RPC method's own...), message, and temporary when a retry "
    "may succeed.",
    "pub_push": "A publication of a subscribed channel, with its offset.",
    "join_push": "A client subscribed to the channel (namespaces with join_leave).",
    "leave_push": "A client left the channel (namespaces with join_leave).",
    "unsubscribe_push": "The server ended the subscription (code 2500 and up: subscribe "
    "again; 2501: its token expired, with a new one).",
    "message_push": "A message sent to this connection's user, outside any channel.",
}


class RpcCatalog(Protocol):
    """What `channels_endpoint` reads of an endpoint's RPC methods (``rpc.RpcMethods``)."""

    def described(self) -> Mapping[str, tuple[Schema | None, Schema | None, str]]:
        """Each method's params schema, result schema and summary, by name."""
        ...

    @property
    def handles_send(self) -> bool: ...


def channels_endpoint(rpc: RpcCatalog | None = None) -> Messages:
    """The messages of a channels endpoint, with the RPC methods of ``rpc`` if given."""
    client: dict[str, Schema] = {
        "connect_command": CONNECT_COMMAND,
        "subscribe_command": SUBSCRIBE_COMMAND,
        **CHANNEL_COMMANDS,
        "pong": EMPTY,
    }
    server: dict[str, Schema] = {
        "connect_reply": _reply("connect", CONNECT_RESULT),
        "subscribe_reply": _reply("subscribe", SUBSCRIBE_RESULT),
        "unsubscribe_reply": _reply("unsubscribe", EMPTY),
        "publish_reply": _reply("publish", EMPTY),
        "presence_reply": _reply("presence", PRESENCE_RESULT),
        "presence_stats_reply": _reply("presence_stats", PRESENCE_STATS_RESULT),
        "history_reply": _reply("history", HISTORY_RESULT),
        "refresh_reply": _reply("refresh", _object(LIFETIME, [])),
        "sub_refresh_reply": _reply("sub_refresh", _object(LIFETIME, [])),
        "error_reply": _reply("error", CENTRIFUGE_ERROR),
        "pub_push": _push("pub", PUBLICATION),
        "join_push": _push("join", _object({"info": CLIENT_INFO}, ["info"])),
        "leave_push": _push("leave", _object({"info": CLIENT_INFO}, ["info"])),
        "unsubscribe_push": _push(
            "unsubscribe",
            _object(
                {"code": {"type": "integer"}, "reason": {"type": "string"}}, ["code", "reason"]
            ),
        ),
        "message_push": _push("message", _object({"data": ANY_JSON}, ["data"]), channel=False),
        "ping": EMPTY,
    }
    names = dict(CENTRIFUGE_SUMMARIES)
    methods = rpc.described() if rpc is not None else {}
    for method, (params, result, summary) in methods.items():
        key = re.sub(r"[^A-Za-z0-9]+", "_", method).strip("_") or "method"
        body = {"method": {"const": method}, "data": params or ANY_JSON}
        client[f"rpc_{key}_command"] = _command("rpc", body, ["method"])
        server[f"rpc_{key}_reply"] = _reply("rpc", _object({"data": result or ANY_JSON}, []))
        what = f" {summary}" if summary else ""
        names[f"rpc_{key}_command"] = f"Calls the RPC method {method!r}.{what}"
        names[f"rpc_{key}_reply"] = f"What the RPC method {method!r} returned."
    sends = rpc is not None and rpc.handles_send
    if sends:
        client["send_command"] = _object(
            {"send": _object({"data": ANY_JSON}, [])}, ["send"], extra=False
        )
    calls = "RPC methods (an rpc command and reply each)" if methods else "no RPC methods"
    takes = "takes send commands" if sends else "takes no send commands"
    return Messages(
        client=client,
        server=server,
        description=(
            "Many channels over one connection, in the Centrifuge client protocol v2 (JSON), "
            "so that the Centrifuge SDKs (centrifuge-js, centrifuge-python) work against it. "
            "Each message here is one JSON object; a frame carries one or more, one a line. A "
            "session starts with connect; channels are namespace:name, each namespace with its "
            "own rules (channels.py). Tokens with an exp are renewed with refresh and "
            f"sub_refresh. This endpoint has {calls}, and {takes}. Not served: protobuf, "
            "unidirectional transports, delta compression and connect subs."
        ),
        names=names,
    )


CHANNELS_ENDPOINT: Final = channels_endpoint()
"""The messages of a channels endpoint without RPC methods."""


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
