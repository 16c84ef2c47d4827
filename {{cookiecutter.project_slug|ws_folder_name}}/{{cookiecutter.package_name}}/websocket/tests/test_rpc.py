"""RPC on a channels endpoint: the `RpcMethods` registry, and ``rpc`` and ``send`` commands in
raw protocol on a real uvicorn, each refusal with its code, the connection living on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from jsonschema import Draft7Validator

from ..asgi_types import Receive, Scope, Send
from ..asyncapi import channels_endpoint
from ..broadcast import MemoryHub
from ..centrifuge_protocol import ChannelsConfig
from ..namespaces import AUTHENTICATED, Namespace, Namespaces
from ..rpc import RpcError, RpcMethods, RpcRequest
from ..session import SessionSocket
from ..tokens import TokenSigner, TokenVerifier
from .channels_server import RawClient, raw_client, serve_channels

SECRET = "s" * 32
SECRET_DATA = "the-client-s-private-words"
RPC = RpcMethods()
SENT: list[RpcRequest] = []


@RPC.method("whoami", result={"type": "object", "required": ["user"]})
async def whoami(request: RpcRequest) -> dict[str, Any]:
    """Who the connection is."""
    return {"user": request.user, "client": request.client_id, "data": request.data}


@RPC.method(
    "add",
    params={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
async def add(request: RpcRequest) -> int:
    return int(request.data["a"]) + int(request.data["b"])


@RPC.method("room")
async def room(request: RpcRequest) -> None:
    raise RpcError(404, "no such room", temporary=True)


@RPC.method("broken")
async def broken(request: RpcRequest) -> None:
    raise LookupError("the method's database is down")


@RPC.method("nothing")
async def nothing(request: RpcRequest) -> None:
    return None


@RPC.method("not-json")
async def not_json(request: RpcRequest) -> object:
    return object()


@RPC.on_send
async def on_send(request: RpcRequest) -> None:
    if request.data == "break":
        raise LookupError("the send handler's database is down")
    SENT.append(request)


@pytest.fixture
async def client(
    web_socket_class: Callable[[Scope, Receive, Send], SessionSocket],
) -> AsyncIterator[RawClient]:
    namespaces = Namespaces([Namespace("chat", subscribe=AUTHENTICATED)])
    config = ChannelsConfig(namespaces, tokens=TokenVerifier(SECRET), rpc=RPC)
    async with (
        MemoryHub() as hub,
        serve_channels(web_socket_class, hub, config) as url,
        raw_client(url) as connected,
    ):
        await connected.connect(token=TokenSigner(SECRET).connection_token("alice", 60))
        yield connected


async def rpc(client: RawClient, method: str, data: Any = None) -> Any:
    return await client.call("rpc", {"method": method, "data": data})


async def test_a_method_gets_the_data_and_who_calls_and_its_result_is_the_reply(
    client: RawClient,
) -> None:
    reply = await rpc(client, "whoami", {"x": [1, "é"]})
    assert reply["rpc"]["data"]["user"] == "alice"
    assert reply["rpc"]["data"]["data"] == {"x": [1, "é"]}
    assert len(reply["rpc"]["data"]["client"]) == 36, reply
    assert await rpc(client, "add", {"a": 2, "b": 40}) == {
        "id": client.next_id,
        "rpc": {"data": 42},
    }
    assert await rpc(client, "nothing") == {"id": client.next_id, "rpc": {}}


async def test_an_unknown_method_is_104(client: RawClient) -> None:
    reply = await rpc(client, "nowhere")
    assert reply["error"] == {"code": 104, "message": "method not found"}, reply


async def test_data_that_does_not_match_the_params_is_107_saying_where_not_what(
    client: RawClient,
) -> None:
    reply = await rpc(client, "add", {"a": SECRET_DATA, "b": 1})
    assert reply["error"]["code"] == 107, reply
    assert "$.a" in reply["error"]["message"]
    assert "type" in reply["error"]["message"]
    assert SECRET_DATA not in reply["error"]["message"]
    reply = await rpc(client, "add", {"a": 1})
    assert reply["error"]["code"] == 107, reply
    assert "required" in reply["error"]["message"], reply


async def test_a_method_s_refusal_carries_its_code_and_message(client: RawClient) -> None:
    reply = await rpc(client, "room")
    assert reply["error"] == {"code": 404, "message": "no such room", "temporary": True}


@pytest.mark.parametrize("method", ["broken", "not-json"])
async def test_a_failing_method_is_100_logged_once_and_the_connection_lives_on(
    client: RawClient, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    with caplog.at_level(logging.ERROR):
        reply = await rpc(client, method, {"secret": SECRET_DATA})
    assert reply["error"] == {"code": 100, "message": "internal server error", "temporary": True}
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"the rpc method {method!r} failed" in record.getMessage()
    assert record.exc_info is not None  # the traceback
    assert SECRET_DATA not in caplog.text
    assert (await rpc(client, "add", {"a": 1, "b": 1}))["rpc"]["data"] == 2


async def test_a_send_reaches_its_handler_with_no_reply_and_its_failure_is_logged(
    client: RawClient, caplog: pytest.LogCaptureFixture
) -> None:
    SENT.clear()
    await client.send("send", {"data": {"read": 7}}, reply=False)
    with caplog.at_level(logging.ERROR):
        await client.send("send", {"data": "break"}, reply=False)
        # A connection's commands run in order: once this is answered, both sends were.
        await client.send("rpc", {"method": "nothing"})
        reply = await client.next()
    assert reply == {"id": client.next_id, "rpc": {}}  # the first frame: no reply to a send
    [request] = SENT
    assert (request.method, request.data, request.user) == ("", {"read": 7}, "alice")
    assert "the send handler failed" in caplog.text
    assert "LookupError" in caplog.text


async def test_without_methods_rpc_is_104_and_send_closes_with_3508(
    web_socket_class: Callable[[Scope, Receive, Send], SessionSocket],
) -> None:
    config = ChannelsConfig(Namespaces([]), anonymous=True)
    async with (
        MemoryHub() as hub,
        serve_channels(web_socket_class, hub, config) as url,
        raw_client(url) as connected,
    ):
        await connected.connect()
        reply = await rpc(connected, "whoami")
        assert reply["error"] == {"code": 104, "message": "method not found"}, reply
        await connected.send("send", {"data": {"n": 1}}, reply=False)
        assert await connected.closed() == (3508, "not available")


# The registry


def test_rpc_errors_use_the_application_s_codes() -> None:
    assert RpcError(400, "x").code == 400
    assert RpcError(1999, "y" * 500).message == "y" * 200
    for code in (100, 399, 2000, 3500):
        with pytest.raises(ValueError, match="400 to 1999"):
            RpcError(code, "protocol codes are not the application's")


def test_methods_that_cannot_work_are_refused_when_registered() -> None:
    methods = RpcMethods()

    async def handler(request: RpcRequest) -> None: ...

    methods.method("a")(handler)
    with pytest.raises(ValueError, match="twice"):
        methods.method("a")(handler)
    for name in ("", "x" * 129, "caf\u00e9", "a\nb"):
        with pytest.raises(ValueError, match="printable ASCII"):
            methods.method(name)
    with pytest.raises(ValueError, match="params schema of the RPC method 'b'"):
        methods.method("b", params={"type": "no-such-type"})
    with pytest.raises(ValueError, match="result schema"):
        methods.method("c", result={"required": "not-a-list"})
    methods.on_send(handler)
    with pytest.raises(ValueError, match="already"):
        methods.on_send(handler)


def test_the_registry_describes_its_methods_for_asyncapi() -> None:
    described = RPC.described()
    assert list(described) == ["whoami", "add", "room", "broken", "nothing", "not-json"]
    assert described["whoami"].summary == "Who the connection is."
    assert described["whoami"].result == {"type": "object", "required": ["user"]}
    assert described["add"].params is not None
    assert described["room"] == (None, None, "")
    assert RPC.handles_send
    assert not RpcMethods().handles_send


def test_the_asyncapi_document_lists_each_method_with_its_schemas() -> None:
    messages = channels_endpoint(RPC)
    add_call = {"id": 3, "rpc": {"method": "add", "data": {"a": 1, "b": 2}}}
    assert declared_by(messages.client, add_call) == ["rpc_add_command"]
    bad_call = {"id": 3, "rpc": {"method": "add", "data": {"a": "x"}}}
    assert declared_by(messages.client, bad_call) == []
    assert declared_by(messages.client, {"id": 3, "rpc": {"method": "not-json"}}) == [
        "rpc_not_json_command"
    ]
    assert declared_by(messages.client, {"send": {"data": {"read": 7}}}) == ["send_command"]
    whoami_reply = {"id": 3, "rpc": {"data": {"user": "alice"}}}
    assert "rpc_whoami_reply" in declared_by(messages.server, whoami_reply)
    assert "rpc_whoami_reply" not in declared_by(messages.server, {"id": 3, "rpc": {"data": {}}})
    assert "Who the connection is." in messages.names["rpc_whoami_command"]
    assert not any(name.startswith("rpc_") for name in channels_endpoint(RpcMethods()).client)
    assert "send_command" not in channels_endpoint(RpcMethods()).client


def declared_by(declared: Mapping[str, Any], message: Any) -> list[str]:
    return [name for name, schema in declared.items() if Draft7Validator(schema).is_valid(message)]
