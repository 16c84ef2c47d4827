"""What presence costs (issue 13): how long a presence answer takes in a big room, and what
presence adds to opening a connection, on each broadcast backend, in one run.

    .venv/bin/python bench/presence.py            10,000 in the room, opens of 1,000 (about 10 min)
    .venv/bin/python bench/presence.py --smoke    small counts, one repetition

Renders the fastapi flavour with a broadcast room for each backend (memory; Redis, on a
redis-server started for the run and pinned beside the service) and drives it with node's
``ws`` client (``bench/client.mjs presence``), the service on one CPU, the client on the other:

- **answer**: ``--connections`` clients join one room (``JOIN_LEAVE_EVENTS=no``: with events
  on, N joins to a room cost N*(N-1)/2 deliveries, which is not what is measured here), then
  one more asks ``{"type": "presence"}`` ``--round-trips`` times, one at a time, and each
  answer must count the whole room; then ``GET /api/presence`` is asked as often. Figures:
  answer time (client side, p50/p99/max), the service's CPU per answer, the answer's size.
- **open**: ``--open-connections`` clients join one room on a fresh service with
  ``PRESENCE_ENABLED=no``, ``yes`` (``JOIN_LEAVE_EVENTS=no``) and ``yes`` with join and leave
  events, in turn (the order rotated each repetition), and the service's CPU while they open
  is divided by their number (Redis's CPU too, from its ``INFO cpu``). Ratios to presence off
  pair the runs of one repetition.

Prints the tables and writes ``presence.md`` and ``presence.json`` to ``--output`` (default
``bench/results/<date>/``). Timings move with the machine's load: compare ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from redis import Redis

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workloads
from bench.loadgen import BenchError, Client, Event, Sample, ensure_client, sample
from bench.run import raise_open_file_limit
from bench.servers import (
    BENCH,
    BROADCAST_BACKENDS,
    BROADCAST_ROOM,
    RedisServer,
    RunningServer,
    ServerSpec,
    broadcast_spec,
    pin,
    pinning_cpus,
    render_broadcast_projects,
)

API_KEY = "bench-presence-key-0123456789"
SIDES: dict[str, dict[str, str | None]] = {
    "off": {"PRESENCE_ENABLED": "no", "JOIN_LEAVE_EVENTS": None},  # unset: it would clash
    "on": {"PRESENCE_ENABLED": "yes", "JOIN_LEAVE_EVENTS": "no"},
    "on+events": {"PRESENCE_ENABLED": "yes", "JOIN_LEAVE_EVENTS": "yes"},
}
"""The service's presence settings on each side of the open-cost runs."""


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small counts, one repetition")
    parser.add_argument("--connections", type=int, default=10_000, help="the answer's room")
    parser.add_argument("--round-trips", type=int, default=20, help="presence requests")
    parser.add_argument("--open-connections", type=int, default=1_000, help="the open runs'")
    parser.add_argument("--repetitions", type=int, default=3, help="of the open runs")
    parser.add_argument(
        "--backends", nargs="+", choices=BROADCAST_BACKENDS, default=list(BROADCAST_BACKENDS)
    )
    parser.add_argument(
        "--workloads", nargs="+", choices=("answer", "open"), default=["answer", "open"]
    )
    parser.add_argument(
        "--sides", nargs="+", choices=list(SIDES), default=list(SIDES), help="of the open runs"
    )
    parser.add_argument("--output", type=Path, help="default: bench/results/<date>/")
    args = parser.parse_args(argv)
    if "off" not in args.sides:
        parser.error("--sides needs off: the ratios are to presence off")
    return args


def with_env(spec: ServerSpec, key: str, env: dict[str, str | None]) -> ServerSpec:
    """``spec`` with ``env`` added to its environment (None: that variable unset)."""
    merged = {**spec.env, **env}
    return replace(
        spec,
        key=f"{spec.key}-{key}",
        env={name: value for name, value in merged.items() if value is not None},
    )


def redis_cpu(client: Redis | None) -> float:
    """redis-server's user + system CPU seconds so far (0 without Redis)."""
    if client is None:
        return 0.0
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def http_presence(server: RunningServer, times: int) -> tuple[list[float], int]:
    """``GET /api/presence`` of the room ``times`` times: each answer's milliseconds, and
    the last answer's count."""
    query = urllib.parse.urlencode({"channel": BROADCAST_ROOM})
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/api/presence?{query}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    spent, count = [], 0
    for _ in range(times):
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            count = json.loads(response.read())["count"]
        spent.append((time.perf_counter() - started) * 1000)
    return spent, count


def one_room(
    server: RunningServer,
    connections: int,
    round_trips: int,
    cpu: int | None,
    redis: Redis | None,
) -> workloads.Record:
    """One run of ``client.mjs presence`` on ``server``: the open and the answer figures."""
    samples: dict[str, tuple[Sample, float]] = {}
    over_http: list[float] = []
    http_count = 0

    def on_event(event: Event, client: Client) -> None:
        nonlocal over_http, http_count
        name = event["event"]
        samples[name] = (sample(server.pid), redis_cpu(redis))
        if name == "ready":
            client.tell("go")
        elif name == "opened":
            client.tell("ask")
        elif name == "asked":
            if round_trips:
                over_http, http_count = http_presence(server, round_trips)
            client.tell("close")

    options = {
        "connections": connections,
        "round-trips": round_trips,
        "open-concurrency": 50,
        "local-addresses": workloads.local_addresses(connections + 60),
        "handshake-timeout": 120,
    }
    client = Client("presence", server.ws_url(BROADCAST_ROOM), options, cpu)
    result = client.run(on_event, timeout=900)
    (ready, ready_redis), (opened, opened_redis) = samples["ready"], samples["opened"]
    (asking, asking_redis), (asked, asked_redis) = samples["opened"], samples["asked"]
    record: workloads.Record = {
        "connections": connections,
        "open_seconds": float(result["open_seconds"]),
        "server_cpu_ms_per_open": (opened.cpu_seconds - ready.cpu_seconds) / connections * 1e3,
        "redis_cpu_ms_per_open": (opened_redis - ready_redis) / connections * 1e3,
        "events": int(result["events"]),
        "rss_mib": opened.rss_bytes / workloads.MIB,
    }
    if round_trips:
        if http_count != connections + 1:
            raise BenchError(f"GET /api/presence counted {http_count}, not {connections + 1}")
        answer = result["answer_ms"]
        ordered = sorted(over_http)
        record |= {
            "round_trips": round_trips,
            "answer_p50_ms": answer["p50"],
            "answer_p99_ms": answer["p99"],
            "answer_max_ms": answer["max"],
            # The asker's open is in the window too: a few ms among round_trips answers.
            "server_cpu_ms_per_answer": (asked.cpu_seconds - asking.cpu_seconds)
            / round_trips
            * 1e3,
            "redis_cpu_ms_per_answer": (asked_redis - asking_redis) / round_trips * 1e3,
            "http_p50_ms": ordered[len(ordered) // 2],
            "http_max_ms": ordered[-1],
            "listed": int(result["listed"]),
            "cut": bool(result["cut"]),
            "answer_bytes": int(result["answer_bytes"]),
        }
    return record


def answer_table(records: list[workloads.Record]) -> str:
    rows = [
        "| backend | room | answer p50 | p99 | max | service CPU/answer | Redis CPU/answer "
        "| listed (cut) | answer size | GET /api/presence p50 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in records:
        rows.append(
            f"| {r['backend']} | {r['connections'] + 1:,} | {r['answer_p50_ms']:.1f} ms "
            f"| {r['answer_p99_ms']:.1f} ms | {r['answer_max_ms']:.1f} ms "
            f"| {r['server_cpu_ms_per_answer']:.1f} ms | {r['redis_cpu_ms_per_answer']:.1f} ms "
            f"| {r['listed']:,} ({'cut' if r['cut'] else 'whole'}) | {r['answer_bytes'] / 1024:.0f} KiB "
            f"| {r['http_p50_ms']:.1f} ms | {r['http_max_ms']:.1f} ms |"
        )
    return "\n".join(rows)


def open_table(records: list[workloads.Record]) -> str:
    rows = [
        "| backend | presence | service CPU/open | / off | Redis CPU/open | join/leave events "
        "received | opens/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for backend in dict.fromkeys(r["backend"] for r in records):
        mine = [r for r in records if r["backend"] == backend]
        for side in SIDES:
            runs = [r for r in mine if r["side"] == side]
            if not runs:
                continue
            ratios = []  # paired with the run of presence off of the same repetition
            for run in runs:
                off = [r for r in mine if r["side"] == "off" and r["rep"] == run["rep"]]
                ratios.append(run["server_cpu_ms_per_open"] / off[0]["server_cpu_ms_per_open"])
            cpu = median(r["server_cpu_ms_per_open"] for r in runs)
            redis = median(r["redis_cpu_ms_per_open"] for r in runs)
            opens = median(r["connections"] / r["open_seconds"] for r in runs)
            events = median(r["events"] for r in runs)
            spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
            rows.append(
                f"| {backend} | {side} | {cpu:.3f} ms | {median(ratios):.2f}x{spread} "
                f"| {redis:.3f} ms | {events:,.0f} | {opens:,.0f} |"
            )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    connections = 200 if args.smoke else args.connections
    opens = 100 if args.smoke else args.open_connections
    round_trips = 3 if args.smoke else args.round_trips
    repetitions = 1 if args.smoke else args.repetitions
    command = shlex.join(["bench/presence.py", *(argv if argv is not None else sys.argv[1:])])
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    output: Path = (args.output or BENCH / "results" / today).resolve()
    output.mkdir(parents=True, exist_ok=True)
    answers: list[workloads.Record] = []
    open_runs: list[workloads.Record] = []
    try:
        raise_open_file_limit(max(connections, opens) + 300)
        ensure_client()
        server_cpu, client_cpu, pinning = pinning_cpus()
        with (
            tempfile.TemporaryDirectory(prefix="ws-template-presence-") as scratch,
            ExitStack() as stack,
        ):
            work = Path(scratch)
            projects = render_broadcast_projects(work / "render", args.backends)
            redis_url, redis = None, None
            if "redis" in projects:
                missing = RedisServer.unavailable()
                if missing:
                    raise BenchError(f"the Redis backend needs redis-server: {missing}")
                redis_server = stack.enter_context(RedisServer())
                pin(redis_server.pid, server_cpu)
                redis_url = redis_server.url
                redis = Redis.from_url(redis_url, socket_timeout=10)
                stack.callback(redis.close)
            for backend, project in projects.items():
                base = broadcast_spec(backend, project, redis_url)
                base = with_env(base, "presence", {"PUBLISH_API_KEY": API_KEY})
                backend_redis = redis if backend == "redis" else None
                if "answer" in args.workloads:
                    spec = with_env(base, "answer", SIDES["on"])
                    log = work / f"{spec.key}.log"
                    with RunningServer(spec, server_cpu, log) as server:
                        record = one_room(
                            server, connections, round_trips, client_cpu, backend_redis
                        )
                    answers.append({"workload": "answer", "backend": backend, **record})
                    print(f"[answer] {backend}: {json.dumps(answers[-1])}", flush=True)
                if "open" in args.workloads:
                    sides = args.sides
                    for rep in range(repetitions):
                        turn = rep % len(sides)
                        for side in sides[turn:] + sides[:turn]:
                            spec = with_env(base, side, SIDES[side])
                            log = work / f"{spec.key}-{rep}.log"
                            with RunningServer(spec, server_cpu, log) as server:
                                record = one_room(server, opens, 0, client_cpu, backend_redis)
                            open_runs.append(
                                {
                                    "workload": "open",
                                    "backend": backend,
                                    "side": side,
                                    "rep": rep,
                                    **record,
                                }
                            )
                            print(
                                f"[open {rep + 1}/{repetitions}] {backend} {side}: {json.dumps(open_runs[-1])}",
                                flush=True,
                            )
    except BenchError as error:
        print(f"presence: {error}", file=sys.stderr)
        return 1
    sections = [
        f"# What presence costs ({today})\n",
        f"`.venv/bin/python {command}`: the fastapi flavour with a broadcast room "
        f"(`{BROADCAST_ROOM}`), uvicorn's defaults, node's `ws` client; {pinning}. Timings "
        "move with the machine's load (another benchmark may have run beside this one): "
        "read the ratios, which pair runs of one repetition.\n",
    ]
    if answers:
        sections.append(
            f"## Presence answer in a room of {connections + 1:,}\n\n"
            f'{round_trips} `{{"type": "presence"}}` requests from one more client, one at a '
            "time, then as many `GET /api/presence`; `JOIN_LEAVE_EVENTS=no`, "
            "`PRESENCE_LIST_LIMIT` at its default (1,000). Service CPU per answer is read "
            "from /proc over the requests (in clock ticks: 10 ms steps over the window).\n\n"
            f"{answer_table(answers)}\n"
        )
    if open_runs:
        sections.append(
            f"## What presence adds to an open: a room of {opens:,}, opened 50 at a time\n\n"
            f"Median of {repetitions} repetition(s); each side a fresh service; `/ off`: the "
            "median of each repetition's ratio to presence off (range in brackets). "
            "`on+events`: join events too, so the k-th client's join goes to the k-1 "
            "before it (N*(N-1)/2 in all).\n\n"
            f"{open_table(open_runs)}\n"
        )
    report = "\n".join(sections)
    name = "presence-smoke" if args.smoke else "presence"
    (output / f"{name}.md").write_text(report)
    data = {"command": command, "pinning": pinning, "records": answers + open_runs}
    (output / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
