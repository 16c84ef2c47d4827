"""Channels endpoints of rendered projects, driven by the real Centrifuge SDKs.

A project with ``/connection/websocket:channels`` (and a broadcast endpoint beside it) is
rendered once per flavour and hub backend, and served on uvicorn from this virtualenv. Its
clients are SDKs we did not write: ``centrifuge-python`` in this process, and the npm
``centrifuge`` package in Node (``conformance/centrifuge/drive.mjs``, which prints what the
SDK observed as JSON lines). Each scenario checks what the SDKs report, message by message:
identities from a token or from auth.py, fifty channels on one connection, client publishes,
presence, history, every refusal with its code, and recovery after a cut connection and a
restarted server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import struct
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest
from centrifuge import (  # type: ignore[import-untyped]  # it ships no types
    Client,
    ClientEventHandler,
    ConnectedContext,
    DisconnectedContext,
    ErrorContext,
    PublicationContext,
    StreamPosition,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)
from websocket.testing import LiveServer, RedisServer  # the vendored backend
from websockets.asyncio.client import connect

from tests.conftest import TEMPLATE, node_with, render, require_redis

T = TypeVar("T")
DRIVER = TEMPLATE / "conformance" / "centrifuge"
ENDPOINTS = "/connection/websocket:channels, /ws/rooms/{room}:broadcast"
PATH = "/connection/websocket"
SECRET = "ws-template-test-hmac-secret-0123456789"  # 39 bytes: more than the 32 required
PUBLISH_KEY = "ws-template-test-publish-key"
AUTH = '''"""Test auth: the user named by the ``user`` cookie, if any."""

from __future__ import annotations

from .websocket.guard import Handshake


async def authenticate(handshake: Handshake) -> object | None:
    return handshake.cookies.get("user") or None
'''
WAIT = 10.0  # seconds any single expectation may take

# centrifuge-python 0.7 can leave the socket of a connect attempt it cancelled (on
# disconnect, or a reconnect racing it) to the garbage collector: an unraisable
# ResourceWarning, not a finding about the service. Each test collects its garbage itself
# (`run`), so that such a warning lands on the test that made it, where it is ignored.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def run(scenario: Coroutine[Any, Any, T]) -> T:
    """``run(scenario)``, then a garbage collection (see ``pytestmark``)."""
    try:
        return asyncio.run(scenario)
    finally:
        gc.collect()


def node_or_skip() -> str:
    """The node command; in CI, a missing node or SDK fails the test."""
    return node_with(DRIVER, "centrifuge")


def token(user: str, *, expires_in: float = 600, key: str = SECRET, alg: str = "HS256") -> str:
    claims = {"sub": user, "exp": int(time.time() + expires_in)}
    return jwt.encode(claims, key if alg != "none" else "", algorithm=alg)


def unique(prefix: str) -> str:
    """A channel name no other test (or earlier run on the same hub) uses."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Service:
    server: LiveServer
    backend: str

    @property
    def ws_url(self) -> str:
        return self.server.ws_url(PATH)

    def publish(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.server.url("/api/publish"),
            data=json.dumps({"channel": channel, "message": message}).encode(),
            headers={"Authorization": f"Bearer {PUBLISH_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            answer: dict[str, Any] = json.load(response)
        return answer

    async def publish_all(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        def publish_each() -> None:
            for channel, message in messages:
                self.publish(channel, message)

        await asyncio.to_thread(publish_each)


COMBINATIONS = [("fastapi", "memory"), ("fastapi", "redis"), ("asgi", "memory"), ("asgi", "redis")]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(c, id=f"{c[0]}-{c[1]}", marks=pytest.mark.xdist_group(f"sdks-{c[0]}-{c[1]}"))
        for c in COMBINATIONS
    ],
)
def service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
) -> Iterator[Service]:
    framework, backend = request.param
    answers = {"endpoints": ENDPOINTS, "framework": framework, "broadcast_backend": backend}
    project = render(
        tmp_path_factory.mktemp(f"sdks-{framework}-{backend}"), cookiecutter_config, answers
    )
    [app] = project.glob("*/app.py")
    (app.parent / "auth.py").write_text(AUTH)
    environment = {
        "TOKEN_HMAC_SECRET_KEY": SECRET,
        "PUBLISH_API_KEY": PUBLISH_KEY,
        "ANONYMOUS_CONNECTIONS": "yes",
    }
    with contextlib.ExitStack() as stack:
        if backend == "redis":
            require_redis()
            environment["REDIS_URL"] = stack.enter_context(RedisServer()).url
        server = stack.enter_context(
            LiveServer(f"{app.parent.name}.app:app", env=environment, cwd=project)
        )
        yield Service(server, backend)


# centrifuge-python, in this process.


class Recorder(ClientEventHandler):  # type: ignore[misc]
    """What one Python SDK client saw: events as (kind, fields), and waits on them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    def add(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))
        self.changed.set()

    def of(self, kind: str, channel: str | None = None) -> list[dict[str, Any]]:
        return [
            f
            for k, f in self.events
            if k == kind and (channel is None or f.get("channel") == channel)
        ]

    async def until(self, done: Callable[[], bool], what: str, within: float = WAIT) -> None:
        try:
            async with asyncio.timeout(within):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            pytest.fail(f"expected {what}; saw {self.events[-20:]}")

    async def count(self, kind: str, n: int, channel: str | None = None) -> None:
        await self.until(lambda: len(self.of(kind, channel)) >= n, f"{n} {kind} events")

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.add("connected", client=ctx.client)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.add("disconnected", code=ctx.code, reason=ctx.reason)

    async def on_error(self, ctx: ErrorContext) -> None:
        # code: the SDK's (13, a connect error); server_code: the server's error's
        self.add("error", code=ctx.code, server_code=getattr(ctx.error, "code", None))


class SubscriptionRecorder(SubscriptionEventHandler):  # type: ignore[misc]
    def __init__(self, recorder: Recorder, channel: str) -> None:
        self.recorder, self.channel = recorder, channel

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        position = ctx.stream_position
        self.recorder.add(
            "subscribed",
            channel=self.channel,
            recovered=ctx.recovered,
            was_recovering=ctx.was_recovering,
            offset=position.offset if position else None,
            epoch=position.epoch if position else None,
        )

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.recorder.add("unsubscribed", channel=self.channel, code=ctx.code, reason=ctx.reason)

    async def on_publication(self, ctx: PublicationContext) -> None:
        info = ctx.pub.info
        self.recorder.add(
            "publication",
            channel=self.channel,
            offset=ctx.pub.offset,
            data=ctx.pub.data,
            user=info.user if info else None,
        )


@contextlib.asynccontextmanager
async def python_client(url: str, **options: Any) -> AsyncIterator[tuple[Client, Recorder]]:
    recorder = Recorder()
    client = Client(
        url,
        events=recorder,
        proxy=None,
        min_reconnect_delay=0.1,
        max_reconnect_delay=1.0,
        **options,
    )
    try:
        yield client, recorder
    finally:
        await client.disconnect()


def subscribe(client: Client, recorder: Recorder, channel: str) -> Any:
    subscription = client.new_subscription(channel, events=SubscriptionRecorder(recorder, channel))
    return subscription


# centrifuge (npm), in Node.


async def run_node(scenario: dict[str, Any], within: float = 30) -> list[dict[str, Any]]:
    """Run drive.mjs on ``scenario`` to its end; the events it printed."""
    process = await asyncio.create_subprocess_exec(
        node_or_skip(),
        str(DRIVER / "drive.mjs"),
        json.dumps(scenario),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(within):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert process.returncode == 0, (events, stderr.decode())
    return events


class NodeClient:
    """drive.mjs running, fed actions on stdin, its events read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []

    def of(self, kind: str, channel: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["event"] == kind and (channel is None or e.get("channel") == channel)
        ]

    async def until(self, done: Callable[[], bool], what: str, within: float = WAIT) -> None:
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(within):
                while not done():
                    line = await self.process.stdout.readline()
                    if not line:
                        break
                    self.events.append(json.loads(line))
        except TimeoutError:
            pass
        if not done():
            pytest.fail(f"node: expected {what}; saw {self.events[-20:]}")

    async def count(self, kind: str, n: int) -> None:
        await self.until(lambda: len(self.of(kind)) >= n, f"{n} {kind} events")

    async def send(self, action: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(action).encode() + b"\n")
        await self.process.stdin.drain()


@contextlib.asynccontextmanager
async def node_client(scenario: dict[str, Any]) -> AsyncIterator[NodeClient]:
    process = await asyncio.create_subprocess_exec(
        node_or_skip(),
        str(DRIVER / "drive.mjs"),
        json.dumps({"deadline": 60000, **scenario, "stdin": True}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield NodeClient(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        assert process.stdin is not None
        process.stdin.close()


def only(events: list[dict[str, Any]], kind: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e for e in events if e["event"] == kind and all(e.get(k) == v for k, v in fields.items())
    ]


# Identities.


def test_a_token_and_a_cookie_identity_connect_and_their_publishes_carry_their_user(
    service: Service,
) -> None:
    channel = unique("chat:room-")

    async def scenario() -> None:
        # bob (Node) holds a token; carol (Python) is known by the cookie auth.py reads.
        async with node_client(
            {"url": service.ws_url, "token": token("bob"), "channels": [channel]}
        ) as bob:
            await bob.count("subscribed", 1)
            async with python_client(service.ws_url, headers={"Cookie": "user=carol"}) as (
                client,
                carol,
            ):
                await client.connect()
                sub = subscribe(client, carol, channel)
                await sub.subscribe()
                await carol.count("subscribed", 1)
                await sub.publish({"text": "from carol"})
                await bob.send({"do": "publish", "channel": channel, "data": {"text": "from bob"}})
                await carol.count("publication", 2)
                await bob.count("publication", 2)
                presence = await sub.presence()
                users = sorted(info.user for info in presence.clients.values())
                assert users == ["bob", "carol"]
        seen_by_carol = [
            (p["offset"], p["data"]["text"], p["user"]) for p in carol.of("publication")
        ]
        seen_by_bob = [
            (p["offset"], p["data"]["text"], p["info"]["user"]) for p in bob.of("publication")
        ]
        assert seen_by_carol == seen_by_bob  # one order: the offsets'
        assert [offset for offset, _, _ in seen_by_carol] == [1, 2]
        assert {(text, user) for _, text, user in seen_by_carol} == {
            ("from carol", "carol"),
            ("from bob", "bob"),
        }
        assert not carol.of("error")
        assert not carol.of("unsubscribed")

    run(scenario())


def test_python_sdk_connects_with_a_token_as_its_user(service: Service) -> None:
    channel = unique("chat:room-")

    async def scenario() -> None:
        async with python_client(service.ws_url, token=token("alice")) as (client, alice):
            await client.connect()
            await alice.count("connected", 1)
            sub = subscribe(client, alice, channel)
            await sub.subscribe()
            await alice.count("subscribed", 1)
            stats = await sub.presence_stats()
            assert (stats.num_clients, stats.num_users) == (1, 1)
            presence = await sub.presence()
            [info] = presence.clients.values()
            assert (info.user, info.client) == ("alice", alice.of("connected")[0]["client"])

    run(scenario())


# Many channels on one connection.


def fifty_channels() -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    prefix = unique("news:fifty-")
    channels = [f"{prefix}-{n}" for n in range(1, 51)]
    messages = [(c, {"n": n, "channel": c}) for n in range(1, 4) for c in channels]
    return channels, messages


def assert_each_once_in_order(
    seen: list[tuple[str, int, dict[str, Any]]], channels: list[str]
) -> None:
    by_channel: dict[str, list[int]] = defaultdict(list)
    for channel, offset, data in seen:
        assert data["channel"] == channel
        assert data["n"] == offset
        by_channel[channel].append(offset)
    assert {c: by_channel[c] for c in channels} == {c: [1, 2, 3] for c in channels}


def test_fifty_channels_on_one_connection_get_every_publication_once_in_order_python(
    service: Service,
) -> None:
    channels, messages = fifty_channels()

    async def scenario() -> None:
        async with python_client(service.ws_url) as (client, anonymous):
            await client.connect()
            for channel in channels:
                await subscribe(client, anonymous, channel).subscribe()
            await anonymous.count("subscribed", 50)
            await service.publish_all(messages)
            await anonymous.count("publication", 150)
            await asyncio.sleep(0.2)  # nothing more comes
            seen = [(p["channel"], p["offset"], p["data"]) for p in anonymous.of("publication")]
            assert_each_once_in_order(seen, channels)

    run(scenario())


def test_fifty_channels_on_one_connection_get_every_publication_once_in_order_node(
    service: Service,
) -> None:
    channels, messages = fifty_channels()

    async def scenario() -> None:
        async with node_client({"url": service.ws_url, "channels": channels}) as node:
            await node.count("subscribed", 50)
            await service.publish_all(messages)
            await node.count("publication", 150)
            await node.send({"do": "sleep", "ms": 200})
            await node.send({"do": "exit"})
            await node.count("done", 1)
            seen = [(p["channel"], p["offset"], p["data"]) for p in node.of("publication")]
            assert_each_once_in_order(seen, channels)

    run(scenario())


# Presence and history.


def test_presence_and_history_through_both_sdks(service: Service) -> None:
    room, news = unique("chat:room-"), unique("news:history-")

    async def scenario() -> None:
        async with python_client(service.ws_url, token=token("alice")) as (client, alice):
            await client.connect()
            sub = subscribe(client, alice, room)
            await sub.subscribe()
            await alice.count("subscribed", 1)
            await service.publish_all([(news, {"n": n}) for n in range(1, 6)])
            events = await run_node(
                {
                    "url": service.ws_url,
                    "token": token("bob"),
                    "channels": [room, news],
                    "actions": [
                        {"do": "until", "event": "subscribed", "count": 2},
                        {"do": "presence", "channel": room},
                        {"do": "presenceStats", "channel": room},
                        {"do": "history", "channel": news, "limit": 2},
                        {"do": "history", "channel": news, "limit": 2, "reverse": True},
                    ],
                }
            )
            presence = only(events, "result", action="presence")[0]["clients"]
            assert sorted(c["user"] for c in presence.values()) == ["alice", "bob"]
            [stats] = only(events, "result", action="presenceStats")
            assert (stats["numClients"], stats["numUsers"]) == (2, 2)
            first, reverse = only(events, "result", action="history")
            assert [p["offset"] for p in first["publications"]] == [1, 2]
            assert [p["data"]["n"] for p in first["publications"]] == [1, 2]
            assert [p["offset"] for p in reverse["publications"]] == [5, 4]
            assert first["offset"] == 5
            assert first["epoch"]

            # Python: the same, and since a position.
            news_sub = subscribe(client, alice, news)
            await news_sub.subscribe()
            await alice.count("subscribed", 2)
            for _ in range(int(WAIT / 0.05)):  # bob has gone (Redis: once his leave is in)
                if (await sub.presence_stats()).num_clients == 1:
                    break
                await asyncio.sleep(0.05)
            stats_py = await sub.presence_stats()
            assert (stats_py.num_clients, stats_py.num_users) == (1, 1)
            top = await news_sub.history(limit=2)
            assert [p.offset for p in top.publications] == [1, 2]
            assert (top.offset, top.epoch) == (5, first["epoch"])
            later = await news_sub.history(limit=10, since=StreamPosition(2, top.epoch))
            assert [p.offset for p in later.publications] == [3, 4, 5]
            assert [p.data["n"] for p in later.publications] == [3, 4, 5]
            backwards = await news_sub.history(limit=2, reverse=True)
            assert [p.offset for p in backwards.publications] == [5, 4]
            nothing = await news_sub.history(limit=0)
            assert (nothing.publications, nothing.offset) == ([], 5)

    run(scenario())


# Refusals.


def test_an_expired_token_is_refreshed_with_get_token_and_the_client_connects(
    service: Service,
) -> None:
    async def scenario() -> None:
        calls: list[int] = []

        async def get_token() -> str:
            calls.append(1)
            return token("alice")

        async with python_client(
            service.ws_url, token=token("alice", expires_in=-30), get_token=get_token
        ) as (client, alice):
            await client.connect()
            await alice.count("connected", 1)
            assert [e["server_code"] for e in alice.of("error")] == [109], alice.events
            assert len(calls) == 1

        events = await run_node(
            {
                "url": service.ws_url,
                "token": token("alice", expires_in=-30),
                "getToken": [token("alice")],
                "channels": [unique("news:after-refresh-")],
                "actions": [{"do": "until", "event": "subscribed"}],
            }
        )
        kinds = [e["event"] for e in events if e["event"] != "subscribing"]
        assert kinds[:5] == ["connecting", "error", "getToken", "connected", "subscribed"], events
        assert only(events, "error")[0]["code"] == 109
        assert events[-1] == {"event": "done", "getTokenCalls": 1}

    run(scenario())


@pytest.mark.parametrize(
    ("user", "channel", "code"),
    [
        ("alice", "nowhere:1", 102),  # unknown namespace
        ("", "chat:room", 103),  # anonymous on an AUTHENTICATED namespace
        ("bob", "user:#alice", 103),  # user-limited to someone else
    ],
)
def test_a_refused_subscription_ends_with_its_code_in_both_sdks(
    service: Service, user: str, channel: str, code: int
) -> None:
    async def scenario() -> None:
        options = {"token": token(user)} if user else {}
        async with python_client(service.ws_url, **options) as (client, recorder):
            await client.connect()
            await subscribe(client, recorder, channel).subscribe()
            await recorder.count("unsubscribed", 1)
            assert recorder.of("unsubscribed")[0]["code"] == code
            assert recorder.of("connected")  # the connection stays
        events = await run_node(
            {
                "url": service.ws_url,
                **options,
                "channels": [channel],
                "actions": [{"do": "until", "event": "unsubscribed"}],
            }
        )
        [unsubscribed] = only(events, "unsubscribed")
        assert unsubscribed["code"] == code, events
        assert only(events, "connected")

    run(scenario())


def test_the_channel_past_the_limit_is_refused_with_106(service: Service) -> None:
    prefix = unique("news:many-")
    channels = [f"{prefix}-{n}" for n in range(1, 130)]

    async def scenario() -> None:
        async with python_client(service.ws_url) as (client, recorder):
            await client.connect()
            for channel in channels:
                await subscribe(client, recorder, channel).subscribe()
            await recorder.until(
                lambda: len(recorder.of("subscribed")) + len(recorder.of("unsubscribed")) >= 129,
                "129 answers",
            )
            assert len(recorder.of("subscribed")) == 128
            [refused] = recorder.of("unsubscribed")
            assert refused["code"] == 106
        events = await run_node(
            {
                "url": service.ws_url,
                "channels": channels,
                "actions": [{"do": "until", "event": "unsubscribed"}],
            }
        )
        [refused_js] = only(events, "unsubscribed")
        assert refused_js["code"] == 106
        assert len(only(events, "subscribed")) == 128

    run(scenario())


def test_subscribing_twice_on_one_connection_is_refused_with_105(service: Service) -> None:
    # Both SDKs refuse a second subscription to a channel themselves: raw commands.
    channel = unique("news:twice-")

    async def scenario() -> list[dict[str, Any]]:
        async with connect(service.ws_url) as websocket:
            await websocket.send(json.dumps({"id": 1, "connect": {"token": token("alice")}}))
            replies = [json.loads(await websocket.recv())]
            subscribe_command = {"channel": channel}
            await websocket.send(json.dumps({"id": 2, "subscribe": subscribe_command}))
            replies.append(json.loads(await websocket.recv()))
            await websocket.send(json.dumps({"id": 3, "subscribe": subscribe_command}))
            replies.append(json.loads(await websocket.recv()))
            return replies

    connected, subscribed, refused = run(scenario())
    assert connected["connect"]["client"]
    assert subscribed["id"] == 2
    assert "subscribe" in subscribed
    assert refused == {"id": 3, "error": {"code": 105, "message": "already subscribed"}}


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param(
            lambda: token("alice", key="another-key-of-more-than-32-bytes!!"), id="other-key"
        ),
        pytest.param(lambda: token("alice", alg="none"), id="alg-none"),
    ],
)
def test_an_invalid_token_closes_with_3500_and_no_reconnect(
    service: Service, bad_token: Callable[[], str]
) -> None:
    async def scenario() -> None:
        async with python_client(service.ws_url, token=bad_token()) as (client, recorder):
            await client.connect()
            await recorder.count("disconnected", 1)
            assert recorder.of("disconnected")[0]["code"] == 3500
            await asyncio.sleep(0.3)
            assert not recorder.of("connected")
        events = await run_node(
            {
                "url": service.ws_url,
                "token": bad_token(),
                "channels": [unique("news:x-")],
                "actions": [{"do": "until", "event": "disconnected"}, {"do": "sleep", "ms": 300}],
            }
        )
        disconnected = only(events, "disconnected")
        assert disconnected[0]["code"] == 3500, events
        assert not only(events, "connected")
        assert [e["event"] for e in events].count("connecting") == 1  # terminal: no reconnect

    run(scenario())


def test_a_send_without_a_send_handler_closes_with_3508_and_no_reconnect(
    service: Service,
) -> None:
    """The generated channels.py registers no ``@RPC.on_send``: centrifuge-js's ``send``
    (centrifuge-python has none) ends the connection as Centrifuge's server does."""
    events = run(
        run_node(
            {
                "url": service.ws_url,
                "token": token("alice"),
                "actions": [
                    {"do": "until", "event": "connected"},
                    {"do": "send", "data": {"read": 7}},
                    {"do": "until", "event": "disconnected"},
                    {"do": "sleep", "ms": 300},
                ],
            }
        )
    )
    disconnected = only(events, "disconnected")
    assert (disconnected[0]["code"], disconnected[0]["reason"]) == (3508, "not available"), events
    assert [e["event"] for e in events].count("connecting") == 1  # terminal: no reconnect


# Recovery.


LINGER_ZERO = struct.pack("ii", 1, 0)


class Proxy:
    """A TCP proxy to the server, to cut the clients' connections and hold them off."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.blocked = False
        self.links: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.close()
            return
        self.links |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self.links -= {writer, upstream_writer}

    def cut(self) -> None:
        """Block new connections and cut the open ones (as a lost network would)."""
        self.blocked = True
        for writer in list(self.links):
            transport = writer.transport
            transport.abort()

    def reset(self) -> int:
        """Reset the open connections, both ways, as a middlebox or a crashed peer would: an
        RST (SO_LINGER 0), not a FIN. New connections pass. Call it on the proxy's event loop (the transports are not thread-safe); a link whose
        other half has already closed is skipped."""
        reset = 0
        for writer in list(self.links):
            connection = writer.get_extra_info("socket")
            if connection is not None and not writer.transport.is_closing():
                with contextlib.suppress(OSError):  # closed between the check and here
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
                    reset += 1
            writer.transport.abort()
        return reset

    def let_through(self) -> None:
        self.blocked = False

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class Phase:
    """Publications per channel, in the order of the phases of the recovery scenario."""

    counts: dict[str, int] = field(default_factory=dict)


async def recovery_scenario(
    service: Service,
    channels: list[str],
    start: Callable[[str], contextlib.AbstractAsyncContextManager[Any]],
    seen: Callable[[Any], list[tuple[str, int, int, str]]],
    subscribed: Callable[[Any], list[dict[str, Any]]],
) -> None:
    """Subscribe to ``channels`` through a proxy; cut, publish, let through (every channel
    recovers); cut, publish, restart the server, publish, let through (a Redis hub
    recovers everything; a memory hub lost it: recovered false in a new epoch)."""
    proxy = Proxy(service.server.port)
    port = await proxy.start()
    url = f"ws://127.0.0.1:{port}{PATH}"
    round_ = 0

    async def publish_round() -> None:
        nonlocal round_
        round_ += 1
        await service.publish_all([(c, {"round": round_}) for c in channels])

    try:
        async with start(url) as client:
            await wait_for(lambda: len(subscribed(client)) >= len(channels), "subscribed", client)
            await publish_round()
            await wait_for(lambda: len(seen(client)) >= len(channels), "round 1", client)

            # A cut connection: the server keeps the history; every channel recovers.
            proxy.cut()
            await publish_round()
            await publish_round()
            proxy.let_through()
            await wait_for(
                lambda: len(subscribed(client)) >= 2 * len(channels), "resubscribed", client
            )
            await wait_for(lambda: len(seen(client)) >= 3 * len(channels), "rounds 2-3", client)
            second = subscribed(client)[len(channels) :]
            assert all(s["recovered"] and s["was_recovering"] for s in second), second
            assert_contiguous(seen(client), channels, {c: [1, 2, 3] for c in channels})
            epochs = {s["channel"]: s["epoch"] for s in subscribed(client)[: len(channels)]}

            # A restarted server, messages published while the client is away.
            proxy.cut()
            await publish_round()  # round 4: before the restart
            await asyncio.to_thread(service.server.restart)
            assert service.server.port == proxy.port
            await publish_round()  # round 5: after it
            proxy.let_through()
            await wait_for(lambda: len(subscribed(client)) >= 3 * len(channels), "restart", client)
            third = subscribed(client)[2 * len(channels) :]
            if service.backend == "redis":
                assert all(s["recovered"] for s in third), third
                await wait_for(lambda: len(seen(client)) >= 5 * len(channels), "4-5", client)
                expected = {c: [1, 2, 3, 4, 5] for c in channels}
                assert {s["channel"]: s["epoch"] for s in third} == epochs
            else:  # the history went with the process: a new epoch, at round 5's offset 1
                assert not any(s["recovered"] for s in third), third
                assert all(s["epoch"] != epochs[s["channel"]] for s in third), third
                assert all(s["offset"] == 1 for s in third), third
                expected = {c: [1, 2, 3] for c in channels}
            assert_contiguous(seen(client), channels, expected)
            await publish_round()  # round 6 arrives live, next in the (new) stream
            await wait_for(
                lambda: len(seen(client)) >= (len(expected[channels[0]]) + 1) * len(channels),
                "round 6",
                client,
            )
            last = {c: o for c, o, _, _ in seen(client)[-len(channels) :]}
            assert last == {
                c: expected[c][-1] + 1 if service.backend == "redis" else 2 for c in channels
            }
    finally:
        await proxy.close()


async def wait_for(done: Callable[[], bool], what: str, client: Any) -> None:
    await client.until(done, what, within=WAIT + 5)


def assert_contiguous(
    seen: list[tuple[str, int, int, str]], channels: list[str], expected: dict[str, list[int]]
) -> None:
    """Each channel's publications (offset, round) so far: offsets as ``expected``, each
    publication once, and offset n the publication of round n."""
    by_channel: dict[str, list[int]] = defaultdict(list)
    for channel, offset, round_, _ in seen:
        assert offset == round_, (channel, offset, round_)
        by_channel[channel].append(offset)
    assert {c: by_channel[c][: len(expected[c])] for c in channels} == expected


def test_python_sdk_recovers_twenty_channels_after_a_cut_and_a_restart(service: Service) -> None:
    channels = [f"{unique('news:recover-')}-{n}" for n in range(1, 21)]

    @contextlib.asynccontextmanager
    async def start(url: str) -> AsyncIterator[Recorder]:
        async with python_client(url) as (client, recorder):
            await client.connect()
            for channel in channels:
                await subscribe(client, recorder, channel).subscribe()
            yield recorder

    def seen(recorder: Recorder) -> list[tuple[str, int, int, str]]:
        return [
            (p["channel"], p["offset"], p["data"]["round"], "") for p in recorder.of("publication")
        ]

    run(recovery_scenario(service, channels, start, seen, lambda r: r.of("subscribed")))


def test_node_sdk_recovers_twenty_channels_after_a_cut_and_a_restart(service: Service) -> None:
    channels = [f"{unique('news:recover-')}-{n}" for n in range(1, 21)]

    @contextlib.asynccontextmanager
    async def start(url: str) -> AsyncIterator[NodeClient]:
        async with node_client({"url": url, "channels": channels}) as node:
            yield node

    def seen(node: NodeClient) -> list[tuple[str, int, int, str]]:
        return [(p["channel"], p["offset"], p["data"]["round"], "") for p in node.of("publication")]

    def subscribed(node: NodeClient) -> list[dict[str, Any]]:
        return [
            {
                "channel": s["channel"],
                "recovered": s["recovered"],
                "was_recovering": s["wasRecovering"],
                "offset": (s["streamPosition"] or {}).get("offset", 0),
                "epoch": (s["streamPosition"] or {}).get("epoch"),
            }
            for s in node.of("subscribed")
        ]

    run(recovery_scenario(service, channels, start, seen, subscribed))
