"""A raw-ASGI app of a channels endpoint beside a broadcast one, for the tests that run a
real server (``test_personal_channels.py``, and the template's SDK tests).

``/connection/websocket`` serves the Centrifuge protocol (`run_channels`), ``/ws/rooms/{room}``
is a broadcast endpoint (`run_broadcast`) and ``/api/publish`` the `PublishAPI` (key
`PUBLISH_KEY`). The user of a connection is its ``?user=`` query (no guard, no auth.py
here). The hub is a `MemoryHub`, or a `RedisHub` on ``SAMPLE_REDIS_URL``; its
``join_leave_limit`` is ``SAMPLE_JOIN_LEAVE_LIMIT`` if set. Each face's ``WebSocket``
serves it: the raw-ASGI one where the project has it, else Starlette's.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, cast
from urllib.parse import parse_qs

from ..asgi_types import Receive, Scope, Send
from ..broadcast import DEFAULT_JOIN_LEAVE_LIMIT, Hub, MemoryHub, run_broadcast
from ..centrifuge_protocol import ChannelsConfig, ChannelsSocket, run_channels
from ..namespaces import (
    ANYONE,
    AUTHENTICATED,
    SUBSCRIBERS,
    USER_LIMITED,
    Namespace,
    Namespaces,
)
from ..publish_api import PublishAPI
from .conftest import FACES, _installed

PUBLISH_KEY = "sample-publish-key"
NAMESPACES = Namespaces(
    [
        Namespace("user", subscribe=USER_LIMITED, personal=True),
        Namespace(
            "chat", subscribe=AUTHENTICATED, publish=SUBSCRIBERS, presence=True, join_leave=True
        ),
        Namespace("news", subscribe=ANYONE),
    ]
)
CONFIG = ChannelsConfig(NAMESPACES, anonymous=True)
WebSocket: Any = importlib.import_module(
    next(module for module in FACES.values() if _installed(module))
).WebSocket


def new_hub() -> Hub:
    limit = int(os.environ.get("SAMPLE_JOIN_LEAVE_LIMIT") or DEFAULT_JOIN_LEAVE_LIMIT)
    url = os.environ.get("SAMPLE_REDIS_URL")
    hub: Hub
    if url:  # a project with the Redis backend (imported by name: others have no redis_hub)
        redis_hub = importlib.import_module(f"{__package__.rpartition('.')[0]}.redis_hub")
        hub = redis_hub.RedisHub(url, join_leave_limit=limit)
    else:
        hub = MemoryHub(join_leave_limit=limit)
    hub.use_channel_options(NAMESPACES.options_of)
    return hub


class App:
    def __init__(self) -> None:
        self.hub = new_hub()
        self.api = PublishAPI(
            ["/ws/rooms/{room}"],
            api_key=PUBLISH_KEY,
            max_message_bytes=65536,
            namespaces=NAMESPACES,
            hub=lambda _: self.hub,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self.api(scope, receive, send)
        else:
            query = parse_qs(scope.get("query_string", b"").decode())
            scope["user"] = query.get("user", [None])[0]
            websocket = WebSocket(scope, receive, send)
            if scope["path"] == "/connection/websocket":
                await run_channels(cast(ChannelsSocket, websocket), self.hub, CONFIG)
            else:
                await run_broadcast(websocket, self.hub)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.hub.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.hub.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = App()
