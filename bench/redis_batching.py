"""Redis's and the service's cost per publish: the batched hub against the unbatched one (issue 28), and each durability mode (issue 29).

    .venv/bin/python bench/redis_batching.py
    .venv/bin/python bench/redis_batching.py --in-flight 1 100 --publishes 10000 --output out.md

Starts a redis-server (on the first CPU) and, on the second CPU, ``--subscriber-processes``
subscriber processes (each a `RedisHub` following the 50 channels published to, reading
everything). Then, for each number
of publishes in flight (1, 100, 1,000) and each side, in that order, a fresh publisher
process publishes ``--publishes`` messages (a tenth of that at 1 in flight) round-robin on
the 50 channels, with history, from that many tasks at once. The sides:

- ``unbatched``: the hub as it was before batching (``--baseline``, a commit of this
  repository: its vendored ``websocket`` folder), one command a round trip on a pool of
  connections;
- ``batched``: the hub of this working tree (`CommandBatcher`: one connection, one batch out,
  the commands issued meanwhile written together);
- ``batched+hiredis`` and ``unbatched+hiredis``: the same with redis-py's hiredis parser
  (``--hiredis DIR``: a folder where ``pip install --target DIR hiredis`` put it);
- ``pipeline``: the batched hub with each batch sent by redis-py's own non-transactional
  ``Pipeline`` instead of the batcher's few lines over its connection;
- ``floor``: a minimal client (a blocking socket, requests packed by hand, replies counted)
  sending the same script call with the same arguments, as many to a write as are in
  flight: what Redis cannot do with less;
- ``undetecting``: the batched hub before it checked for offsets gone back (``--undetecting``,
  a commit: main before issue 29), against ``batched``, which passes each channel's highest
  position seen to the publish script: the cost of the detection;
- ``wait-1``: the batched hub with ``wait_replicas=1``: each batch with publishes ends with
  ``WAIT 1``, answered once the replica has them. A replica of the redis-server (on its CPU)
  then follows it for every side of the run (``--sides`` without ``wait-1``: no replica).

Per publish it reports Redis's CPU (``INFO cpu``, user + system), the script's
``usec_per_call`` (``INFO commandstats``, ``evalsha``), Redis's socket reads and writes
(``syscr`` + ``syscw`` of ``/proc/<redis-server>/io``: Redis reads and writes its sockets
with read(2) and write(2); the subscriber's deliveries are among them), the publisher's own
CPU (its ``getrusage``), publishes per second, and the latency of a publish (median and
mean: with many in flight the unbatched hub's pool serves its waiters out of order, so its
median hides a long tail; the mean is in flight / publishes per second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENDORED = "{{cookiecutter.project_slug|ws_folder_name}}/{{cookiecutter.package_name}}/websocket"
CHANNELS = [f"bench-{number}" for number in range(50)]
PREFIX = "bench:"
SIDES = (
    "unbatched",
    "batched",
    "unbatched+hiredis",
    "batched+hiredis",
    "pipeline",
    "floor",
    "undetecting",
    "wait-1",
)
BASELINE = "b2ac84d"
"""The last commit of the unbatched hub (main before issue 28's batching)."""
UNDETECTING = "9538033"
"""The last commit of the hub that did not check for offsets gone back (main before issue 29)."""


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--publishes", type=int, default=20000, help="per row (a tenth at 1)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--baseline", default=BASELINE, help="commit of the unbatched hub")
    parser.add_argument(
        "--undetecting", default=UNDETECTING, help="commit of the hub without the detection"
    )
    parser.add_argument("--hiredis", type=Path, help="folder holding the hiredis package")
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument(
        "--subscriber-processes", type=int, default=1, help="processes following the channels"
    )
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the worker processes (they import the hub of one side, from PYTHONPATH) ---


def _redis_counters(admin: Any, pid: int) -> dict[str, float]:
    cpu = admin.info("cpu")
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "redis_cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "syscalls": float(io["syscr"]) + float(io["syscw"]),
        "own_cpu": usage.ru_utime + usage.ru_stime,
        "time": time.perf_counter(),
    }


class FloorClient:
    """The publishing script sent over a plain socket, ``batch`` requests to a write."""

    def __init__(self, url: str, body: str) -> None:
        host, port = url.removeprefix("redis://").split("/")[0].split(":")
        self.socket = socket.create_connection((host, int(port)))
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sha = self.call_one(["SCRIPT", "LOAD", body]).split(b"\r\n")[1].decode()

    @staticmethod
    def pack(command: Sequence[str | int]) -> bytes:
        parts = [f"*{len(command)}\r\n".encode()]
        for item in command:
            data = str(item).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    def call_one(self, command: Sequence[str | int]) -> bytes:
        self.socket.sendall(self.pack(command))
        return self.socket.recv(65536)

    def publish_batch(self, commands: Sequence[Sequence[str | int]]) -> None:
        self.socket.sendall(b"".join(self.pack(["EVALSHA", self.sha, *c]) for c in commands))
        lines, buffer = 4 * len(commands), b""  # a reply: *2, :offset, $length, epoch
        while buffer.count(b"\r\n") < lines:
            buffer += self.socket.recv(1 << 20)
        assert b"-" not in buffer[:1], buffer[:200]


async def worker(spec: dict[str, Any]) -> dict[str, float]:
    from redis import Redis
    from websocket.broadcast import DEFAULT_HISTORY_SIZE, envelope_parts, new_epoch
    from websocket.redis_hub import PUBLISH_SCRIPT, RedisHub

    url, side, in_flight, count = spec["url"], spec["side"], spec["in_flight"], spec["count"]
    admin = Redis.from_url(url, decode_responses=True)
    latencies: list[float] = []

    if side == "floor":
        floor = FloorClient(url, PUBLISH_SCRIPT)

        def arguments(number: int) -> list[str | int]:
            channel = CHANNELS[number % len(CHANNELS)]
            head, tail = envelope_parts(channel, {"n": number})
            tagged = PREFIX + "{" + channel + "}"
            keys = [tagged + ":meta", tagged + ":history"]
            return [2, *keys, new_epoch(), "", 0, PREFIX + channel, head, tail]

        def publish_floor(total: int) -> None:
            for start in range(0, total, in_flight):
                batch = [
                    [*arguments(n), DEFAULT_HISTORY_SIZE, 300000, 300000]
                    for n in range(start, min(total, start + in_flight))
                ]
                started = time.perf_counter()
                floor.publish_batch(batch)
                latencies.append(time.perf_counter() - started)

        publish_floor(200)
        latencies.clear()
        admin.config_resetstat()
        before = _redis_counters(admin, spec["redis_pid"])
        publish_floor(count)
        after = _redis_counters(admin, spec["redis_pid"])
    else:
        durability: dict[str, Any] = {"wait_replicas": 1} if side == "wait-1" else {}
        hub = RedisHub(url, prefix=PREFIX, presence=False, timeout=30.0, **durability)
        await hub.start()
        if side == "pipeline":
            _send_batches_by_pipeline(hub, url)
        next_number = 0

        async def publisher(until: int) -> None:
            nonlocal next_number
            while next_number < until:
                number = next_number
                next_number += 1
                started = time.perf_counter()
                await hub.publish(CHANNELS[number % len(CHANNELS)], {"n": number})
                latencies.append(time.perf_counter() - started)

        async def publish_all(total: int) -> None:
            nonlocal next_number
            next_number = 0
            await asyncio.gather(*(publisher(total) for _ in range(in_flight)))

        await publish_all(max(200, in_flight))
        latencies.clear()
        admin.config_resetstat()
        before = _redis_counters(admin, spec["redis_pid"])
        await publish_all(count)
        after = _redis_counters(admin, spec["redis_pid"])
        await hub.close()
    script = admin.info("commandstats").get("cmdstat_evalsha", {"usec_per_call": 0.0})
    seconds = after["time"] - before["time"]
    return {
        "redis_cpu_us": (after["redis_cpu"] - before["redis_cpu"]) / count * 1e6,
        "script_us": float(script["usec_per_call"]),
        "syscalls": (after["syscalls"] - before["syscalls"]) / count,
        "service_cpu_us": (after["own_cpu"] - before["own_cpu"]) / count * 1e6,
        "per_s": count / seconds,
        "latency_ms": statistics.median(latencies) * 1e3,
        "latency_mean_ms": statistics.fmean(latencies) * 1e3,
    }


def _send_batches_by_pipeline(hub: Any, url: str) -> None:
    """Make ``hub``'s batcher send each batch with redis-py's Pipeline(transaction=False)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, decode_responses=True)
    batcher = hub._batcher

    async def exchange(*arguments: Any) -> list[Any]:
        # The batch's commands come last: (deadline, commands), or (commands) in a hub of
        # before the batch deadline (a side of --undetecting, say).
        commands: Sequence[Sequence[str | int]] = arguments[-1]
        pipeline = client.pipeline(transaction=False)
        for command in commands:
            pipeline.execute_command(*command)
        replies: list[Any] = await pipeline.execute(raise_on_error=False)
        return replies

    batcher._exchange = exchange


async def subscriber(url: str) -> None:
    """Follow every channel of the run and read all it gets, until stdin closes."""
    from websocket.redis_hub import RedisHub

    async with RedisHub(url, prefix=PREFIX, presence=False, queue_size=100000) as hub:
        subscriptions = [await hub.subscribe(channel) for channel in CHANNELS]

        async def drain(subscription: Any) -> None:
            while await subscription.next() is not None:
                pass

        tasks = [asyncio.create_task(drain(s)) for s in subscriptions]
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for task in tasks:
            task.cancel()


# --- the run ---


def export_hub(commit: str, output: Path) -> Path:
    """The vendored ``websocket`` folder at ``commit``, as ``output/websocket``."""
    output.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, VENDORED],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(output)], input=archive, check=True)
    shutil.move(str(output / VENDORED), str(output / "websocket"))
    return output


def follow(replica_url: str, master_port: int) -> None:
    """Make ``replica_url`` a replica of the redis-server on ``master_port``, in sync."""
    from redis import Redis

    with Redis.from_url(replica_url, decode_responses=True) as replica:
        replica.replicaof("127.0.0.1", master_port)
        deadline = time.monotonic() + 30
        while replica.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica does not follow its master"
            time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.worker is not None:
        spec = json.loads(args.worker)
        if spec["side"] == "subscriber":
            asyncio.run(subscriber(spec["url"]))
            return 0
        print(json.dumps(asyncio.run(worker(spec))))
        return 0
    sys.path.insert(0, str(ROOT))
    from bench.servers import RedisServer, pin, pinning_cpus

    sides = [s for s in args.sides if "hiredis" not in s or args.hiredis is not None]
    redis_cpu, service_cpu, pinning = pinning_cpus()
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="ws-template-batching-") as scratch:
        work = Path(scratch)
        paths = {
            "unbatched": export_hub(args.baseline, work / "unbatched"),
            "batched": work / "batched",
        }
        if "undetecting" in sides:
            paths["undetecting"] = export_hub(args.undetecting, work / "undetecting")
        shutil.copytree(ROOT / VENDORED, paths["batched"] / "websocket")

        def environment(side: str) -> dict[str, str]:
            tree = side.split("+")[0]
            path = [str(paths[tree if tree in paths else "batched"])]
            if side.endswith("+hiredis"):
                path.append(str(args.hiredis))
            return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}

        def command(spec: dict[str, Any]) -> list[str]:
            line = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
            return ["taskset", "-c", str(service_cpu), *line] if service_cpu is not None else line

        with RedisServer() as redis_server, contextlib.ExitStack() as stack:
            pin(redis_server.pid, redis_cpu)
            if "wait-1" in sides:
                replica = stack.enter_context(RedisServer())
                pin(replica.pid, redis_cpu)
                follow(replica.url, redis_server.port)
            listening = [
                subprocess.Popen(
                    command({"side": "subscriber", "url": redis_server.url}),
                    env=environment("batched"),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(args.subscriber_processes)
            ]
            try:
                for process in listening:
                    assert process.stdout is not None
                    assert process.stdout.readline() == "ready\n", "a subscriber did not start"
                for repetition in range(args.repetitions):
                    for in_flight in args.in_flight:
                        count = args.publishes // 10 if in_flight == 1 else args.publishes
                        for side in sides:
                            spec = {
                                "side": side,
                                "url": redis_server.url,
                                "redis_pid": redis_server.pid,
                                "in_flight": in_flight,
                                "count": count,
                            }
                            done = subprocess.run(
                                command(spec),
                                env=environment(side),
                                capture_output=True,
                                text=True,
                                timeout=600,
                            )
                            if done.returncode != 0:
                                print(done.stderr, file=sys.stderr)
                                return 1
                            figures = json.loads(done.stdout.splitlines()[-1])
                            results.setdefault((in_flight, side), []).append(figures)
                            print(
                                f"{repetition + 1}: {in_flight} in flight, {side}: "
                                + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()),
                                file=sys.stderr,
                                flush=True,
                            )
            finally:
                for process in listening:
                    if process.stdin is not None:
                        process.stdin.close()
                    process.wait(30)
        version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.split()[2]
    text = report(args, argv, results, sides, pinning, version)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


def report(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    results: dict[tuple[int, str], list[dict[str, float]]],
    sides: Sequence[str],
    pinning: str,
    version: str,
) -> str:
    def median(in_flight: int, side: str, key: str) -> float:
        return statistics.median(f[key] for f in results[(in_flight, side)])

    lines = [
        "# Cost per publish: the batched Redis hub against the unbatched one",
        "",
        f"`.venv/bin/python bench/redis_batching.py {' '.join(argv or sys.argv[1:])}`; "
        f"redis-server {version}; {args.publishes} publishes a row ({args.publishes // 10} at "
        f"1 in flight) on 50 channels with history, {args.subscriber_processes} subscriber "
        "process(es) following them; "
        f"{pinning.replace('server', 'redis-server').replace('load generator', 'publisher and subscriber')}; "
        f"unbatched = {args.baseline}; medians of {args.repetitions} repetition(s), interleaved.",
        "",
        "| in flight | side | Redis CPU us/publish | x floor | script usec_per_call | Redis socket reads+writes/publish | service CPU us/publish | publishes/s | latency p50 ms | latency mean ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for in_flight in args.in_flight:
        floor = median(in_flight, "floor", "redis_cpu_us") if "floor" in sides else None
        for side in sides:
            cpu = median(in_flight, side, "redis_cpu_us")
            ratio = f"{cpu / floor:.2f}x" if floor else "-"
            lines.append(
                f"| {in_flight} | {side} | {cpu:.1f} | {ratio} | "
                f"{median(in_flight, side, 'script_us'):.1f} | "
                f"{median(in_flight, side, 'syscalls'):.2f} | "
                f"{median(in_flight, side, 'service_cpu_us'):.0f} | "
                f"{median(in_flight, side, 'per_s'):.0f} | "
                f"{median(in_flight, side, 'latency_ms'):.3f} | "
                f"{median(in_flight, side, 'latency_mean_ms'):.3f} |"
            )
    if "unbatched" in sides and "batched" in sides:
        lines.append("")
        for in_flight in args.in_flight:
            parts = [
                f"{label} {median(in_flight, 'batched', key) / median(in_flight, 'unbatched', key):.2f}x"
                for label, key in (
                    ("Redis CPU", "redis_cpu_us"),
                    ("socket ops", "syscalls"),
                    ("service CPU", "service_cpu_us"),
                    ("publishes/s", "per_s"),
                    ("latency", "latency_ms"),
                )
            ]
            lines.append(f"- {in_flight} in flight, batched / unbatched: " + ", ".join(parts))
    for side, against in (("batched", "undetecting"), ("wait-1", "batched")):
        if side not in sides or against not in sides:
            continue
        lines.append("")
        for in_flight in args.in_flight:
            parts = [
                f"{label} {median(in_flight, side, key) / median(in_flight, against, key):.2f}x"
                for label, key in (
                    ("Redis CPU", "redis_cpu_us"),
                    ("service CPU", "service_cpu_us"),
                    ("publishes/s", "per_s"),
                    ("latency", "latency_ms"),
                )
            ]
            lines.append(f"- {in_flight} in flight, {side} / {against}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
