"""A raw-ASGI app of backend endpoints, for the tests that run a real server."""

from __future__ import annotations

import asyncio

from ..asgi import Receive, Scope, Send, WebSocket
from ..asgi_backend import Router, respond_json, run_websocket
from .sample_sessions import failing, finishing, ticking


async def echo_frames(websocket: WebSocket) -> None:
    """Send every frame back as it came, text or binary."""
    while True:
        message = await websocket.receive_raw()
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


async def raw_echo(websocket: WebSocket) -> None:
    """An echo of any frame: what protocol conformance suites (Autobahn) expect."""
    await run_websocket(websocket, echo_frames)


async def task_count(scope: Scope, receive: Receive, send: Send) -> None:
    """How many asyncio tasks the server runs (to see that sessions leave none behind)."""
    await respond_json(send, len(asyncio.all_tasks()))


app = Router()
app.add_websocket_route("/ws/keepalive")
app.add_websocket_route("/ws/fail", failing)
app.add_websocket_route("/ws/finish", finishing)
app.add_websocket_route("/ws/tick", ticking)
app.add_websocket_route("/ws/raw-echo", raw_echo)
app.add_http_route("/tasks", task_count)
