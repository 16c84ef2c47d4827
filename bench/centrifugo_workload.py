"""Centrifugo's million-connection workload, scaled to this machine: the batched Redis hub against the unbatched one (issue 28).

    .venv/bin/python bench/centrifugo_workload.py
    .venv/bin/python bench/centrifugo_workload.py --smoke
    .venv/bin/python bench/centrifugo_workload.py --connections 4000 --rate 2000 --seconds 30

The shape of Centrifugo's published run (1 million connections, each subscribed to a
personal channel and to a group channel of 10; messages published through its API to group
and personal channels; delivery p99 200 ms): a project rendered from the template (a
``channels`` endpoint, the Redis backend, the fastapi flavour) runs as **two service
processes** (uvicorn, one per CPU) on **one redis-server**. ``--connections`` clients
(``websockets``, in this process) connect half to each process, each with a connection
token for its own user (``u<i>``): the service subscribes it to its personal channel
``user:#u<i>`` at connect (the ``user`` namespace is personal); it subscribes to its group
channel ``news:g<i // 10>`` (10 connections a group, 5 on each process). Both namespaces
keep a history (the generated defaults), neither presence: in the steady state the service
processes send Redis nothing, they only receive its pub/sub messages.

Messages are published by a publisher process through a `RedisHub` (as Centrifugo's run
published through its API, which is a node's broker): ``--rate`` publishes a second in
ticks of 10 ms (each tick's publishes issued together, without waiting for the last tick's
answers: an open loop), ``--group-share`` of them to a random group channel, the rest to a
random personal one, for ``--seconds``. Each message carries the time it was published
(``CLOCK_MONOTONIC``, shared by every process): its delivery latency is from there to its
receipt by a client. The sides, each in turn over the same connections and service
processes (the order swapped every repetition), differ only in the publisher's hub:

- ``unbatched``: the hub before batching (``--baseline``, a commit of this repository: its
  vendored ``websocket`` folder, exported as ``bench/redis_batching.py`` does), one command
  a round trip on a pool of connections;
- ``batched``: the hub of this working tree (`CommandBatcher`: one connection, one batch
  out, the commands issued meanwhile written together).

Per side: the publishes and deliveries a second, delivery p50 and p99 (publish to receipt),
the service processes' CPU per delivery, Redis's CPU per publish (``INFO cpu``, user +
system, over the phase; its pub/sub writes to the service processes included), the
script's ``usec_per_call`` (``INFO commandstats``, ``evalsha``), the commands sent Redis
per publish (every client's: the script calls, and anything the service processes send),
Redis's socket reads and writes per publish (``/proc/<redis-server>/io``), the publisher's
CPU per publish, the clients' CPU (this process: whether it kept up) and the CPU that other
processes of the machine used meanwhile (it is shared: read the ratios). Then the ratios batched /
unbatched, each the median of the per-repetition ratios.

Pinning, for 2 CPUs: service process A and redis-server on the first CPU, service process
B on the second; the publisher on the first CPU (beside Redis, as a publishing API would
be beside its shard), this process (the clients) on the second.

Every client must receive every message published to its two channels, with contiguous
offsets: the run fails otherwise. Prints the report (markdown) and writes
``centrifugo-workload.md`` and ``.json`` to ``--output`` (default ``bench/results/<date>/``).
Every wait is bounded; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
SIDES = ("unbatched", "batched")
GROUP_SIZE = 10
"""Connections a group channel: Centrifugo's run."""
TICK = 0.01
"""Seconds between the publisher's ticks."""
PREFIX = "ws_service:"
"""The rendered project's ``REDIS_CHANNEL_PREFIX`` (its default for the package ws_service)."""
SECRET = "ws-template-bench-hmac-secret-0123456789"
"""The services' ``TOKEN_HMAC_SECRET_KEY``: the clients' connection tokens are signed with it."""
ENDPOINTS = "/connection/websocket:channels"
WAIT = 120.0
"""The bound on every wait: connecting, a phase's last deliveries, a process's start."""


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--connections", type=int, default=2000, help="a multiple of 10")
    parser.add_argument("--rate", type=float, default=1000, help="publishes a second")
    parser.add_argument(
        "--group-share", type=float, default=0.5, help="of the publishes, to group channels"
    )
    parser.add_argument("--seconds", type=float, default=20, help="of publishing, per phase")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--baseline", default="", help="commit of the unbatched hub")
    parser.add_argument("--smoke", action="store_true", help="100 connections, 2 s a phase")
    parser.add_argument("--output", type=Path, help="folder for the report")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.connections, args.rate, args.seconds, args.repetitions = 100, 200, 2, 1
    if args.connections < GROUP_SIZE or args.connections % GROUP_SIZE:
        parser.error(f"--connections must be a positive multiple of {GROUP_SIZE}")
    if not 0 <= args.group_share <= 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--group-share must be within 0-1, --rate and --seconds more than 0")
    return args


# --- the publisher (a process of its own: it imports the hub of one side, from PYTHONPATH) ---


async def publisher(spec: dict[str, Any]) -> dict[str, Any]:
    """Publish at ``spec["rate"]`` for ``spec["seconds"]`` once told to go (a line on stdin);
    the publishes made to each channel, and their latencies."""
    from websocket.redis_hub import RedisHub

    groups = spec["connections"] // GROUP_SIZE
    chooser = random.Random(spec["seed"])
    counts: dict[str, int] = {}
    latencies: list[float] = []
    late_ticks = 0
    hub = RedisHub(spec["url"], prefix=PREFIX, presence=False, timeout=30.0)
    await hub.start()

    async def publish(channel: str, number: int) -> None:
        started = time.monotonic_ns()
        await hub.publish(channel, {"n": number, "t": started})
        latencies.append((time.monotonic_ns() - started) / 1e6)

    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_at_go = usage.ru_utime + usage.ru_stime
    pending: set[asyncio.Task[None]] = set()
    ticks = round(spec["seconds"] / TICK)
    owed, number, start = 0.0, 0, time.monotonic()
    for tick in range(ticks):
        delay = start + tick * TICK - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -TICK:
            late_ticks += 1
        owed += spec["rate"] * TICK
        while owed >= 1:
            owed -= 1
            if chooser.random() < spec["group_share"]:
                channel = f"news:g{chooser.randrange(groups)}"
            else:
                channel = f"user:#u{chooser.randrange(spec['connections'])}"
            counts[channel] = counts.get(channel, 0) + 1
            task = asyncio.create_task(publish(channel, number))
            pending.add(task)
            task.add_done_callback(pending.discard)
            number += 1
    await asyncio.wait_for(asyncio.gather(*pending), WAIT)
    seconds = time.monotonic() - start
    await hub.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "counts": counts,
        "publishes": number,
        "seconds": seconds,
        "late_ticks": late_ticks,
        "publish_p50_ms": statistics.median(latencies),
        "publish_p99_ms": percentile(latencies, 0.99),
        "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu_at_go,
    }


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# --- the clients ---


@dataclass
class Client:
    """One connection: its user's personal channel, its group channel, what it received."""

    user: str
    group: str
    socket: Any = None
    received: dict[str, int] = field(default_factory=dict)
    last_offset: dict[str, int] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)

    @property
    def personal(self) -> str:
        return f"user:#{self.user}"


class Clients:
    """Every connection, and the latencies of the deliveries of the phase being measured."""

    def __init__(self, connections: int) -> None:
        self.all = [Client(f"u{i}", f"news:g{i // GROUP_SIZE}") for i in range(connections)]
        self.latencies: list[float] = []
        self.tasks: list[asyncio.Task[None]] = []

    def delivered(self) -> int:
        return sum(sum(client.received.values()) for client in self.all)

    async def open(self, urls: Sequence[str]) -> None:
        """Connect every client (client i to ``urls[i % len(urls)]``), subscribed to both of
        its channels, 100 at a time; then read each one's pushes in a task."""
        for start in range(0, len(self.all), 100):
            batch = self.all[start : start + 100]
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        self._connect(client, urls[(start + index) % len(urls)])
                        for index, client in enumerate(batch)
                    )
                ),
                WAIT,
            )
        self.tasks = [asyncio.create_task(self._read(client)) for client in self.all]

    async def _connect(self, client: Client, url: str) -> None:
        import jwt
        from websockets.asyncio.client import connect

        token = jwt.encode({"sub": client.user, "exp": int(time.time()) + 3600}, SECRET, "HS256")
        client.socket = await connect(url, ping_interval=None, max_size=None, compression=None)
        commands = [
            {"id": 1, "connect": {"token": token}},
            {"id": 2, "subscribe": {"channel": client.group}},
        ]
        await client.socket.send("\n".join(json.dumps(command) for command in commands))
        replies: dict[int, dict[str, Any]] = {}
        while len(replies) < len(commands):
            for line in str(await client.socket.recv()).split("\n"):
                reply = json.loads(line)
                if "error" in reply:
                    raise RuntimeError(f"{client.user} was refused: {reply}")
                if "id" in reply:
                    replies[reply["id"]] = reply
        subs = replies[1]["connect"].get("subs", {})
        if client.personal not in subs:
            raise RuntimeError(f"{client.user} is not on its personal channel: {replies[1]}")
        client.last_offset[client.personal] = subs[client.personal].get("offset", 0)
        client.last_offset[client.group] = replies[2]["subscribe"].get("offset", 0)

    async def _read(self, client: Client) -> None:
        with contextlib.suppress(Exception):  # closed at the end of the run
            async for text in client.socket:
                now = time.monotonic_ns()
                if text == "{}":  # the server's ping: the pong
                    await client.socket.send("{}")
                    continue
                for line in str(text).split("\n"):
                    push = json.loads(line).get("push", {})
                    pub = push.get("pub")
                    if pub is None:
                        continue
                    channel, offset = push["channel"], pub.get("offset", 0)
                    last = client.last_offset.get(channel, 0)
                    if offset != last + 1:
                        client.gaps.append(f"{channel}: offset {offset} after {last}")
                    client.last_offset[channel] = offset
                    client.received[channel] = client.received.get(channel, 0) + 1
                    self.latencies.append((now - pub["data"]["t"]) / 1e6)

    async def close(self) -> None:
        await asyncio.gather(
            *(client.socket.close() for client in self.all if client.socket is not None),
            return_exceptions=True,
        )
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# --- the run ---


@dataclass
class Processes:
    """The processes a phase measures: pids, and the Redis to ask for its counters."""

    services: list[int]
    redis_pid: int
    redis_url: str


def counters(processes: Processes) -> dict[str, float]:
    from redis import Redis

    from bench.loadgen import io_syscalls, sample

    with Redis.from_url(processes.redis_url, decode_responses=True) as admin:
        cpu = admin.info("cpu")
    services = [sample(pid) for pid in processes.services]
    own = resource.getrusage(resource.RUSAGE_SELF)
    machine = sample(os.getpid())
    figures = {
        "redis_cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "redis_syscalls": float(sum(io_syscalls(processes.redis_pid))),
        "services_cpu": sum(each.cpu_seconds for each in services),
        "client_cpu": own.ru_utime + own.ru_stime,
        "machine_cpu": machine.machine_cpu_seconds,
        "time": time.monotonic(),
    }
    return figures


async def phase(
    args: argparse.Namespace,
    side: str,
    clients: Clients,
    processes: Processes,
    command: list[str],
    environment: dict[str, str],
    expected: dict[str, int],
    seed: int,
) -> dict[str, float]:
    """One side's publishing, measured once every delivery owed is in."""
    from redis import Redis

    from bench.channels import CLIENT_COMMANDS

    spec = {
        "url": processes.redis_url,
        "connections": args.connections,
        "rate": args.rate,
        "group_share": args.group_share,
        "seconds": args.seconds,
        "seed": seed,
    }
    worker = await asyncio.create_subprocess_exec(
        *command,
        "--worker",
        json.dumps(spec),
        env=environment,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdin is not None
    assert worker.stdout is not None
    ready = await asyncio.wait_for(worker.stdout.readline(), WAIT)
    if ready != b"ready\n":
        raise RuntimeError(f"the {side} publisher did not start: {ready!r}")
    with Redis.from_url(processes.redis_url) as admin:
        admin.config_resetstat()
    clients.latencies = []
    delivered_before = clients.delivered()
    before = counters(processes)
    worker.stdin.write(b"go\n")
    await worker.stdin.drain()
    answer = await asyncio.wait_for(worker.stdout.readline(), args.seconds + WAIT)
    await asyncio.wait_for(worker.wait(), WAIT)
    if worker.returncode != 0:
        raise RuntimeError(f"the {side} publisher failed (exit code {worker.returncode})")
    result = json.loads(answer)
    owed = 0
    for channel, count in result["counts"].items():
        expected[channel] = expected.get(channel, 0) + count
        owed += count * (GROUP_SIZE if channel.startswith("news:") else 1)
    deadline = time.monotonic() + WAIT
    while clients.delivered() - delivered_before < owed:
        if time.monotonic() > deadline:
            missing = owed - (clients.delivered() - delivered_before)
            raise RuntimeError(f"{side}: {missing} of {owed} deliveries never came")
        await asyncio.sleep(0.01)
    after = counters(processes)
    with Redis.from_url(processes.redis_url, decode_responses=True) as admin:
        stats = admin.info("commandstats")
    script = stats.get("cmdstat_evalsha", {"usec_per_call": 0.0, "calls": 0})
    commands = sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in CLIENT_COMMANDS
    )
    publishes = result["publishes"]
    seconds = after["time"] - before["time"]
    ours = sum(after[k] - before[k] for k in ("redis_cpu", "services_cpu", "client_cpu"))
    ours += result["cpu_seconds"]
    return {
        "publishes": publishes,
        "deliveries": owed,
        "publishes_per_s": publishes / result["seconds"],
        "deliveries_per_s": owed / result["seconds"],
        "latency_p50_ms": statistics.median(clients.latencies),
        "latency_p99_ms": percentile(clients.latencies, 0.99),
        "server_cpu_us_per_delivery": (after["services_cpu"] - before["services_cpu"]) / owed * 1e6,
        "redis_cpu_us_per_publish": (after["redis_cpu"] - before["redis_cpu"]) / publishes * 1e6,
        "script_usec_per_call": float(script["usec_per_call"]),
        "redis_commands_per_publish": commands / publishes,
        "redis_syscalls_per_publish": (after["redis_syscalls"] - before["redis_syscalls"])
        / publishes,
        "publisher_cpu_us_per_publish": result["cpu_seconds"] / publishes * 1e6,
        "publish_p50_ms": result["publish_p50_ms"],
        "publish_p99_ms": result["publish_p99_ms"],
        "late_ticks": result["late_ticks"],
        "client_cpu_share": (after["client_cpu"] - before["client_cpu"]) / seconds,
        "others_cpu_share": max(
            0.0, (after["machine_cpu"] - before["machine_cpu"] - ours) / seconds
        ),
    }


RATIOS = (
    ("delivery p50", "latency_p50_ms"),
    ("delivery p99", "latency_p99_ms"),
    ("server CPU/delivery", "server_cpu_us_per_delivery"),
    ("Redis CPU/publish", "redis_cpu_us_per_publish"),
    ("Redis socket ops/publish", "redis_syscalls_per_publish"),
    ("publisher CPU/publish", "publisher_cpu_us_per_publish"),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.worker is not None:
        print(json.dumps(asyncio.run(publisher(json.loads(args.worker)))), flush=True)
        return 0
    sys.path.insert(0, str(ROOT))
    from bench.redis_batching import BASELINE, VENDORED, export_hub
    from bench.run import raise_open_file_limit
    from bench.servers import RedisServer, pin

    args.baseline = args.baseline or BASELINE
    raise_open_file_limit(args.connections + 500)
    cpus = sorted(os.sched_getaffinity(0))
    first, second = (
        (cpus[0], cpus[1]) if len(cpus) >= 2 and shutil.which("taskset") else (None, None)
    )
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ws-template-centrifugo-") as scratch:
        work = Path(scratch)
        paths = {"unbatched": export_hub(args.baseline, work / "unbatched")}
        paths["batched"] = work / "batched"
        shutil.copytree(ROOT / VENDORED, paths["batched"] / "websocket")
        with RedisServer() as redis_server:
            pin(redis_server.pid, first)
            results = asyncio.run(run(args, work, redis_server, paths, (first, second)))
        version = (
            subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, check=True
            )
            .stdout.split()[2]
            .removeprefix("v=")
        )
    load = (load_before, os.getloadavg()[0])
    text = report(args, argv, results, version, (first, second), load)
    print(text, flush=True)
    output = args.output or ROOT / "bench" / "results" / datetime.now(UTC).strftime("%Y-%m-%d")
    output.mkdir(parents=True, exist_ok=True)
    (output / "centrifugo-workload.md").write_text(text)
    data = {
        "settings": {
            "connections": args.connections,
            "group_size": GROUP_SIZE,
            "rate": args.rate,
            "group_share": args.group_share,
            "seconds": args.seconds,
            "repetitions": args.repetitions,
            "baseline": args.baseline,
            "redis_server": version,
            "load_average": load,
        },
        "results": results,
        "ratios": ratios(results),
    }
    (output / "centrifugo-workload.json").write_text(json.dumps(data, indent=2) + "\n")
    return 0


async def run(
    args: argparse.Namespace,
    work: Path,
    redis_server: Any,
    paths: dict[str, Path],
    cpus: tuple[int | None, int | None],
) -> dict[str, list[dict[str, float]]]:
    """The two service processes, the clients, and each side's phases in turn; the figures
    of each side, a dict a repetition."""
    from bench.servers import LOAD_TEST_LIMITS, RunningServer, ServerSpec, _render, generated

    project = _render(
        work / "render", "centrifugo", {"endpoints": ENDPOINTS, "broadcast_backend": "redis"}
    )
    env = {**LOAD_TEST_LIMITS, "REDIS_URL": redis_server.url, "TOKEN_HMAC_SECRET_KEY": SECRET}
    specs = [
        ServerSpec(
            f"service-{name}",
            f"service process {name}",
            generated(project),
            project,
            "/connection/websocket",
            env=env,
        )
        for name in ("a", "b")
    ]
    first, second = cpus
    if second is not None:  # the clients: this process
        os.sched_setaffinity(0, {second})
    script = [sys.executable, str(SCRIPT)]
    command = ["taskset", "-c", str(first), *script] if first is not None else script
    results: dict[str, list[dict[str, float]]] = {side: [] for side in args.sides}
    with contextlib.ExitStack() as stack:
        services = [
            stack.enter_context(RunningServer(spec, cpu, work / f"{spec.key}.log"))
            for spec, cpu in zip(specs, (first, second), strict=True)
        ]
        processes = Processes([s.pid for s in services], redis_server.pid, redis_server.url)
        clients = Clients(args.connections)
        await clients.open([s.ws_url("/connection/websocket") for s in services])
        expected: dict[str, int] = {}
        try:

            def environment(side: str) -> dict[str, str]:
                return {**os.environ, "PYTHONPATH": str(paths[side])}

            warm = argparse.Namespace(**{**vars(args), "seconds": min(args.seconds, 2.0)})
            for side in args.sides:  # warm-up: first publishes to each channel, unmeasured
                await phase(warm, side, clients, processes, command, environment(side), expected, 0)
            seed = 1
            for repetition in range(args.repetitions):
                order = args.sides if repetition % 2 == 0 else args.sides[::-1]
                for side in order:
                    figures = await phase(
                        args, side, clients, processes, command, environment(side), expected, seed
                    )
                    seed += 1
                    results[side].append(figures)
                    print(
                        f"{repetition + 1}: {side}: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()),
                        file=sys.stderr,
                        flush=True,
                    )
            check_every_delivery(clients, expected)
        finally:
            await clients.close()
    return results


def check_every_delivery(clients: Clients, expected: dict[str, int]) -> None:
    """Fail unless every client got every message of its two channels, offsets contiguous."""
    wrong = []
    for client in clients.all:
        for channel in (client.personal, client.group):
            got, owed = client.received.get(channel, 0), expected.get(channel, 0)
            if got != owed:
                wrong.append(f"{client.user} got {got} of {owed} messages on {channel}")
        wrong += [f"{client.user}: {gap}" for gap in client.gaps]
    if wrong:
        raise RuntimeError(f"{len(wrong)} subscriptions missed messages: " + "; ".join(wrong[:10]))
    owed = sum(expected.values())
    print(
        f"every client got every message of its channels ({owed} publishes, "
        f"{clients.delivered()} deliveries, offsets contiguous)",
        file=sys.stderr,
        flush=True,
    )


def ratios(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Batched / unbatched for each figure of `RATIOS`: the median of the per-repetition
    ratios, and their range."""
    if not results.get("batched") or not results.get("unbatched"):
        return {}
    answer = {}
    for _, key in RATIOS:
        each = [
            batched[key] / unbatched[key]
            for batched, unbatched in zip(results["batched"], results["unbatched"], strict=True)
            if unbatched[key]
        ]
        if each:
            answer[key] = {"median": statistics.median(each), "min": min(each), "max": max(each)}
    return answer


def report(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    results: dict[str, list[dict[str, float]]],
    version: str,
    cpus: tuple[int | None, int | None],
    load: tuple[float, float],
) -> str:
    first, second = cpus
    pinning = (
        f"service process A, redis-server and the publisher on CPU {first}; service process B "
        f"and the clients on CPU {second}"
        if first is not None
        else "not pinned"
    )
    per_process = args.connections // 2
    lines = [
        "# Centrifugo's workload, scaled: the batched Redis hub against the unbatched one",
        "",
        f"`{' '.join(['.venv/bin/python bench/centrifugo_workload.py', *(argv or sys.argv[1:])])}`; "
        f"redis-server {version}; {args.connections:,} connections ({per_process:,} on each of 2 "
        f"service processes), each on its personal channel and a group channel of {GROUP_SIZE}; "
        f"{args.rate:,.0f} publishes/s ({args.group_share:.0%} to group channels) for "
        f"{args.seconds:g} s a phase, {args.repetitions} repetition(s), the sides interleaved; "
        f"{pinning}; unbatched = {args.baseline}; load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after (2 CPUs). Medians of the repetitions.",
        "",
        "| side | publishes/s | deliveries/s | delivery p50 ms | delivery p99 ms | server CPU "
        "us/delivery | Redis CPU us/publish | script usec_per_call | commands to Redis/publish | "
        "Redis socket ops/publish | publisher CPU us/publish | publish p50 ms | clients' CPU "
        "(cores) | others' CPU (cores) |",
        "| --- " * 14 + "|",
    ]
    columns = (
        ("publishes_per_s", "{:,.0f}"),
        ("deliveries_per_s", "{:,.0f}"),
        ("latency_p50_ms", "{:.2f}"),
        ("latency_p99_ms", "{:.2f}"),
        ("server_cpu_us_per_delivery", "{:.1f}"),
        ("redis_cpu_us_per_publish", "{:.1f}"),
        ("script_usec_per_call", "{:.1f}"),
        ("redis_commands_per_publish", "{:.2f}"),
        ("redis_syscalls_per_publish", "{:.2f}"),
        ("publisher_cpu_us_per_publish", "{:.0f}"),
        ("publish_p50_ms", "{:.2f}"),
        ("client_cpu_share", "{:.2f}"),
        ("others_cpu_share", "{:.2f}"),
    )
    for side, runs in results.items():
        cells = [form.format(statistics.median(r[key] for r in runs)) for key, form in columns]
        lines.append(f"| {side} | " + " | ".join(cells) + " |")
    found = ratios(results)
    if found:
        lines += ["", "Batched / unbatched (median of the repetitions' ratios, range):", ""]
        for label, key in RATIOS:
            if key in found:
                ratio = found[key]
                lines.append(
                    f"- {label}: {ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
