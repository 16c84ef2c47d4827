"""`LeanProtocol` on a real uvicorn: the same frames and events as uvicorn's own protocol,
less kept per connection, and the parts it swaps in (`Inbox`, `Flag`, `text_frame`)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from ..asgi_types import Receive, Scope, Send
from ..uvicorn_protocol import Flag, Inbox, LeanProtocol, text_frame

SHARED = "one text object sent to every client that asks: built into a frame once"
closes: list[int] = []


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo each message as it came; "shared" is answered with `SHARED`, one object."""
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            closes.append(message["code"])
            return
        if message.get("text") == "shared":
            await send({"type": "websocket.send", "text": SHARED})
        elif "text" in message:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


@pytest.fixture
async def server() -> AsyncIterator[uvicorn.Server]:
    config = uvicorn.Config(
        echo, host="127.0.0.1", port=0, ws=LeanProtocol, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(1000):  # up to 10 s
        if server.started or serving.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    yield server
    server.should_exit = True
    await serving


def url_of(server: uvicorn.Server) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws"


@pytest.mark.parametrize(
    "text", ["", "a", "x" * 125, "x" * 126, "x" * 65535, "x" * 65536, "é ☃ 😀 text"]
)
def test_text_frame_is_the_frame_websockets_builds(text: str) -> None:
    assert text_frame(text) == Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def test_text_frame_is_built_once_for_one_text_object() -> None:
    text = "".join(["a broadcast ", "message"])  # made at run time: not an interned constant
    first = text_frame(text)
    assert text_frame(text) is first
    assert text_frame("another") != first
    equal = "".join(["a broadcast ", "messag", "e"])
    assert equal is not text
    assert text_frame(equal) == first  # the same bytes, built again


async def test_clients_get_what_uvicorn_would_send(server: uvicorn.Server) -> None:
    closes.clear()
    messages: list[str | bytes] = ["hello", "é ☃ 😀", "y" * 70_000, b"\x00\x01binary", ""]
    async with connect(url_of(server)) as first, connect(url_of(server)) as second:
        for message in messages:
            await first.send(message)
            assert await first.recv() == message
        for _ in range(3):  # the same text object, to both clients, in turns
            for client in (first, second):
                await client.send("shared")
                assert await client.recv() == SHARED
        held = [c for c in server.server_state.connections if isinstance(c, LeanProtocol)]
        assert len(held) == 2
        for protocol in held:
            assert isinstance(protocol.queue, Inbox)
            assert isinstance(protocol.writable, Flag)
            assert protocol.request is None  # let go after accept
            assert protocol.response is None
            parsing = protocol.conn.parser.gi_frame  # websockets' parser keeps the request
            held = parsing.f_locals.get("request") if parsing is not None else None
            if held is not None:
                assert not held.headers  # emptied
            assert protocol.scope["headers"]  # the app's copy of the request headers stays
        await second.close(4000, "done")
    for _ in range(100):
        if len(closes) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(closes) == [1000, 4000]


async def test_what_lean_protocol_replaces_is_what_uvicorn_makes() -> None:
    # LeanProtocol swaps uvicorn's queue and flag and drops its handshake objects: a
    # uvicorn that names or types them otherwise fails here, not in production.
    config = uvicorn.Config(echo, ws="websockets-sansio", lifespan="off")
    config.load()
    plain = WebSocketsSansIOProtocol(config, ServerState(), {})
    assert type(plain.queue) is asyncio.Queue
    assert type(plain.writable) is asyncio.Event
    assert plain.writable.is_set()
    for name in ("handshake_complete", "close_sent", "disconnected", "initial_response"):
        assert hasattr(plain, name), name
    for name in ("writes", "debug", "extensions", "expect_continuation_frame", "state"):
        assert hasattr(plain.conn, name), name
    assert "self.request = event" in inspect.getsource(WebSocketsSansIOProtocol.handle_connect)
    lean = LeanProtocol(config, ServerState(), {})
    assert isinstance(lean.queue, Inbox)
    assert isinstance(lean.writable, Flag)
    assert lean.writable.is_set()


async def test_inbox_gets_in_order_and_passes_a_cancelled_wakeup_on() -> None:
    inbox = Inbox()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert [await inbox.get(), inbox.get_nowait(), inbox.empty()] == [1, 2, True]
    with pytest.raises(asyncio.QueueEmpty):
        inbox.get_nowait()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("item")  # wakes the first getter...
    first.cancel()  # ...which is cancelled before it runs: the second gets the item
    assert await second == "item"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert inbox.empty()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    inbox.put_nowait("later")  # no getter left waiting: it stays queued
    assert inbox.qsize() == 1
    assert await inbox.get() == "later"


async def test_flag_wait_returns_once_set() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True]
    assert await flag.wait() is True  # set: at once
    flag.clear()
    later = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not later.done()
    flag.set()
    assert await later is True
