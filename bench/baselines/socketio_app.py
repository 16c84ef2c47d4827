"""Baseline (5): python-socketio's ASGI app on uvicorn, a broadcast room (issue 30's fan-out peer).

What a team that reaches for Socket.IO in Python runs: ``socketio.AsyncServer`` in ASGI mode,
its rooms, and ``emit(..., room=...)``. Run with uvicorn's defaults::

    uvicorn socketio_app:app      (from bench/baselines)

Its clients (the benchmark's Node load generator with ``socket.io-client``, websocket
transport only) connect, then emit ``subscribe`` with a channel; the server puts them in the
channel's room and emits ``message`` with ``{"type": "subscribed", "channel", "offset",
"epoch"}`` to them. Each ``message`` event a client emits (a JSON object) is emitted to the
room as ``{"type": "broadcast", "channel", "offset", "epoch", "server_ns", "message"}``, each
offset the last + 1: the generated service's protocol, as far as the workload reads it.

``GC_THRESHOLD``, if set, is the garbage collector's first threshold, as the generated service
sets it.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import socketio  # type: ignore[import-untyped]  # python-socketio has no type hints

threshold = os.environ.get("GC_THRESHOLD")
if threshold:
    gc.set_threshold(int(threshold), *gc.get_threshold()[1:])

server = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])
app = socketio.ASGIApp(server)


class Room:
    """One channel's position."""

    def __init__(self) -> None:
        self.offset = 0
        self.epoch = os.urandom(6).hex()


rooms: dict[str, Room] = {}
channel_of: dict[str, str] = {}


async def subscribe(sid: str, channel: str) -> None:
    room = rooms.get(channel) or rooms.setdefault(channel, Room())
    await server.enter_room(sid, channel)
    channel_of[sid] = channel
    notice = {"type": "subscribed", "channel": channel, "offset": room.offset}
    await server.emit("message", {**notice, "epoch": room.epoch}, to=sid)


async def message(sid: str, data: Any) -> None:
    channel = channel_of.get(sid)
    if channel is None:
        return
    room = rooms[channel]
    room.offset += 1
    envelope = {
        "type": "broadcast",
        "channel": channel,
        "offset": room.offset,
        "epoch": room.epoch,
        "server_ns": time.time_ns(),
        "message": data,
    }
    await server.emit("message", envelope, room=channel)


async def disconnect(sid: str, *reason: Any) -> None:
    channel_of.pop(sid, None)


server.on("subscribe", subscribe)
server.on("message", message)
server.on("disconnect", disconnect)
