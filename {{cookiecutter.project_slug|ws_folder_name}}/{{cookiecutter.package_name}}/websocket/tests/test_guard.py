"""The websocket guard: the policy before and after accept, over scripted connections."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from ..asgi_types import ASGIApp, Message, Receive, Scope, Send
from ..broadcast import MemoryHub, run_broadcast
from ..guard import (
    CLOSE_CODE_WAIT,
    WATCH_STEPS,
    GuardedConnection,
    GuardObserver,
    Handshake,
    Policy,
    Refuse,
    Tally,
    WebSocketGuard,
    origin_allowed,
)
from ..session import SessionSocket, receive_json, run_websocket, send_json
from ..testing import ScriptedClient
from .conftest import VirtualClockLoop

# Each test runs on every delivery path (queued, sent at once, lane): see conftest.DELIVERY_PATHS.
pytestmark = pytest.mark.usefixtures("delivery_path")

WebSocketClass = Callable[[Scope, Receive, Send], SessionSocket]


def echo_app(web_socket_class: WebSocketClass) -> ASGIApp:
    """A session that echoes JSON objects, on the face under test, recording the user."""

    async def echo(websocket: SessionSocket, message: dict[str, Any]) -> None:
        await send_json(websocket, {**message, "user": websocket.scope.get("user")})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await run_websocket(web_socket_class(scope, receive, send), receive_json(echo))

    return app


def handshake(origin: str | None, host: str | None = "example.com:8000") -> Handshake:
    headers = {name: value for name, value in (("origin", origin), ("host", host)) if value}
    return Handshake(path="/ws", headers=headers)


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "allowed"),
    [
        (None, "example.com:8000", "ws", True),  # not a browser
        ("http://example.com:8000", "example.com:8000", "ws", True),
        ("http://EXAMPLE.com:8000", "example.com:8000", "ws", True),
        ("https://example.com", "example.com", "ws", True),  # behind a TLS proxy
        ("http://example.com", "example.com:80", "ws", True),
        ("https://example.com", "example.com:443", "wss", True),
        ("http://example.com:9000", "example.com:8000", "ws", False),  # another port
        ("https://example.com:8000", "example.com", "ws", False),
        ("https://evil.example", "example.com", "ws", False),
        ("https://example.com.evil.example", "example.com", "ws", False),
        ("null", "example.com", "ws", False),  # sandboxed frames, file:// pages
        ("http://[bad", "example.com", "ws", False),
        ("http://example.com", None, "ws", False),
    ],
)
def test_origin_is_allowed_only_when_missing_or_the_services_own(
    origin: str | None, host: str | None, scheme: str, allowed: bool
) -> None:
    assert origin_allowed(handshake(origin, host), scheme, frozenset()) is allowed


def test_allowlisted_origins_match_exactly() -> None:
    allowed = Policy(allowed_origins=frozenset({"https://App.Example.com/"})).allowed_origins
    assert origin_allowed(handshake("https://app.example.com"), "ws", allowed)
    assert not origin_allowed(handshake("https://app.example.com:444"), "ws", allowed)
    assert not origin_allowed(handshake("https://sub.app.example.com"), "ws", allowed)


def test_handshake_reads_headers_and_cookies() -> None:
    client = ScriptedClient(
        headers=[
            (b"Cookie", b'session=abc123; theme="dark"; empty='),
            (b"X-Twice", b"first"),
            (b"x-twice", b"second"),
        ]
    )
    seen = Handshake.from_scope(client.scope)
    assert seen.cookies == {"session": "abc123", "theme": "dark", "empty": ""}
    assert seen.headers["x-twice"] == "first"
    assert seen.client == ("127.0.0.1", 50000)


@pytest.mark.parametrize("name", ["max_message_bytes", "messages_per_second", "idle_timeout"])
def test_policy_refuses_limits_that_are_not_positive(name: str) -> None:
    limits: dict[str, Any] = {name: 0}
    with pytest.raises(ValueError, match=f"Policy.{name} must be a positive number"):
        Policy(**limits)


async def test_foreign_origin_is_refused_before_the_app_runs(
    web_socket_class: WebSocketClass,
) -> None:
    client = ScriptedClient(
        headers=[(b"origin", b"https://evil.example"), (b"host", b"example.com")]
    )
    guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy())
    await guard(client.scope, client.receive, client.send)
    assert client.sent_so_far() == [{"type": "websocket.close", "code": 1000, "reason": ""}]


async def test_a_full_server_accepts_only_to_close_with_1013(
    web_socket_class: WebSocketClass,
) -> None:
    guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy(max_connections=1))
    first, second = ScriptedClient(), ScriptedClient()
    session = asyncio.create_task(guard(first.scope, first.receive, first.send))
    await first.next_sent()  # accepted: the one connection allowed
    await guard(second.scope, second.receive, second.send)
    assert [m["type"] for m in second.sent_so_far()] == ["websocket.accept", "websocket.close"]
    first.disconnect()
    await session
    third = ScriptedClient()  # a place is free again
    third.disconnect()
    await guard(third.scope, third.receive, third.send)
    assert third.sent_so_far()[0]["type"] == "websocket.accept"


async def test_authentication_can_refuse_with_403_or_401(
    web_socket_class: WebSocketClass,
) -> None:
    async def refuse_403(handshake: Handshake) -> None:
        raise Refuse()

    async def refuse_401(handshake: Handshake) -> None:
        raise Refuse(401)

    client = ScriptedClient()
    await WebSocketGuard(echo_app(web_socket_class), policy=Policy(), authenticate=refuse_403)(
        client.scope, client.receive, client.send
    )
    assert client.sent_so_far() == [{"type": "websocket.close", "code": 1000, "reason": ""}]
    client = ScriptedClient()
    client.scope["extensions"] = {"websocket.http.response": {}}
    await WebSocketGuard(echo_app(web_socket_class), policy=Policy(), authenticate=refuse_401)(
        client.scope, client.receive, client.send
    )
    start, body = client.sent_so_far()
    assert start["status"] == 401
    assert json.loads(body["body"]) == {"detail": "Unauthorized"}


async def test_authentication_attaches_an_identity(web_socket_class: WebSocketClass) -> None:
    async def from_cookie(handshake: Handshake) -> str:
        return f"user:{handshake.cookies['session']}"

    client = ScriptedClient(headers=[(b"cookie", b"session=42")])
    client.send_text('{"type": "hello"}')
    client.disconnect()
    guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy(), authenticate=from_cookie)
    await guard(client.scope, client.receive, client.send)
    assert json.loads(client.sent_so_far()[1]["text"]) == {"type": "hello", "user": "user:42"}
    anonymous = ScriptedClient()
    anonymous.disconnect()
    await WebSocketGuard(echo_app(web_socket_class), policy=Policy())(
        anonymous.scope, anonymous.receive, anonymous.send
    )
    assert "user" in anonymous.scope  # None: Starlette's websocket.user works for everyone
    assert anonymous.scope["user"] is None


async def test_an_oversized_message_closes_with_1009_and_ends_the_session(
    web_socket_class: WebSocketClass, caplog: pytest.LogCaptureFixture
) -> None:
    client = ScriptedClient()
    client.send_text(json.dumps({"fits": "x" * 50}))
    client.send_text(json.dumps({"too": "é" * 60}))  # 60 characters, 120 bytes in UTF-8
    guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy(max_message_bytes=100))
    await asyncio.wait_for(guard(client.scope, client.receive, client.send), 2)
    sent = client.sent_so_far()
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[2]["code"] == 1009
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_too_many_messages_close_with_1008(web_socket_class: WebSocketClass) -> None:
    client = ScriptedClient()
    for number in range(4):
        client.send_text(json.dumps({"n": number}))
    policy = Policy(messages_per_second=0.001, message_burst=3)
    await asyncio.wait_for(
        WebSocketGuard(echo_app(web_socket_class), policy=policy)(
            client.scope, client.receive, client.send
        ),
        2,
    )
    sent = client.sent_so_far()
    assert [m["type"] for m in sent] == ["websocket.accept"] + ["websocket.send"] * 3 + [
        "websocket.close"
    ]
    assert (sent[-1]["code"], sent[-1]["reason"]) == (1008, "too many messages")


class Counting(GuardObserver):
    """An observer that keeps the tally of the one endpoint it sees."""

    def __init__(self) -> None:
        self.tally = Tally("/ws")

    def opened(self, connection: GuardedConnection) -> Tally:
        return self.tally


@pytest.mark.parametrize(
    ("last", "policy", "close"),
    [
        ('{"type": "keepalive", "pad": "%s"}' % ("é" * 60), Policy(max_message_bytes=100), 1009),
        ('{"type": "keepalive"}', Policy(messages_per_second=0.001, message_burst=3), 1008),
    ],
    ids=["size", "rate"],
)
async def test_keepalives_sent_while_the_app_waits_are_checked_and_counted_one_by_one(
    web_socket_class: WebSocketClass, last: str, policy: Policy, close: int
) -> None:
    # Sent one at a time into a running session: where the server hands texts over as they
    # come (RECEIVE_DIRECT, the lane path), the guard checks each before the app's take.
    client, observer = ScriptedClient(), Counting()
    guard = WebSocketGuard(echo_app(web_socket_class), policy=policy, observer=observer)
    session = asyncio.create_task(guard(client.scope, client.receive, client.send))
    assert (await client.next_sent())["type"] == "websocket.accept"
    fits = '{"type": "keepalive", "note": "ünï"}'  # 20 characters, 22 bytes in UTF-8
    for _ in range(2):
        client.send_text(fits)
        assert json.loads((await client.next_sent())["text"])["note"] == "ünï"
    client.send_text(last)
    if close == 1008:  # the burst of 3 has room for this one, not the next
        assert json.loads((await client.next_sent())["text"])["type"] == "keepalive_ack"
        client.send_text(last)
    closing = await client.next_sent()
    assert (closing["type"], closing["code"]) == ("websocket.close", close)
    await asyncio.wait_for(session, 2)
    received = [fits, fits, last] + [last] * (close == 1008)
    assert observer.tally.messages_received == len(received)
    assert observer.tally.bytes_received == sum(len(text.encode()) for text in received)
    assert observer.tally.messages_sent == len(received) - 1  # every one answered but the last
    if ScriptedClient.hands_over_by_default:  # taken as they came, but those refused
        assert client.handed_over == len(received) - 1


def run_on_virtual_clock(scenario: Callable[[], Any]) -> None:
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        runner.run(scenario())


def test_an_idle_client_is_closed_with_1008(web_socket_class: WebSocketClass) -> None:
    closed_at: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        client = ScriptedClient(reply_timeout=120)  # virtual seconds
        guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy(idle_timeout=30))
        session = asyncio.create_task(guard(client.scope, client.receive, client.send))
        await client.next_sent()  # accept
        for _ in range(3):  # a keepalive every 20 s keeps the connection open
            await asyncio.sleep(20)
            client.send_text('{"type": "keepalive"}')
            assert json.loads((await client.next_sent())["text"])["type"] == "keepalive_ack"
        closing = await client.next_sent()
        closed_at.append(loop.time())
        assert (closing["code"], closing["reason"]) == (1008, "idle for 30 s")
        await session

    run_on_virtual_clock(scenario)
    assert closed_at == [90.0]  # 30 s after the last keepalive, at 60 s


def test_a_client_that_does_not_read_is_dropped_and_others_go_on(
    web_socket_class: WebSocketClass, caplog: pytest.LogCaptureFixture
) -> None:
    ended: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy(send_timeout=10))
        slow, fast = ScriptedClient(reply_timeout=120), ScriptedClient(reply_timeout=120)
        slow_session = asyncio.create_task(guard(slow.scope, slow.receive, slow.send))
        fast_session = asyncio.create_task(guard(fast.scope, fast.receive, fast.send))
        await slow.next_sent()
        await fast.next_sent()
        slow.stop_reading()
        slow.send_text('{"to": "slow"}')  # its echo cannot be sent
        fast.send_text('{"to": "fast"}')
        assert json.loads((await fast.next_sent())["text"])["to"] == "fast"  # not delayed
        await slow_session
        ended.append(loop.time())
        fast.disconnect()
        await fast_session

    run_on_virtual_clock(scenario)
    [seconds] = ended
    assert 10 <= seconds <= 20  # its send waited a send timeout, at most two
    assert "dropped: it does not read" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_broadcast_subscriber_that_does_not_read_is_dropped_and_others_go_on(
    web_socket_class: WebSocketClass, caplog: pytest.LogCaptureFixture
) -> None:
    # On every delivery path: a message that cannot be sent at once is queued, and its
    # send, waiting for a client that reads nothing, is dropped after the send timeout.
    ended: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        hub = MemoryHub(join_leave=False)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await run_broadcast(web_socket_class(scope, receive, send), hub)

        guard = WebSocketGuard(app, policy=Policy(send_timeout=10))
        async with hub:
            slow, fast = (ScriptedClient("/ws/rooms/1", reply_timeout=120) for _ in range(2))
            slow_session = asyncio.create_task(guard(slow.scope, slow.receive, slow.send))
            fast_session = asyncio.create_task(guard(fast.scope, fast.receive, fast.send))
            for client in (slow, fast):
                await client.next_sent()  # accepted
                await client.next_sent()  # subscribed
            slow.stop_reading()
            await hub.publish("/ws/rooms/1", {"n": 1})
            assert json.loads((await fast.next_sent())["text"])["message"] == {"n": 1}
            await slow_session
            ended.append(loop.time())
            await hub.publish("/ws/rooms/1", {"n": 2})
            assert json.loads((await fast.next_sent())["text"])["message"] == {"n": 2}
            fast.disconnect()
            await fast_session

    run_on_virtual_clock(scenario)
    [seconds] = ended
    assert 10 <= seconds <= 20  # its send waited a send timeout, at most two
    assert "dropped: it does not read" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_one_watchdog_watches_every_connection_and_is_at_most_a_step_late(
    web_socket_class: WebSocketClass,
) -> None:
    closed: dict[str, float] = {}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy(idle_timeout=30))
        clients = {name: ScriptedClient(reply_timeout=120) for name in ("early", "late")}
        sessions = []
        for client in clients.values():  # accepted at 0 and 0.25: idle deadlines 30, 30.25
            sessions.append(asyncio.create_task(guard(client.scope, client.receive, client.send)))
            await client.next_sent()
            await asyncio.sleep(0.25)
        assert guard.watchdog is not None
        assert len(guard.watchdog.connections) == 2  # one timer for both
        for name, client in clients.items():
            closing = await client.next_sent()
            assert closing["code"] == 1008, name
            closed[name] = loop.time()
        await asyncio.gather(*sessions)
        assert not guard.watchdog.connections
        assert guard.watchdog.timer is None  # nothing left to watch: no timer

    run_on_virtual_clock(scenario)
    step = min(Policy().send_timeout, 30) / WATCH_STEPS
    assert closed["early"] == 30.0  # the earliest deadline: met exactly
    assert 30.25 <= closed["late"] <= 30.25 + step  # another's, near it: at most a step late


async def test_each_connection_logs_its_open_and_close_but_no_message(
    web_socket_class: WebSocketClass, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = ScriptedClient("/ws/chat")
    client.send_text('{"secret": "s3cr3t-token"}')
    client.disconnect(1001)
    await WebSocketGuard(echo_app(web_socket_class), policy=Policy())(
        client.scope, client.receive, client.send
    )
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("guard")]
    assert lines[0] == "websocket /ws/chat from 127.0.0.1:50000 open"
    assert lines[1].startswith("websocket /ws/chat from 127.0.0.1:50000 closed with 1001 after ")
    assert "s3cr3t" not in caplog.text


async def test_http_and_lifespan_pass_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        pass

    guard = WebSocketGuard(app, policy=Policy())
    await guard({"type": "http"}, nothing, ignore)
    await guard({"type": "lifespan"}, nothing, ignore)
    assert seen == ["http", "lifespan"]


async def test_a_send_after_the_server_closed_by_itself_ends_the_session_quietly(
    web_socket_class: WebSocketClass, caplog: pytest.LogCaptureFixture
) -> None:
    # What uvicorn raises once it has closed a connection on a protocol error.
    refusal = "Unexpected ASGI message 'websocket.send', after sending 'websocket.close'."
    client = ScriptedClient()
    guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy())
    session = asyncio.create_task(guard(client.scope, client.receive, client.send))
    await client.next_sent()  # accept
    client.send_error = RuntimeError(refusal)
    client.send_text('{"to": "echo"}')  # its echo meets the refusal
    await asyncio.wait_for(session, 2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def close_after_a_failed_reply(
    web_socket_class: WebSocketClass, caplog: pytest.LogCaptureFixture, *then: Message
) -> logging.LogRecord:
    """The guard's close record when the echo of a message finds the client gone (uvicorn
    raises ClientDisconnected, an OSError) and the server queues ``then`` after it."""
    caplog.set_level(logging.INFO)
    client = ScriptedClient("/ws/chat")
    guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy())
    session = asyncio.create_task(guard(client.scope, client.receive, client.send))
    await client.next_sent()  # accept
    client.send_error = OSError("the client has closed the connection")
    client.send_text('{"to": "echo"}')
    for message in then:
        client.send_message(message)
    await asyncio.wait_for(session, CLOSE_CODE_WAIT + 2)
    [close] = [r for r in caplog.records if getattr(r, "event", None) == "close"]
    return close


async def test_a_close_that_crosses_a_reply_is_logged_with_the_clients_code(
    web_socket_class: WebSocketClass, caplog: pytest.LogCaptureFixture
) -> None:
    # A client sends a message and its close at once: the server queues both, and the
    # reply finds the connection closing; a message the app did not read comes between.
    unread: Message = {"type": "websocket.receive", "text": '{"unread": true}'}
    disconnect: Message = {"type": "websocket.disconnect", "code": 4001, "reason": ""}
    close = await close_after_a_failed_reply(web_socket_class, caplog, unread, disconnect)
    assert close.getMessage().split(" closed with ")[1].split()[0] == "4001"
    assert getattr(close, "code", None) == 4001


async def test_a_send_that_fails_with_no_close_to_read_is_logged_without_a_code(
    web_socket_class: WebSocketClass, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that raises on a send but queues no disconnect: the guard waits at most
    # CLOSE_CODE_WAIT for one, then logs the close as it knows it.
    close = await close_after_a_failed_reply(web_socket_class, caplog)
    assert getattr(close, "code", "missing") is None
    assert "closed with no close frame" in close.getMessage()
