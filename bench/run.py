"""Benchmark the generated websocket service against hand-written baselines (issue 7).

    .venv/bin/python bench/run.py             the full run (about 15 minutes)
    .venv/bin/python bench/run.py --smoke     tiny counts, under a minute

Renders the default project (each flavour), starts it with uvicorn's defaults on 127.0.0.1,
and drives it with node's ``ws`` client (``bench/client.mjs``) on loopback, interleaved
(A B A B) with three baselines on the same uvicorn or beside it: (1) a FastAPI keepalive
endpoint written the way the FastAPI docs teach, (2) a raw-ASGI echo with no JSON (the
server's ceiling), (3) the ``websockets`` library's own server. The broadcast workload
renders the service with a broadcast room for each backend (memory; Redis, on a
redis-server started for it), each with the channel history on and off, and fans messages
out to its subscribers (the runs with and without history side by side, A B A B, to measure
what history costs). The server is pinned to one CPU, the load generator to another. Writes results.md (tables, ratios, issue 7's
targets), results.json and PNG plots to ``--output`` (default ``bench/results/<date>/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report, workloads
from bench.loadgen import CLIENT_PACKAGES, BenchError, ensure_client, installed_version
from bench.servers import (
    BENCH,
    BROADCAST_BACKENDS,
    BROADCAST_HISTORY,
    SERVER_KEYS,
    TEMPLATE,
    RedisServer,
    RunningServer,
    ServerSpec,
    before_spec,
    before_specs,
    broadcast_key,
    broadcast_label,
    broadcast_spec,
    fanout_specs,
    pin,
    pinning_cpus,
    render_broadcast_projects,
    render_fanout_projects,
    render_projects,
    server_specs,
    template_at,
)

WORKLOADS = ("keepalive", "instructions", "idle", "ticker", "broadcast", "fanout")
PACKAGES = (
    "uvicorn",
    "websockets",
    "fastapi",
    "starlette",
    "uvloop",
    "httptools",
    "cookiecutter",
    "python-socketio",
    "orjson",
)
SMOKE = workloads.Settings(
    connections=(1, 4),
    warmup=0.2,
    duration=0.5,
    idle_connections=20,
    idle_settle=0.2,
    ticker_connections=20,
    tick_seconds=0.2,
    ticker_settle=0.3,
    ticker_duration=1.0,
    open_concurrency=10,
    counted_round_trips=50,
    broadcast_subscribers=(5, 20),
    broadcast_messages=3,
    broadcast_warmup_messages=1,
    broadcast_interval=0.05,
)


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    full = workloads.Settings()
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one repetition")
    parser.add_argument("--output", type=Path, help="default: bench/results/<date>/")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FOLDER",
        help="measure nothing: rewrite results.md and the plots from FOLDER/results.json",
    )
    parser.add_argument("--repetitions", type=int, default=3, help="runs of each figure")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--servers", nargs="+", choices=SERVER_KEYS, default=list(SERVER_KEYS))
    parser.add_argument(
        "--compare",
        metavar="COMMIT",
        help="also run the generated servers (the broadcast and fan-out workloads' too) "
        "rendered from the template at COMMIT, side by side with the working tree's (keys "
        "with -before): a change's before and after",
    )
    parser.add_argument("--connections", type=int, nargs="+", default=list(full.connections))
    parser.add_argument("--warmup", type=float, default=full.warmup)
    parser.add_argument("--duration", type=float, default=full.duration)
    parser.add_argument("--idle-connections", type=int, default=full.idle_connections)
    parser.add_argument("--ticker-connections", type=int, default=full.ticker_connections)
    parser.add_argument("--ticker-duration", type=float, default=full.ticker_duration)
    parser.add_argument(
        "--broadcast-backends",
        nargs="+",
        choices=BROADCAST_BACKENDS,
        default=list(BROADCAST_BACKENDS),
        help="the broadcast workload runs on the generated service (fastapi flavour) with "
        "each of these backends; --servers does not apply to it",
    )
    parser.add_argument(
        "--broadcast-history",
        nargs="+",
        choices=BROADCAST_HISTORY,
        default=list(BROADCAST_HISTORY),
        help="run each broadcast backend with the channel history on (HISTORY_SIZE=100), "
        "off (HISTORY_SIZE=0), or both, interleaved (the report's 'Cost of history')",
    )
    parser.add_argument(
        "--broadcast-subscribers", type=int, nargs="+", default=list(full.broadcast_subscribers)
    )
    parser.add_argument(
        "--broadcast-messages",
        type=int,
        default=full.broadcast_messages,
        help="messages in the figures of each run, after "
        f"{full.broadcast_warmup_messages} of warm-up",
    )
    parser.add_argument(
        "--broadcast-interval",
        type=float,
        default=full.broadcast_interval,
        help="seconds between messages (longer if a fan-out takes longer: they never overlap)",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> workloads.Settings:
    if args.smoke:
        return SMOKE
    return workloads.Settings(
        connections=tuple(args.connections),
        warmup=args.warmup,
        duration=args.duration,
        idle_connections=args.idle_connections,
        ticker_connections=args.ticker_connections,
        ticker_duration=args.ticker_duration,
        broadcast_subscribers=tuple(args.broadcast_subscribers),
        broadcast_messages=args.broadcast_messages,
        broadcast_interval=args.broadcast_interval,
    )


def check_limits(settings: workloads.Settings) -> None:
    """Raise the open-file limit (RLIMIT_NOFILE) to what the connections need, or fail early,
    with what to do, when it cannot be raised that far.

    The servers and the load generator are this process's children and inherit the limit.
    The soft limit goes up to the hard one; the hard one too where this process may raise
    it (root, or CAP_SYS_RESOURCE), as far as the kernel's ``fs.nr_open``.
    """
    most = max(
        settings.idle_connections,
        settings.ticker_connections,
        *settings.connections,
        *(count + 1 for count in settings.broadcast_subscribers),  # and the publisher
    )
    raise_open_file_limit(most + 200)  # and the server's, node's and Python's own files


def raise_open_file_limit(wanted: int) -> int:
    """Make this process's soft RLIMIT_NOFILE at least ``wanted``; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            raise BenchError(
                f"{wanted:,} open files are needed, over the hard limit of {hard:,} (ulimit "
                "-Hn), which only root can raise: raise it or ask for fewer connections."
            ) from None
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def machine() -> dict[str, str]:
    """What the figures came from: CPU, cores, Python, packages, node, the template commit."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    info = {
        "cpu": model,
        "nproc": str(len(os.sched_getaffinity(0))),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    for package in PACKAGES:
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    info["node"] = node.stdout.strip()
    for package in CLIENT_PACKAGES:
        info[f"{package} (node)"] = installed_version(package) or "not installed"
    commit = subprocess.run(
        ["git", "-C", str(TEMPLATE), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    info["template commit"] = commit.stdout.strip() or "unknown"
    return info


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Measure = Callable[[RunningServer], workloads.Record]


@contextmanager
def blamed_on(server: RunningServer, workload: str) -> Iterator[None]:
    """Add the workload, the server and the end of its log to a `BenchError` raised inside."""
    try:
        yield
    except BenchError as error:
        raise BenchError(
            f"{workload} on {server.spec.label}: {error}\nThe end of the server's log:\n"
            f"{server.log_tail()}"
        ) from None


def rotated(specs: Sequence[ServerSpec], rep: int) -> list[ServerSpec]:
    """The servers in the order of repetition ``rep``: each round starts one further on."""
    shift = rep % len(specs)
    return [*specs[shift:], *specs[:shift]]


def one_at_a_time(
    workload: str,
    specs: Sequence[ServerSpec],
    repetitions: int,
    server_cpu: int | None,
    logs: Path,
    measure: Measure,
) -> list[workloads.Record]:
    """Run ``measure`` on a fresh start of each server in turn, ``repetitions`` rounds (A B A B).

    For workloads that hold many connections: one server runs at a time.
    """
    records = []
    for rep in range(repetitions):
        for spec in rotated(specs, rep):
            with (
                RunningServer(
                    spec, server_cpu, logs / f"{workload}-{spec.key}-{rep}.log"
                ) as server,
                blamed_on(server, workload),
            ):
                record = {"server": spec.key, "rep": rep, **measure(server)}
            records.append(record)
            say(f"[{workload} {rep + 1}/{repetitions}] {spec.key}: {summary(record)}")
    return records


def side_by_side(
    workload: str,
    specs: Sequence[ServerSpec],
    repetitions: int,
    server_cpu: int | None,
    logs: Path,
    measures: Sequence[Measure],
    wrapper: Sequence[str] = (),
) -> list[workloads.Record]:
    """Start every server (fresh each round), then take each measure on each server in turn.

    For the keepalive workloads: the runs of one connection count on the different servers
    follow each other within seconds, so that the ratios pair runs made in the same
    conditions (the servers that are not under load sit idle on the same CPU). ``wrapper``
    goes before each server's command (see `RunningServer`).
    """
    records = []
    for rep in range(repetitions):
        with ExitStack() as stack:
            servers = [
                stack.enter_context(
                    RunningServer(
                        spec, server_cpu, logs / f"{workload}-{spec.key}-{rep}.log", wrapper
                    )
                )
                for spec in rotated(specs, rep)
            ]
            for measure in measures:
                for server in servers:
                    with blamed_on(server, workload):
                        record = {"server": server.spec.key, "rep": rep, **measure(server)}
                    records.append(record)
                    say(
                        f"[{workload} {rep + 1}/{repetitions}] {server.spec.key}: {summary(record)}"
                    )
    return records


def summary(record: workloads.Record) -> str:
    """One progress line for a record."""
    if record["workload"] == "keepalive":
        return (
            f"{record['connections']} connections, {record['round_trips_per_s']:,.0f} "
            f"round trips/s, p99 {record['latency_p99_ms']:.2f} ms, "
            f"{record['server_cpu_us_per_round_trip']:.1f} us CPU/round trip, "
            f"server {record['server_cpu']:.0%}, client {record['client_cpu']:.0%}"
        )
    if record["workload"] == "instructions":
        return (
            f"{record['connections']} connections, {record['round_trips']:,} round trips, "
            f"{record['instructions_per_round_trip']:,.0f} instructions each"
        )
    if record["workload"] == "idle":
        return (
            f"{record['connections']:,} connections, {record['rss_per_connection_kib']:.1f} "
            f"KiB each, {record['opens_per_s']:,.0f} opens/s, client {record['client_cpu']:.0%}"
        )
    if record["workload"] in ("broadcast", "fanout"):
        return (
            f"{record['connections']:,} subscribers, {record['deliveries']:,} deliveries, "
            f"{record['server_cpu_us_per_delivery']:.1f} us CPU/delivery, "
            f"p50 {record['latency_p50_ms']:.1f} ms, p99 {record['latency_p99_ms']:.1f} ms, "
            f"max {record['latency_max_ms']:.1f} ms, server RSS {record['rss_mib']:.0f} MiB "
            f"({record['rss_per_subscriber_kib']:.1f} KiB/subscriber), "
            f"client {record['client_cpu_fanout']:.0%} in fan-outs"
        )
    return (
        f"{record['connections']:,} connections, lateness p99 {record['lateness_p99_ms']:.1f} ms, "
        f"server {record['server_cpu']:.0%}, client {record['client_cpu']:.0%}"
    )


def run(args: argparse.Namespace) -> Path:
    settings = settings_from(args)
    repetitions = 1 if args.smoke else args.repetitions
    if repetitions < 1:
        raise BenchError("--repetitions must be 1 or more.")
    check_limits(settings)
    ensure_client()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    default = TEMPLATE / "build" / "bench-smoke" if args.smoke else BENCH / "results" / today
    output: Path = (args.output or default).resolve()
    output.mkdir(parents=True, exist_ok=True)
    server_cpu, client_cpu, pinning = pinning_cpus()
    started = time.monotonic()
    records: list[workloads.Record] = []
    not_measured: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ws-template-bench-") as scratch:
        work = Path(scratch)
        specs = server_specs(render_projects(work / "render"), settings.tick_seconds)
        specs = [spec for spec in specs if spec.key in args.servers]
        then = template_at(args.compare, work / "at") if args.compare else None
        if then is not None:
            before = render_projects(work / "render-before", then)
            specs += before_specs(specs, before, args.compare)
        labels = {spec.key: spec.label for spec in specs}
        say(f"Benchmark: {pinning}; results go to {output}")
        tickers = [spec for spec in specs if spec.ticker_path]
        for workload in args.workloads:
            if workload == "keepalive":
                measures = [
                    partial(workloads.keepalive, connections=c, settings=settings, cpu=client_cpu)
                    for c in settings.connections
                ]
                records += side_by_side(workload, specs, repetitions, server_cpu, work, measures)
            elif workload == "instructions":
                if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
                    say("Skipping the instructions workload: valgrind is not installed.")
                    continue
                folder = work / "callgrind"
                folder.mkdir()
                count = partial(
                    workloads.instructions, settings=settings, cpu=client_cpu, folder=folder
                )
                wrapper = workloads.callgrind(folder)
                records += side_by_side(
                    workload, specs, repetitions, server_cpu, work, [count], wrapper
                )
            elif workload == "idle":
                idle = partial(workloads.idle, settings=settings, cpu=client_cpu)
                records += one_at_a_time(workload, specs, repetitions, server_cpu, work, idle)
            elif workload == "ticker":
                ticker = partial(workloads.ticker, settings=settings, cpu=client_cpu)
                records += one_at_a_time(workload, tickers, repetitions, server_cpu, work, ticker)
            elif workload == "fanout":
                records += fanout_runs(
                    settings,
                    repetitions,
                    (server_cpu, client_cpu),
                    work,
                    labels,
                    (args.compare, then) if args.compare and then is not None else None,
                )
            else:
                records += broadcast_runs(
                    args.broadcast_backends,
                    [kept == "on" for kept in dict.fromkeys(args.broadcast_history)],
                    settings,
                    repetitions,
                    (server_cpu, client_cpu),
                    work,
                    labels,
                    not_measured,
                    (args.compare, then) if args.compare and then is not None else None,
                )
    minutes = (time.monotonic() - started) / 60
    write_results(output, records, labels, not_measured, settings, repetitions, pinning, minutes)
    return output


def broadcast_runs(
    backends: Sequence[str],
    history: Sequence[bool],
    settings: workloads.Settings,
    repetitions: int,
    cpus: tuple[int | None, int | None],
    work: Path,
    labels: dict[str, str],
    not_measured: dict[str, str],
    compare: tuple[str, Path] | None = None,
) -> list[workloads.Record]:
    """The broadcast workload: each backend with each of ``history`` (True: the channel
    history on, False: off) in turn (A B A B) at each subscriber count.

    The Redis backend's servers share one redis-server, started for the workload on the
    server's CPU and stopped after it. Without redis-server the Redis backend is not
    measured, and ``not_measured`` says why. ``labels`` gets the servers' labels. With
    ``compare`` (a commit and the template at it), each server runs again rendered from it.
    """
    server_cpu, client_cpu = cpus
    missing = RedisServer.unavailable() if "redis" in backends else None
    if missing:
        for kept in history:
            not_measured[broadcast_key("redis", kept)] = missing
            labels[broadcast_key("redis", kept)] = broadcast_label("redis", kept)
        say(f"Not measuring broadcast through Redis: {missing}.")
        backends = [backend for backend in backends if backend != "redis"]
    projects = render_broadcast_projects(work / "render-broadcast", backends)
    records: list[workloads.Record] = []
    with ExitStack() as stack:
        redis = None
        if "redis" in projects:
            redis = stack.enter_context(RedisServer())
            pin(redis.pid, server_cpu)
        specs = [
            broadcast_spec(backend, project, redis.url if redis else None, kept)
            for backend, project in projects.items()
            for kept in history
        ]
        if compare is not None:  # each server again, rendered from the template at a commit
            commit, template = compare
            then = render_broadcast_projects(work / "render-broadcast-before", backends, template)
            specs += [
                before_spec(spec, then[spec.backend], commit)
                for spec in specs
                if spec.backend is not None
            ]
        labels.update({spec.key: spec.label for spec in specs})
        for subscribers in settings.broadcast_subscribers:
            measure = partial(
                workloads.broadcast,
                subscribers=subscribers,
                settings=settings,
                cpu=client_cpu,
                redis=redis,
            )
            records += one_at_a_time("broadcast", specs, repetitions, server_cpu, work, measure)
    return records


def fanout_runs(
    settings: workloads.Settings,
    repetitions: int,
    cpus: tuple[int | None, int | None],
    work: Path,
    labels: dict[str, str],
    compare: tuple[str, Path] | None = None,
) -> list[workloads.Record]:
    """The fan-out workload (issue 30): the broadcast workload's one room, on the generated
    service in each flavour, on two peers and on the floor (`fanout_specs`), in turn
    (A B C D E A B C D E) at each subscriber count; its records have the workload
    ``fanout``. ``labels`` gets the servers' labels. With ``compare`` (a commit and the
    template at it), each flavour runs again rendered from it, in the same turns."""
    server_cpu, client_cpu = cpus
    specs = fanout_specs(render_fanout_projects(work / "render-fanout"))
    if compare is not None:
        commit, template = compare
        then = render_fanout_projects(work / "render-fanout-before", template)
        specs += [
            before_spec(spec, then[spec.key.removeprefix("fanout-")], commit)
            for spec in specs
            if spec.backend is not None
        ]
    labels.update({spec.key: spec.label for spec in specs})
    records: list[workloads.Record] = []
    for subscribers in settings.broadcast_subscribers:

        def measure(server: RunningServer, count: int = subscribers) -> workloads.Record:
            record = workloads.broadcast(server, count, settings, client_cpu)
            return {**record, "workload": "fanout"}

        records += one_at_a_time("fanout", specs, repetitions, server_cpu, work, measure)
    return records


def write_results(
    output: Path,
    records: list[workloads.Record],
    labels: dict[str, str],
    not_measured: dict[str, str],
    settings: workloads.Settings,
    repetitions: int,
    pinning: str,
    minutes: float,
) -> None:
    """results.json (everything measured, and why some server was not), then the report
    and the plots made from it."""
    data = {
        "command": shlex.join(["bench/run.py", *sys.argv[1:]]),
        "finished": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "minutes": minutes,
        "smoke": settings == SMOKE,
        "machine": machine(),
        "pinning": pinning,
        "repetitions": repetitions,
        "settings": asdict(settings),
        "labels": labels,
        "not_measured": not_measured,
        "records": records,
    }
    (output / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    write_report(output)


def write_report(output: Path) -> None:
    """results.md and the plots, from ``output/results.json``."""
    source = output / "results.json"
    if not source.exists():
        raise BenchError(f"{source} does not exist: give --report the folder of a run.")
    data = json.loads(source.read_text())
    results = report.Results(data["records"], data["labels"], data.get("not_measured", {}))
    plots = [
        *report.plot_keepalive(results, output),
        *report.plot_instructions(results, output),
        *report.plot_memory(results, output),
        *report.plot_broadcast(results, output),
    ]
    smoke = "**Smoke run: tiny counts and windows; its figures mean nothing.**\n\n"
    machine_text = ", ".join(f"{key} {value}" for key, value in data["machine"].items())
    servers = "; ".join(f"`{key}`: {label}" for key, label in data["labels"].items())
    header = "\n".join(
        [
            f"# ws-template benchmark, {data['finished']}",
            "",
            (smoke if data["smoke"] else "")
            + f"`.venv/bin/python {data['command']}` ({data['minutes']:.0f} min). Each figure "
            f"is the median of {data['repetitions']} interleaved runs, ± half its range; "
            "uvicorn with its defaults (`--ws auto`: websockets-sansio), 127.0.0.1, no "
            f"permessage-deflate offered; {data['pinning']}.",
            "",
            f"Machine: {machine_text}.",
            "",
            f"Servers: {servers}.",
        ]
    )
    text = report.markdown(results, header)
    if plots:
        text += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    (output / "results.md").write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        if args.report:
            output = args.report.resolve()
            write_report(output)
        else:
            output = run(args)
    except BenchError as error:
        print(f"bench/run.py: {error}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        print(f"bench/run.py: {shlex.join(map(str, error.cmd))} failed", file=sys.stderr)
        return 1
    print((output / "results.md").read_text())
    say(f"Written: {output / 'results.md'}, results.json and the plots beside it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
