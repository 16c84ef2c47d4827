"""A personal channel as centrifuge-python sees it: a server-side subscription.

The vendored backend's ``sample_channels_app`` (a channels endpoint whose ``user`` namespace
is personal) runs on uvicorn with a Redis hub; the SDK connects as alice and is told of
``user:#alice`` in its connect reply (``on_subscribed`` of its client, not of a
subscription), receives what is sent to alice there (``on_publication``), and after the
service restarts, with messages sent to alice while it was down, reconnects by itself and
recovers them through ``connect.subs``, in order.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

from centrifuge import (  # type: ignore[import-untyped]  # it ships no types
    Client,
    ClientEventHandler,
    ServerPublicationContext,
    ServerSubscribedContext,
)
from websocket.redis_hub import RedisHub  # the vendored backend
from websocket.testing import LiveServer, RedisServer
from websocket.tests.sample_channels_app import PUBLISH_KEY

from tests.conftest import TEMPLATE, require_redis

VENDORED = (
    TEMPLATE / "{{cookiecutter.project_slug|ws_folder_name}}" / "{{cookiecutter.package_name}}"
)
WAIT = 10.0
CHANNEL = "user:#alice"


class Events(ClientEventHandler):  # type: ignore[misc]  # untyped base
    def __init__(self) -> None:
        self.subscribed: asyncio.Queue[ServerSubscribedContext] = asyncio.Queue()
        self.publications: asyncio.Queue[ServerPublicationContext] = asyncio.Queue()

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        await self.subscribed.put(ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        await self.publications.put(ctx)


def send_to_alice(server: LiveServer, message: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        server.url("/api/publish"),
        data=json.dumps({"user": "alice", "message": message}).encode(),
        headers={"Authorization": f"Bearer {PUBLISH_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


async def next_of(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), WAIT)


def test_centrifuge_python_gets_and_recovers_the_personal_channel(tmp_path: Path) -> None:
    require_redis()
    with (
        RedisServer() as redis,
        LiveServer(
            "websocket.tests.sample_channels_app:app",
            cwd=VENDORED,
            env={"SAMPLE_REDIS_URL": redis.url},
        ) as server,
    ):
        asyncio.run(scenario(server, redis))


async def scenario(server: LiveServer, redis: RedisServer) -> None:
    events = Events()
    client = Client(
        server.ws_url("/connection/websocket?user=alice"),
        events=events,
        min_reconnect_delay=0.1,
        max_reconnect_delay=0.5,
    )
    await client.connect()
    try:
        subscribed = await next_of(events.subscribed)
        assert (subscribed.channel, subscribed.recoverable) == (CHANNEL, True)
        epoch = subscribed.stream_position.epoch
        answer = await asyncio.to_thread(send_to_alice, server, {"n": 1})
        assert [entry["channel"] for entry in answer["channels"]] == [CHANNEL]
        first = await next_of(events.publications)
        assert (first.channel, first.pub.offset, first.pub.data) == (CHANNEL, 1, {"n": 1})
        # The service restarts; alice is sent three messages meanwhile. In threads: the
        # SDK's loop goes on (its reconnect attempts, their timeouts) as in a real client.
        await asyncio.to_thread(server.stop)
        async with RedisHub(redis.url) as hub:
            for number in (2, 3, 4):
                await hub.publish(CHANNEL, {"n": number})
        await asyncio.to_thread(server.restart)
        again = await next_of(events.subscribed)
        assert (again.recovered, again.was_recovering) == (True, True), again
        assert again.stream_position.epoch == epoch
        recovered = [await next_of(events.publications) for _ in range(3)]
        assert [(p.pub.offset, p.pub.data) for p in recovered] == [
            (2, {"n": 2}),
            (3, {"n": 3}),
            (4, {"n": 4}),
        ]
        await asyncio.to_thread(send_to_alice, server, {"n": 5})
        live = await next_of(events.publications)
        assert (live.pub.offset, live.pub.data) == (5, {"n": 5})
        assert events.publications.empty()  # each once, no duplicate
    finally:
        await client.disconnect()
