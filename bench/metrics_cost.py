"""What metrics cost (issue 14): instructions per keepalive round trip and per broadcast
delivery, with metrics on and off, in one run.

    .venv/bin/python bench/metrics_cost.py               2 repetitions (about 10 minutes)
    .venv/bin/python bench/metrics_cost.py --smoke       small counts, one repetition

Renders the default project (each flavour) and a broadcast project (memory hub), starts each
under callgrind with ``METRICS_ENABLED`` yes and no (interleaved, the order swapped every
repetition), and counts the server's user-space instructions: per keepalive round trip
(bench's ``instructions`` workload) and per broadcast delivery (a room of subscribers,
messages published one at a time). Instruction counts do not depend on the machine's load,
so the ratio on/off is steady where timings are not. Prints a table and writes
``metrics-cost.md`` and ``metrics-cost.json`` to ``--output`` (default
``bench/results/<date>/``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import workloads
from bench.loadgen import BenchError, ensure_client
from bench.servers import (
    BEFORE,
    BENCH,
    RunningServer,
    ServerSpec,
    before_specs,
    broadcast_spec,
    pinning_cpus,
    render_broadcast_projects,
    render_projects,
    server_specs,
    template_at,
)

SWITCH = {"on": "yes", "off": "no"}
"""``METRICS_ENABLED`` for each side."""


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small counts, one repetition")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--output", type=Path, help="default: bench/results/<date>/")
    parser.add_argument(
        "--compare",
        metavar="COMMIT",
        help="also measure the projects rendered from the template at COMMIT, in the same "
        "run (keys with -before): a change's before and after",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=("keepalive", "broadcast"),
        default=["keepalive", "broadcast"],
    )
    return parser.parse_args(argv)


def with_metrics(spec: ServerSpec, side: str) -> ServerSpec:
    return replace(
        spec, key=f"{spec.key}-metrics-{side}", env={**spec.env, "METRICS_ENABLED": SWITCH[side]}
    )


def measure_pair(
    spec: ServerSpec,
    measure: Callable[[RunningServer, Path], workloads.Record],
    figure: str,
    repetitions: int,
    server_cpu: int | None,
    work: Path,
) -> list[workloads.Record]:
    """``measure`` on ``spec`` with metrics on and off, alternately, each on a fresh server."""
    records = []
    for rep in range(repetitions):
        for side in ("on", "off") if rep % 2 == 0 else ("off", "on"):
            folder = work / f"callgrind-{spec.key}-{side}-{rep}"
            folder.mkdir(parents=True)
            sided = with_metrics(spec, side)
            log = work / f"{sided.key}-{rep}.log"
            with RunningServer(sided, server_cpu, log, workloads.callgrind(folder)) as server:
                record = measure(server, folder)
            records.append({"server": spec.key, "metrics": side, "rep": rep, **record})
            print(
                f"[{rep + 1}/{repetitions}] {sided.key}: {record[figure]:,.0f} {figure}", flush=True
            )
    return records


def table(records: list[workloads.Record]) -> str:
    rows = [
        "| server | figure | metrics on | metrics off | on / off |",
        "|---|---|---:|---:|---:|",
    ]
    for server in dict.fromkeys(record["server"] for record in records):
        mine = [record for record in records if record["server"] == server]
        figure = (
            "instructions_per_round_trip"
            if "instructions_per_round_trip" in mine[0]
            else "instructions_per_delivery"
        )
        on = median(record[figure] for record in mine if record["metrics"] == "on")
        off = median(record[figure] for record in mine if record["metrics"] == "off")
        name = figure.removeprefix("instructions_").replace("_", " ")
        rows.append(f"| {server} | instructions {name} | {on:,.0f} | {off:,.0f} | {on / off:.3f} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("valgrind is not installed: nothing to count with.", file=sys.stderr)
        return 1
    repetitions = 1 if args.smoke else args.repetitions
    settings = replace(
        workloads.Settings(),
        counted_round_trips=200 if args.smoke else args.round_trips,
        broadcast_messages=2 if args.smoke else args.messages,
        broadcast_warmup_messages=1,
        broadcast_interval=0.05,
        broadcast_fanout_timeout=120.0,
    )
    subscribers = 10 if args.smoke else args.subscribers
    ensure_client()
    server_cpu, client_cpu, pinning = pinning_cpus()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    output: Path = (args.output or BENCH / "results" / today).resolve()
    output.mkdir(parents=True, exist_ok=True)
    records: list[workloads.Record] = []
    try:
        with tempfile.TemporaryDirectory(prefix="ws-template-metrics-cost-") as scratch:
            work = Path(scratch)
            specs = server_specs(render_projects(work / "render"), settings.tick_seconds)

            def keepalive(server: RunningServer, folder: Path) -> workloads.Record:
                return workloads.instructions(server, settings, client_cpu, folder)

            def fanout(server: RunningServer, folder: Path) -> workloads.Record:
                return workloads.broadcast_instructions(
                    server, subscribers, settings, client_cpu, folder
                )

            keepalive_specs = specs[:2] if "keepalive" in args.workloads else []
            before = template_at(args.compare, work / "at") if args.compare else None
            if before is not None and keepalive_specs:
                projects = render_projects(work / "render-before", before)
                keepalive_specs += before_specs(keepalive_specs, projects, args.compare)
            for spec in keepalive_specs:  # the two flavours of the generated service
                records += measure_pair(
                    spec, keepalive, "instructions_per_round_trip", repetitions, server_cpu, work
                )
            if "broadcast" in args.workloads:
                rendered = render_broadcast_projects(work / "render-broadcast", ["memory"])
                broadcast_specs = [broadcast_spec("memory", rendered["memory"])]
                if before is not None:
                    then = render_broadcast_projects(work / "render-bb", ["memory"], before)
                    spec = broadcast_spec("memory", then["memory"])
                    broadcast_specs.append(replace(spec, key=spec.key + BEFORE))
                for spec in broadcast_specs:
                    records += measure_pair(
                        spec, fanout, "instructions_per_delivery", repetitions, server_cpu, work
                    )
    except BenchError as error:
        print(f"metrics_cost: {error}", file=sys.stderr)
        return 1
    report = (
        f"# What metrics cost ({today})\n\n"
        f"`{' '.join(['bench/metrics_cost.py', *(argv if argv is not None else sys.argv[1:])])}`: "
        f"user-space instructions counted by callgrind, median of {repetitions} "
        f"repetition(s), METRICS_ENABLED yes vs no on the same rendered project; keepalive: "
        f"{settings.counted_round_trips} round trips over {settings.counted_connections} "
        f"connections; broadcast: {subscribers} subscribers, {settings.broadcast_messages} "
        f"messages (memory hub, history on). {pinning}."
        + (f" Keys ending {BEFORE}: the template at {args.compare}." if args.compare else "")
        + f"\n\n{table(records)}\n"
    )
    name = "metrics-cost" + "".join(f"-{w}" for w in args.workloads if len(args.workloads) == 1)
    name += f"-vs-{args.compare}" if args.compare else ""
    (output / f"{name}.md").write_text(report)
    (output / f"{name}.json").write_text(json.dumps(records, indent=2) + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
