"""A channels endpoint on a real uvicorn, in the test's own event loop, and a raw client.

`serve_channels` serves `run_channels` at ``/connection/websocket`` on 127.0.0.1 (a free
port) with one face's WebSocket class; `RawClient` speaks the Centrifuge protocol's JSON to
it over a real socket (``websockets``), so what the tests see is what an SDK would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..asgi_types import Receive, Scope, Send
from ..broadcast import Hub
from ..centrifuge_protocol import ChannelsConfig, ChannelsSocket, run_channels
from ..session import SessionSocket
from ..uvicorn_protocol import LeanProtocol

PATH = "/connection/websocket"
WAIT = 5.0
"""Seconds any one expectation may take."""


@contextlib.asynccontextmanager
async def serve_channels(
    web_socket_class: Callable[[Scope, Receive, Send], SessionSocket],
    hub: Hub,
    config: ChannelsConfig,
) -> AsyncIterator[str]:
    """Serve a channels endpoint until the block ends; yields its URL."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            websocket = cast(ChannelsSocket, web_socket_class(scope, receive, send))
            await run_channels(websocket, hub, config)

    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, ws=LeanProtocol, lifespan="off", log_level="warning"
        )
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(1000):  # up to 10 s
        if server.started or serving.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}{PATH}"
    finally:
        server.should_exit = True
        await serving


class RawClient:
    """One connection, speaking the protocol's JSON: commands get the next id."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.next_id = 0
        self.backlog: list[Any] = []

    async def send(self, method: str, body: dict[str, Any], *, reply: bool = True) -> int:
        """Send one command (with no id if ``reply`` is False, as ``send`` goes)."""
        command: dict[str, Any] = {method: body}
        if reply:
            self.next_id += 1
            command = {"id": self.next_id, **command}
        await self.websocket.send(json.dumps(command))
        return self.next_id if reply else 0

    async def _values(self) -> list[Any]:
        frame = await asyncio.wait_for(self.websocket.recv(), WAIT)
        return [json.loads(line) for line in str(frame).split("\n")]

    async def call(self, method: str, body: dict[str, Any]) -> Any:
        """The reply to one command; what comes before it waits for `next`."""
        id_ = await self.send(method, body)
        while True:
            for value in await self._values():
                if value.get("id") == id_:
                    return value
                self.backlog.append(value)

    async def next(self) -> Any:
        """The next reply or push not read yet."""
        if not self.backlog:
            self.backlog.extend(await self._values())
        return self.backlog.pop(0)

    async def connect(self, **body: Any) -> Any:
        reply = await self.call("connect", body)
        assert "connect" in reply, reply
        return reply["connect"]

    async def closed(self) -> tuple[int, str]:
        """The code and reason the server closed with (what it sent before is skipped)."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.websocket.recv(), WAIT)
        close = self.websocket.protocol.close_rcvd
        assert close is not None, "the connection ended with no close frame"
        return close.code, close.reason

    async def alive(self) -> bool:
        """Whether the connection still answers a command (presence_stats of nothing)."""
        try:
            reply = await self.call("presence_stats", {"channel": "nowhere:x"})
        except ConnectionClosed:
            return False
        return "error" in reply


@contextlib.asynccontextmanager
async def raw_client(url: str) -> AsyncIterator[RawClient]:
    async with connect(url) as websocket:
        yield RawClient(websocket)
