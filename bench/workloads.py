"""The workloads of the benchmark, each measured once against one running server.

Each function runs the load generator against a started server and returns a record: a
flat dict of what was measured (JSON-ready, written to results.json as it is):

- `keepalive`: round trips per second, latency p50/p99 and server CPU per round trip with
  N connections that each send a keepalive as soon as the last one is answered;
- `idle`: server memory per connection and time to open N connections that then idle;
- `ticker`: how late ticks arrive and what they cost the server with N connections on a
  ticker endpoint;
- `instructions`: the server's instructions per keepalive round trip, counted by valgrind's
  callgrind: a figure that does not move with the machine's load, where times do;
- `broadcast`: how long one message takes to reach each of N subscribers of a broadcast
  room, one fan-out at a time, with every delivery checked (issue 7: 1,000 and 10,000),
  on each backend with channel history on and off (issue 12: what history costs).
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from bench.loadgen import (
    BenchError,
    Client,
    Event,
    Sample,
    cpu_probe,
    cpu_seconds_between,
    cpu_share,
    others_share,
    sample,
)
from bench.servers import RedisServer, RunningServer

Record = dict[str, Any]
MIB = 1024 * 1024
_TOTALS = re.compile(r"^totals: (\d+)\n", re.MULTILINE)


@dataclass(frozen=True)
class Settings:
    """Sizes and durations of one benchmark run."""

    connections: tuple[int, ...] = (1, 10, 100)
    """Concurrent connections of the keepalive workload."""
    warmup: float = 1.0
    """Seconds of keepalive load before the measured window."""
    duration: float = 5.0
    """Seconds in the measured window of the keepalive workload."""
    idle_connections: int = 10_000
    idle_settle: float = 2.0
    """Seconds between opening the idle connections and reading the server's memory."""
    ticker_connections: int = 5_000
    tick_seconds: float = 1.0
    ticker_settle: float = 2.0
    """Seconds between opening the ticker connections and the measured window."""
    ticker_duration: float = 10.0
    open_concurrency: int = 50
    """Handshakes the load generator keeps in flight while it opens connections."""
    counted_connections: int = 10
    counted_round_trips: int = 2_000
    """Round trips of the `instructions` workload (the server runs under callgrind)."""
    broadcast_subscribers: tuple[int, ...] = (1_000, 10_000)
    """Subscribers of the broadcast workload's room, one run per count."""
    broadcast_messages: int = 30
    """Messages of each broadcast run in its figures (after its warm-up messages)."""
    broadcast_warmup_messages: int = 2
    """Messages of each broadcast run delivered and checked, but not in its figures."""
    broadcast_interval: float = 0.2
    """Seconds from one broadcast message to the next (longer if a fan-out takes longer)."""
    broadcast_fanout_timeout: float = 30.0
    """Seconds one broadcast message may take to reach every subscriber before the run fails."""


def keepalive(
    server: RunningServer, connections: int, settings: Settings, cpu: int | None
) -> Record:
    """Keepalive round trips on ``connections`` connections, each one in flight at a time."""
    probe_ms = cpu_probe(server.cpu)
    samples: dict[str, tuple[Sample, Sample]] = {}

    def on_event(event: Event, client: Client) -> None:
        samples[event["event"]] = (sample(server.pid), sample(client.pid))

    options = {"connections": connections, "warmup": settings.warmup}
    options |= {"duration": settings.duration, "open-concurrency": settings.open_concurrency}
    client = Client("keepalive", server.ws_url(server.spec.keepalive_path), options, cpu)
    result = client.run(on_event, timeout=max(settings.warmup, settings.duration) + 60)
    (server_start, client_start), (server_end, client_end) = (
        samples["window-start"],
        samples["window-end"],
    )
    round_trips = int(result["round_trips"])
    server_cpu_seconds = server_end.cpu_seconds - server_start.cpu_seconds
    return {
        "workload": "keepalive",
        "connections": connections,
        "probe_ms": probe_ms,
        "round_trips_per_s": round_trips / float(result["seconds"]),
        "latency_p50_ms": result["latency_ms"]["p50"],
        "latency_p99_ms": result["latency_ms"]["p99"],
        "server_cpu_us_per_round_trip": server_cpu_seconds / max(round_trips, 1) * 1e6,
        "server_cpu": cpu_share(server_start, server_end),
        "client_cpu": cpu_share(client_start, client_end),
        "others_cpu": others_share((server_start, server_end), (client_start, client_end)),
    }


def idle(server: RunningServer, settings: Settings, cpu: int | None) -> Record:
    """Open ``idle_connections`` connections, prove each is served, hold them, close them.

    The server's memory is read after a warm-up (50 connections opened and closed), then
    as the connections open, and once more ``idle_settle`` seconds after the last opened.
    """
    count = settings.idle_connections
    probe_ms = cpu_probe(server.cpu)
    samples: dict[str, Sample] = {}
    memory: list[tuple[int, int]] = []  # (connections open, server RSS in bytes)

    def on_event(event: Event, client: Client) -> None:
        name = event["event"]
        if name == "ready":
            time.sleep(0.5)  # let the warm-up connections' teardown finish
            samples["before"], samples["client-before"] = sample(server.pid), sample(client.pid)
            memory.append((0, samples["before"].rss_bytes))
            client.tell("go")
        elif name == "progress":
            memory.append((int(event["opened"]), sample(server.pid).rss_bytes))
        elif name == "opened":
            samples["opened"], samples["client-opened"] = sample(server.pid), sample(client.pid)
            time.sleep(settings.idle_settle)
            samples["held"] = sample(server.pid)
            memory.append((count, samples["held"].rss_bytes))
            client.tell("close")

    options = {"connections": count, "open-concurrency": settings.open_concurrency}
    options["local-addresses"] = local_addresses(count)
    options["handshake-timeout"] = (
        120  # a busy server with tens of thousands open is slow to answer
    )
    client = Client("idle", server.ws_url(server.spec.keepalive_path), options, cpu)
    result = client.run(
        on_event, timeout=settings.idle_settle + 600
    )  # slow opens: tens of thousands
    open_seconds = float(result["open_seconds"])
    opening_cpu = samples["opened"].cpu_seconds - samples["before"].cpu_seconds
    return {
        "workload": "idle",
        "connections": count,
        "probe_ms": probe_ms,
        "rss_per_connection_kib": (samples["held"].rss_bytes - samples["before"].rss_bytes)
        / count
        / 1024,
        "rss_mib": samples["held"].rss_bytes / MIB,
        "open_seconds": open_seconds,
        "opens_per_s": count / open_seconds,
        "server_cpu_ms_per_open": opening_cpu / count * 1e3,
        "client_cpu": cpu_share(samples["client-before"], samples["client-opened"]),
        "others_cpu": others_share(
            (samples["before"], samples["opened"]),
            (samples["client-before"], samples["client-opened"]),
        ),
        "memory": memory,
    }


CONNECTIONS_PER_ADDRESS = 20_000
"""Connections the load generator opens from one loopback address to one server port: well
inside Linux's ephemeral port range (32768-60999 by default, about 28,000 ports)."""


def local_addresses(connections: int) -> int:
    """How many loopback addresses (127.0.0.1, .2, ...) ``connections`` connections come from."""
    return max(1, -(-connections // CONNECTIONS_PER_ADDRESS))


def ticker(server: RunningServer, settings: Settings, cpu: int | None) -> Record:
    """``ticker_connections`` connections on the ticker endpoint: tick lateness, server CPU."""
    assert server.spec.ticker_path is not None, f"{server.spec.label} has no ticker endpoint"
    probe_ms = cpu_probe(server.cpu)
    samples: dict[str, tuple[Sample, Sample]] = {}

    def on_event(event: Event, client: Client) -> None:
        samples[event["event"]] = (sample(server.pid), sample(client.pid))

    options = {
        "connections": settings.ticker_connections,
        "period": settings.tick_seconds,
        "settle": settings.ticker_settle,
        "duration": settings.ticker_duration,
        "open-concurrency": settings.open_concurrency,
    }
    client = Client("ticker", server.ws_url(server.spec.ticker_path), options, cpu)
    result = client.run(
        on_event, timeout=max(settings.ticker_settle, settings.ticker_duration) + 120
    )
    (server_start, client_start), (server_end, client_end) = (
        samples["window-start"],
        samples["window-end"],
    )
    ticks = int(result["ticks"])
    server_cpu_seconds = server_end.cpu_seconds - server_start.cpu_seconds
    return {
        "workload": "ticker",
        "connections": settings.ticker_connections,
        "probe_ms": probe_ms,
        "ticks_per_s": ticks / float(result["seconds"]),
        "ticks_received": ticks / max(float(result["expected_ticks"]), 1e-9),
        "skipped_beats": int(result["skipped_beats"]),
        "lateness_p50_ms": result["lateness_ms"]["p50"],
        "lateness_p99_ms": result["lateness_ms"]["p99"],
        "lateness_max_ms": result["lateness_ms"]["max"],
        "server_cpu": cpu_share(server_start, server_end),
        "server_cpu_us_per_tick": server_cpu_seconds / max(ticks, 1) * 1e6,
        "client_cpu": cpu_share(client_start, client_end),
        "others_cpu": others_share((server_start, server_end), (client_start, client_end)),
    }


def broadcast(
    server: RunningServer,
    subscribers: int,
    settings: Settings,
    cpu: int | None,
    redis: RedisServer | None = None,
) -> Record:
    """Fan messages out to ``subscribers`` connections of one broadcast room, one at a time.

    The load generator opens the subscribers, then publishes ``broadcast_messages`` (after
    ``broadcast_warmup_messages``) from one more connection, each once the last has reached
    every subscriber and ``broadcast_interval`` after it; it fails unless every subscriber
    gets every message, in order, with no drop, its offsets contiguous. Latency is a
    delivery's receive time less its send time. The server's memory is read before the
    subscribers open, once they are open, and after the last message; ``redis`` (the Redis
    backend's server) has its CPU time read too, from its own ``INFO cpu`` (to the
    microsecond, where /proc counts in clock ticks), and the time it spent in commands
    (``INFO commandstats``: without its event loop and housekeeping). The record says the server's backend and
    its ``history`` (``HISTORY_SIZE``, 0 for off).
    """
    assert server.spec.broadcast_path is not None, f"{server.spec.label} has no broadcast room"
    probe_ms = cpu_probe(server.cpu)
    before = sample(server.pid)
    samples: dict[str, tuple[Sample, Sample, tuple[float, float] | None]] = {}
    redis_client = Redis.from_url(redis.url, socket_timeout=10) if redis is not None else None

    def on_event(event: Event, client: Client) -> None:
        redis_times = _redis_times(redis_client) if redis_client is not None else None
        samples[event["event"]] = (sample(server.pid), sample(client.pid), redis_times)

    options = {
        "connections": subscribers,
        "messages": settings.broadcast_warmup_messages + settings.broadcast_messages,
        "warmup-messages": settings.broadcast_warmup_messages,
        "interval": settings.broadcast_interval,
        "fanout-timeout": settings.broadcast_fanout_timeout,
        "open-concurrency": settings.open_concurrency,
    }
    url = server.ws_url(server.spec.broadcast_path)
    client = Client("broadcast", url, options, cpu, server.spec.transport)
    window = options["messages"] * settings.broadcast_interval
    try:
        result = client.run(on_event, timeout=window + settings.broadcast_fanout_timeout + 120)
    finally:
        if redis_client is not None:
            redis_client.close()
    opened = samples["opened"][0]
    (server_start, client_start, redis_start), (server_end, client_end, redis_end) = (
        samples["window-start"],
        samples["window-end"],
    )
    deliveries = int(result["deliveries"])
    measured = subscribers * settings.broadcast_messages
    server_cpu_seconds, server_system_seconds = cpu_seconds_between(server_start, server_end)
    redis_cpu, redis_cpu_us, redis_command_us = None, None, None
    if redis_start is not None and redis_end is not None:
        redis_cpu_seconds = redis_end[0] - redis_start[0]
        redis_cpu = redis_cpu_seconds / max(server_end.at - server_start.at, 1e-9)
        redis_cpu_us = redis_cpu_seconds / max(settings.broadcast_messages, 1) * 1e6
        redis_command_us = (redis_end[1] - redis_start[1]) / max(settings.broadcast_messages, 1)
    others = others_share((server_start, server_end), (client_start, client_end))
    return {
        "workload": "broadcast",
        "backend": server.spec.backend,
        "history": server.spec.history_size,
        "connections": subscribers,
        "probe_ms": probe_ms,
        "messages": settings.broadcast_messages,
        "deliveries": deliveries,
        "expected_deliveries": int(result["expected_deliveries"]),
        "latency_p50_ms": result["latency_ms"]["p50"],
        "latency_p99_ms": result["latency_ms"]["p99"],
        "latency_max_ms": result["latency_ms"]["max"],
        "fanout_p50_ms": result["fanout_ms"]["p50"],
        "fanout_max_ms": result["fanout_ms"]["max"],
        "open_seconds": float(result["open_seconds"]),
        "rss_mib": server_end.rss_bytes / MIB,
        "rss_growth_mib": (server_end.rss_bytes - before.rss_bytes) / MIB,
        "rss_messages_growth_mib": (server_end.rss_bytes - opened.rss_bytes) / MIB,
        "rss_per_subscriber_kib": (opened.rss_bytes - before.rss_bytes) / subscribers / 1024,
        "server_cpu": cpu_share(server_start, server_end),
        "server_cpu_us_per_delivery": server_cpu_seconds / max(measured, 1) * 1e6,
        "server_system_us_per_delivery": server_system_seconds / max(measured, 1) * 1e6,
        "redis_cpu": redis_cpu,
        "redis_cpu_us_per_message": redis_cpu_us,
        "redis_command_us_per_message": redis_command_us,
        "client_cpu": cpu_share(client_start, client_end),
        "client_cpu_fanout": float(result["fanout_cpu"]),
        "others_cpu": max(0.0, others - (redis_cpu or 0.0)),
    }


def _redis_times(client: Redis) -> tuple[float, float]:
    """The user + system CPU time redis-server has used, in seconds (its ``INFO cpu``), and
    the microseconds it spent running commands, ``INFO`` itself left out (``INFO
    commandstats``: the publishing script's, the subscribe and history commands')."""
    cpu = client.info("cpu")
    commands = client.info("commandstats")
    command_us = sum(
        float(stats["usec"])
        for name, stats in commands.items()
        if name.startswith("cmdstat_") and name != "cmdstat_info"
    )
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), command_us


def callgrind(folder: Path) -> list[str]:
    """The command that runs a server under callgrind, counting nothing until told to.

    Its dumps go to ``folder/callgrind.<pid>.<n>``.
    """
    out = folder / "callgrind.%p"
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]


def instructions(
    server: RunningServer, settings: Settings, cpu: int | None, folder: Path
) -> Record:
    """Instructions the server (started with `callgrind` and ``folder``) runs per round trip.

    The load generator warms the server up, falls quiet, and makes exactly
    ``counted_round_trips`` round trips while callgrind counts; user-space instructions
    only (the kernel's share of the work is not in them).
    """

    def on_event(event: Event, client: Client) -> None:
        if event["event"] == "paused":
            _callgrind_control("--instr=on", server.pid)
            client.tell("go")
        elif event["event"] == "window-end":
            _callgrind_control("--dump", server.pid)

    options = {
        "connections": settings.counted_connections,
        "round-trips": settings.counted_round_trips,
        "warmup": settings.warmup,
        "open-concurrency": settings.open_concurrency,
    }
    client = Client("counted", server.ws_url(server.spec.keepalive_path), options, cpu)
    result = client.run(on_event, timeout=300)
    round_trips = int(result["round_trips"])
    return {
        "workload": "instructions",
        "connections": settings.counted_connections,
        "round_trips": round_trips,
        "instructions_per_round_trip": _dumped_instructions(folder, server.pid) / round_trips,
    }


def _callgrind_control(option: str, pid: int) -> None:
    command = ["callgrind_control", option, str(pid)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or "OK" not in done.stdout:
        raise BenchError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}".strip())


def _dumped_instructions(folder: Path, pid: int, timeout: float = 60) -> int:
    """The instruction count of the first dump of callgrind run ``pid``, once written whole."""
    dump = folder / f"callgrind.{pid}.1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        totals = _TOTALS.search(dump.read_text()) if dump.exists() else None
        if totals:
            return int(totals.group(1))
        time.sleep(0.1)
    raise BenchError(f"callgrind wrote no totals to {dump} within {timeout:g} s.")


def broadcast_instructions(
    server: RunningServer, subscribers: int, settings: Settings, cpu: int | None, folder: Path
) -> Record:
    """Instructions the server (started with `callgrind` and ``folder``) runs per broadcast
    delivery: one room of ``subscribers``, ``broadcast_messages`` published while callgrind
    counts (after ``broadcast_warmup_messages``), each once the last reached everyone.

    What is counted includes the publisher's message arriving, the publish and the fan-out,
    divided by the deliveries (subscribers x messages); user-space instructions only.
    """

    def on_event(event: Event, client: Client) -> None:
        if event["event"] == "paused":
            _callgrind_control("--instr=on", server.pid)
            client.tell("go")
        elif event["event"] == "window-end":
            _callgrind_control("--dump", server.pid)

    options = {
        "connections": subscribers,
        "messages": settings.broadcast_warmup_messages + settings.broadcast_messages,
        "warmup-messages": settings.broadcast_warmup_messages,
        "interval": settings.broadcast_interval,
        "fanout-timeout": settings.broadcast_fanout_timeout,
        "open-concurrency": settings.open_concurrency,
        "pause": 1,
    }
    assert server.spec.broadcast_path is not None, f"{server.spec.label} has no broadcast room"
    client = Client("broadcast", server.ws_url(server.spec.broadcast_path), options, cpu)
    result = client.run(on_event, timeout=600)
    measured = subscribers * settings.broadcast_messages
    if int(result["deliveries"]) != subscribers * options["messages"]:
        raise BenchError(f"broadcast lost deliveries: {result['deliveries']} of {measured}")
    return {
        "workload": "broadcast-instructions",
        "connections": subscribers,
        "messages": settings.broadcast_messages,
        "instructions_per_delivery": _dumped_instructions(folder, server.pid) / measured,
    }
