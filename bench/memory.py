"""Where the bytes of idle connections go: tracemalloc on a generated server (issue 16).

    .venv/bin/python bench/memory.py                     10,000 idle connections, each flavour
    .venv/bin/python bench/memory.py --connections 2000 --flavours asgi
    .venv/bin/python bench/memory.py --broadcast         10,000 subscribers of one room (issue 30)

Renders the default project (each flavour), starts it with uvicorn's defaults under
``traced_server.py`` (tracemalloc on, ``--frames`` frames), opens the connections with the benchmark's
load generator (idle mode: each answers one keepalive, then idles), and takes a snapshot
before they open and another while they are held. Prints, per connection held: the
server's RSS growth, the growth that tracemalloc sees (Python's allocations), the top
lines and tracebacks that allocated it, and the live objects the garbage collector tracks,
by type. With ``--broadcast`` the project has a broadcast room (memory hub) and the
connections are its subscribers (the broadcast workload's load generator, paused once they
are all subscribed): the snapshots are before the first connection and then.
tracemalloc's own bookkeeping inflates RSS, so RSS here is not the benchmark's
figure (bench/run.py --workloads idle measures that, untraced). ``--output FILE`` writes
the report to a file too.
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import BenchError, Client, Event, ensure_client, sample
from bench.run import raise_open_file_limit
from bench.servers import (
    BENCH,
    RunningServer,
    ServerSpec,
    fanout_specs,
    pinning_cpus,
    render_fanout_projects,
    render_projects,
    server_specs,
)
from bench.workloads import local_addresses

KIB = 1024


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument(
        "--flavours", nargs="+", choices=("fastapi", "asgi"), default=["fastapi", "asgi"]
    )
    parser.add_argument("--top", type=int, default=15, help="rows in each table")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds held before the snapshot"
    )
    parser.add_argument("--frames", type=int, default=2, help="frames tracemalloc keeps")
    parser.add_argument(
        "--open-concurrency", type=int, default=10, help="handshakes in flight (traced: slow)"
    )
    parser.add_argument(
        "--broadcast", action="store_true", help="subscribers of one broadcast room, not idle"
    )
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    return parser.parse_args(argv)


def snapshot(server: RunningServer, folder: Path, number: int) -> None:
    """Ask the traced server for snapshot ``number`` and wait until it is written."""
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 300
    while not (folder / f"done-{number}").exists():
        if time.monotonic() > deadline:
            raise BenchError(f"the traced server wrote no snapshot {number} in 300 s")
        time.sleep(0.2)


def traced(project: Path, flavour: str, args: argparse.Namespace, work: Path) -> str:
    connections, settle, top = args.connections, args.settle, args.top
    if args.broadcast:
        spec = next(s for s in fanout_specs({flavour: project}) if s.key == f"fanout-{flavour}")
    else:
        spec = next(
            s
            for s in server_specs({"fastapi": project, "asgi": project}, 1.0)
            if s.key == f"generated-{flavour}"
        )
    folder = work / f"trace-{flavour}"
    folder.mkdir()
    spec = replace(
        spec,
        command=(str(BENCH / "traced_server.py"), *spec.command[2:]),  # not "-m uvicorn"
        env={**spec.env, "TRACE_DIR": str(folder), "TRACE_FRAMES": str(args.frames)},
    )
    server_cpu, client_cpu, _ = pinning_cpus()
    rss: dict[str, int] = {}
    with RunningServer(spec, server_cpu, work / f"trace-{flavour}.log") as server:

        def on_event(event: Event, client: Client) -> None:
            if event["event"] == "ready":
                time.sleep(0.5)
                snapshot(server, folder, 1)
                rss["before"] = sample(server.pid).rss_bytes
                client.tell("go")
            elif event["event"] == "opened":
                time.sleep(settle)
                rss["held"] = sample(server.pid).rss_bytes
                snapshot(server, folder, 2)
                client.tell("close")

        options = {"connections": connections, "open-concurrency": args.open_concurrency}
        options["handshake-timeout"] = 600  # a traced server can stall for seconds
        options["local-addresses"] = local_addresses(connections)
        if args.broadcast:
            subscribed(server, spec, options, folder, settle, rss, client_cpu)
        else:
            Client("idle", server.ws_url(spec.keepalive_path), options, client_cpu).run(
                on_event, timeout=1200
            )
    return analyse(flavour, folder, connections, rss, top)


def subscribed(
    server: RunningServer,
    spec: ServerSpec,
    options: dict[str, float],
    folder: Path,
    settle: float,
    rss: dict[str, int],
    client_cpu: int | None,
) -> None:
    """Snapshot 1, then open the room's subscribers (and its publisher) and, once they are
    all subscribed, snapshot 2; then one message reaches them all (checked) and they close."""
    time.sleep(0.5)
    snapshot(server, folder, 1)
    rss["before"] = sample(server.pid).rss_bytes

    def on_event(event: Event, client: Client) -> None:
        if event["event"] == "paused":
            time.sleep(settle)
            rss["held"] = sample(server.pid).rss_bytes
            snapshot(server, folder, 2)
            client.tell("go")

    options = {**options, "messages": 1, "warmup-messages": 0, "pause": 1, "fanout-timeout": 600}
    assert spec.broadcast_path is not None
    Client("broadcast", server.ws_url(spec.broadcast_path), options, client_cpu).run(
        on_event, timeout=1200
    )


def analyse(flavour: str, folder: Path, connections: int, rss: dict[str, int], top: int) -> str:
    before = tracemalloc.Snapshot.load(str(folder / "snapshot-1.pickle"))
    held = tracemalloc.Snapshot.load(str(folder / "snapshot-2.pickle"))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, held = before.filter_traces(ignore), held.filter_traces(ignore)
    per = 1 / connections
    traced_growth = sum(s.size for s in held.statistics("filename")) - sum(
        s.size for s in before.statistics("filename")
    )
    lines = [
        f"## {flavour} flavour, {connections:,} connections",
        "",
        f"- RSS growth per connection (under tracemalloc): "
        f"{(rss['held'] - rss['before']) * per / KIB:.1f} KiB",
        f"- Python allocations (tracemalloc) per connection: {traced_growth * per / KIB:.1f} KiB",
        "",
        "### By file",
        "",
        "| file | bytes/connection | blocks/connection |",
        "| --- | --- | --- |",
    ]
    for stat in held.compare_to(before, "filename")[:top]:
        name = short(stat.traceback[0].filename)
        lines.append(f"| {name} | {stat.size_diff * per:,.0f} | {stat.count_diff * per:.1f} |")
    lines += ["", "### By line", "", "| line | code | bytes/connection | blocks/connection |"]
    lines.append("| --- | --- | --- | --- |")
    for stat in held.compare_to(before, "lineno")[:top]:
        frame = stat.traceback[0]
        code = linecache.getline(frame.filename, frame.lineno).strip().replace("|", "\\|")[:70]
        lines.append(
            f"| {short(frame.filename)}:{frame.lineno} | `{code}` | "
            f"{stat.size_diff * per:,.0f} | {stat.count_diff * per:.1f} |"
        )
    lines += ["", "### By traceback (innermost last)", ""]
    for stat in held.compare_to(before, "traceback")[: max(top // 2, 5)]:
        lines.append(
            f"- {stat.size_diff * per:,.0f} B, {stat.count_diff * per:.1f} blocks per connection: "
            + " <- ".join(f"{short(f.filename)}:{f.lineno}" for f in reversed(list(stat.traceback)))
        )
    objects_before = json.loads((folder / "objects-1.json").read_text())
    objects_held = json.loads((folder / "objects-2.json").read_text())
    growth = {
        name: (
            count - objects_before.get(name, [0, 0])[0],
            size - objects_before.get(name, [0, 0])[1],
        )
        for name, (count, size) in objects_held.items()
    }
    lines += [
        "",
        "### Live objects the garbage collector tracks, by type (sys.getsizeof, shallow)",
        "",
        "| type | objects/connection | bytes/connection |",
        "| --- | --- | --- |",
    ]
    for name, (count, size) in sorted(growth.items(), key=lambda item: -item[1][1])[:top]:
        lines.append(f"| {name} | {count * per:.2f} | {size * per:,.0f} |")
    return "\n".join(lines) + "\n"


def short(filename: str) -> str:
    """A file name without the site-packages or project prefix."""
    for marker in ("site-packages/", "/lib/python3", "render/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        raise_open_file_limit(args.connections + 1000)
        ensure_client()
        with tempfile.TemporaryDirectory(prefix="ws-template-memory-") as scratch:
            work = Path(scratch)
            render = render_fanout_projects if args.broadcast else render_projects
            projects = render(work / "render")
            sections = [traced(projects[f], f, args, work) for f in args.flavours]
    except BenchError as error:
        print(f"bench/memory.py: {error}", file=sys.stderr)
        return 1
    what = "subscribed connections" if args.broadcast else "idle connections"
    text = f"# Where the bytes of {what} go (tracemalloc)\n\n" + "\n".join(sections)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
