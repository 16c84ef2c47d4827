"""Redis CPU per publish with N subscribed service processes (issue 16's capacity model).

    .venv/bin/python bench/redis_fanout.py                    N = 1 2 4 8 16, history on and off
    .venv/bin/python bench/redis_fanout.py --processes 1 4 --messages 200

Renders the service (fastapi flavour) with a broadcast room on the Redis backend, starts a
redis-server (pinned to the first CPU) and, for each N, N service processes on it (pinned
to the second CPU), each with ``--subscribers`` websocket clients in the one room, so that
every process subscribes to the channel in Redis once. Then ``--messages`` messages are
published one after another through ``POST /api/publish`` on the first process, each once
the last has reached every client. Redis's own ``INFO`` gives its CPU time (user + system,
to the microsecond) and the time it spent in the publishing script (``INFO commandstats``: the script's
``evalsha``) over the publishing window; both are divided by the messages. Redis's housekeeping
(its 10 Hz cron) is in the CPU figure, not in the command time; an idle window of the same
length is measured first so the report can give the CPU with it taken off.

Prints a Markdown table (and writes it to ``--output``) with a least-squares line through
the CPU per publish against N: what one publish costs, plus what each subscribed process
adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis
from websockets.asyncio.client import ClientConnection, connect

from bench.loadgen import BenchError
from bench.run import raise_open_file_limit
from bench.servers import (
    BROADCAST_ROOM,
    RedisServer,
    RunningServer,
    broadcast_spec,
    pin,
    pinning_cpus,
    render_broadcast_projects,
)

API_KEY = "bench-publish-key"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--subscribers", type=int, default=2, help="clients per process")
    parser.add_argument("--messages", type=int, default=500, help="publishes measured per N")
    parser.add_argument("--history", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    return parser.parse_args(argv)


def _redis_times(client: Redis) -> tuple[float, float]:
    """redis-server's CPU time (user + system, seconds) and the microseconds it spent in
    the publishing script (``cmdstat_evalsha``, which includes the commands the script
    calls: those are counted again under their own names, so a sum over every command
    would count them twice)."""
    cpu = client.info("cpu")
    script = client.info("commandstats").get("cmdstat_evalsha", {"usec": 0})
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), float(script["usec"])


def publish(port: int, text: str) -> None:
    body = json.dumps({"channel": BROADCAST_ROOM, "message": {"text": text}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/publish",
        data=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


async def measure(
    servers: Sequence[RunningServer], subscribers: int, messages: int, redis: Redis
) -> dict[str, float]:
    """Open the clients, publish ``messages`` one at a time; Redis's times per publish."""
    clients: list[ClientConnection] = []
    received = [0] * (len(servers) * subscribers)
    everyone = asyncio.Event()
    target = 0

    async def read(index: int, client: ClientConnection) -> None:
        async for frame in client:
            if '"type":"broadcast"' in str(frame):
                received[index] += 1
                if min(received) >= target:
                    everyone.set()

    for server in servers:
        for _ in range(subscribers):
            client = await connect(server.ws_url(BROADCAST_ROOM), compression=None)
            await asyncio.wait_for(client.recv(), 10)  # "subscribed": following the channel
            clients.append(client)
    readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(clients)]

    async def publish_all(count: int) -> float:
        nonlocal target
        started = time.monotonic()
        for number in range(count):
            target += 1
            everyone.clear()
            await asyncio.to_thread(publish, servers[0].port, f"message {number}")
            await asyncio.wait_for(everyone.wait(), 10)
        return time.monotonic() - started

    try:
        await publish_all(20)  # warm-up: scripts loaded, connections made
        idle_start = _redis_times(redis)
        idle_started = time.monotonic()
        start = _redis_times(redis)
        seconds = await publish_all(messages)
        end = _redis_times(redis)
        await asyncio.sleep(seconds)  # an idle window as long as the publishing one
        idle_end = _redis_times(redis)
        idle_seconds = time.monotonic() - idle_started - seconds
    finally:
        for client in clients:
            await client.close()
        for reader in readers:
            reader.cancel()
    idle_cpu_per_s = ((idle_end[0] - idle_start[0]) - (end[0] - start[0])) / max(idle_seconds, 1e-9)
    cpu_us = (end[0] - start[0]) / messages * 1e6
    return {
        "cpu_us": cpu_us,
        "cpu_us_less_idle": cpu_us - idle_cpu_per_s * seconds / messages * 1e6,
        "command_us": (end[1] - start[1]) / messages,
        "publishes_per_s": messages / seconds,
        "deliveries": float(sum(received)),
    }


def fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """The least-squares line y = a + b * n through ``points``: (a, b)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    raise_open_file_limit(max(args.processes) * (args.subscribers + 50) + 1000)
    if missing := RedisServer.unavailable():
        print(f"bench/redis_fanout.py: {missing}", file=sys.stderr)
        return 1
    redis_cpu, service_cpu, pinning = pinning_cpus()
    rows: list[tuple[str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="ws-template-fanout-") as scratch:
        work = Path(scratch)
        project = render_broadcast_projects(work / "render", ["redis"])["redis"]
        with RedisServer() as redis_server:
            pin(redis_server.pid, redis_cpu)
            redis = Redis.from_url(redis_server.url, socket_timeout=10)
            for history in args.history:
                for count in args.processes:
                    spec = broadcast_spec("redis", project, redis_server.url, history == "on")
                    env = {**spec.env, "PUBLISH_API_KEY": API_KEY}
                    spec = replace(spec, env=env)
                    with ExitStack() as stack:
                        servers = [
                            stack.enter_context(
                                RunningServer(
                                    spec, service_cpu, work / f"{history}-{count}-{i}.log"
                                )
                            )
                            for i in range(count)
                        ]
                        try:
                            figures = asyncio.run(
                                measure(servers, args.subscribers, args.messages, redis)
                            )
                        except (TimeoutError, OSError) as error:
                            raise BenchError(
                                f"N={count}, history {history}: {error!r}\n{servers[0].log_tail()}"
                            ) from None
                    rows.append((history, count, figures))
                    print(
                        f"history {history}, {count} processes: {figures['cpu_us']:.1f} us CPU, "
                        f"{figures['command_us']:.1f} us in the script per publish",
                        file=sys.stderr,
                        flush=True,
                    )
            redis.close()
    lines = [
        "# Redis CPU per publish with N subscribed service processes",
        "",
        f"`.venv/bin/python bench/redis_fanout.py {' '.join(argv or sys.argv[1:])}`; "
        f"{args.messages} publishes per row through POST /api/publish, each reaching "
        f"{args.subscribers} clients on every process; {pinning.replace('server', 'redis-server').replace('load generator', 'service processes')}; "
        "redis-server 'INFO cpu' and 'INFO commandstats'. One run: noisy (a shared 2-core machine).",
        "",
        "| history | processes (N) | Redis CPU us/publish | less idle housekeeping | Redis script time us/publish | publishes/s (sequential) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for history, count, f in rows:
        lines.append(
            f"| {history} | {count} | {f['cpu_us']:.1f} | {f['cpu_us_less_idle']:.1f} | "
            f"{f['command_us']:.1f} | {f['publishes_per_s']:.0f} |"
        )
    lines.append("")
    for history in args.history:
        points = [(c, f["cpu_us_less_idle"]) for h, c, f in rows if h == history]
        commands = [(c, f["command_us"]) for h, c, f in rows if h == history]
        if len(points) > 1:
            (a, b), (ca, cb) = fit(points), fit(commands)
            lines.append(
                f"- history {history}: Redis CPU per publish = {a:.1f} + {b:.2f} x N us "
                f"(least squares; script time {ca:.1f} + {cb:.2f} x N us)"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench/redis_fanout.py: {error}", file=sys.stderr)
        sys.exit(1)
