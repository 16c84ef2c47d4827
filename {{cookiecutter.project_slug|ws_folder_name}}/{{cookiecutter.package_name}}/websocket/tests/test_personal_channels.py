"""Personal channels (server-side subscriptions), sending to a user, and the join/leave
limit, spoken as raw Centrifuge JSON to a real uvicorn serving ``sample_channels_app``, on a
memory hub and (in projects with the Redis backend) a Redis one.

Each connection's user is its ``?user=`` query; ``user`` is a personal namespace there.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.asyncio.client import connect

from ..testing import LiveServer
from .channels_server import RawClient
from .sample_channels_app import PUBLISH_KEY

APP = f"{__package__}.sample_channels_app:app"
WAIT = 10.0
ENGINES = ["memory"]
if importlib.util.find_spec(f"{__package__.rpartition('.')[0]}.redis_hub") is not None:
    ENGINES.append("redis")


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """The sample app on uvicorn, its join/leave limit 3, on each engine."""
    with ExitStack() as stack:
        env = {"SAMPLE_JOIN_LEAVE_LIMIT": "3"}
        if request.param == "redis":  # imported by name: projects without Redis have none
            redis_tests = importlib.import_module(".test_redis_hub", __package__)
            env["SAMPLE_REDIS_URL"] = stack.enter_context(redis_tests.redis_server_or_skip()).url
        yield stack.enter_context(LiveServer(APP, env=env))


class Client(RawClient):
    """A `RawClient` that also reads pushes one by one, pings (``{}``) skipped."""

    async def push(self) -> dict[str, Any]:
        """The next push (pings skipped)."""
        value: dict[str, Any] = await self.next()
        while not value:  # a ping
            value = await self.next()
        return value

    async def pushes_until_pub(self, channel: str) -> list[dict[str, Any]]:
        """The pushes before the next publication on ``channel``, and that one last."""
        seen = []
        while True:
            push = (await self.push())["push"]
            seen.append(push)
            if push.get("channel") == channel and "pub" in push:
                return seen


class Users:
    """The connections a test opens, as users of its own, all closed when it ends."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.opened: list[Client] = []

    def personal(self, prefix: str) -> tuple[str, str]:
        """A user no other test of the module (on the same Redis) has, and their personal
        channel."""
        user = f"{prefix}{self.server.port}"
        return user, f"user:#{user}"

    async def connect(self, user: str, **connect_body: Any) -> tuple[Client, dict[str, Any]]:
        """A connection of ``user`` and its connect reply."""
        websocket = await connect(self.server.ws_url(f"/connection/websocket?user={user}"))
        client = Client(websocket)
        self.opened.append(client)
        return client, await client.connect(**connect_body)


@pytest.fixture
async def users(server: LiveServer) -> AsyncIterator[Users]:
    opened = Users(server)
    yield opened
    for client in opened.opened:
        await client.websocket.close()


def post(server: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        server.url("/api/publish"),
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {PUBLISH_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


async def posted(server: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(post, server, body)


async def test_a_user_is_subscribed_to_their_personal_channel_at_connect(
    server: LiveServer, users: Users
) -> None:
    alice, channel = users.personal("alice")
    client, result = await users.connect(alice)
    sub = result["subs"][channel]
    assert (sub["recoverable"], sub["positioned"], sub["offset"]) == (True, True, 0), sub
    assert set(result["subs"]) == {channel}
    answer = await posted(server, {"channel": channel, "message": {"n": 1}})
    assert (answer["offset"], answer["epoch"]) == (1, sub["epoch"])
    assert await client.push() == {
        "push": {"channel": channel, "pub": {"data": {"n": 1}, "offset": 1}}
    }
    _, result = await users.connect("")
    assert "subs" not in result


async def test_sending_to_a_user_reaches_the_personal_channel_once_and_broadcast_directly(
    server: LiveServer, users: Users
) -> None:
    bob, channel = users.personal("bob")
    first, _ = await users.connect(bob)
    second, _ = await users.connect(bob)
    other, _ = await users.connect(users.personal("carol")[0])
    async with connect(server.ws_url(f"/ws/rooms/r{server.port}?user={bob}")) as broadcast:
        assert json.loads(await broadcast.recv())["type"] == "subscribed"
        answer = await posted(server, {"user": bob, "message": {"text": "hi"}})
        assert answer["user"] == bob
        assert [entry["channel"] for entry in answer["channels"]] == [channel]
        assert answer["channels"][0]["offset"] == 1
        direct = json.loads(await asyncio.wait_for(broadcast.recv(), WAIT))
        assert (direct["type"], direct["message"]) == ("direct", {"text": "hi"})
    # A second message on another channel each client is on: whatever came before it is
    # all the first one brought (one pub push, no message push).
    for client in (first, second, other):
        await client.call("subscribe", {"channel": f"news:{server.port}"})
    await posted(server, {"channel": f"news:{server.port}", "message": {"n": 2}})
    for client in (first, second):
        pushes = await client.pushes_until_pub(f"news:{server.port}")
        assert pushes[0] == {"channel": channel, "pub": {"data": {"text": "hi"}, "offset": 1}}
        assert len(pushes) == 2, pushes
    assert len(await other.pushes_until_pub(f"news:{server.port}")) == 1


async def test_a_reconnect_recovers_the_personal_channel_in_the_connect_reply_in_order(
    server: LiveServer, users: Users
) -> None:
    dan, channel = users.personal("dan")
    client, result = await users.connect(dan)
    epoch = result["subs"][channel]["epoch"]
    await posted(server, {"user": dan, "message": {"n": 1}})
    assert (await client.push())["push"]["pub"]["offset"] == 1
    await client.websocket.close()
    for number in (2, 3, 4):  # sent while dan is away
        await posted(server, {"user": dan, "message": {"n": number}})
    subs = {channel: {"recover": True, "offset": 1, "epoch": epoch}}
    client, result = await users.connect(dan, subs=subs)
    sub = result["subs"][channel]
    assert (sub["recovered"], sub["was_recovering"], sub["epoch"]) == (True, True, epoch), sub
    assert [pub["data"] for pub in sub["publications"]] == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert [pub["offset"] for pub in sub["publications"]] == [2, 3, 4]
    await posted(server, {"user": dan, "message": {"n": 5}})
    assert (await client.push())["push"]["pub"] == {"data": {"n": 5}, "offset": 5}
    await client.websocket.close()
    subs = {channel: {"recover": True, "offset": 2, "epoch": "another"}}
    _, result = await users.connect(dan, subs=subs)
    sub = result["subs"][channel]
    assert (sub["recovered"], sub["offset"]) == (False, 5), sub
    assert "publications" not in sub


async def test_a_personal_channel_is_its_user_s_alone_and_the_server_s_to_end(
    server: LiveServer, users: Users
) -> None:
    erin, channel = users.personal("erin")
    mallory_user, _ = users.personal("mallory")
    mallory, _ = await users.connect(mallory_user)
    assert (await mallory.call("subscribe", {"channel": channel}))["error"]["code"] == 103
    subs = {channel: {"recover": True, "offset": 0, "epoch": ""}}
    _, result = await users.connect(mallory_user, subs=subs)
    assert channel not in result.get("subs", {})  # connect.subs only recovers one's own
    client, _ = await users.connect(erin)
    assert (await client.call("subscribe", {"channel": channel}))["error"]["code"] == 105
    reply = await client.call("unsubscribe", {"channel": channel})
    assert reply["error"] == {"code": 103, "message": "permission denied"}, reply
    await posted(server, {"user": erin, "message": {"still": "here"}})
    assert (await client.push())["push"]["pub"]["data"] == {"still": "here"}


async def test_join_and_leave_events_stop_past_the_limit_counted_per_client(
    server: LiveServer, users: Users
) -> None:
    room = f"chat:crowd{server.port}"
    clients: list[Client] = []

    async def events() -> list[list[str]]:
        """What each client was told (joins, leaves) before the next message."""
        await clients[0].call("publish", {"channel": room, "data": {"mark": True}})
        seen = []
        for client in clients:
            pushes = await client.pushes_until_pub(room)
            seen.append(
                [
                    f"{kind} {push[kind]['info']['user']}"
                    for push in pushes[:-1]
                    for kind in ("join", "leave")
                    if kind in push
                ]
            )
        return seen

    told = []
    for number in range(5):  # the limit is 3
        client, _ = await users.connect(f"u{number}")
        assert "subscribe" in await client.call("subscribe", {"channel": room})
        clients.append(client)
        told.append(await events())
    assert told == [
        [[]],
        [["join u1"], []],
        [["join u2"], ["join u2"], []],
        [[], [], [], []],  # 4 clients: past the limit
        [[], [], [], [], []],
    ]
    for present in (4, 3, 2):  # 5 and 4 present: silent; 3: told
        await clients.pop().websocket.close()
        for _ in range(100):  # until the server has seen the close (bounded)
            stats = await clients[0].call("presence_stats", {"channel": room})
            if stats["presence_stats"]["num_clients"] == present:
                break
            await asyncio.sleep(0.05)
        told.append(await events())
    assert told[5:] == [[[], [], [], []], [[], [], []], [["leave u2"], ["leave u2"]]]
