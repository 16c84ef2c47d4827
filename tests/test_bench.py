"""The benchmark (bench/run.py) runs end to end in its smoke mode and writes its report.

Figures are never asserted: they depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEMPLATE

SERVERS = ("generated-fastapi", "generated-asgi", "docs-fastapi", "raw-asgi-echo", "websockets")


def test_smoke_run_writes_the_table_the_data_and_the_plots(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(TEMPLATE / "bench" / "run.py"),
        "--smoke",
        "--output",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    report = (tmp_path / "results.md").read_text()
    assert result.stdout.strip() == report.strip()  # the report is printed too
    headings = ["Issue 7 targets", "Keepalive round trips", "Idle connections", "Ticker"]
    headings += ["Broadcast", "Load generator", "Plots"]
    if shutil.which("valgrind"):
        headings.append("Server instructions per round trip")
    for heading in headings:
        assert f"\n## {heading}\n" in report, heading
    assert "| generated service, fastapi flavour | (1) FastAPI as its docs teach |" in report
    assert "not measured: the template has no broadcast yet" in report

    data = json.loads((tmp_path / "results.json").read_text())
    measured = {(r["workload"], r["server"]) for r in data["records"]}
    for server in SERVERS:
        assert ("keepalive", server) in measured
        assert ("idle", server) in measured
    assert {("ticker", "generated-fastapi"), ("ticker", "generated-asgi")} <= measured
    for plot in ("throughput.png", "latency.png", "memory.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG"), plot


def test_an_unknown_server_stops_the_benchmark_with_a_usage_message(tmp_path: Path) -> None:
    command = [sys.executable, str(TEMPLATE / "bench" / "run.py"), "--servers", "nginx"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "--servers: invalid choice: 'nginx'" in result.stderr
