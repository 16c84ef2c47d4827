"""`LeanProtocol` on a real uvicorn: the same frames and events as uvicorn's own protocol,
less kept per connection, the parts it swaps in (`Inbox`, `Flag`, `text_frame`), its
direct writes (`WRITE_DIRECT`), stopped whenever a text could no longer be written at once,
and the texts it hands over as they are read (`RECEIVE_DIRECT`)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from ..asgi_types import Receive, Scope, Send
from ..session import RECEIVE_DIRECT, SEND_TEXT_NOW, WRITE_DIRECT, DirectLink
from ..uvicorn_protocol import (
    MAX_SHARED_HEADERS,
    NO_HEADERS,
    PING_CLOCK_SWEEP,
    Flag,
    Inbox,
    LeanProtocol,
    Ping,
    PingClock,
    shared_headers,
    text_frame,
)

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
    param = getattr(request, "param", echo)  # an app, or uvicorn's settings for `echo`
    app, settings = (echo, param) if isinstance(param, dict) else (param, {})
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        ws=LeanProtocol,
        lifespan="off",
        log_level="warning",
        **settings,
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
                assert held.headers is NO_HEADERS  # let go: one empty set for all
                assert not NO_HEADERS
            assert protocol.scope["headers"]  # the app's copy of the request headers stays
            assert not vars(protocol)  # every attribute in a slot: no dictionary of its own
            assert isinstance(protocol.ping_timer, Ping)  # on the clock, not a timer each
        first_protocol, second_protocol = (
            c for c in server.server_state.connections if isinstance(c, LeanProtocol)
        )
        assert first_protocol.scope["server"] is second_protocol.scope["server"]  # held once
        first_headers = dict(first_protocol.scope["headers"])
        second_headers = dict(second_protocol.scope["headers"])
        assert first_headers[b"host"] is second_headers[b"host"]  # one pair for both
        assert first_headers[b"sec-websocket-key"] != second_headers[b"sec-websocket-key"]
        assert first_protocol.conn.available_extensions is (
            second_protocol.conn.available_extensions
        )
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
        await client.wait_closed()
        assert client.close_code == 4001  # the app's close, which stopped the link


@served(DIRECT)
async def test_direct_writes_stop_when_the_connection_is_lost(server: uvicorn.Server) -> None:
    DIRECT.reset()
    async with connect(url_of(server), compression=None) as client:
        await client.send("write 1 10")
        assert await client.recv() == "0........."
        client.transport.abort()  # no close frame: the TCP connection is reset
        await wait_for(lambda: bool(DIRECT.events))
    assert DIRECT.events == [("disconnect", True)]


class Listening:
    """An app that listens (`RECEIVE_DIRECT`) with a take that answers ``take ...`` texts at
    once (``took take ...``) and refuses the rest, which its task answers (``got ...``,
    ``got N bytes``) before it listens again; ``wait`` makes the task sleep a second first."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.events: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        send_now = scope["extensions"][SEND_TEXT_NOW]

        def take(text: str) -> bool:
            if not text.startswith("take") or not send_now(f"took {text}"):
                return False
            self.taken.append(text)
            return True

        while True:
            arrival = scope["extensions"][RECEIVE_DIRECT](take)
            if arrival is not None:
                await arrival
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.events.append(f"disconnect {message['code']}")
                return
            text = message.get("text")
            reply = f"got {text}" if text is not None else f"got {len(message['bytes'])} bytes"
            if text == "wait":
                await asyncio.sleep(1)
            await send({"type": "websocket.send", "text": reply})


LISTENING = Listening()


@pytest.mark.parametrize("server", [LISTENING], indirect=True)
async def test_texts_are_handed_over_as_they_come_and_queued_in_order_when_refused(
    server: uvicorn.Server,
) -> None:
    async with connect(url_of(server), compression=None) as client:
        sent: list[tuple[str | bytes, str]] = [
            ("take 1", "took take 1"),
            ("take 2", "took take 2"),
            ("other", "got other"),
            ("take 3", "took take 3"),
            (b"\x00\x01", "got 2 bytes"),
            ("take 4", "took take 4"),
        ]
        for message, reply in sent:  # one at a time: each comes while the app listens
            await client.send(message)
            assert await client.recv() == reply
        assert LISTENING.taken == ["take 1", "take 2", "take 3", "take 4"]
        # Sent together while the app's task is busy: queued, and nothing overtakes.
        together = ["wait", "take 5", "take 6", "other", "take 7"]
        for message in together:
            await client.send(message)
        replies = [await client.recv() for _ in together]
        assert replies == ["got wait", "got take 5", "got take 6", "got other", "got take 7"]
        await client.send("take 8")  # the queue empty again: handed over once more
        assert await client.recv() == "took take 8"
        assert LISTENING.taken[-1] == "take 8"
    await wait_for(lambda: bool(LISTENING.events))
    assert LISTENING.events == ["disconnect 1000"]  # a close wakes an app that listens


async def test_what_lean_protocol_replaces_is_what_uvicorn_makes() -> None:
    # LeanProtocol swaps uvicorn's queue and flag and drops its handshake objects: a
    # uvicorn that names or types them otherwise fails here, not in production.
    config = uvicorn.Config(echo, ws="websockets-sansio", lifespan="off")
    config.load()
    plain = WebSocketsSansIOProtocol(config, ServerState(), {})
    assert type(plain.queue) is asyncio.Queue
    assert type(plain.writable) is asyncio.Event
    assert plain.writable.is_set()
    names = ("handshake_complete", "close_sent", "disconnected", "initial_response", "frames")
    for name in (*names, "curr_msg_data_type"):
        assert hasattr(plain, name), name
    for name in ("writes", "debug", "extensions", "expect_continuation_frame", "state"):
        assert hasattr(plain.conn, name), name
    assert "self.request = event" in inspect.getsource(WebSocketsSansIOProtocol.handle_connect)
    for name in ("pause_writing", "data_received", "keepalive_timeout", "shutdown", "send"):
        assert callable(getattr(plain, name, None)), name  # where LeanProtocol stops a link
    assert "self.send_keepalive_ping" in inspect.getsource(WebSocketsSansIOProtocol.schedule_ping)
    # Where uvicorn queues a whole message (LeanProtocol hands texts over there first).
    for handler in ("handle_text", "handle_cont"):
        source = inspect.getsource(getattr(WebSocketsSansIOProtocol, handler))
        assert "self.send_receive_event_to_app()" in source, handler
    assert isinstance(plain.conn.available_extensions, list)
    # Every attribute uvicorn sets has a slot, and no slot hides an attribute of its class
    # (a uvicorn that adds one fails here: add it to the slots).
    assert set(vars(plain)) <= set(LeanProtocol.__slots__)
    assert not set(LeanProtocol.__slots__) & set(dir(WebSocketsSansIOProtocol))
    lean = LeanProtocol(config, ServerState(), {})
    assert isinstance(lean.queue, Inbox)
    assert isinstance(lean.writable, Flag)
    assert lean.writable.is_set()


async def reads_in_order_passing_a_cancelled_wakeup_on(
    inbox: Inbox, read: Callable[[], Coroutine[Any, Any, Any]]
) -> None:
    """What ``read`` does with ``inbox``: `Inbox.get`, and `LeanProtocol.receive`, which
    has its loop inline."""
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert [await read(), await read(), inbox.empty()] == [1, 2, True]
    first = asyncio.create_task(read())
    second = asyncio.create_task(read())
    await asyncio.sleep(0)
    inbox.put_nowait("item")  # wakes the first reader...
    first.cancel()  # ...which is cancelled before it runs: the second gets the item
    async with asyncio.timeout(5):  # not woken: this fails, not hangs
        assert await second == "item"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert inbox.empty()
    waiting = asyncio.create_task(read())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    inbox.put_nowait("later")  # no reader left waiting: it stays queued
    assert inbox.qsize() == 1
    assert await read() == "later"
    lone = asyncio.create_task(read())  # one reader, held without a list
    await asyncio.sleep(0)
    inbox.put_nowait("kept")  # wakes it...
    lone.cancel()  # ...and it is cancelled before it runs: the item stays for the next
    with pytest.raises(asyncio.CancelledError):
        await lone
    assert await read() == "kept"
    assert inbox.empty()


async def test_inbox_gets_in_order_and_passes_a_cancelled_wakeup_on() -> None:
    inbox = Inbox()
    await reads_in_order_passing_a_cancelled_wakeup_on(inbox, inbox.get)
    with pytest.raises(asyncio.QueueEmpty):
        inbox.get_nowait()


async def test_receive_reads_the_inbox_as_its_get_does() -> None:
    config = uvicorn.Config(echo, ws="websockets-sansio", lifespan="off")
    config.load()
    protocol = LeanProtocol(config, ServerState(), {})
    inbox: object = protocol.queue
    assert isinstance(inbox, Inbox)
    await reads_in_order_passing_a_cancelled_wakeup_on(inbox, protocol.receive)


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


def test_shared_headers_are_equal_and_share_only_what_clients_send_alike() -> None:
    def headers(key: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"host", b"example.com:8000"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-key", key),
            (b"cookie", b"session=" + key),
            (b"authorization", b"Bearer " + key),
            (b"User-Agent", b"agent/1.0"),
        ]

    first = shared_headers(headers(b"one"))
    second = shared_headers(headers(b"two"))
    assert first == headers(b"one")  # what the app reads is unchanged
    assert second == headers(b"two")
    shared = [a is b for a, b in zip(first, second, strict=True)]
    assert shared == [True, True, False, False, False, True]
    again = shared_headers(headers(b"two"))  # an equal secret is never held for later
    assert again[2] is not second[2]
    assert again[3] is not second[3]
    assert again[4] is not second[4]


def test_shared_headers_hold_a_bounded_number_of_pairs() -> None:
    agents = [[(b"user-agent", f"agent/{n}".encode())] for n in range(MAX_SHARED_HEADERS + 5)]
    held = [shared_headers(agent)[0] for agent in agents]
    again = [
        shared_headers([(b"user-agent", f"agent/{n}".encode())])[0] for n in range(len(agents))
    ]
    assert again == held
    assert not any(a is b for a, b in zip(held[-5:], again[-5:], strict=True))  # past the bound

    def long() -> list[tuple[bytes, bytes]]:
        return [(b"origin", b"https://" + b"x" * int("300"))]  # made at run time

    assert shared_headers(long())[0] is not shared_headers(long())[0]


async def next_change(read: Callable[[], object]) -> object:
    """What ``read()`` returns once it no longer returns what it returned first."""
    first = read()
    for _ in range(1000):  # up to 5 s
        await asyncio.sleep(0.005)
        if (value := read()) != first:
            return value
    raise AssertionError(f"still {first!r} after 5 s")


@pytest.mark.parametrize(
    "server", [{"ws_ping_interval": 0.3, "ws_ping_timeout": 5.0}], indirect=True
)
async def test_keepalive_pings_go_at_uvicorns_times_on_one_clock(server: uvicorn.Server) -> None:
    async with connect(url_of(server), ping_interval=None) as client:  # it answers pings
        (protocol,) = [c for c in server.server_state.connections if isinstance(c, LeanProtocol)]
        for _ in range(3):  # ping, pong, the next ping put on the clock: three times
            ping: object = protocol.ping_timer
            while not isinstance(ping, Ping):  # a ping in flight: wait for the next
                ping = await next_change(lambda: protocol.ping_timer)
            assert ping.protocol is protocol
            sent_at = await next_change(lambda: protocol.ping_sent_at)
            assert isinstance(sent_at, float)
            assert sent_at >= ping.when - 0.002  # not before the time uvicorn set
        await client.send("hello")
        assert await client.recv() == "hello"  # pings did not disturb the session
        last: object = protocol.ping_timer
        while not isinstance(last, Ping):
            last = await next_change(lambda: protocol.ping_timer)
    for _ in range(100):
        if last.protocol is None:
            break
        await asyncio.sleep(0.01)
    assert last.protocol is None  # cancelled with the connection: nothing of it held


async def test_ping_clock_lets_cancelled_pings_go_as_connections_come_and_go() -> None:
    config = uvicorn.Config(echo, ws="websockets-sansio", lifespan="off")
    config.load()
    protocol = LeanProtocol(config, ServerState(), {})
    clock = PingClock(asyncio.get_running_loop())
    later = clock.loop.time() + 3600
    live = [clock.at(later + n, protocol) for n in range(100)]
    for n in range(20 * PING_CLOCK_SWEEP):  # connections that open and close
        clock.at(later + n, protocol).cancel()
        assert len(clock.due) <= 2 * max(PING_CLOCK_SWEEP, 2 * len(live)) + 1
    assert all(ping in clock.due for ping in live)  # the live ones stay, in heap order
    assert clock.due[0].when == min(ping.when for ping in clock.due)
    assert clock.timer is not None
    clock.timer.cancel()


@pytest.mark.parametrize(
    "server", [{"ws_ping_interval": 0.1, "ws_ping_timeout": 0.2}], indirect=True
)
async def test_a_client_that_does_not_answer_pings_is_closed_with_1011(
    server: uvicorn.Server,
) -> None:
    client = ClientProtocol(parse_uri(url_of(server)))  # sans I/O: it sends only what we write
    port = server.servers[0].sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client.send_request(client.connect())
    writer.write(b"".join(client.data_to_send()))  # the handshake; never a pong after it
    received: list[Frame] = []
    async with asyncio.timeout(5):
        while data := await reader.read(65536):
            client.receive_data(data)
            received += [event for event in client.events_received() if isinstance(event, Frame)]
    writer.close()
    assert received[0].opcode is Opcode.PING  # sent by the clock
    assert client.close_rcvd is not None
    assert client.close_rcvd.code == 1011  # uvicorn's pong deadline, as before
