"""What a ``channels`` connection costs beside a ``broadcast`` one (issue 26), in one run.

    .venv/bin/python bench/channels.py                  1,000 connections, 3 repetitions
    .venv/bin/python bench/channels.py --smoke          200 connections, one repetition

Serves ``bench/baselines/channels_app.py`` (both kinds on one memory hub, the raw-ASGI face,
LeanProtocol) with uvicorn on 127.0.0.1, the server pinned to one CPU where there are two,
and drives it from this process (``websockets`` clients speaking each kind's protocol):

- **delivery**: N connections on one channel (a room of the broadcast kind; ``news:room``
  subscribed over the Centrifuge protocol), M messages published one at a time over HTTP,
  each after the last reached everyone: the server's CPU time per delivery, each kind in
  turn in the same server process, the order swapped every repetition;
- **memory**: a fresh server per kind: its resident memory per idle connection, N
  broadcast connections against N channels connections with 10 subscriptions each;
- **storm**: N channels connections with 10 channels each, one message on each channel,
  then every client drops its connection and reconnects at once, recovering its 10
  channels: the time until every one is recovered, the server's CPU meanwhile and, with
  ``--backend redis`` (a redis-server of its own), the commands the service sent Redis
  (script calls, SUBSCRIBE, UNSUBSCRIBE...: its round trips, unpipelined).

Prints the figures and the ratios channels/broadcast, and writes ``channels-<backend>.json`` to
``--output`` (default ``bench/results/<date>/``). Every wait is bounded; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import ClientConnection, connect

from bench.loadgen import sample

ROOT = Path(__file__).resolve().parent.parent
VENDORED = ROOT / "{{cookiecutter.project_slug|ws_folder_name}}" / "{{cookiecutter.package_name}}"
TIMEOUT = 120.0
CHANNELS_EACH = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """``channels_app`` on uvicorn, on 127.0.0.1 and a free port (CPU 0 if there are two)."""

    def __init__(self, redis_url: str = "") -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(ROOT / "bench" / "baselines"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--ws",
            "websocket.uvicorn_protocol:LeanProtocol",
            "--ws-per-message-deflate",
            "false",
            "channels_app:app",
        ]
        if (os.cpu_count() or 1) >= 2:
            command = ["taskset", "-c", "0", *command]
        env = {**os.environ, "PYTHONPATH": str(VENDORED), "REDIS_URL": redis_url}
        self.process = subprocess.Popen(command, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/publish?channel={channel}",
            data=json.dumps(message).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def open_broadcast(server: Server, count: int) -> list[ClientConnection]:
    async def one() -> ClientConnection:
        client = await connect(server.url("/ws/rooms/room"), ping_interval=None, max_size=None)
        notice = json.loads(await client.recv())
        assert notice["type"] == "subscribed", notice
        return client

    return await _in_batches(one, count)


async def open_channels(
    server: Server, count: int, channels: list[str], recover: dict[str, Any] | None = None
) -> list[ClientConnection]:
    async def one() -> ClientConnection:
        client = await connect(
            server.url("/connection/websocket"), ping_interval=None, max_size=None
        )
        commands = [{"id": 1, "connect": {}}]
        for number, channel in enumerate(channels, 2):
            body: dict[str, Any] = {"channel": channel}
            if recover is not None:
                body.update(recover=True, offset=recover[channel][0], epoch=recover[channel][1])
            commands.append({"id": number, "subscribe": body})
        await client.send("\n".join(json.dumps(command) for command in commands))
        replies = 0
        while replies < len(commands):
            for line in str(await client.recv()).split("\n"):
                reply = json.loads(line)
                assert "error" not in reply, reply
                if recover is not None and "subscribe" in reply:
                    assert reply["subscribe"]["recovered"] is True, reply
                replies += "id" in reply
        return client

    return await _in_batches(one, count)


async def _in_batches(open_one: Any, count: int, batch: int = 100) -> list[ClientConnection]:
    clients: list[ClientConnection] = []
    for start in range(0, count, batch):
        clients += await asyncio.wait_for(
            asyncio.gather(*(open_one() for _ in range(min(batch, count - start)))), TIMEOUT
        )
    return clients


async def deliveries(server: Server, clients: list[ClientConnection], messages: int) -> float:
    """Publish ``messages`` one at a time, each after every client got the last; the
    server's CPU seconds per delivery."""
    loop = asyncio.get_running_loop()

    async def receive_one(client: ClientConnection, number: int) -> None:
        while True:
            text = str(await client.recv())
            if f'"n":{number}' in text.replace(" ", ""):
                return

    before = sample(server.process.pid)
    for number in range(messages):
        waiting = asyncio.gather(*(receive_one(client, number) for client in clients))
        await loop.run_in_executor(None, _publish_both, server, number)
        await asyncio.wait_for(waiting, TIMEOUT)
    after = sample(server.process.pid)
    return (after.cpu_seconds - before.cpu_seconds) / (messages * len(clients))


def _publish_both(server: Server, number: int) -> None:
    # One message to each kind's room: only one kind has clients at a time, so the other
    # publish reaches nobody, and both kinds' runs pay for the same two publishes.
    server.publish("/ws/rooms/room", {"n": number})
    server.publish("news:room", {"n": number})


async def close_all(clients: list[ClientConnection]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def delivery_round(
    connections: int, messages: int, order: list[str], redis_url: str = ""
) -> dict[str, float]:
    server = Server(redis_url)
    try:
        result = {}
        for kind in order:
            if kind == "broadcast":
                clients = await open_broadcast(server, connections)
            else:
                clients = await open_channels(server, connections, ["news:room"])
            await deliveries(server, clients, 2)  # warm up
            result[kind] = await deliveries(server, clients, messages)
            await close_all(clients)
        return result
    finally:
        server.stop()


async def memory_of(kind: str, connections: int, redis_url: str = "") -> float:
    """Resident bytes per idle connection of ``kind`` on a fresh server."""
    server = Server(redis_url)
    try:
        warm = await (
            open_broadcast(server, 10)
            if kind == "broadcast"
            else open_channels(server, 10, _channels(0))
        )
        await asyncio.sleep(0.5)
        before = sample(server.process.pid).rss_bytes
        if kind == "broadcast":
            clients = await open_broadcast(server, connections)
        else:
            clients = await open_channels(server, connections, _channels(0))
        await asyncio.sleep(1.0)
        after = sample(server.process.pid).rss_bytes
        await close_all(clients + warm)
        return (after - before) / connections
    finally:
        server.stop()


def _channels(group: int) -> list[str]:
    return [f"news:g{group}-c{index}" for index in range(CHANNELS_EACH)]


async def storm(connections: int, redis_url: str = "") -> dict[str, float]:
    """Every channels client drops and reconnects at once, recovering its 10 channels."""
    server = Server(redis_url)
    groups = max(1, connections // 10)
    try:
        clients: list[ClientConnection] = []
        for group in range(groups):
            clients += await open_channels(server, connections // groups, _channels(group))
        positions: dict[str, tuple[int, str]] = {}
        loop = asyncio.get_running_loop()
        for group in range(groups):
            for channel in _channels(group):
                await loop.run_in_executor(None, server.publish, channel, {"n": 0})
        await asyncio.sleep(0.5)
        await close_all(clients)
        for group in range(groups):
            for channel in _channels(group):
                positions[channel] = await loop.run_in_executor(None, _position_of, server, channel)
        commands_before = redis_commands(redis_url)
        before = sample(server.process.pid)
        started = time.monotonic()
        clients = []
        reconnecting = [
            open_channels(server, connections // groups, _channels(group), positions)
            for group in range(groups)
        ]
        for opened in await asyncio.wait_for(asyncio.gather(*reconnecting), TIMEOUT):
            clients += opened
        seconds = time.monotonic() - started
        after = sample(server.process.pid)
        commands = redis_commands(redis_url) - commands_before
        await close_all(clients)
        figures = {"seconds": seconds, "server_cpu_seconds": after.cpu_seconds - before.cpu_seconds}
        if redis_url:
            figures["redis_commands"] = commands
        return figures
    finally:
        server.stop()


CLIENT_COMMANDS = ("evalsha", "eval", "subscribe", "unsubscribe", "ping", "script")
"""The commands a hub sends Redis itself (a script's own calls are counted apart)."""


def redis_commands(url: str) -> int:
    """Commands that clients sent the Redis at ``url`` so far: its round trips with them,
    less what a pipeline would share (0 without one). INFO's own calls are left out."""
    if not url:
        return 0
    from redis import Redis

    with Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in CLIENT_COMMANDS)


def _position_of(server: Server, channel: str) -> tuple[int, str]:
    return asyncio.run(_read_position(server, channel))


async def _read_position(server: Server, channel: str) -> tuple[int, str]:
    async with connect(server.url("/connection/websocket"), ping_interval=None) as client:
        await client.send(
            '{"id":1,"connect":{}}\n' + json.dumps({"id": 2, "subscribe": {"channel": channel}})
        )
        while True:
            for line in str(await client.recv()).split("\n"):
                reply = json.loads(line)
                if reply.get("id") == 2:
                    return reply["subscribe"]["offset"] - 1, reply["subscribe"]["epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--backend", choices=("memory", "redis"), default="memory")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.connections, args.messages, args.repetitions = 200, 10, 1
    output = args.output or ROOT / "bench" / "results" / datetime.now(UTC).strftime("%Y-%m-%d")
    with contextlib.ExitStack() as stack:
        redis_url = ""
        if args.backend == "redis":
            sys.path.insert(0, str(VENDORED))
            from websocket.testing import RedisServer

            redis_url = stack.enter_context(RedisServer()).url
        report = measure(args, redis_url)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"channels-{args.backend}.json").write_text(json.dumps(report, indent=2) + "\n")


def measure(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    """Every phase, each printed once measured; the report."""
    rounds = []
    for repetition in range(args.repetitions):
        order = ["broadcast", "channels"] if repetition % 2 == 0 else ["channels", "broadcast"]
        round_ = asyncio.run(delivery_round(args.connections, args.messages, order, redis_url))
        rounds.append(round_)
        print(
            f"delivery round {repetition + 1}: "
            + ", ".join(f"{kind} {seconds * 1e6:.1f} us" for kind, seconds in round_.items()),
            flush=True,
        )
    memory = {
        kind: asyncio.run(memory_of(kind, args.connections, redis_url))
        for kind in ("broadcast", "channels")
    }
    stormed = asyncio.run(storm(args.connections, redis_url))
    ratios = [round_["channels"] / round_["broadcast"] for round_ in rounds]
    report = {
        "backend": args.backend,
        "connections": args.connections,
        "messages": args.messages,
        "rounds": rounds,
        "cpu_per_delivery_ratio_median": median(ratios),
        "cpu_per_delivery_ratios": ratios,
        "memory_per_connection_bytes": memory,
        "memory_ratio": memory["channels"] / memory["broadcast"],
        "storm": {**stormed, "clients": args.connections, "channels_each": CHANNELS_EACH},
    }
    redis_commands_line = (
        f", commands sent to Redis {stormed['redis_commands']:.0f}"
        if "redis_commands" in stormed
        else ""
    )
    print(
        f"server CPU per delivery, channels/broadcast: {median(ratios):.2f}x "
        f"(rounds {', '.join(f'{ratio:.2f}' for ratio in ratios)})\n"
        f"memory per idle connection: broadcast {memory['broadcast'] / 1024:.1f} KiB (1 channel), "
        f"channels {memory['channels'] / 1024:.1f} KiB ({CHANNELS_EACH} channels): "
        f"{report['memory_ratio']:.2f}x\n"
        f"reconnect of {args.connections} clients x {CHANNELS_EACH} channels, all recovered: "
        f"{stormed['seconds']:.2f} s, server CPU {stormed['server_cpu_seconds']:.2f} s"
        f"{redis_commands_line}",
        flush=True,
    )
    return report


if __name__ == "__main__":
    main()
