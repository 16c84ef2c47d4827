"""Baseline (4): a raw-ASGI keepalive with orjson and nothing else, the same-work ceiling.

The least a JSON keepalive can cost on uvicorn with the JSON library the service uses: each
text frame is parsed with ``orjson.loads``, a keepalive is answered with ``{"type":
"keepalive_ack", ..., "server_ns": ...}`` written with ``orjson.dumps`` (compact, UTF-8 as
is, as the service writes it), and nothing else runs: no framework, no session, no limits,
no logging, none of the service's checks that its answer is the text json would write. Run
with uvicorn's defaults::

    uvicorn raw_asgi_json:app      (from bench/baselines)

The service does this work and more, so its ratio to this server is how close each flavour
comes to the floor that uvicorn and orjson set; the echo (baseline 2) leaves the JSON out.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            text = message.get("text")
            data = orjson.loads(text if text is not None else message["bytes"])
            if isinstance(data, dict) and data.get("type") == "keepalive":
                ack = {**data, "type": "keepalive_ack", "server_ns": time.time_ns()}
                reply = orjson.dumps(ack).decode()
                await send({"type": "websocket.send", "text": reply})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
