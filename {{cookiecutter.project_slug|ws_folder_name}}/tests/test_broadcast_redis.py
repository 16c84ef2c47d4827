{#- Rendered for every project; the post-gen hook keeps it only with the Redis backend. -#}
{%- set broadcasts = cookiecutter.endpoints | ws_endpoints | selectattr("kind", "equalto", "broadcast") | list -%}
"""Broadcast across processes: two uvicorn servers of this service meet in one real Redis.

These tests start a redis-server of their own (127.0.0.1, a free port), which they stop
and start again, and two servers of the app on it, as two workers or two machines would
run. Without redis-server they skip, saying why, unless ``REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
{%- if broadcasts and cookiecutter.framework == "fastapi" %}
from fastapi import Request
from fastapi.testclient import TestClient
{%- endif %}
from redis import Redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
{{ "" }}
{%- if broadcasts and cookiecutter.framework == "fastapi" %}
from {{ cookiecutter.package_name }}.app import create_app
{%- endif %}
from {{ cookiecutter.package_name }}.settings import Settings, get_settings
{%- if broadcasts and cookiecutter.framework == "asgi" %}
from {{ cookiecutter.package_name }}.websocket.asgi import Message, Receive, Scope, Send
from {{ cookiecutter.package_name }}.websocket.asgi_backend import respond_json
from {{ cookiecutter.package_name }}.websocket.broadcast import HUB_STATE_KEY, HubUnavailable, Position, hub_of
{%- elif broadcasts %}
from {{ cookiecutter.package_name }}.websocket.broadcast import Position, hub_of
{%- else %}
from {{ cookiecutter.package_name }}.websocket.broadcast import Position
{%- endif %}
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer, RedisServer

from .conftest import TEST_ENVIRONMENT
from .contract import connect
from .test_broadcast import (
    SESSIONS,
    as_user,
    by_user,
    caught_up,
    presence_of,
    publish,
    unsigned,
)

APP = "{{ cookiecutter.package_name }}.app:app"
PATH = "{{ broadcasts[0].example_url if broadcasts else "/" }}"
ROOM = "{{ broadcasts[0].path if broadcasts else "/" }}"
ROOMS = [re.sub(r"\{[^}]*\}", f"shard-{n}", ROOM) for n in range(12)] if "{" in ROOM else [ROOM]
"""Channels of the first broadcast endpoint, to spread over Redis shards."""
UNAVAILABLE = "broadcast unavailable: the message was not sent; try again later"
# What a server's log must not show (in lower case): errors, lost tasks, unclosed connections.
TROUBLES = ("traceback", "task was destroyed", "never retrieved", "unclosed", "resourcewarning")
# hypercorn (LIVE_SERVER=hypercorn) stopped with clients connected logs the cancellation of
# its own connection tasks with a traceback: the server's, not the service's.
HYPERCORN_CANCELLATION = re.compile(
    r"Exception in callback StreamReaderProtocol\.connection_made.*?"
    r"\nasyncio\.exceptions\.CancelledError\n",
    re.DOTALL,
)


def redis_of_their_own() -> Iterator[RedisServer]:
    reason = RedisServer.unavailable()
    if reason is not None:
        if RedisServer.required():
            pytest.fail(reason)
        pytest.skip(reason)
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for these tests alone (they restart it)."""
    yield from redis_of_their_own()


@pytest.fixture
def lone_redis() -> Iterator[RedisServer]:
    """A redis-server for one test alone (it stops it)."""
    yield from redis_of_their_own()


def serve(redis: RedisServer) -> LiveServer:
    # ResourceWarnings (unclosed connections) are silent unless asked for.
    environment = {**TEST_ENVIRONMENT, "REDIS_URL": redis.url}
    return LiveServer(APP, env={**environment, "PYTHONWARNINGS": "always::ResourceWarning"})


def troubles(server: LiveServer) -> list[str]:
    log = HYPERCORN_CANCELLATION.sub("", server.log).lower()
    return [sign for sign in TROUBLES if sign in log]


@pytest.fixture(scope="module")
def servers(own_redis: RedisServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two servers of the app on one Redis; their logs must stay clean to the end."""
    with serve(own_redis) as first, serve(own_redis) as second:
        yield first, second
    for server in (first, second):
        assert troubles(server) == [], server.log


def receive(websocket: ClientConnection, timeout: float = 5.0) -> Any:
    """The next message; a broadcast without the ``user`` stamp_sender may add (`unsigned`)."""
    return unsigned(json.loads(websocket.recv(timeout=timeout)))


def subscribe(stack: ExitStack, server: LiveServer, query: str = "") -> ClientConnection:
    """A client of ``server`` on PATH, once subscribed; closed with ``stack``."""
    websocket = stack.enter_context(connect(server.ws_url(PATH + query)))
    notice = receive(websocket)
    assert (notice["type"], notice["channel"]) == ("subscribed", PATH), notice
    return websocket


def receive_until(websocket: ClientConnection, message: dict[str, Any]) -> list[Any]:
    """Everything received up to the broadcast of ``message`` (100 messages at most)."""
    received = []
    for _ in range(100):
        received.append(receive(websocket))
        if received[-1].get("message") == message:
            return received
    raise AssertionError(f"{message} never came: {received}")


def test_messages_from_either_process_reach_clients_of_both_in_order(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    first, second = servers
    with ExitStack() as stack:
        clients = [subscribe(stack, server) for server in (first, second, first, second)]
        here, there = clients[0], clients[1]
        count = 40  # from each sender
        for seq in range(count):
            here.send(json.dumps({"from": "here", "seq": seq}))
            there.send(json.dumps({"from": "there", "seq": seq}))
        seen = [[receive(client)["message"] for _ in range(2 * count)] for client in clients]
    assert all(sequence == seen[0] for sequence in seen)  # one order on both processes
    for sender in ("here", "there"):
        assert [m["seq"] for m in seen[0] if m["from"] == sender] == list(range(count))


def go_through_a_restart(
    redis: RedisServer, listener: ClientConnection, sender: ClientConnection
) -> None:
    """Stop and start Redis (losing its data) under two clients of two servers."""
    sender.send(json.dumps({"text": "before"}))
    before = receive(listener)
    assert receive(sender) == before
    redis.stop()
    started = time.monotonic()
    sender.send(json.dumps({"text": "while Redis is down"}))
    assert receive(sender) == {"type": "error", "reason": UNAVAILABLE}
    assert time.monotonic() - started < 1.5  # refused at once, not after a timeout
    redis.start()
    # Probes until both clients get one again (each hub retries within 2 s); a probe sent
    # before Redis answers gets an error reply, one sent later is never lost.
    seen: dict[ClientConnection, list[Any]] = {listener: [], sender: []}
    deadline = time.monotonic() + 15
    probe = 0
    while not all(any(m.get("message") == {"probe": probe} for m in s) for s in seen.values()):
        assert time.monotonic() < deadline, "the servers did not resubscribe"
        probe += 1
        sender.send(json.dumps({"probe": probe}))
        for client, received in seen.items():
            received.extend(receive_all(client, timeout=0.2))
    after = {"text": "after the restart"}
    sender.send(json.dumps(after))
    for client, received in seen.items():
        received.extend(receive_until(client, after))
        # Told that the channel's history is gone (a new epoch: "reload your state"), then
        # every message of the new epoch, once, in order.
        rest = [m for m in received if m["type"] != "error"]
        assert rest[0] == {
            "type": "dropped",
            "channel": PATH,
            "count": None,
            "offset": 0,
            "epoch": rest[0]["epoch"],
        }, rest
        assert rest[0]["epoch"] != before["epoch"]
        assert [m["offset"] for m in rest[1:]] == list(range(1, len(rest))), rest
        assert {m["epoch"] for m in rest} == {rest[0]["epoch"]}


def receive_all(websocket: ClientConnection, timeout: float) -> list[Any]:
    """Everything that arrives until nothing has for ``timeout`` seconds."""
    received = []
    try:
        while True:
            received.append(receive(websocket, timeout=timeout))
    except TimeoutError:
        return received


def test_a_client_resumes_on_the_other_process_with_every_message_it_missed(
    servers: tuple[LiveServer, LiveServer],
) -> None:
    first, second = servers
    with ExitStack() as stack:
        sender = subscribe(stack, second)
        leaving = stack.enter_context(connect(first.ws_url(PATH)))
        assert receive(leaving)["type"] == "subscribed"
        sender.send(json.dumps({"n": 0}))
        reached = receive(leaving)
        leaving.close()  # the client leaves the first process with this position
        for n in range(1, 6):  # from a websocket client of the second process
            sender.send(json.dumps({"n": n}))
        assert receive_until(sender, {"n": 5})[-1]["message"] == {"n": 5}
        for n in range(6, 9):  # through the HTTP API of the first
            status, answer = publish(first, {"channel": PATH, "message": {"n": n}})
            assert status == 200, answer
        query = f"?since={reached['offset']}&epoch={reached['epoch']}"
        back = stack.enter_context(connect(second.ws_url(PATH + query)))
        notice = receive(back)
        assert notice == {
            "type": "subscribed",
            "channel": PATH,
            "offset": reached["offset"],
            "epoch": reached["epoch"],
            "client_id": notice["client_id"],
            "recovered": True,
        }
        missed = [receive(back) for _ in range(8)]
        assert [(m["offset"] - reached["offset"], m["message"]) for m in missed] == [
            (n, {"n": n}) for n in range(1, 9)
        ]
        sender.send(json.dumps({"n": 9}))  # then the live ones
        live = receive(back)
        assert (live["offset"] - reached["offset"], live["message"]) == (9, {"n": 9})


def test_another_process_publishes_with_the_hub_of_the_settings(
    servers: tuple[LiveServer, LiveServer], own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's call, from this test process: clients get it as if a client had sent it.
    monkeypatch.setenv("REDIS_URL", own_redis.url)
    get_settings.cache_clear()

    async def publish_once() -> Position:
        async with get_settings().hub() as hub:
            return await hub.publish(PATH, {"text": "from a worker"})

    with ExitStack() as stack:
        clients = [subscribe(stack, server) for server in servers]
        position = asyncio.run(publish_once())
        for client in clients:
            relayed = receive(client)
            assert relayed == {
                "type": "broadcast",
                "channel": PATH,
                "offset": position.offset,
                "epoch": position.epoch,
                "server_ns": relayed["server_ns"],
                "message": {"text": "from a worker"},
            }

{%- if broadcasts %}
{%- if cookiecutter.framework == "fastapi" %}


def test_the_readme_s_route_answers_503_with_a_sentence_while_redis_is_down(
    lone_redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # README.md's route, as it is there: the app answers HubUnavailable as /api/publish does.
    monkeypatch.setenv("REDIS_URL", lone_redis.url)
    get_settings.cache_clear()
    app = create_app()

    @app.post("/orders/{order_id}/shipped")
    async def shipped(order_id: str, request: Request) -> dict[str, int]:
        position = await hub_of(request).publish(PATH, {"type": "shipped", "order": order_id})
        return {"offset": position.offset}

    with TestClient(app) as client:
        assert client.post("/orders/1/shipped").json() == {"offset": 1}
        lone_redis.stop()
        answer = client.post("/orders/2/shipped")
    assert (answer.status_code, answer.json()) == (503, {"detail": f"{UNAVAILABLE.capitalize()}."})
    assert "Traceback" not in caplog.text, caplog.text
{%- else %}


def test_the_readme_s_route_answers_503_with_a_sentence_while_redis_is_down(
    lone_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # README.md's route, as it is there.
    async def shipped(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            position = await hub_of(scope).publish(PATH, {"type": "shipped"})
        except HubUnavailable as error:  # 503 with its sentence, as POST /api/publish answers
            await respond_json(send, {"detail": f"{str(error).capitalize()}."}, status=503)
            return
        await respond_json(send, {"offset": position.offset})

    async def call(scope: Scope) -> tuple[int, Any]:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        await shipped(scope, receive, send)
        return sent[0]["status"], json.loads(sent[1]["body"])

    async def before_and_while_down() -> list[tuple[int, Any]]:
        async with get_settings().hub() as hub:
            scope: Scope = {"type": "http", "method": "POST", "state": {HUB_STATE_KEY: hub}}
            answers = [await call(scope)]
            lone_redis.stop()
            await asyncio.sleep(0.1)  # the loop, blocked meanwhile, sees Redis close its end
            return [*answers, await call(scope)]

    monkeypatch.setenv("REDIS_URL", lone_redis.url)
    get_settings.cache_clear()
    answers = asyncio.run(before_and_while_down())
    assert answers == [(200, {"offset": 1}), (503, {"detail": f"{UNAVAILABLE.capitalize()}."})]
{%- endif %}
{%- endif %}


def test_clients_stay_through_a_redis_restart_and_get_errors_while_it_is_down(
    servers: tuple[LiveServer, LiveServer], own_redis: RedisServer
) -> None:
    first, second = servers
    with ExitStack() as stack:
        listener, sender = subscribe(stack, first), subscribe(stack, second)
        go_through_a_restart(own_redis, listener, sender)
    for server in servers:
        assert "reconnected to Redis" in server.log, server.log


def test_a_stopping_server_closes_its_clients_and_leaves_nothing_open(
    own_redis: RedisServer,
) -> None:
    with Redis.from_url(own_redis.url) as observer:
        before = len(observer.client_list())
        with serve(own_redis) as server, ExitStack() as stack:
            client = subscribe(stack, server)
            assert len(observer.client_list()) > before  # the hub's connections
            server.stop()
            with pytest.raises(ConnectionClosed) as closed:
                receive(client)
            assert closed.value.rcvd is not None
            # uvicorn closes with 1012 (service restart), hypercorn with 1001 (going away).
            assert closed.value.rcvd.code in (1001, 1012)
        deadline = time.monotonic() + 5
        while len(observer.client_list()) > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(observer.client_list()) == before
    assert "connected to Redis" in server.log, server.log
    assert troubles(server) == [], server.log


PRESENCE_TTL = 1.5
"""Seconds: a short PRESENCE_TTL_SECONDS, so that a killed process's clients go soon."""


def serve_users(redis: RedisServer) -> LiveServer:
    """The app with README.md's auth.py example (tests/readme_auth.py) on ``redis``."""
    environment = {
        **TEST_ENVIRONMENT,
        **SESSIONS,
        "REDIS_URL": redis.url,
        "PRESENCE_TTL_SECONDS": str(PRESENCE_TTL),
    }
    return LiveServer("tests.readme_auth:app", env=environment)


def test_two_processes_share_one_presence_and_reach_a_user_on_both(
    own_redis: RedisServer,
) -> None:
    with serve_users(own_redis) as first, serve_users(own_redis) as second, ExitStack() as stack:
        alice_here, alice_id = as_user(stack, first, PATH, "token-a")
        bob_there, _ = as_user(stack, second, PATH, "token-b")
        alice_there, _ = as_user(stack, second, PATH, "token-a")
        caught_up(first, PATH, alice_here, bob_there, alice_there)  # the join events read
        for server in (first, second):  # one list, from either process
            status, answer = presence_of(server, PATH)
            assert status == 200, answer
            assert answer["count"] == 3, answer
            assert [c["user"] for c in by_user(answer["clients"])] == ["alice", "alice", "bob"]
        alice_here.send(json.dumps({"type": "presence"}))
        assert receive(alice_here)["count"] == 3
        status, answer = publish(first, {"user": "alice", "message": {"text": "hi"}})
        assert status == 200, answer
        for websocket in (alice_here, alice_there):  # on both processes
            direct = receive(websocket)
            assert (direct["type"], direct["message"]) == ("direct", {"text": "hi"})
        assert caught_up(first, PATH, bob_there) == []  # nothing came to bob

        second.kill()  # no clean-up, no leave (workers too, whatever the server)
        killed_at = time.monotonic()
        while (answer := presence_of(first, PATH)[1])["count"] > 1:
            assert time.monotonic() - killed_at < PRESENCE_TTL + 1.5, answer
            time.sleep(0.05)
        assert answer["clients"] == [{"client_id": alice_id, "user": "alice"}]


@pytest.fixture(scope="module")
def shards() -> Iterator[list[RedisServer]]:
    """Three redis-servers that share the channels out (REDIS_URL lists them all)."""
    reason = RedisServer.unavailable()
    if reason is not None:
        if RedisServer.required():
            pytest.fail(reason)
        pytest.skip(reason)
    with ExitStack() as stack:
        yield [stack.enter_context(RedisServer()) for _ in range(3)]


def join(stack: ExitStack, server: LiveServer, path: str, query: str = "") -> ClientConnection:
    """A client of ``server`` on ``path``, once subscribed; closed with ``stack``."""
    websocket = stack.enter_context(connect(server.ws_url(path + query)))
    notice = receive(websocket)
    assert (notice["type"], notice["channel"]) == ("subscribed", path), notice
    return websocket


def test_rooms_spread_over_three_redis_shards_meet_across_processes_and_resume(
    shards: list[RedisServer],
) -> None:
    environment = {**TEST_ENVIRONMENT, "REDIS_URL": ",".join(shard.url for shard in shards)}
    with (
        LiveServer(APP, env=environment) as first,
        LiveServer(APP, env=environment) as second,
        ExitStack() as stack,
    ):
        reached = {}
        for room in ROOMS:  # a client on each process, in each room
            here, there = join(stack, first, room), join(stack, second, room)
            here.send(json.dumps({"room": room}))
            got = [receive(here), receive(there)]
            assert [m["message"] for m in got] == [{"room": room}] * 2, got
            assert got[0] == got[1]
            reached[room] = got[1]
            there.close()  # it leaves the second process at this position
            for n in range(3):  # and misses these, sent through the first
                here.send(json.dumps({"n": n}))
            assert receive_until(here, {"n": 2})[-1]["offset"] == got[1]["offset"] + 3
        for room in ROOMS:  # back on the second process: every missed message, in order
            query = f"?since={reached[room]['offset']}&epoch={reached[room]['epoch']}"
            back = stack.enter_context(connect(second.ws_url(room + query)))
            assert receive(back)["recovered"] is True
            missed = [receive(back) for _ in range(3)]
            assert [m["message"] for m in missed] == [{"n": n} for n in range(3)]
            assert [m["offset"] - reached[room]["offset"] for m in missed] == [1, 2, 3]
    holders: dict[str, list[int]] = {room: [] for room in ROOMS}
    prefix = Settings.redis_channel_prefix
    for index, shard in enumerate(shards):
        with Redis.from_url(shard.url, decode_responses=True) as client:
            for room in ROOMS:
                if client.exists(prefix + "{" + room + "}:meta"):  # the room's offset
                    holders[room].append(index)
    assert all(len(held) == 1 for held in holders.values()), holders  # each room on one
    if len(ROOMS) > 1:
        assert {held[0] for held in holders.values()} == {0, 1, 2}, holders  # over all three
    for server in (first, second):
        assert troubles(server) == [], server.log
