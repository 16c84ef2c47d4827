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
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from ..testing import LiveServer
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


class Client:
    """One raw connection: commands with ids, and what the server pushed meanwhile."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.next_id = 0
        self.pushes: list[dict[str, Any]] = []

    async def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        id_ = self.next_id
        await self.websocket.send(json.dumps({"id": id_, method: body}))
        while True:
            for value in await self._frame():
                if value.get("id") == id_:
                    return value
                self.pushes.append(value)

    async def push(self) -> dict[str, Any]:
        """The next push (pings skipped)."""
        while not self.pushes:
            self.pushes += [value for value in await self._frame() if value]
        return self.pushes.pop(0)

    async def pushes_until_pub(self, channel: str) -> list[dict[str, Any]]:
        """The pushes before the next publication on ``channel``, and that one last."""
        seen = []
        while True:
            push = (await self.push())["push"]
            seen.append(push)
            if push.get("channel") == channel and "pub" in push:
                return seen

    async def _frame(self) -> list[dict[str, Any]]:
        text = await asyncio.wait_for(self.websocket.recv(), WAIT)
        return [json.loads(line) for line in str(text).split("\n")]


async def connected(
    server: LiveServer, user: str, **connect_body: Any
) -> tuple[Client, dict[str, Any]]:
    websocket = await connect(server.ws_url(f"/connection/websocket?user={user}"))
    client = Client(websocket)
    reply = await client.call("connect", connect_body)
    assert "connect" in reply, reply
    return client, reply["connect"]


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


def user_name(prefix: str, server: LiveServer) -> str:
    """A user no other test of the module (on the same Redis) has."""
    return f"{prefix}{server.port}"


async def test_a_user_is_subscribed_to_their_personal_channel_at_connect(
    server: LiveServer,
) -> None:
    alice = user_name("alice", server)
    channel = f"user:#{alice}"
    client, result = await connected(server, alice)
    sub = result["subs"][channel]
    assert (sub["recoverable"], sub["positioned"], sub["offset"]) == (True, True, 0), sub
    assert set(result["subs"]) == {channel}
    answer = await posted(server, {"channel": channel, "message": {"n": 1}})
    assert (answer["offset"], answer["epoch"]) == (1, sub["epoch"])
    assert await client.push() == {
        "push": {"channel": channel, "pub": {"data": {"n": 1}, "offset": 1}}
    }
    anonymous, result = await connected(server, "")
    assert "subs" not in result
    await client.websocket.close()
    await anonymous.websocket.close()


async def test_sending_to_a_user_reaches_the_personal_channel_once_and_broadcast_directly(
    server: LiveServer,
) -> None:
    bob = user_name("bob", server)
    channel = f"user:#{bob}"
    first, _ = await connected(server, bob)
    second, _ = await connected(server, bob)
    other, _ = await connected(server, user_name("carol", server))
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
    for client in (first, second, other):
        await client.websocket.close()


async def test_a_reconnect_recovers_the_personal_channel_in_the_connect_reply_in_order(
    server: LiveServer,
) -> None:
    dan = user_name("dan", server)
    channel = f"user:#{dan}"
    client, result = await connected(server, dan)
    epoch = result["subs"][channel]["epoch"]
    await posted(server, {"user": dan, "message": {"n": 1}})
    assert (await client.push())["push"]["pub"]["offset"] == 1
    await client.websocket.close()
    for number in (2, 3, 4):  # sent while dan is away
        await posted(server, {"user": dan, "message": {"n": number}})
    subs = {channel: {"recover": True, "offset": 1, "epoch": epoch}}
    client, result = await connected(server, dan, subs=subs)
    sub = result["subs"][channel]
    assert (sub["recovered"], sub["was_recovering"], sub["epoch"]) == (True, True, epoch), sub
    assert [pub["data"] for pub in sub["publications"]] == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert [pub["offset"] for pub in sub["publications"]] == [2, 3, 4]
    await posted(server, {"user": dan, "message": {"n": 5}})
    assert (await client.push())["push"]["pub"] == {"data": {"n": 5}, "offset": 5}
    await client.websocket.close()
    subs = {channel: {"recover": True, "offset": 2, "epoch": "another"}}
    client, result = await connected(server, dan, subs=subs)
    sub = result["subs"][channel]
    assert (sub["recovered"], sub["offset"]) == (False, 5), sub
    assert "publications" not in sub
    await client.websocket.close()


async def test_a_personal_channel_is_its_user_s_alone_and_the_server_s_to_end(
    server: LiveServer,
) -> None:
    erin = user_name("erin", server)
    channel = f"user:#{erin}"
    mallory, _ = await connected(server, user_name("mallory", server))
    assert (await mallory.call("subscribe", {"channel": channel}))["error"]["code"] == 103
    subs = {channel: {"recover": True, "offset": 0, "epoch": ""}}
    again, result = await connected(server, user_name("mallory", server), subs=subs)
    assert channel not in result.get("subs", {})  # connect.subs only recovers one's own
    await again.websocket.close()
    client, _ = await connected(server, erin)
    assert (await client.call("subscribe", {"channel": channel}))["error"]["code"] == 105
    reply = await client.call("unsubscribe", {"channel": channel})
    assert reply["error"] == {"code": 103, "message": "permission denied"}, reply
    await posted(server, {"user": erin, "message": {"still": "here"}})
    assert (await client.push())["push"]["pub"]["data"] == {"still": "here"}
    for each in (mallory, client):
        await each.websocket.close()


async def test_join_and_leave_events_stop_past_the_limit_counted_per_client(
    server: LiveServer,
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
        client, _ = await connected(server, f"u{number}")
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
    for client in clients:
        await client.websocket.close()
