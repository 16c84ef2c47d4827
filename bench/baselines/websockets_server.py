"""Baseline (3): the ``websockets`` library's own asyncio server: the keepalive protocol, and
a broadcast room with ``websockets.broadcast()``.

The fastest pure-Python peer of the service: no ASGI, no uvicorn. It runs on uvloop, the
event loop uvicorn picks, so that the comparison is of the websocket stacks alone::

    python websockets_server.py      (prints "running on http://127.0.0.1:PORT")

Every path but the rooms answers ``{"type": "keepalive", ...}`` with ``{"type":
"keepalive_ack", ..., "server_ns": ...}``, compact JSON as Starlette's ``send_json`` writes it.

A path under ``/ws/rooms/`` is a broadcast room that speaks the generated service's protocol
as far as the benchmark's broadcast workload reads it (issue 30's fan-out peer): a
``{"type": "subscribed", "channel", "offset", "epoch"}`` notice first, then every JSON object
any connection of the room sends, as ``{"type": "broadcast", "channel", "offset", "epoch",
"server_ns", "message"}``, each offset the last + 1, the envelope serialised once and written
to every connection of the room with ``websockets.broadcast()`` (no task, no queue per
connection: a connection that cannot keep up is skipped by it, not queued).

With ``--floor`` the rooms' fan-out is the least any server can do (the fan-out workload's
floor, not a peer): the envelope is framed once per message and the same bytes written
straight to every connection's transport in a plain loop, with no state check, no framing
per connection, no queue, no guarantee. The handshake, the notices and the envelopes are the
same, byte for byte::

    python websockets_server.py --floor

``GC_THRESHOLD``, if set, is the garbage collector's first threshold, as the generated service
sets it. Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Callable

import uvloop
from websockets import broadcast
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

ROOMS = "/ws/rooms/"


class Room:
    """One broadcast room: its connections and its position."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.connections: set[ServerConnection] = set()
        self.transports: set[asyncio.Transport] = set()
        """The connections' transports, with `FLOOR` (only then)."""
        self.offset = 0
        self.epoch = os.urandom(6).hex()


rooms: dict[str, Room] = {}


def with_broadcast(room: Room, text: str) -> None:
    """``text`` to every connection of ``room``, by ``websockets.broadcast()``."""
    broadcast(room.connections, text)


def floor(room: Room, text: str) -> None:
    """``text`` framed once, the same bytes written to every transport of ``room``."""
    frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    for transport in room.transports:
        transport.write(frame)


FLOOR = "--floor" in sys.argv[1:]
fan_out: Callable[[Room, str], None] = floor if FLOOR else with_broadcast


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def serve_room(websocket: ServerConnection, channel: str) -> None:
    room = rooms.get(channel) or rooms.setdefault(channel, Room(channel))
    notice = {"type": "subscribed", "channel": channel, "offset": room.offset}
    await websocket.send(dumps({**notice, "epoch": room.epoch}))
    room.connections.add(websocket)
    if FLOOR:
        room.transports.add(websocket.transport)
    try:
        async for text in websocket:
            room.offset += 1
            envelope = {
                "type": "broadcast",
                "channel": channel,
                "offset": room.offset,
                "epoch": room.epoch,
                "server_ns": time.time_ns(),
                "message": json.loads(text),
            }
            fan_out(room, dumps(envelope))
    finally:
        room.connections.discard(websocket)
        room.transports.discard(websocket.transport)


async def handler(websocket: ServerConnection) -> None:
    path = websocket.request.path if websocket.request is not None else "/"
    if path.startswith(ROOMS):
        await serve_room(websocket, path)
        return
    async for text in websocket:
        message = json.loads(text)
        if message.get("type") == "keepalive":
            ack = {**message, "type": "keepalive_ack", "server_ns": time.time_ns()}
            await websocket.send(dumps(ack))


async def main() -> None:
    threshold = os.environ.get("GC_THRESHOLD")
    if threshold:
        gc.set_threshold(int(threshold), *gc.get_threshold()[1:])
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        name = "websockets server (fan-out floor)" if FLOOR else "websockets server"
        print(f"{name} running on http://127.0.0.1:{port}", flush=True)
        await stop


if __name__ == "__main__":
    uvloop.run(main())
