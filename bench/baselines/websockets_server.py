"""Baseline (3): the ``websockets`` library's own asyncio server doing the keepalive protocol.

The fastest pure-Python peer of the service: no ASGI, no uvicorn. It runs on uvloop, the
event loop uvicorn picks, so that the comparison is of the websocket stacks alone::

    python websockets_server.py      (prints "running on http://127.0.0.1:PORT")

Every path answers ``{"type": "keepalive", ...}`` with ``{"type": "keepalive_ack", ...,
"server_ns": ...}``, compact JSON as Starlette's ``send_json`` writes it. Stops on SIGTERM
or SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import uvloop
from websockets.asyncio.server import ServerConnection, serve


async def keepalive(websocket: ServerConnection) -> None:
    async for text in websocket:
        message = json.loads(text)
        if message.get("type") == "keepalive":
            ack = {**message, "type": "keepalive_ack", "server_ns": time.time_ns()}
            await websocket.send(json.dumps(ack, separators=(",", ":"), ensure_ascii=False))


async def main() -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(keepalive, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"websockets server running on http://127.0.0.1:{port}", flush=True)
        await stop


if __name__ == "__main__":
    uvloop.run(main())
