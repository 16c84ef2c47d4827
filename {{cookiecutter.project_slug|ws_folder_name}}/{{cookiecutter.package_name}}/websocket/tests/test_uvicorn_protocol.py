"""`LeanProtocol` on a real uvicorn: the same frames and events as uvicorn's own protocol,
less kept per connection, the parts it swaps in (`Inbox`, `Flag`, `text_frame`), and its
direct writes (`WRITE_DIRECT`), stopped whenever a text could no longer be written at once."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from ..asgi_types import ASGIApp, Receive, Scope, Send
from ..session import WRITE_DIRECT, DirectLink
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


class Direct:
    """An app that writes through a `WRITE_DIRECT` link (its clients negotiate no
    compression: a connection that did offers none): ``write N SIZE`` writes texts
    numbered from 0 (each ``SIZE`` characters) until N are written or the link stops;
    ``count`` answers how many were written (with ``send``), ``close`` closes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.written = 0
        self.stopped = False
        self.events: list[tuple[str, bool]] = []
        """What the app saw (a disconnect, its close sent), each with whether the link had
        stopped by then."""

    def link_stopped(self) -> None:  # the app is its link's stop (`LinkStop`)
        assert not self.stopped, "a link's stop is told once"
        self.stopped = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        link: DirectLink | None = scope["extensions"][WRITE_DIRECT](self)
        assert link is not None
        assert link.writer is scope["extensions"][WRITE_DIRECT](self).writer  # it replaces
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.events.append(("disconnect", self.stopped))
                return
            command = message["text"].split()
            if command[0] == "write":
                count, size = int(command[1]), int(command[2])
                while self.written < count and not self.stopped:
                    link.writer.write(link.encode(str(self.written).ljust(size, ".")))
                    self.written += 1
            elif command[0] == "count":
                await send({"type": "websocket.send", "text": str(self.written)})
            elif command[0] == "close":
                await send({"type": "websocket.close", "code": 4001})
                self.events.append(("closed", self.stopped))


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[uvicorn.Server]:
    app: ASGIApp = getattr(request, "param", echo)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=LeanProtocol, lifespan="off", log_level="warning"
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


def served(app: Direct) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("server", [app], indirect=True)


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(500):  # up to 5 s
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 5 s")


DIRECT = Direct()
"""The app of the direct-write tests (one at a time: each resets it)."""


@served(DIRECT)
async def test_direct_writes_reach_the_client_in_order_until_it_stops_reading(
    server: uvicorn.Server,
) -> None:
    DIRECT.reset()
    async with connect(url_of(server), compression=None, max_size=None, max_queue=None) as client:
        client.transport.pause_reading()  # the client reads nothing: buffers fill up
        await client.send("write 5000 65536")  # 320 MiB, more than any buffer holds
        await wait_for(lambda: DIRECT.stopped)
        assert 0 < DIRECT.written < 5000  # stopped by the transport's flow control
        client.transport.resume_reading()
        for number in range(DIRECT.written):
            assert await client.recv() == str(number).ljust(65536, ".")
        await client.send("count")
        assert await client.recv() == str(DIRECT.written)  # nothing else came in between


@served(DIRECT)
async def test_direct_writes_stop_when_the_client_closes(server: uvicorn.Server) -> None:
    DIRECT.reset()
    async with connect(url_of(server), compression=None) as client:
        await client.send("write 3 10")
        for number in range(3):
            assert await client.recv() == str(number).ljust(10, ".")
    await wait_for(lambda: bool(DIRECT.events))
    assert DIRECT.events == [("disconnect", True)]  # stopped before the app heard of it


@served(DIRECT)
async def test_direct_writes_stop_when_the_app_closes(server: uvicorn.Server) -> None:
    DIRECT.reset()
    async with connect(url_of(server), compression=None) as client:
        await client.send("close")
        await wait_for(lambda: bool(DIRECT.events))
        assert DIRECT.events[0] == ("closed", True)
        assert client.close_code is None or client.close_code == 4001


@served(DIRECT)
async def test_direct_writes_stop_when_the_connection_is_lost(server: uvicorn.Server) -> None:
    DIRECT.reset()
    async with connect(url_of(server), compression=None) as client:
        await client.send("write 1 10")
        assert await client.recv() == "0........."
        client.transport.abort()  # no close frame: the TCP connection is reset
        await wait_for(lambda: bool(DIRECT.events))
    assert DIRECT.events == [("disconnect", True)]


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
    for name in ("pause_writing", "data_received", "keepalive_timeout", "shutdown", "send"):
        assert callable(getattr(plain, name, None)), name  # where LeanProtocol stops a link
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
