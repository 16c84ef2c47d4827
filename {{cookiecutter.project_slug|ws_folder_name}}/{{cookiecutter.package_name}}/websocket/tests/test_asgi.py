"""The raw-ASGI WebSocket, driven by scripted ASGI message sequences."""

from __future__ import annotations

import json
import re

import pytest

from ..asgi import WebSocket, WebSocketDisconnect, WebSocketState
from ..testing import ScriptedClient


async def accepted(client: ScriptedClient) -> WebSocket:
    websocket = WebSocket(client.scope, client.receive, client.send)
    await websocket.accept()
    assert await client.next_sent() == {
        "type": "websocket.accept",
        "subprotocol": None,
        "headers": [],
    }
    return websocket


def test_only_a_websocket_scope_is_accepted() -> None:
    client = ScriptedClient()
    with pytest.raises(ValueError, match="needs a 'websocket' scope, got 'http'"):
        WebSocket({**client.scope, "type": "http"}, client.receive, client.send)


async def test_accept_waits_for_connect_then_accepts() -> None:
    client = ScriptedClient()
    websocket = await accepted(client)
    assert websocket.client_state is WebSocketState.CONNECTED
    assert websocket.application_state is WebSocketState.CONNECTED


async def test_accept_chooses_an_offered_subprotocol() -> None:
    client = ScriptedClient()
    client.scope["subprotocols"] = ["chat.v2", "chat.v1"]
    websocket = WebSocket(client.scope, client.receive, client.send)
    await websocket.accept("chat.v1")
    assert (await client.next_sent())["subprotocol"] == "chat.v1"


async def test_accept_refuses_a_subprotocol_the_client_did_not_offer() -> None:
    client = ScriptedClient()
    client.scope["subprotocols"] = ["chat.v1"]
    websocket = WebSocket(client.scope, client.receive, client.send)
    with pytest.raises(ValueError, match=re.escape("'chat.v9' was not offered by the client")):
        await websocket.accept("chat.v9")
    assert client.sent_so_far() == []


async def test_text_bytes_and_json_round_trip() -> None:
    client = ScriptedClient()
    websocket = await accepted(client)
    client.send_text("héllo")
    client.send_text("")  # an empty text frame is valid
    client.send_bytes(b"\x00\xff")
    client.send_bytes(b"")
    client.send_text('{"a": [1, 2.5, null]}')
    assert await websocket.receive_text() == "héllo"
    assert await websocket.receive_text() == ""
    assert await websocket.receive_bytes() == b"\x00\xff"
    assert await websocket.receive_bytes() == b""
    assert await websocket.receive_json() == {"a": [1, 2.5, None]}
    await websocket.send_text("é")
    await websocket.send_bytes(b"\x01")
    await websocket.send_json({"b": "✓"})
    assert client.sent_so_far() == [
        {"type": "websocket.send", "text": "é"},
        {"type": "websocket.send", "bytes": b"\x01"},
        {"type": "websocket.send", "text": '{"b":"✓"}'},
    ]


async def test_receive_raw_tells_text_from_binary_frames() -> None:
    client = ScriptedClient()
    websocket = await accepted(client)
    client.send_text("t")
    client.send_bytes(b"b")
    assert await websocket.receive_raw() == {"type": "websocket.receive", "text": "t"}
    assert await websocket.receive_raw() == {"type": "websocket.receive", "bytes": b"b"}


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "going away"), (4321, "custom")])
async def test_disconnect_raises_with_its_code_and_reason(code: int, reason: str) -> None:
    client = ScriptedClient()
    websocket = await accepted(client)
    client.disconnect(code, reason)
    with pytest.raises(WebSocketDisconnect) as disconnect:
        await websocket.receive_text()
    assert (disconnect.value.code, disconnect.value.reason) == (code, reason)
    assert websocket.client_state is WebSocketState.DISCONNECTED


async def test_disconnect_without_a_code_means_1000() -> None:
    client = ScriptedClient()
    websocket = await accepted(client)
    client.send_message({"type": "websocket.disconnect"})
    with pytest.raises(WebSocketDisconnect) as disconnect:
        await websocket.receive_raw()
    assert disconnect.value.code == 1000
    assert WebSocketDisconnect().code == 1000


async def test_close_sends_the_code_and_closes() -> None:
    client = ScriptedClient()
    websocket = await accepted(client)
    await websocket.close(4000)
    assert await client.next_sent() == {"type": "websocket.close", "code": 4000, "reason": ""}
    assert websocket.application_state is WebSocketState.DISCONNECTED


async def test_close_before_accept_refuses_the_handshake() -> None:
    client = ScriptedClient()
    websocket = WebSocket(client.scope, client.receive, client.send)
    await websocket.close()
    assert await client.next_sent() == {"type": "websocket.close", "code": 1000, "reason": ""}


async def test_a_send_to_a_departed_peer_raises_disconnect_1006() -> None:
    client = ScriptedClient()
    websocket = await accepted(client)
    client.send_error = OSError("connection reset")
    with pytest.raises(WebSocketDisconnect) as disconnect:
        await websocket.send_text("lost")
    assert disconnect.value.code == 1006
    assert websocket.application_state is WebSocketState.DISCONNECTED


MISUSES = [
    ("receive before accept", [], "receive_text", "before accept(); accept the websocket first"),
    ("send before accept", [], "send_text", "'websocket.send' was sent before accept()"),
    ("accept twice", ["accept"], "accept", "already accepted"),
    ("accept after close", ["accept", "close"], "accept", "already closed"),
    ("send after close", ["accept", "close"], "send_text", "was sent after the websocket was closed"),
    ("close twice", ["accept", "close"], "close", "was sent after the websocket was closed"),
    ("receive after close", ["accept", "close"], "receive_text", "after the websocket was closed"),
    ("receive after disconnect", ["accept", "disconnect"], "receive_text", "after the client disconnected"),
    ("text wanted, binary came", ["accept", "bytes"], "receive_text", "got a binary frame; use receive_bytes()"),
    ("bytes wanted, text came", ["accept", "text"], "receive_bytes", "got a text frame; use receive_text()"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("steps", "call", "message"), [m[1:] for m in MISUSES], ids=[m[0] for m in MISUSES]
)
async def test_misuse_is_one_sentence_error(steps: list[str], call: str, message: str) -> None:
    client = ScriptedClient()
    websocket = WebSocket(client.scope, client.receive, client.send)
    for step in steps:
        if step == "accept":
            await websocket.accept()
        elif step == "close":
            await websocket.close()
        elif step == "disconnect":
            client.disconnect()
            with pytest.raises(WebSocketDisconnect):
                await websocket.receive_text()
        elif step == "text":
            client.send_text("x")
        else:
            client.send_bytes(b"x")
    arguments = {"send_text": ("x",)}.get(call, ())
    with pytest.raises((RuntimeError, TypeError), match=re.escape(message)) as error:
        await getattr(websocket, call)(*arguments)
    assert str(error.value).endswith(".")
    assert ". " not in str(error.value)  # one sentence


@pytest.mark.parametrize(
    ("bad", "method"),
    [(b"bytes", "send_text"), ("text", "send_bytes")],
)
async def test_send_checks_the_payload_type(bad: object, method: str) -> None:
    websocket = await accepted(ScriptedClient())
    with pytest.raises(TypeError, match=re.escape(f"{method}() takes")):
        await getattr(websocket, method)(bad)


async def test_a_message_must_hold_exactly_one_of_text_and_bytes() -> None:
    client = ScriptedClient()
    websocket = await accepted(client)
    client.send_message({"type": "websocket.receive", "text": "a", "bytes": b"b"})
    with pytest.raises(RuntimeError, match="exactly one of text and bytes"):
        await websocket.receive_raw()


def test_headers_keep_the_first_value_and_decode_latin_1() -> None:
    client = ScriptedClient(
        headers=[
            (b"x-token", b"first"),
            (b"x-token", b"second"),
            (b"X-Mixed-Case", b"kept"),
            (b"x-latin", "caf\u00e9".encode("latin-1")),
        ]
    )
    websocket = WebSocket(client.scope, client.receive, client.send)
    assert websocket.headers == {"x-token": "first", "X-Mixed-Case": "kept", "x-latin": "café"}


def test_query_string_and_path_params() -> None:
    client = ScriptedClient()
    websocket = WebSocket(client.scope, client.receive, client.send)
    assert websocket.query_string == ""
    assert websocket.path_params == {}
    client.scope["query_string"] = b"room=lobby&n=%C3%A9"
    client.scope["path_params"] = {"room": "lobby"}
    assert websocket.query_string == "room=lobby&n=%C3%A9"
    assert websocket.path_params == {"room": "lobby"}


async def test_json_is_compact_and_keeps_unicode() -> None:
    client = ScriptedClient()
    websocket = await accepted(client)
    await websocket.send_json({"k": ["ü", 1]})
    sent = await client.next_sent()
    assert sent["text"] == '{"k":["ü",1]}'
    assert json.loads(sent["text"]) == {"k": ["ü", 1]}
