"""Broadcast delivery latency: one publisher, 1,000 subscribers, a real server, each backend.

Renders a project with a broadcast endpoint for each backend (``memory``, ``redis``), serves
it with uvicorn on 127.0.0.1 (the Redis one on a redis-server started here), opens the
subscribers on one room, and has one more client publish numbered messages one at a time,
each carrying its send time; the next goes once every subscriber has the last, so the figures
are those of an otherwise idle service. A delivery's latency is its arrival time at a
subscriber less its send time (one clock: everything runs on this machine). Clients run in
this process (uvloop, no compression, garbage collection paused) and share the machine with
the server, so the figures include the time this process takes to read 1,000 frames per
message.

    .venv/bin/python -m tests.broadcast_latency [--subscribers 1000] [--messages 50]

prints a Markdown table; ``tests/test_broadcast_latency.py`` runs the same in the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import render

ROOM = "/ws/rooms/room-1"
OPENING_AT_ONCE = 50


@dataclass
class Figures:
    backend: str
    subscribers: int
    messages: int
    samples_ms: list[float] = field(default_factory=list, repr=False)
    last_arrival_ms: list[float] = field(default_factory=list, repr=False)
    """Per message: when the last subscriber had it."""
    out_of_order: int = 0

    def summary(self) -> dict[str, Any]:
        def percentile(values: list[float], fraction: float) -> float:
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)

        return {
            "backend": self.backend,
            "subscribers": self.subscribers,
            "messages": self.messages,
            "deliveries": len(self.samples_ms),
            "p50_ms": percentile(self.samples_ms, 0.50),
            "p99_ms": percentile(self.samples_ms, 0.99),
            "max_ms": round(max(self.samples_ms), 2),
            "last_subscriber_p50_ms": round(statistics.median(self.last_arrival_ms), 2),
            "out_of_order": self.out_of_order,
        }


@contextmanager
def served(backend: str, folder: Path) -> Iterator[Any]:
    """A rendered project with a broadcast room on ``backend``, on a real uvicorn.

    Yields the project's own ``LiveServer`` (from its vendored ``websocket/testing.py``).
    """
    with ExitStack() as stack:
        config = folder / "cookiecutter.yaml"  # keeps replay files out of the home folder
        config.write_text(f'replay_dir: "{folder / "replay"}"\n')
        answers = {"endpoints": "/ws/rooms/{room}:broadcast", "broadcast_backend": backend}
        project = render(folder / backend, config, answers)
        sys.path.insert(0, str(project))
        testing = importlib.import_module("ws_service.websocket.testing")
        # No join events: 1,000 subscribers opening would be sent about half a million.
        environment = {
            "LOG_LEVEL": "WARNING",
            "BROADCAST_QUEUE_SIZE": "1000",
            "JOIN_LEAVE_EVENTS": "no",
        }
        if backend == "redis":
            redis = stack.enter_context(testing.RedisServer())
            environment["REDIS_URL"] = redis.url
        args = ["--no-access-log", "--ws-per-message-deflate", "false"]
        yield stack.enter_context(
            testing.LiveServer("ws_service.app:app", env=environment, args=args, cwd=project)
        )


async def subscribe(url: str) -> ClientConnection:
    websocket = await connect(url, compression=None, max_queue=None)
    subscribed = json.loads(await websocket.recv())
    assert subscribed["type"] == "subscribed", subscribed
    return websocket


async def measure(url: str, figures: Figures) -> None:
    subscribers: list[ClientConnection] = []
    for start in range(0, figures.subscribers, OPENING_AT_ONCE):
        batch = min(OPENING_AT_ONCE, figures.subscribers - start)
        subscribers += await asyncio.gather(*(subscribe(url) for _ in range(batch)))
    publisher = await subscribe(url)
    arrived = [0] * figures.messages
    everyone = [asyncio.Event() for _ in range(figures.messages)]

    async def read(websocket: ClientConnection) -> None:
        expected = 0
        while expected < figures.messages:
            message = json.loads(await websocket.recv())
            now_ns = time.time_ns()
            assert message["type"] == "broadcast", message
            body = message["message"]
            figures.samples_ms.append((now_ns - body["sent_ns"]) / 1e6)
            figures.out_of_order += body["seq"] != expected
            expected = body["seq"] + 1
            arrived[body["seq"]] += 1
            if arrived[body["seq"]] == figures.subscribers:
                figures.last_arrival_ms.append((now_ns - body["sent_ns"]) / 1e6)
                everyone[body["seq"]].set()

    readers = [asyncio.create_task(read(websocket)) for websocket in subscribers]
    try:
        for seq in range(figures.messages):
            await publisher.send(json.dumps({"seq": seq, "sent_ns": time.time_ns()}))
            await asyncio.wait_for(everyone[seq].wait(), 30)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(asyncio.gather(*readers), 30)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in [*subscribers, publisher]))


def run(backend: str, subscribers: int = 1000, messages: int = 50) -> dict[str, Any]:
    """Measure one backend; the figures as a dict (see `Figures.summary`)."""
    figures = Figures(backend, subscribers, messages)
    with tempfile.TemporaryDirectory() as folder, served(backend, Path(folder)) as server:
        gc.disable()  # the clients' garbage collections are not the service's latency
        try:
            uvloop.run(measure(server.ws_url(ROOM), figures))
        finally:
            gc.enable()
    return figures.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=50)
    args = parser.parse_args()
    rows = [run(backend, args.subscribers, args.messages) for backend in ("memory", "redis")]
    print("| backend | subscribers | deliveries | p50 | p99 | max | last subscriber, p50 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['backend']} | {row['subscribers']:,} | {row['deliveries']:,} | "
            f"{row['p50_ms']} ms | {row['p99_ms']} ms | {row['max_ms']} ms | "
            f"{row['last_subscriber_p50_ms']} ms |"
        )


if __name__ == "__main__":
    main()
