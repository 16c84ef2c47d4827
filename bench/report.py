"""The benchmark's report: medians and spreads, ratios to each baseline, the table, the plots.

Works from the records of ``workloads`` (as saved in results.json), each with the keys
``server`` (a `ServerSpec` key) and ``rep`` (the repetition) added. A figure is the median
of its repetitions; its spread is half its range (max - min) over the median. A ratio of
two servers is the median of the ratios within each repetition, which pairs the runs that
were made side by side (the runs are interleaved: A B A B).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt
from matplotlib.ticker import LogFormatter, NullFormatter

Record = Mapping[str, Any]

GENERATED = ("generated-fastapi", "generated-asgi")
BASELINES = ("docs-fastapi", "raw-asgi-echo", "raw-asgi-json", "websockets")
COLORS = {
    "generated-fastapi": "#1f77b4",
    "generated-asgi": "#2ca02c",
    "docs-fastapi": "#ff7f0e",
    "raw-asgi-echo": "#7f7f7f",
    "raw-asgi-json": "#bcbd22",
    "websockets": "#9467bd",
    "broadcast-memory": "#1f77b4",
    "broadcast-memory-nohistory": "#9ecae1",
    "broadcast-redis": "#d62728",
    "broadcast-redis-nohistory": "#fc9272",
}
FANOUT_PEER = "fanout-websockets"
"""The fan-out workload's reference for issue 30's goals: the ``websockets`` server with
``websockets.broadcast()``."""
FANOUT_FLOOR = "fanout-floor"
"""The fan-out workload's floor, not a peer: the ``websockets`` server writing one frame,
built once per message, to every connection's transport, with nothing checked."""
FANOUT_GOALS = {
    "fanout-fastapi": {
        "server_cpu_us_per_delivery": 0.8,
        "latency_p99_ms": 1.0,
        "rss_per_subscriber_kib": 1.3,
    },
    "fanout-asgi": {
        "server_cpu_us_per_delivery": 0.8,
        "latency_p99_ms": 1.0,
        "rss_per_subscriber_kib": 1.0,
    },
}
"""Issue 30's goals at `BROADCAST_TARGET_SUBSCRIBERS`: each generated flavour's figure over
`FANOUT_PEER`'s, paired by repetition, at most this."""
FANOUT_FIGURES = {
    "server_cpu_us_per_delivery": "server CPU us/delivery",
    "server_system_us_per_delivery": "of which system (kernel) us/delivery",
    "latency_p50_ms": "delivery p50 ms",
    "latency_p99_ms": "delivery p99 ms",
    "fanout_p50_ms": "last subscriber p50 ms",
    "rss_per_subscriber_kib": "KiB per subscribed connection",
    "client_cpu_fanout": "load generator CPU in fan-outs",
    "others_cpu": "other processes' CPU",
}
FANOUT_SHARES = ("client_cpu_fanout", "others_cpu")
"""The `FANOUT_FIGURES` that are shares of a core."""
FANOUT_RATIOS = ("server_cpu_us_per_delivery", "latency_p99_ms", "rss_per_subscriber_kib")
"""The `FANOUT_FIGURES` that the report sets against `FANOUT_PEER`'s and `FANOUT_FLOOR`'s."""
BROADCAST_TARGET_SUBSCRIBERS = 10_000
HISTORY_CPU_GOAL = 1.10
"""Issue 12's goal: server CPU per delivery with history on at most this times that with it off."""


@dataclass(frozen=True)
class Figure:
    """The median of some repetitions and their range."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Figure:
        values = list(values)
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def spread(self) -> float:
        """Half the range, as a share of the median."""
        return (self.high - self.low) / 2 / self.median if self.median else 0.0


def number(value: float) -> str:
    """A figure with three significant digits, large ones in thousands (``31.4k``)."""
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f}k"
    if abs(value) >= 1000:
        return f"{value / 1000:.2f}k"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"


def with_spread(figure: Figure, format: Callable[[float], str] = number) -> str:
    return f"{format(figure.median)} ±{figure.spread:.0%}"


def percent(value: float) -> str:
    return f"{value:.0%}"


def fine_percent(value: float) -> str:
    return f"{value:.1%}"


def ratio_text(figure: Figure) -> str:
    return f"{figure.median:.2f}x ({figure.low:.2f}-{figure.high:.2f})"


class Results:
    """The records of one run, grouped for the report."""

    def __init__(
        self,
        records: Sequence[Record],
        labels: Mapping[str, str],
        not_measured: Mapping[str, str] | None = None,
    ) -> None:
        self.records = records
        self.labels = labels
        self.not_measured = dict(not_measured or {})
        """Servers of the run that could not be measured, with the reason."""

    def servers(self, workload: str) -> list[str]:
        """The servers measured in ``workload``, in their run order."""
        seen = dict.fromkeys(r["server"] for r in self.records if r["workload"] == workload)
        return list(seen)

    def connections(self, workload: str) -> list[int]:
        return sorted({int(r["connections"]) for r in self.records if r["workload"] == workload})

    def runs(self, workload: str, server: str, connections: int | None = None) -> list[Record]:
        return [
            r
            for r in self.records
            if r["workload"] == workload
            and r["server"] == server
            and (connections is None or r["connections"] == connections)
        ]

    def figure(
        self, workload: str, server: str, key: str, connections: int | None = None
    ) -> Figure | None:
        values = [float(r[key]) for r in self.runs(workload, server, connections)]
        return Figure.of(values) if values else None

    def ratio(
        self,
        workload: str,
        key: str,
        numerator: str,
        denominator: str,
        connections: int | None = None,
    ) -> Figure | None:
        """``numerator``'s figure over ``denominator``'s, paired by repetition."""
        tops = {r["rep"]: float(r[key]) for r in self.runs(workload, numerator, connections)}
        bottoms = {r["rep"]: float(r[key]) for r in self.runs(workload, denominator, connections)}
        ratios = [tops[rep] / bottoms[rep] for rep in tops.keys() & bottoms.keys() if bottoms[rep]]
        return Figure.of(ratios) if ratios else None


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = [f"| {' | '.join(header)} |", f"|{' --- |' * len(header)}"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def cell(figure: Figure | None, format: Callable[[float], str] = number) -> str:
    return with_spread(figure, format) if figure else "-"


def keepalive_table(results: Results) -> str:
    rows = []
    for server in results.servers("keepalive"):
        for connections in results.connections("keepalive"):
            if not results.runs("keepalive", server, connections):
                continue

            def get(key: str, s: str = server, c: int = connections) -> Figure | None:
                return results.figure("keepalive", s, key, c)

            rows.append(
                [
                    results.labels[server],
                    str(connections),
                    cell(get("round_trips_per_s")),
                    cell(get("latency_p50_ms")),
                    cell(get("latency_p99_ms")),
                    cell(get("server_cpu_us_per_round_trip")),
                    cell(get("server_cpu"), percent),
                    cell(get("client_cpu"), percent),
                    cell(get("others_cpu"), percent),
                ]
            )
    header = [
        "server",
        "connections",
        "round trips/s",
        "p50 ms",
        "p99 ms",
        "server CPU us/round trip",
        "server CPU",
        "client CPU",
        "other processes' CPU",
    ]
    return table(header, rows)


def ratio_rows(
    results: Results,
    workload: str,
    metrics: Sequence[tuple[str, str, bool]],
    connections: Sequence[int | None],
) -> list[list[str]]:
    """One row per generated server, baseline and connection count; ``metrics`` are
    (key, title, higher is better): a lower-is-better ratio is inverted (baseline/generated),
    so above 1.00x always means the generated service is ahead."""
    rows = []
    generated = [s for s in results.servers(workload) if s in GENERATED]
    baselines = [s for s in results.servers(workload) if s in BASELINES]
    for server in generated:
        for baseline in baselines:
            for count in connections:
                cells = []
                for key, _, higher_is_better in metrics:
                    top, bottom = (server, baseline) if higher_is_better else (baseline, server)
                    ratio = results.ratio(workload, key, top, bottom, count)
                    cells.append(ratio_text(ratio) if ratio else "-")
                if any(c != "-" for c in cells):
                    head = [results.labels[server], results.labels[baseline]]
                    rows.append(head + ([str(count)] if count is not None else []) + cells)
    return rows


def keepalive_ratios(results: Results) -> str:
    metrics = [
        ("round_trips_per_s", "round trips/s", True),
        ("server_cpu_us_per_round_trip", "server CPU per round trip", False),
    ]
    rows = ratio_rows(results, "keepalive", metrics, results.connections("keepalive"))
    header = ["generated", "baseline", "connections"] + [
        f"{title} ({'generated/baseline' if up else 'baseline/generated'})"
        for _, title, up in metrics
    ]
    return table(header, rows)


CEILINGS = ("raw-asgi-json", "raw-asgi-echo")
"""The two ceilings on uvicorn: (4) the same work (orjson, nothing else) and (2) the echo."""


def ceiling_table(results: Results) -> str:
    """Each flavour against the two ceilings, side by side: round trips/s (flavour/ceiling),
    server CPU and instructions per round trip (ceiling/flavour); 1.00x is the ceiling."""
    rows = []
    measures = [
        ("keepalive", "round_trips_per_s", True),
        ("keepalive", "server_cpu_us_per_round_trip", False),
        ("instructions", "instructions_per_round_trip", False),
    ]
    counts = sorted({*results.connections("keepalive"), *results.connections("instructions")})
    for server in (s for s in GENERATED if s in results.labels):
        for count in counts:
            cells = []
            for workload, key, higher_is_better in measures:
                for ceiling in CEILINGS:
                    top, bottom = (server, ceiling) if higher_is_better else (ceiling, server)
                    ratio = results.ratio(workload, key, top, bottom, count)
                    cells.append(ratio_text(ratio) if ratio else "-")
            if any(c != "-" for c in cells):
                rows.append([results.labels[server], str(count), *cells])
    header = ["generated", "connections"]
    for title in ("round trips/s", "server CPU/round trip", "instructions/round trip"):
        header += [f"{title} vs (4) same work", f"{title} vs (2) echo"]
    return table(header, rows)


BEFORE = "-before"
"""The suffix of a generated server rendered from an earlier commit (bench/run.py --compare)."""


def before_after_table(results: Results) -> str:
    """Each generated server against itself rendered at the earlier commit, paired by
    repetition: after/before, so below 1.00x the change made the figure smaller."""
    measures = [
        ("idle", "rss_per_connection_kib", "RSS KiB/connection", None),
        ("idle", "server_cpu_ms_per_open", "server CPU ms/open", None),
        *(
            ("keepalive", key, f"{title}, {count} connections", count)
            for count in results.connections("keepalive")
            for key, title in (
                ("round_trips_per_s", "round trips/s"),
                ("server_cpu_us_per_round_trip", "server CPU us/round trip"),
            )
        ),
        *(
            ("instructions", "instructions_per_round_trip", f"instructions/round trip, {c}", c)
            for c in results.connections("instructions")
        ),
    ]
    broadcast = [
        ("broadcast", key, f"{title}, {count:,} subscribers", count)
        for count in results.connections("broadcast")
        for key, title in (
            ("latency_p50_ms", "delivery p50 ms"),
            ("latency_p99_ms", "delivery p99 ms"),
            ("fanout_p50_ms", "last subscriber p50 ms"),
            ("server_cpu_us_per_delivery", "server CPU us/delivery"),
            ("rss_mib", "RSS MiB"),
        )
    ]
    servers = [(server, measures) for server in GENERATED] + [
        (server, broadcast) for server in results.servers("broadcast") if BEFORE not in server
    ]
    rows = []
    for server, server_measures in servers:
        before = server + BEFORE
        for workload, key, title, count in server_measures:
            after_figure = results.figure(workload, server, key, count)
            before_figure = results.figure(workload, before, key, count)
            ratio = results.ratio(workload, key, server, before, count)
            if ratio and after_figure and before_figure:
                rows.append(
                    [
                        results.labels[server],
                        title,
                        cell(before_figure),
                        cell(after_figure),
                        ratio_text(ratio),
                    ]
                )
    header = ["generated", "figure", "before", "after", "after/before (median, range)"]
    return table(header, rows)


def instructions_table(results: Results) -> str:
    rows = []
    for server in results.servers("instructions"):
        for count in results.connections("instructions"):
            runs = results.runs("instructions", server, count)
            if runs:
                figure = results.figure(
                    "instructions", server, "instructions_per_round_trip", count
                )
                rows.append(
                    [
                        results.labels[server],
                        str(count),
                        f"{runs[0]['round_trips']:,}",
                        cell(figure),
                    ]
                )
    header = ["server", "connections", "round trips counted", "instructions/round trip"]
    metrics = [("instructions_per_round_trip", "instructions per round trip", False)]
    ratio_header = [
        "generated",
        "baseline",
        "connections",
        "instructions per round trip (baseline/generated)",
    ]
    rows_of_ratios = ratio_rows(
        results, "instructions", metrics, results.connections("instructions")
    )
    return f"{table(header, rows)}\n\n{table(ratio_header, rows_of_ratios)}"


def idle_table(results: Results) -> str:
    rows = []
    for server in results.servers("idle"):

        def get(key: str, s: str = server) -> Figure | None:
            return results.figure("idle", s, key)

        rows.append(
            [
                results.labels[server],
                f"{results.runs('idle', server)[0]['connections']:,}",
                cell(get("rss_per_connection_kib")),
                cell(get("rss_mib")),
                cell(get("open_seconds")),
                cell(get("opens_per_s")),
                cell(get("server_cpu_ms_per_open")),
                cell(get("client_cpu"), percent),
            ]
        )
    header = [
        "server",
        "connections",
        "RSS KiB/connection",
        "RSS MiB, all open",
        "seconds to open",
        "opens/s",
        "server CPU ms/open",
        "client CPU",
    ]
    table_text = table(header, rows)
    metrics = [
        ("rss_per_connection_kib", "memory per connection", True),
        ("opens_per_s", "opens/s", True),
        ("server_cpu_ms_per_open", "server CPU per open", False),
    ]
    ratio_header = [
        "generated",
        "baseline",
        "memory per connection (generated/baseline, lower is better)",
        "opens/s (generated/baseline)",
        "server CPU per open (baseline/generated)",
    ]
    ratios = table(ratio_header, ratio_rows(results, "idle", metrics, [None]))
    return f"{table_text}\n\n{ratios}"


def ticker_table(results: Results) -> str:
    rows = []
    for server in results.servers("ticker"):

        def get(key: str, s: str = server) -> Figure | None:
            return results.figure("ticker", s, key)

        rows.append(
            [
                results.labels[server],
                f"{results.runs('ticker', server)[0]['connections']:,}",
                cell(get("lateness_p50_ms")),
                cell(get("lateness_p99_ms")),
                cell(get("lateness_max_ms")),
                cell(get("ticks_received"), percent),
                cell(get("skipped_beats")),
                cell(get("server_cpu"), percent),
                cell(get("server_cpu_us_per_tick")),
                cell(get("client_cpu"), percent),
            ]
        )
    header = [
        "server",
        "connections",
        "lateness p50 ms",
        "p99 ms",
        "max ms",
        "ticks received",
        "skipped beats",
        "server CPU",
        "server CPU us/tick",
        "client CPU",
    ]
    return table(header, rows)


def broadcast_table(results: Results) -> str:
    rows = []
    for server in results.servers("broadcast"):
        for count in results.connections("broadcast"):
            runs = results.runs("broadcast", server, count)
            if not runs:
                continue

            def get(key: str, s: str = server, c: int = count) -> Figure | None:
                return results.figure("broadcast", s, key, c)

            deliveries = min(int(r["deliveries"]) for r in runs)
            expected = max(int(r["expected_deliveries"]) for r in runs)
            rows.append(
                [
                    runs[0]["backend"] + (" (before)" if BEFORE in server else ""),
                    history_text(runs[0].get("history")),
                    f"{count:,}",
                    cell(get("latency_p50_ms")),
                    cell(get("latency_p99_ms")),
                    cell(get("latency_max_ms")),
                    cell(get("fanout_p50_ms")),
                    f"{deliveries:,} of {expected:,}",
                    cell(get("rss_mib")),
                    cell(get("rss_growth_mib")),
                    cell(get("server_cpu_us_per_delivery")),
                    cell(get("open_seconds")),
                    cell(get("client_cpu_fanout"), percent),
                ]
            )
    for server, reason in results.not_measured.items():
        if server.startswith("broadcast-"):
            backend, _, kept = server.removeprefix("broadcast-").partition("-")
            history = "off" if kept == "nohistory" else "on"
            rows.append([backend, history, f"not measured: {reason}", *["-"] * 10])
    header = [
        "backend",
        "history",
        "subscribers",
        "delivery p50 ms",
        "p99 ms",
        "max ms",
        "last subscriber p50 ms",
        "deliveries (fewest in a run)",
        "server RSS MiB",
        "RSS growth MiB",
        "server CPU us/delivery",
        "seconds to open the subscribers",
        "client CPU in fan-outs",
    ]
    return table(header, rows)


def fanout_table(results: Results) -> str:
    """The fan-out workload's figures: each server at each subscriber count."""
    rows = []
    for server in results.servers("fanout"):
        for count in results.connections("fanout"):
            runs = results.runs("fanout", server, count)
            if not runs:
                continue
            deliveries = min(int(r["deliveries"]) for r in runs)
            expected = max(int(r["expected_deliveries"]) for r in runs)
            figures = [
                cell(
                    results.figure("fanout", server, key, count),
                    percent if key in FANOUT_SHARES else number,
                )
                if all(key in run for run in runs)  # not in the records of older runs
                else "-"
                for key in FANOUT_FIGURES
            ]
            rows.append(
                [results.labels[server], f"{count:,}", *figures, f"{deliveries:,} of {expected:,}"]
            )
    header = ["server", "subscribers", *FANOUT_FIGURES.values(), "deliveries (fewest in a run)"]
    return table(header, rows)


def fanout_ratios(results: Results, base: str = FANOUT_PEER) -> str:
    """Each server's figures over ``base``'s (`FANOUT_PEER` or `FANOUT_FLOOR`), paired by
    repetition; over `FANOUT_PEER`, with issue 30's goals where it sets one (at
    `BROADCAST_TARGET_SUBSCRIBERS` subscribers)."""
    peer = base == FANOUT_PEER
    goals = FANOUT_GOALS if peer else {}
    rows = []
    for count in results.connections("fanout"):
        for server in results.servers("fanout"):
            if server == base or not results.runs("fanout", server, count):
                continue
            for key in FANOUT_RATIOS:
                ratio = results.ratio("fanout", key, server, base, count)
                bound = goals.get(server, {}).get(key)
                goal = "-"
                if bound is not None and count == BROADCAST_TARGET_SUBSCRIBERS:
                    target = at_most("", bound, ratio)
                    goal = (
                        f"<= {bound:.2f}x: "
                        + {True: "met", False: "**not met**", None: "-"}[target.met]
                    )
                    if target.met is not None and not target.firm:
                        goal += " (not every run agrees)"
                row = [results.labels[server], f"{count:,}", FANOUT_FIGURES[key]]
                row.append(ratio_text(ratio) if ratio else "-")
                rows.append([*row, goal] if peer else row)
    over = "over websockets" if peer else "over the floor"
    header = ["server", "subscribers", "figure", f"{over} (median, range)"]
    return table([*header, "issue 30 goal"] if peer else header, rows)


def history_text(size: Any) -> str:
    """A record's ``history`` for people: its size, ``off`` for 0, ``-`` if unknown."""
    if size is None:
        return "-"
    return "off" if int(size) == 0 else f"on ({int(size)})"


def history_pairs(results: Results) -> list[tuple[str, str, str]]:
    """(backend, server with history on, server with history off) for each backend that
    was measured both ways, in run order."""
    on: dict[str, str] = {}
    off: dict[str, str] = {}
    for server in results.servers("broadcast"):
        run = results.runs("broadcast", server)[0]
        if run.get("history") is None or run.get("backend") is None or BEFORE in server:
            continue
        (on if int(run["history"]) > 0 else off).setdefault(run["backend"], server)
    return [(backend, on[backend], off[backend]) for backend in on if backend in off]


def history_table(results: Results) -> str:
    """The cost of history (issue 12): each figure with history on and off, and their ratio
    paired by repetition (on/off: above 1.00x, history costs that much more)."""
    metrics = [
        ("server_cpu_us_per_delivery", "server CPU us/delivery"),
        ("fanout_p50_ms", "fan-out p50 ms (last subscriber)"),
        ("latency_p50_ms", "delivery latency p50 ms"),
        ("latency_p99_ms", "delivery latency p99 ms"),
        ("redis_cpu", "Redis CPU (share of a core over the window, pauses included)"),
        ("redis_cpu_us_per_message", "Redis CPU us/message (housekeeping included)"),
        ("redis_command_us_per_message", "Redis command time us/message (commandstats)"),
    ]
    rows = []
    for backend, on, off in history_pairs(results):
        for count in results.connections("broadcast"):
            if not (results.runs("broadcast", on, count) and results.runs("broadcast", off, count)):
                continue
            for key, title in metrics:
                if key.startswith("redis_") and backend != "redis":
                    continue
                if any(r.get(key) is None for r in results.runs("broadcast", on, count)):
                    continue
                fmt = fine_percent if key == "redis_cpu" else number
                ratio = results.ratio("broadcast", key, on, off, count)
                goal = "-"
                if key == "server_cpu_us_per_delivery":
                    target = at_most("", HISTORY_CPU_GOAL, ratio)
                    goal = (
                        f"<= {HISTORY_CPU_GOAL:.2f}x: "
                        + {
                            True: "met",
                            False: "**not met**",
                            None: "-",
                        }[target.met]
                    )
                    if target.met is not None and not target.firm:
                        goal += " (not every run agrees)"
                rows.append(
                    [
                        backend,
                        f"{count:,}",
                        title,
                        cell(results.figure("broadcast", on, key, count), fmt),
                        cell(results.figure("broadcast", off, key, count), fmt),
                        ratio_text(ratio) if ratio else "-",
                        goal,
                    ]
                )
    header = [
        "backend",
        "subscribers",
        "figure",
        "history on",
        "history off",
        "on/off (median, range)",
        "issue 12 goal",
    ]
    return table(header, rows)


@dataclass(frozen=True)
class Target:
    """One of issue 7's targets, as a ratio or a figure with a bound."""

    title: str
    goal: str
    measured: Figure | None
    met: bool | None
    """Whether the median meets the goal (None: not measured)."""
    firm: bool
    """Whether every repetition agrees with the median on it."""
    missing: str = "not measured in this run"
    """What the table says when nothing was measured."""


def at_least(title: str, bound: float, figure: Figure | None, unit: str = "x") -> Target:
    if figure is None:
        return Target(title, f">= {bound:g}{unit}", None, None, False)
    met = figure.median >= bound
    firm = figure.low >= bound if met else figure.high < bound
    return Target(title, f">= {bound:g}{unit}", figure, met, firm)


def at_most(
    title: str,
    bound: float,
    figure: Figure | None,
    unit: str = "x",
    missing: str = "not measured in this run",
) -> Target:
    if figure is None:
        return Target(title, f"<= {bound:g}{unit}", None, None, False, missing)
    met = figure.median <= bound
    firm = figure.high <= bound if met else figure.low > bound
    return Target(title, f"<= {bound:g}{unit}", figure, met, firm)


def connections(count: int) -> str:
    return f"{count:,} connection" + ("" if count == 1 else "s")


def targets(results: Results) -> list[Target]:
    """Issue 7's targets with what this run measured."""
    found: list[Target] = []
    ka = "keepalive"
    for count in (c for c in results.connections(ka) if c >= 10):
        found += [
            at_least(
                f"generated fastapi / (1) docs-style, round trips/s, {count} connections",
                1.15,
                results.ratio(ka, "round_trips_per_s", "generated-fastapi", "docs-fastapi", count),
            ),
            at_least(
                f"(1) docs-style / generated fastapi, server CPU per round trip, {count} connections",
                1.15,
                results.ratio(
                    ka, "server_cpu_us_per_round_trip", "docs-fastapi", "generated-fastapi", count
                ),
            ),
            at_least(
                f"generated fastapi / (2) raw-ASGI ceiling, round trips/s, {count} connections",
                0.85,
                results.ratio(ka, "round_trips_per_s", "generated-fastapi", "raw-asgi-echo", count),
            ),
        ]
    for count in results.connections(ka):
        found.append(
            at_least(
                f"generated asgi / (3) websockets server, round trips/s, {connections(count)}",
                1.0,
                results.ratio(ka, "round_trips_per_s", "generated-asgi", "websockets", count),
            )
        )
    ins, key = "instructions", "instructions_per_round_trip"
    for count in results.connections(ins):
        found += [
            at_least(
                f"(1) docs-style / generated fastapi, server instructions per round trip, "
                f"{count} connections",
                1.15,
                results.ratio(ins, key, "docs-fastapi", "generated-fastapi", count),
            ),
            at_least(
                f"(2) raw-ASGI ceiling / generated fastapi, server instructions per round trip, "
                f"{count} connections",
                0.85,
                results.ratio(ins, key, "raw-asgi-echo", "generated-fastapi", count),
            ),
            at_least(
                f"(3) websockets server / generated asgi, server instructions per round trip, "
                f"{count} connections",
                1.0,
                results.ratio(ins, key, "websockets", "generated-asgi", count),
            ),
        ]
    for server in (s for s in GENERATED if results.runs("idle", s)):
        flavour = server.removeprefix("generated-")
        count = results.runs("idle", server)[0]["connections"]
        found += [
            at_most(
                f"generated {flavour} / (1) docs-style, idle memory per connection ({count:,})",
                1.1,
                results.ratio("idle", "rss_per_connection_kib", server, "docs-fastapi"),
            ),
            at_least(
                f"generated {flavour} / (1) docs-style, connection opens/s",
                1.0,
                results.ratio("idle", "opens_per_s", server, "docs-fastapi"),
            ),
            at_least(
                f"(1) docs-style / generated {flavour}, server CPU per connection opened",
                1.0,
                results.ratio("idle", "server_cpu_ms_per_open", "docs-fastapi", server),
            ),
        ]
    for server in (s for s in GENERATED if results.runs("ticker", s)):
        count = results.runs("ticker", server)[0]["connections"]
        found.append(
            at_most(
                f"generated {server.removeprefix('generated-')}, ticker lateness p99, "
                f"{count:,} connections",
                50,
                results.figure("ticker", server, "lateness_p99_ms"),
                " ms",
            )
        )
    count = BROADCAST_TARGET_SUBSCRIBERS
    found.append(
        at_most(
            f"generated fastapi, broadcast in memory (one process) to {count:,} subscribers, "
            "delivery p99",
            250,
            results.figure("broadcast", "broadcast-memory", "latency_p99_ms", count),
            " ms",
            missing=f"not measured in this run (no broadcast run with {count:,} subscribers)",
        )
    )
    return found


def targets_table(results: Results) -> str:
    rows = []
    for target in targets(results):
        if target.measured is None:
            measured = target.missing
        elif target.goal.endswith("ms"):
            measured = f"{with_spread(target.measured)} ms"
        else:
            measured = ratio_text(target.measured)
        met = {True: "yes", False: "**no**", None: "-"}[target.met]
        if target.met is not None and not target.firm:
            met += " (not every run agrees)"
        rows.append([target.title, target.goal, measured, met])
    return table(["issue 7 target", "goal", "measured (median, range)", "met"], rows)


def steadiness(results: Results) -> str:
    """How much the machine's own speed moved during the run, and what else ran on it."""
    others = [float(r["others_cpu"]) for r in results.records if "others_cpu" in r]
    shared = ""
    if others:
        busy = Figure.of(others)
        shared = (
            f"Other processes (neither the server nor the load generator) used {busy.median:.0%} "
            f"of a core in the median measured window and {busy.high:.0%} at most, on this "
            f"{os.cpu_count()}-CPU machine. "
        )
    probes = [float(r["probe_ms"]) for r in results.records if "probe_ms" in r]
    if not probes:
        return shared
    figure = Figure.of(probes)
    return shared + (
        f"Before each timed run, a fixed pure-Python loop on the server's CPU took "
        f"{figure.median:.1f} ms of CPU time (median of {figure.count}; range "
        f"{figure.low:.1f}-{figure.high:.1f} ms): the same work cost up to "
        f"{figure.high / figure.low:.1f}x as much CPU time from one run to the next. "
        "Times, rates and CPU times measured here move with that; instruction counts and "
        "memory do not. An instruction ratio leaves out the kernel's share of each round "
        "trip (about the same for every server), so a throughput ratio lies between 1.00x "
        "and it."
    )


def client_headroom(results: Results) -> str:
    """How busy the load generator was in each workload (it must not be the bottleneck)."""
    lines = []
    for workload in ("keepalive", "idle", "ticker", "broadcast", "fanout"):
        runs = [r for r in results.records if r["workload"] == workload]
        if not runs:
            continue
        # Broadcast: the share while fan-outs are under way (the window is mostly pauses).
        key = "client_cpu_fanout" if workload in ("broadcast", "fanout") else "client_cpu"
        busiest = max(runs, key=lambda r: float(r[key]))
        where = results.labels[busiest["server"]]
        if workload == "keepalive":
            where += f", {busiest['connections']} connections"
        if workload in ("broadcast", "fanout"):
            where += f", {busiest['connections']:,} subscribers, during its fan-outs"
        lines.append(f"- {workload}: at most {float(busiest[key]):.0%} of its core ({where})")
    return (
        "The load generator is one node process on its own core; the most it used of that core "
        "in any measured window:\n\n" + "\n".join(lines)
    )


def markdown(results: Results, header: str) -> str:
    """The whole report: targets, then each workload's figures and ratios."""
    sections = [header, "## Issue 7 targets\n\n" + targets_table(results)]
    if results.servers("keepalive"):
        sections += [
            "## Keepalive round trips\n\nEach connection sends a keepalive as soon as the last "
            "is answered. Server CPU is its user + system time over the measured window.\n\n"
            + keepalive_table(results),
            "Ratios, paired by repetition (above 1.00x: the generated service is ahead):\n\n"
            + keepalive_ratios(results),
        ]
    if any(
        results.servers(w) and c in results.servers(w)
        for w in ("keepalive", "instructions")
        for c in CEILINGS
    ):
        sections.append(
            "## Ceilings\n\nHow close each flavour comes to the least a keepalive can cost on "
            "uvicorn, paired by repetition: (4) a raw-ASGI keepalive with orjson (the service's "
            "JSON library) and "
            "nothing else (the same work: parse, answer, serialise) and (2) a raw-ASGI echo "
            "without JSON (framing alone). 1.00x is the ceiling; below it, the share of the "
            "ceiling's speed the flavour keeps.\n\n" + ceiling_table(results)
        )
    if any(server.endswith(BEFORE) for server in results.labels):
        sections.append(
            "## Before and after\n\nThe generated servers of the working tree (after) and "
            "of the template at an earlier commit (before), started in turn in the same run; "
            "each ratio pairs the runs of one repetition.\n\n" + before_after_table(results)
        )
    if results.servers("instructions"):
        sections.append(
            "## Server instructions per round trip\n\nThe server runs under valgrind's "
            "callgrind, which counts the user-space instructions it executes while the load "
            "generator makes a fixed number of keepalive round trips (after a warm-up). Unlike "
            "times, the count does not move with the machine's load; it leaves out the "
            "kernel's work and the cost of cache misses.\n\n" + instructions_table(results)
        )
    if results.servers("idle"):
        sections.append(
            "## Idle connections\n\nOpened with 50 handshakes in flight, each then answering "
            "one keepalive; memory is the server's RSS growth, read 2 s after the last opened. "
            "Server CPU per open includes that one keepalive.\n\n" + idle_table(results)
        )
    if results.servers("ticker"):
        sections.append(
            "## Ticker\n\nLateness is the receive time minus the beat's time on the server's "
            "schedule (first tick + k periods).\n\n" + ticker_table(results)
        )
    if results.servers("broadcast") or any(
        key.startswith("broadcast-") for key in results.not_measured
    ):
        sections.append(
            "## Broadcast\n\nThe generated service (fastapi flavour) with a broadcast room, on "
            "each backend: memory (one process) and Redis pub/sub (a redis-server on the "
            "server's CPU). The subscribers open on one room, then one more connection "
            "publishes messages, each carrying its send time; the next goes once every "
            "subscriber has the last (and no sooner than the interval), so each figure is "
            "one message fanned out to every subscriber. A delivery's latency is its receive "
            "time less its send time, on the load generator's clock; the last subscriber's "
            "is the whole fan-out. A run fails unless every subscriber gets every message, in "
            "order, with no drop (the service's default queue of 100 per connection). RSS "
            "growth is from before the subscribers open to after the last message; server "
            "CPU is per delivery over the measured messages; client CPU is the load "
            "generator's busy share while fan-outs are under way.\n\n" + broadcast_table(results)
        )
    if results.servers("fanout"):
        sections += [
            "## Fan-out peers\n\nOne room, the broadcast workload's messages and checks, on "
            "the generated service in each flavour (memory hub, history on, on the runner's "
            "LeanProtocol), on two peers a team would pick instead: the `websockets` "
            "library's server with `websockets.broadcast()` (each connection's state checked, "
            "the frame built for it, written to its transport) and python-socketio's ASGI app "
            "on uvicorn (`emit(..., room=...)`; the load generator speaks Socket.IO to it with "
            "`socket.io-client`, websocket transport only), and on the floor, not a peer: the "
            "same `websockets` server writing one frame, built once per message, to every "
            "connection's transport in a plain loop, with nothing checked, queued or "
            "guaranteed (`websockets_server.py --floor`), which no Python server on this stack "
            "goes below. Every server runs with the "
            "generated service's garbage-collector threshold (100,000), fresh for each run, in "
            "turn (A B C D E A B C D E). Server CPU is user + system time over the measured "
            "messages, system (kernel) time given apart (from /proc, in clock ticks). Memory "
            "per subscribed connection is the server's RSS "
            "growth from before the subscribers open to once they are all subscribed, over "
            "their number; the last subscriber's latency is the whole fan-out; other "
            "processes' CPU is what the rest of the machine used over the window.\n\n"
            + fanout_table(results),
            "Over the `websockets` server, paired by repetition (issue 30's goals at "
            f"{BROADCAST_TARGET_SUBSCRIBERS:,} subscribers; below 1.00x, cheaper or faster than "
            "`websockets.broadcast()`):\n\n" + fanout_ratios(results),
        ]
        if FANOUT_FLOOR in results.servers("fanout"):
            sections.append(
                "Over the floor, paired by repetition (1.00x: nothing spent beyond one "
                "write of a prebuilt frame per subscriber):\n\n"
                + fanout_ratios(results, FANOUT_FLOOR)
            )
    if history_pairs(results):
        sections.append(
            "## Cost of history\n\nThe same broadcast runs, paired: each backend's server with "
            "the channel history on (each message also kept in the channel's history: a deque "
            "in memory, or a Redis stream appended by the Lua script that publishes) and off "
            "(`HISTORY_SIZE=0`), started in turn (A B A B) at each subscriber count. A ratio is "
            "on/off within each repetition, then the median and range of those; above 1.00x, "
            "history costs that much more. Issue 12's goal: at most "
            f"{HISTORY_CPU_GOAL - 1:.0%} more server CPU per delivery with history on. The "
            "Redis backend's share of the history work runs in redis-server (its own CPU time, "
            "also on the server's CPU), so its CPU is given beside the service's.\n\n"
            + history_table(results)
        )
    if any("probe_ms" in r for r in results.records):
        sections.append("## Noise\n\n" + steadiness(results))
    if any("client_cpu" in r for r in results.records):
        sections.append("## Load generator\n\n" + client_headroom(results))
    return "\n\n".join(sections) + "\n"


def plot_keepalive(results: Results, output: Path) -> list[Path]:
    """throughput.png and latency.png: by concurrency, one line per server."""
    counts = results.connections("keepalive")
    servers = results.servers("keepalive")
    if not servers:
        return []
    throughput = output / "throughput.png"
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for index, server in enumerate(servers):
        _line(axis, results, server, "round_trips_per_s", counts, 1 / 1000, _dodge(index, servers))
    axis.set(
        xscale="log",
        xticks=counts,
        xticklabels=[str(c) for c in counts],
        xlabel="concurrent connections",
        ylabel="keepalive round trips/s (thousands)",
        title="Keepalive throughput (median, bars: min-max)",
    )
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(throughput, dpi=110)
    plt.close(fig)

    latency = output / "latency.png"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    for axis, key, title in zip(
        axes, ("latency_p50_ms", "latency_p99_ms"), ("p50", "p99"), strict=True
    ):
        for index, server in enumerate(servers):
            _line(axis, results, server, key, counts, 1.0, _dodge(index, servers))
        axis.set(
            xscale="log",
            yscale="log",
            xticks=counts,
            xticklabels=[str(c) for c in counts],
            xlabel="concurrent connections",
            title=f"Keepalive round-trip latency, {title}",
        )
        axis.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("milliseconds (log scale)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(latency, dpi=110)
    plt.close(fig)
    return [throughput, latency]


def _dodge(index: int, servers: Sequence[str]) -> float:
    """A factor that moves the points of the ``index``-th server a little sideways (the x axis
    is logarithmic), so that error bars at the same connection count do not hide each other."""
    return float(1.07 ** (index - (len(servers) - 1) / 2))


def _line(
    axis: Any,
    results: Results,
    server: str,
    key: str,
    counts: Sequence[int],
    scale: float,
    dodge: float = 1.0,
) -> None:
    points = [(c, results.figure("keepalive", server, key, c)) for c in counts]
    shown = [(c, f) for c, f in points if f is not None]
    medians = [f.median * scale for _, f in shown]
    errors = [
        [(f.median - f.low) * scale for _, f in shown],
        [(f.high - f.median) * scale for _, f in shown],
    ]
    axis.errorbar(
        [c * dodge for c, _ in shown],
        medians,
        yerr=errors,
        label=results.labels[server],
        color=COLORS.get(server),
        linestyle="-" if server in GENERATED else "--",
        marker="o",
        capsize=3,
    )


def _bars(axis: Any, results: Results, workload: str, key: str, scale: float = 1.0) -> None:
    """One bar per server: the median of ``key``, with min-max error bars."""
    servers = results.servers(workload)
    figures = [results.figure(workload, s, key) for s in servers]
    shown = [(s, f) for s, f in zip(servers, figures, strict=True) if f is not None]
    axis.bar(
        range(len(shown)),
        [f.median * scale for _, f in shown],
        yerr=[
            [(f.median - f.low) * scale for _, f in shown],
            [(f.high - f.median) * scale for _, f in shown],
        ],
        color=[COLORS.get(s, "#333333") for s, _ in shown],
        capsize=3,
    )
    axis.set_xticks(range(len(shown)), [results.labels[s] for s, _ in shown], rotation=30)
    axis.tick_params(axis="x", labelsize=8)
    for label in axis.get_xticklabels():
        label.set_horizontalalignment("right")
    axis.grid(alpha=0.3, axis="y")


def plot_instructions(results: Results, output: Path) -> list[Path]:
    """instructions.png: server instructions per round trip (callgrind)."""
    if not results.servers("instructions"):
        return []
    path = output / "instructions.png"
    fig, axis = plt.subplots(figsize=(6, 4.5))
    _bars(axis, results, "instructions", "instructions_per_round_trip", 1 / 1000)
    counts = ", ".join(str(c) for c in results.connections("instructions"))
    axis.set(
        ylabel="thousands of instructions",
        title=f"Server instructions per round trip ({counts} connections)",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_memory(results: Results, output: Path) -> list[Path]:
    """memory.png: server RSS as idle connections open, and memory per connection."""
    servers = results.servers("idle")
    if not servers:
        return []
    path = output / "memory.png"
    fig, (curve, bars) = plt.subplots(1, 2, figsize=(11, 4.5), width_ratios=[3, 2])
    for server in servers:
        by_count: dict[int, list[float]] = {}
        for run in results.runs("idle", server):
            for count, rss in run["memory"]:
                by_count.setdefault(int(count), []).append(rss / 1024 / 1024)
        counts = sorted(by_count)
        curve.plot(
            counts,
            [statistics.median(by_count[c]) for c in counts],
            label=results.labels[server],
            color=COLORS.get(server),
            linestyle="-" if server in GENERATED else "--",
            marker=".",
        )
    curve.set(
        xlabel="open idle connections",
        ylabel="server RSS (MiB)",
        title="Server memory by connections (median)",
    )
    curve.set_ylim(bottom=0)
    curve.grid(alpha=0.3)
    curve.legend(fontsize=8)
    _bars(bars, results, "idle", "rss_per_connection_kib")
    bars.set(ylabel="KiB per connection", title="Memory per idle connection")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _broadcast_name(results: Results, server: str) -> str:
    """``memory``, ``redis, history off``, ...: a broadcast server's backend and history."""
    run = results.runs("broadcast", server)[0]
    history = run.get("history")
    off = history is not None and not history
    before = " (before)" if BEFORE in server else ""
    return str(run["backend"]) + (", history off" if off else "") + before


def plot_broadcast(results: Results, output: Path) -> list[Path]:
    """broadcast.png: delivery latency p50 and p99 by subscribers, one colour per backend."""
    servers = results.servers("broadcast")
    if not servers:
        return []
    counts = results.connections("broadcast")
    path = output / "broadcast.png"
    fig, axis = plt.subplots(figsize=(6, 4))
    for index, server in enumerate(servers):
        for key, name, style in (("latency_p50_ms", "p50", "-"), ("latency_p99_ms", "p99", "--")):
            points = [(c, results.figure("broadcast", server, key, c)) for c in counts]
            shown = [(c, f) for c, f in points if f is not None]
            axis.errorbar(
                [c * _dodge(index, servers) for c, _ in shown],
                [f.median for _, f in shown],
                yerr=[[f.median - f.low for _, f in shown], [f.high - f.median for _, f in shown]],
                label=f"{_broadcast_name(results, server)}, {name}",
                color=COLORS.get(server),
                linestyle=style,
                marker="o",
                capsize=3,
            )
    axis.set(
        xscale="log",
        yscale="log",
        xticks=counts,
        xticklabels=[f"{c:,}" for c in counts],
        xlabel="subscribers",
        ylabel="milliseconds (log scale)",
        title="Broadcast delivery latency (median, bars: min-max)",
    )
    axis.xaxis.set_minor_formatter(NullFormatter())  # the subscriber counts only
    axis.yaxis.set_major_formatter(LogFormatter())  # plain numbers, not powers of ten
    axis.yaxis.set_minor_formatter(LogFormatter())  # (some minor ticks, in a narrow range)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
