"""`asyncapi.document`: channels, operations and components of the declared handlers."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import pytest
from jsonschema import Draft7Validator

from ..asyncapi import (
    BROADCAST_ENDPOINT,
    CHANNELS_ENDPOINT,
    ECHO_ENDPOINT,
    ERROR,
    KEEPALIVE,
    KEEPALIVE_ENDPOINT,
    TICKER_ENDPOINT,
    Messages,
    declares,
    document,
    messages_of,
)
from ..client import SERVICE_MESSAGES, service_message


@declares(KEEPALIVE_ENDPOINT)
async def keepalive(websocket: object) -> None: ...


@declares(BROADCAST_ENDPOINT)
async def rooms(websocket: object) -> None: ...


async def undeclared(websocket: object) -> None: ...


def messages(doc: dict[str, Any], key: str, action: str) -> list[str]:
    [operation] = [
        o
        for o in doc["operations"].values()
        if o["channel"]["$ref"] == f"#/channels/{key}" and o["action"] == action
    ]
    return [ref["$ref"].rsplit("/", 1)[-1] for ref in operation["messages"]]


def test_one_channel_per_declared_endpoint_with_its_parameters_and_query() -> None:
    doc = document(
        [("/ws/a-b", keepalive), ("/ws/a_b", keepalive), ("/x", undeclared), ("/r/{room}", rooms)],
        title="T",
        host="example.com:443",
        secure=True,
    )
    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["service"] == {
        "host": "example.com:443",
        "protocol": "wss",
        "description": "The server that served this document.",
    }
    assert {key: c["address"] for key, c in doc["channels"].items()} == {
        "ws_a_b": "/ws/a-b",
        "ws_a_b_2": "/ws/a_b",
        "r_room": "/r/{room}",
    }
    assert list(doc["channels"]["r_room"]["parameters"]) == ["room"]
    assert doc["channels"]["r_room"]["bindings"]["ws"]["query"] == BROADCAST_ENDPOINT.query
    assert "bindings" not in doc["channels"]["ws_a_b"]
    assert messages(doc, "r_room", "receive") == ["keepalive", "presence_request", "publish"]
    assert messages(doc, "r_room", "send") == [
        "subscribed",
        "broadcast",
        "dropped",
        "presence",
        "join",
        "leave",
        "direct",
        "keepalive_ack",
        "error",
    ]


def test_a_name_with_two_schemas_gets_two_components() -> None:
    @declares(Messages(client={"keepalive": KEEPALIVE}, server={"error": {"type": "object"}}))
    async def odd(websocket: object) -> None: ...

    @declares(ECHO_ENDPOINT)
    async def echo(websocket: object) -> None: ...

    doc = document([("/odd", odd), ("/echo", echo)], title="T")
    components = doc["components"]["messages"]
    assert components["error"]["payload"] == {"type": "object"}
    assert components["error_2"]["payload"] == ERROR
    assert messages(doc, "echo", "send") == ["keepalive_ack", "echo", "error_2"]


def test_a_declaration_is_found_through_functools_wraps() -> None:
    @functools.wraps(keepalive)
    async def wrapper(websocket: object) -> None: ...

    del wrapper.__dict__["__asyncapi_messages__"]  # wraps copied it; follow __wrapped__ instead
    assert messages_of(wrapper) is KEEPALIVE_ENDPOINT
    assert messages_of(undeclared) is None


def test_the_client_types_are_the_document_s_messages() -> None:
    schemas = {**BROADCAST_ENDPOINT.server, **TICKER_ENDPOINT.server}
    for name, kind in SERVICE_MESSAGES.items():
        schema = schemas[name]
        assert kind.__required_keys__ == set(schema["required"]), name
        assert kind.__required_keys__ | kind.__optional_keys__ <= set(schema["properties"]), name
        if not schema["additionalProperties"]:
            assert kind.__optional_keys__ == set(schema["properties"]) - set(schema["required"])


def test_service_message_narrows_by_type_and_fields() -> None:
    broadcast = {"type": "broadcast", "channel": "/c", "offset": 1, "epoch": "e", "server_ns": 5}
    assert service_message(broadcast) is None  # no "message"
    assert service_message({**broadcast, "message": {}}) == {**broadcast, "message": {}}
    assert service_message({"type": "shout", "text": "HI"}) is None
    assert service_message({"text": "no type"}) is None
    assert service_message({"type": "error", "reason": "r"}) == {"type": "error", "reason": "r"}


CENTRIFUGE_CLIENT = [
    {"id": 1, "connect": {"token": "a.b.c", "name": "js", "version": "5.8.0"}},
    {"id": 1, "connect": {}},
    {"id": 2, "subscribe": {"channel": "news:sport", "flag": 1}},
    {"id": 3, "subscribe": {"channel": "chat:a", "recover": True, "offset": 4, "epoch": "e"}},
    {"id": 4, "unsubscribe": {"channel": "chat:a"}},
    {"id": 5, "publish": {"channel": "chat:a", "data": {"text": "hi"}}},
    {"id": 6, "presence": {"channel": "chat:a"}},
    {"id": 7, "presence_stats": {"channel": "chat:a"}},
    {"id": 8, "history": {"channel": "chat:a", "limit": 0, "reverse": False}},
    {"id": 9, "history": {"channel": "chat:a", "limit": 10, "since": {"offset": 2, "epoch": "e"}}},
    {"id": 10, "subscribe": {"channel": "private:a", "token": "a.b.c"}},
    {"id": 11, "refresh": {"token": "a.b.c"}},
    {"id": 12, "sub_refresh": {"channel": "private:a", "token": "a.b.c"}},
    {},
]
CENTRIFUGE_SERVER = [
    {"id": 1, "connect": {"client": "c1", "version": "0.1.0", "ping": 25, "pong": True}},
    {"id": 1, "connect": {"client": "c1", "expires": True, "ttl": 60, "ping": 25, "pong": True}},
    {"id": 10, "subscribe": {"expires": True, "ttl": 60, "epoch": "e", "offset": 0}},
    {"id": 11, "refresh": {"expires": True, "ttl": 3600}},
    {"id": 11, "refresh": {}},
    {"id": 12, "sub_refresh": {"expires": True, "ttl": 60}},
    {"id": 12, "error": {"code": 110, "message": "expired"}},
    {"id": 2, "subscribe": {}},
    {"id": 3, "subscribe": {"recoverable": True, "positioned": True, "epoch": "e", "offset": 5}},
    {
        "id": 3,
        "subscribe": {
            "recovered": True,
            "was_recovering": True,
            "publications": [
                {"data": {"text": "hi"}, "offset": 5, "info": {"user": "", "client": "c2"}}
            ],
        },
    },
    {"id": 4, "unsubscribe": {}},
    {"id": 5, "publish": {}},
    {"id": 6, "presence": {"presence": {"c1": {"user": "alice", "client": "c1"}}}},
    {"id": 7, "presence_stats": {"num_clients": 2, "num_users": 1}},
    {"id": 8, "history": {"publications": None, "epoch": "e", "offset": 5}},
    {"id": 9, "error": {"code": 102, "message": "unknown channel"}},
    {"id": 9, "error": {"code": 100, "message": "internal server error", "temporary": True}},
    {"push": {"channel": "chat:a", "pub": {"data": [1, "x"], "offset": 6}}},
    {"push": {"channel": "chat:a", "join": {"info": {"user": "bob", "client": "c3"}}}},
    {"push": {"channel": "chat:a", "leave": {"info": {"user": "bob", "client": "c3"}}}},
    {"push": {"channel": "chat:a", "unsubscribe": {"code": 2500, "reason": "insufficient state"}}},
    {
        "push": {
            "channel": "private:a",
            "unsubscribe": {"code": 2501, "reason": "subscription expired"},
        }
    },
    {"push": {"message": {"data": {"text": "to you"}}}},
    {},
]


def declared_by(declared: Mapping[str, Any], message: Any) -> list[str]:
    """The names of the ``declared`` messages whose schema ``message`` passes."""
    return [name for name, schema in declared.items() if Draft7Validator(schema).is_valid(message)]


@pytest.mark.parametrize("message", CENTRIFUGE_CLIENT)
def test_the_centrifuge_commands_the_sdks_send_are_declared(message: Any) -> None:
    assert declared_by(CHANNELS_ENDPOINT.client, message), message


@pytest.mark.parametrize("message", CENTRIFUGE_SERVER)
def test_the_centrifuge_replies_and_pushes_are_declared(message: Any) -> None:
    assert declared_by(CHANNELS_ENDPOINT.server, message), message


@pytest.mark.parametrize(
    "message",
    [
        {"id": 1},
        {"connect": {}},
        {"id": 0, "connect": {}},
        {"id": 1, "connect": {}, "subscribe": {"channel": "a:b"}},
        {"id": 2, "subscribe": {}},
        {"id": 5, "publish": {"channel": "chat:a"}},
        {"id": 1, "rpc": {"method": "m", "data": {}}},
        {"type": "keepalive"},
    ],
)
def test_what_is_not_a_served_centrifuge_command_is_not_declared(message: Any) -> None:
    assert declared_by(CHANNELS_ENDPOINT.client, message) == [], message


def test_a_channels_endpoint_is_one_channel_of_centrifuge_messages() -> None:
    @declares(CHANNELS_ENDPOINT)
    async def connection(websocket: object) -> None: ...

    doc = document([("/connection/websocket", connection), ("/r/{room}", rooms)], title="T")
    assert "parameters" not in doc["channels"]["connection_websocket"]
    assert messages(doc, "connection_websocket", "receive")[:2] == [
        "connect_command",
        "subscribe_command",
    ]
    assert "pub_push" in messages(doc, "connection_websocket", "send")
    assert messages(doc, "r_room", "receive") == ["keepalive", "presence_request", "publish"]
