"""Baseline (1): a FastAPI keepalive endpoint written the way the FastAPI docs teach.

``await websocket.accept()``, then a loop of ``receive_json``/``send_json`` (stdlib json),
``WebSocketDisconnect`` caught to end it; run with uvicorn's defaults::

    uvicorn docs_fastapi:app      (from bench/baselines)

It speaks the service's keepalive protocol on ``/ws/keepalive``: ``{"type": "keepalive",
...}`` in, ``{"type": "keepalive_ack", ..., "server_ns": ...}`` out.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.websocket("/ws/keepalive")
async def keepalive(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive_json()
            if message.get("type") == "keepalive":
                ack = {**message, "type": "keepalive_ack", "server_ns": time.time_ns()}
                await websocket.send_json(ack)
    except WebSocketDisconnect:
        pass
