"""The benchmark (bench/run.py) runs end to end in its smoke mode and writes its report.

Figures are never asserted: they depend on the machine and on whatever else runs on it.
What is asserted is that each workload ran on its servers, and that broadcast delivered
every message to every subscriber (the load generator fails the run otherwise). The main
smoke run measures broadcast in memory; broadcast through Redis has a smoke run of its own,
so that it can be skipped alone where redis-server is missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websocket.testing import RedisServer  # the vendored backend, as every project has it
from websockets.asyncio.server import ServerConnection, serve

from bench import report, servers
from bench.loadgen import CLIENT, ensure_client
from tests.conftest import TEMPLATE, require_redis

SERVERS = (
    "generated-fastapi",
    "generated-asgi",
    "docs-fastapi",
    "raw-asgi-echo",
    "raw-asgi-json",
    "websockets",
)


@dataclass(frozen=True)
class SmokeRun:
    folder: Path
    stdout: str
    report: str
    data: dict[str, Any]

    def runs(self, workload: str, server: str) -> list[dict[str, Any]]:
        return [
            r for r in self.data["records"] if r["workload"] == workload and r["server"] == server
        ]


def smoke_run(folder: Path, *options: str) -> SmokeRun:
    """``bench/run.py --smoke`` with ``options``, its report and results.json in ``folder``."""
    command = [sys.executable, str(TEMPLATE / "bench" / "run.py"), "--smoke"]
    command += ["--output", str(folder), *options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = (folder / "results.md").read_text()
    data = json.loads((folder / "results.json").read_text())
    return SmokeRun(folder, result.stdout, report, data)


def test_smoke_run_writes_the_table_the_data_and_the_plots(tmp_path: Path) -> None:
    smoke = smoke_run(tmp_path, "--broadcast-backends", "memory")
    assert smoke.stdout.strip() == smoke.report.strip()  # the report is printed too
    headings = ["Issue 7 targets", "Ceilings", "Keepalive round trips", "Idle connections"]
    headings.append("Ticker")
    headings += ["Broadcast", "Fan-out peers", "Load generator", "Plots"]
    if shutil.which("valgrind"):
        headings.append("Server instructions per round trip")
    for heading in headings:
        assert f"\n## {heading}\n" in smoke.report, heading
    assert "| generated service, fastapi flavour | (1) FastAPI as its docs teach |" in smoke.report
    assert "no broadcast yet" not in smoke.report
    ceilings = smoke.report.split("\n## Ceilings\n", 1)[1].split("\n## ", 1)[0]
    for flavour in ("fastapi", "asgi"):  # each against the same-work ceiling and the echo
        row = next(line for line in ceilings.splitlines() if f"{flavour} flavour | 4 |" in line)
        assert row.count("x (") >= 4, row

    measured = {(r["workload"], r["server"]) for r in smoke.data["records"]}
    for server in SERVERS:
        assert ("keepalive", server) in measured
        assert ("idle", server) in measured
    assert {("ticker", "generated-fastapi"), ("ticker", "generated-asgi")} <= measured
    assert_broadcast_measured(smoke, "memory")
    assert_fanout_measured(smoke)
    for plot in ("throughput.png", "latency.png", "memory.png", "broadcast.png"):
        assert (smoke.folder / plot).read_bytes().startswith(b"\x89PNG"), plot


def test_smoke_run_measures_broadcast_through_redis_with_every_delivery(tmp_path: Path) -> None:
    require_redis()
    smoke = smoke_run(tmp_path, "--workloads", "broadcast", "--broadcast-backends", "redis")
    assert smoke.data["not_measured"] == {}
    assert_broadcast_measured(smoke, "redis")
    assert (smoke.folder / "broadcast.png").read_bytes().startswith(b"\x89PNG")


def test_a_compared_run_measures_the_broadcast_servers_before_a_change_too(
    tmp_path: Path,
) -> None:
    # --compare renders the template at a commit (here HEAD) beside the working tree: each
    # broadcast server runs in turn with its "before", and the report pairs them.
    options = ["--workloads", "broadcast", "--broadcast-backends", "memory"]
    smoke = smoke_run(tmp_path, *options, "--broadcast-history", "on", "--compare", "HEAD")
    counts = smoke.data["settings"]["broadcast_subscribers"]
    for server in ("broadcast-memory", "broadcast-memory-before"):
        runs = smoke.runs("broadcast", server)
        assert sorted(r["connections"] for r in runs) == sorted(counts), server
        assert all(r["deliveries"] == r["expected_deliveries"] > 0 for r in runs), server
    assert "at HEAD (before)" in smoke.data["labels"]["broadcast-memory-before"]
    assert f"\n| memory (before) | on (100) | {max(counts):,} | " in smoke.report
    after_before = smoke.report.split("\n## Before and after\n", 1)[1].split("\n## ", 1)[0]
    p99 = f"| delivery p99 ms, {max(counts):,} subscribers | "
    row = next(line for line in after_before.splitlines() if p99 in line)
    assert row.startswith(f"| {smoke.data['labels']['broadcast-memory']} | "), row
    assert "\n## Cost of history\n" not in smoke.report  # no server ran with history off


def test_the_generated_servers_run_on_the_runners_protocol_where_a_project_has_it(
    tmp_path: Path,
) -> None:
    # A project rendered from a commit before uvicorn_protocol.py (--compare) runs on
    # uvicorn's own; one with it, as its runner serves.
    assert "--ws" not in servers.generated(tmp_path)
    protocol = tmp_path / "ws_service" / "websocket" / "uvicorn_protocol.py"
    protocol.parent.mkdir(parents=True)
    protocol.write_text("")
    command = servers.generated(tmp_path)
    assert command[command.index("--ws") + 1] == servers.LEAN_PROTOCOL
    assert command[:3] == ("-m", "uvicorn", "ws_service.app:app")


def test_presence_smoke_run_answers_a_whole_room_and_opens_it_with_each_setting(
    tmp_path: Path,
) -> None:
    backends = ["memory"] if RedisServer.unavailable() and not RedisServer.required() else []
    command = [sys.executable, str(TEMPLATE / "bench" / "presence.py"), "--smoke"]
    command += ["--output", str(tmp_path)]
    if backends:
        command += ["--backends", *backends]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "presence-smoke.json").read_text())
    report = (tmp_path / "presence-smoke.md").read_text()
    assert report in result.stdout
    for backend in backends or ["memory", "redis"]:
        [answer] = [
            r for r in data["records"] if r["workload"] == "answer" and r["backend"] == backend
        ]
        # client.mjs checked that every answer counted the whole room, the asker included.
        assert answer["round_trips"] == 3
        assert answer["listed"] == answer["connections"] + 1  # under the limit: not cut
        assert answer["cut"] is False
        assert answer["events"] == 0  # JOIN_LEAVE_EVENTS=no for the answer's room
        assert f"\n| {backend} | {answer['connections'] + 1:,} | " in report
        opens = {
            r["side"]: r
            for r in data["records"]
            if r["workload"] == "open" and r["backend"] == backend
        }
        assert set(opens) == {"off", "on", "on+events"}
        assert opens["off"]["events"] == opens["on"]["events"] == 0
        assert opens["on+events"]["events"] > 0  # the room's joins (and the warm-up's leaves)
        for side in opens:
            assert f"\n| {backend} | {side} | " in report


def assert_fanout_measured(smoke: SmokeRun) -> None:
    """Every server of the fan-out workload (the peers: websockets, and python-socketio
    through socket.io-client; the floor, websockets writing one prebuilt frame to every
    transport) ran at every subscriber count, each delivery made and checked (the floor's
    envelopes pass the same checks), and the report sets each against the websockets server
    and against the floor."""
    counts = smoke.data["settings"]["broadcast_subscribers"]
    for server in servers.FANOUT_KEYS:
        runs = smoke.runs("fanout", server)
        assert sorted(r["connections"] for r in runs) == sorted(counts), server
        for run in runs:
            assert run["deliveries"] == run["expected_deliveries"] > 0, run
            assert run["rss_per_subscriber_kib"] > 0, run
            assert 0 <= run["server_system_us_per_delivery"] <= run["server_cpu_us_per_delivery"]
    over_peer, over_floor = smoke.report.split("over websockets (median, range)", 1)[1].split(
        "over the floor (median, range)", 1
    )
    figures = ("server CPU us/delivery", "delivery p99 ms", "KiB per subscribed connection")
    for figure in figures:
        assert f"| {max(counts):,} | {figure} |" in over_peer, figure
        assert f"| {max(counts):,} | {figure} |" in over_floor, figure
    floor = f"| {smoke.data['labels']['fanout-floor']} | {max(counts):,} | {figures[0]} |"
    assert floor in over_peer
    assert floor not in over_floor


def assert_broadcast_measured(smoke: SmokeRun, backend: str) -> None:
    """Every subscriber count of the smoke settings ran, each delivery made, on ``backend``
    with history on and off, and the report has the cost of history."""
    counts = smoke.data["settings"]["broadcast_subscribers"]
    for server, history in ((backend, 100), (f"{backend}-nohistory", 0)):
        runs = smoke.runs("broadcast", f"broadcast-{server}")
        assert sorted(r["connections"] for r in runs) == sorted(counts)
        for run in runs:
            assert run["backend"] == backend, run
            assert run["history"] == history, run
            assert run["deliveries"] == run["expected_deliveries"] > 0, run
            assert run["latency_p99_ms"] is not None, run
    assert f"\n| {backend} | on (100) | {max(counts):,} | " in smoke.report
    assert f"\n| {backend} | off | {max(counts):,} | " in smoke.report
    assert "\n## Cost of history\n" in smoke.report
    cpu = f"\n| {backend} | {max(counts):,} | server CPU us/delivery | "
    assert cpu in smoke.report
    assert "<= 1.10x: " in smoke.report.split(cpu, 1)[1].splitlines()[0]
    if backend == "redis":
        assert f"\n| redis | {max(counts):,} | Redis CPU us/message (housekeeping" in smoke.report
        assert f"\n| redis | {max(counts):,} | Redis command time us/message" in smoke.report


def test_an_unknown_server_stops_the_benchmark_with_a_usage_message() -> None:
    command = [sys.executable, str(TEMPLATE / "bench" / "run.py"), "--servers", "nginx"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "--servers: invalid choice: 'nginx'" in result.stderr


def test_a_broadcast_run_fails_when_a_subscriber_is_sent_a_drop_notice() -> None:
    ensure_client()
    stdout, stderr, code = asyncio.run(broadcast_to_a_faulty_room("drop", subscribers=3))
    assert code == 1, stdout + stderr
    assert "broadcast failed (dropped: 1)" in stderr
    assert '"type":"dropped"' in stderr
    assert '"event":"result"' not in stdout


def test_a_broadcast_run_fails_when_a_subscriber_skips_an_offset() -> None:
    ensure_client()
    stdout, stderr, code = asyncio.run(broadcast_to_a_faulty_room("skip", subscribers=3))
    assert code == 1, stdout + stderr
    assert "broadcast failed (offset gaps: 1)" in stderr  # its seq is right: only offsets tell
    assert "offset 7 of epoch e1 came after offset 5 of epoch e1" in stderr
    assert '"event":"result"' not in stdout


def test_a_well_behaved_room_passes_the_broadcast_client() -> None:
    """The fake room itself, without its fault, passes: the failures above are the faults'."""
    ensure_client()
    stdout, stderr, code = asyncio.run(broadcast_to_a_faulty_room("none", subscribers=3))
    assert code == 0, stdout + stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["event"] == "result"
    assert result["deliveries"] == result["expected_deliveries"] == 6


async def broadcast_to_a_faulty_room(fault: str, subscribers: int) -> tuple[str, str, int]:
    """Run client.mjs broadcast against a room that relays every message to every connection
    as the service does (positions from offset 5 of epoch e1), with one ``fault`` on its first
    subscriber: ``drop`` tells it the first message was dropped in its place, ``skip`` gives
    it the second message one offset too far on (its ``seq`` still right), ``none`` no fault."""
    connections: list[ServerConnection] = []
    channel = '"channel":"/ws/rooms/bench"'
    offset = 4

    async def room(websocket: ServerConnection) -> None:
        nonlocal offset
        connections.append(websocket)
        await websocket.send(f'{{"type":"subscribed",{channel},"offset":{offset},"epoch":"e1"}}')
        async for text in websocket:
            message = text if isinstance(text, str) else text.decode()
            offset += 1
            for index, connection in enumerate(connections):
                at = offset
                if index == 0 and fault == "drop" and offset == 5:
                    notice = f'{{"type":"dropped",{channel},"count":1,"offset":5,"epoch":"e1"}}'
                    await connection.send(notice)
                    continue
                if index == 0 and fault == "skip" and offset == 6:
                    at += 1
                await connection.send(
                    f'{{"type":"broadcast",{channel},"offset":{at},"epoch":"e1",'
                    f'"server_ns":0,"message":{message}}}'
                )

    async with serve(room, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        client = await asyncio.create_subprocess_exec(
            "node",
            str(CLIENT),
            "broadcast",
            f"--url=ws://127.0.0.1:{port}/ws/rooms/bench",
            f"--connections={subscribers}",
            "--messages=2",
            "--warmup-messages=0",
            "--interval=0",
            "--fanout-timeout=10",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(client.communicate(), 60)
    assert client.returncode is not None
    return stdout.decode(), stderr.decode(), client.returncode


def test_the_report_says_why_broadcast_through_redis_was_not_measured() -> None:
    labels = {
        "broadcast-redis": "generated service, fastapi flavour, broadcast through Redis",
        "broadcast-redis-nohistory": "the same, history off",
    }
    missing = "redis-server is not installed (apt-get install redis-server)"
    not_measured = dict.fromkeys(labels, missing)
    results = report.Results([], labels, not_measured)
    text = report.markdown(results, "# header")
    assert f"| redis | on | not measured: {missing} |" in text
    assert f"| redis | off | not measured: {missing} |" in text
    assert "## Cost of history" not in text  # nothing measured, nothing to compare
    target = "broadcast in memory (one process) to 10,000 subscribers, delivery p99 | <= 250 ms"
    assert f"{target} | not measured in this run (no broadcast run with 10,000" in text


def test_the_report_pairs_each_generated_server_with_itself_before_a_change() -> None:
    def idle(server: str, rep: int, kib: float) -> dict[str, Any]:
        record = {"workload": "idle", "server": server, "rep": rep, "connections": 10_000}
        figures = {"rss_per_connection_kib": kib, "server_cpu_ms_per_open": 0.5}
        figures |= {"rss_mib": 200.0, "open_seconds": 1.0, "opens_per_s": 1e4, "client_cpu": 0.5}
        return record | figures

    records = [idle("generated-asgi", 0, 18.0), idle("generated-asgi-before", 0, 20.0)]
    records += [idle("generated-asgi", 1, 27.0), idle("generated-asgi-before", 1, 30.0)]
    labels = {
        "generated-asgi": "generated service, asgi flavour",
        "generated-asgi-before": "generated service, asgi flavour, at abc123 (before)",
    }
    text = report.markdown(report.Results(records, labels), "# header")
    assert "\n## Before and after\n" in text
    row = "| generated service, asgi flavour | RSS KiB/connection | 25 ±20% | 22.5 ±20% | "
    assert row + "0.90x (0.90-0.90) |" in text


def test_the_channels_benchmark_measures_both_kinds_side_by_side(tmp_path: Path) -> None:
    """``bench/channels.py --smoke``: every delivery, memory and storm figure is measured."""
    command = [
        sys.executable,
        str(TEMPLATE / "bench" / "channels.py"),
        "--smoke",
        "--output",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "channels-memory.json").read_text())
    (round_,) = report["rounds"]
    assert set(round_) == {"broadcast", "channels"}
    assert all(seconds > 0 for seconds in round_.values()), round_
    memory = report["memory_per_connection_bytes"]
    assert memory["broadcast"] > 0, memory
    assert memory["channels"] > 0, memory
    storm = report["storm"]
    for kind, sockets in (("channels", 100), ("broadcast", 1000)):
        assert storm[kind]["sockets"] == sockets, storm
        assert storm[kind]["seconds"] > 0, storm
        # a memory hub restarted: a new epoch, so each room is resubscribed unrecovered
        assert storm[kind]["not_recovered"] == 1000, storm
    assert "server CPU per delivery, channels/broadcast" in result.stdout
    assert "channels/broadcast: sockets 0.10x, seconds" in result.stdout


def test_the_channels_storm_runs_alone_without_the_broadcast_sockets(tmp_path: Path) -> None:
    """``--storm-only --storm-kinds channels``: the channels storm alone, with no ratios."""
    command = [
        sys.executable,
        str(TEMPLATE / "bench" / "channels.py"),
        "--smoke",
        "--storm-only",
        "--storm-kinds",
        "channels",
        "--output",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    storm = json.loads((tmp_path / "channels-storm-memory.json").read_text())["storm"]
    assert "broadcast" not in storm, storm
    assert (storm["channels"]["sockets"], storm["channels"]["not_recovered"]) == (100, 1000)
    assert storm["ratios"] == {}, storm
    assert "channels/broadcast" not in result.stdout


def test_the_storm_split_over_processes_on_redis_recovers_every_room_of_both_kinds(
    tmp_path: Path,
) -> None:
    """``--storm-processes 2 --backend redis``: two server processes on one Redis, half the
    clients each, driven by two client processes, for both kinds; the messages published
    through the first server reach the clients of the second, so every room of every client
    is recovered after the restart, and the figures are summed over the processes."""
    require_redis()
    command = [sys.executable, str(TEMPLATE / "bench" / "channels.py"), "--smoke", "--storm-only"]
    command += ["--backend", "redis", "--storm-processes", "2", "--output", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    storm = json.loads((tmp_path / "channels-storm-redis.json").read_text())["storm"]
    assert storm["processes"] == 2, storm
    for kind, sockets in (("channels", 100), ("broadcast", 1000)):
        figures = storm[kind]
        assert (figures["sockets"], figures["recovered"], figures["gaps"]) == (sockets, 1000, 0)
        assert figures["server_cpu_seconds"] > 0, figures
        assert figures["redis_commands"] >= 1000, figures  # one presence call a subscription
        assert figures["redis_round_trips"] > 0, figures
    assert "2 server and 2 client process(es)" in result.stdout
    assert "channels/broadcast: sockets 0.10x, seconds" in result.stdout


def test_the_storm_is_not_split_over_the_processes_of_a_memory_hub(tmp_path: Path) -> None:
    """A memory hub's rooms are in its one process: ``--storm-processes 2`` is refused with
    a sentence saying why and what to do, before anything runs."""
    command = [sys.executable, str(TEMPLATE / "bench" / "channels.py"), "--storm-only"]
    command += ["--storm-processes", "2", "--output", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "splitting the storm over --storm-processes needs --backend redis" in result.stderr
    assert not list(tmp_path.iterdir())


def test_the_centrifugo_workload_delivers_every_message_and_reports_each_hub(
    tmp_path: Path,
) -> None:
    """``bench/centrifugo_workload.py --smoke``: two service processes on one Redis, each
    client on its personal channel and a group channel of 10; the unbatched hub and the
    batched one publish in turn. The script fails unless every client got every message of
    its two channels with contiguous offsets; the figures are printed and written."""
    require_redis()
    command = [sys.executable, str(TEMPLATE / "bench" / "centrifugo_workload.py"), "--smoke"]
    command += ["--output", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every client got every message of its channels" in result.stderr
    data = json.loads((tmp_path / "centrifugo-workload.json").read_text())
    assert data["settings"]["connections"] == 100
    for side in ("unbatched", "batched"):
        (figures,) = data["results"][side]
        assert figures["publishes"] > 0, figures
        # a group publish is owed to its 10 members, a personal one to its user
        assert figures["publishes"] < figures["deliveries"] < 10 * figures["publishes"], figures
        assert 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"], figures
        assert figures["server_cpu_us_per_delivery"] > 0, figures
        assert figures["redis_cpu_us_per_publish"] > 0, figures
        assert figures["script_usec_per_call"] > 0, figures
        assert f"\n| {side} | " in result.stdout
    assert set(data["ratios"]) >= {"latency_p99_ms", "redis_cpu_us_per_publish"}
    assert "- server CPU/delivery: " in result.stdout
    assert result.stdout == (tmp_path / "centrifugo-workload.md").read_text() + "\n"


def test_the_redis_batching_benchmark_runs_every_side_it_compares(tmp_path: Path) -> None:
    """``bench/redis_batching.py``, small: the unbatched hub (a commit of this repository),
    the batched one, the batcher over redis-py's ``Pipeline`` and the minimal client each
    publish at 1 and 100 in flight; a row each and the ratios are printed and written (a
    publish that fails stops the run)."""
    require_redis()
    output = tmp_path / "redis-batching.md"
    command = [sys.executable, str(TEMPLATE / "bench" / "redis_batching.py"), "--publishes"]
    command += ["300", "--repetitions", "1", "--in-flight", "1", "100", "--output", str(output)]
    command += ["--sides", "unbatched", "batched", "pipeline", "floor"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for in_flight in (1, 100):
        for side in ("unbatched", "batched", "pipeline", "floor"):
            assert f"\n| {in_flight} | {side} | " in result.stdout, result.stdout
        assert f"\n- {in_flight} in flight, batched / unbatched: Redis CPU " in result.stdout
    assert result.stdout == output.read_text() + "\n"
