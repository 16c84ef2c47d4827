"""The two broadcast kinds side by side on one memory hub, for ``bench/channels.py``.

``/ws/rooms/{room}`` is a ``broadcast`` endpoint (`run_broadcast`: one channel per
connection, its path) and ``/connection/websocket`` a ``channels`` endpoint
(`run_channels`: the Centrifuge protocol, many channels per connection), both served by the
vendored backend's raw-ASGI face, without the guard (neither kind pays for it here).
``POST /publish?channel=C`` publishes its body (a JSON object) to ``C`` on the hub and
answers its position when it is published. With ``REDIS_URL`` set, the hub is a `RedisHub`
there instead. Join and leave events are off unless ``JOIN_LEAVE=yes`` (the storm's
server: then the ``room`` namespace and the broadcast rooms send them, up to the hub's
default ``join_leave_limit``).
Run from the template's root::

    uvicorn --app-dir bench/baselines channels_app:app
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(
    0,
    str(
        Path(__file__).resolve().parents[2]
        / "{{cookiecutter.project_slug|ws_folder_name}}"
        / "{{cookiecutter.package_name}}"
    ),
)

from websocket.asgi import Receive, Scope, Send, WebSocket
from websocket.asgi_backend import Router, respond_json
from websocket.broadcast import HUB_STATE_KEY, Hub, MemoryHub, hub_of, run_broadcast
from websocket.centrifuge_protocol import ChannelsConfig, run_channels
from websocket.namespaces import ANYONE, Namespace, Namespaces

NAMESPACES = Namespaces(
    [
        Namespace("news", subscribe=ANYONE),
        Namespace("room", subscribe=ANYONE, presence=True, join_leave=True),
    ]
)
CONFIG = ChannelsConfig(NAMESPACES, anonymous=True)


@asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[dict[str, Hub]]:
    url = os.environ.get("REDIS_URL")
    join_leave = os.environ.get("JOIN_LEAVE") == "yes"
    hub: Hub
    if url:
        from websocket.redis_hub import RedisHub

        hub = RedisHub(url, join_leave=join_leave)
    else:
        hub = MemoryHub(join_leave=join_leave)
    hub.use_channel_options(CONFIG.namespaces.options_of)  # as generated apps do
    async with hub:
        yield {HUB_STATE_KEY: hub}


async def room(websocket: WebSocket) -> None:
    await run_broadcast(websocket, hub_of(websocket))


async def channels(websocket: WebSocket) -> None:
    await run_channels(websocket, hub_of(websocket), CONFIG)


async def publish(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    channel = parse_qs(scope["query_string"].decode())["channel"][0]
    position = await hub_of(scope).publish(channel, json.loads(body))
    await respond_json(send, {"offset": position.offset, "epoch": position.epoch})


app = Router(lifespan=lifespan)
app.add_websocket_route("/ws/rooms/{room}", room)
app.add_websocket_route("/connection/websocket", channels)
app.add_http_route("/publish", publish, methods=("POST",))
