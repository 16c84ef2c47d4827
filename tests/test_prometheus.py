"""A real Prometheus scrapes a running generated service; promtool finds nothing to say.

Debian's ``prometheus`` package gives both programs. Without them these tests skip, saying
why; with ``REQUIRE_PROMETHEUS=1`` (CI, ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from websocket.testing import LiveServer  # the vendored backend, as every project has it
from websockets.sync.client import connect

from tests.conftest import render, unavailable

HELD = 5
"""Connections each test holds open while Prometheus counts them."""


def require_prometheus() -> None:
    missing = [name for name in ("prometheus", "promtool") if shutil.which(name) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (Debian: apt-get install prometheus)"
        unavailable(reason, required=os.environ.get("REQUIRE_PROMETHEUS") == "1")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def prometheus(folder: Path, target: str) -> Iterator[str]:
    """A Prometheus server scraping ``target`` (host:port) every second; its base URL."""
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: ws-service\n"
        "    metrics_path: /metrics\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    address = f"127.0.0.1:{free_port()}"
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={address}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://{address}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query(base: str, promql: str) -> list[dict[str, object]]:
    """The result of an instant PromQL query through Prometheus' HTTP API ([] if not up)."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
    except OSError:  # not listening yet
        return []
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def wait_for_value(base: str, promql: str, wanted: float, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    seen: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        seen = query(base, promql)
        values = [float(sample["value"][1]) for sample in seen]  # type: ignore[index]
        if values == [wanted]:
            return
        time.sleep(0.5)
    raise AssertionError(f"{promql} never gave {wanted} within {timeout} s; last: {seen}")


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, check=False
    )


@pytest.mark.parametrize(
    ("framework", "workers"), [("fastapi", 1), ("asgi", 1), ("fastapi", 2)], ids=str
)
def test_prometheus_counts_the_connections_a_client_holds_open(
    framework: str, workers: int, tmp_path: Path, cookiecutter_config: Path
) -> None:
    require_prometheus()
    answers = {"framework": framework, "endpoints": "/ws/rooms/{room}:echo, /ws/keepalive"}
    project = render(tmp_path / "project", cookiecutter_config, answers)
    package = "ws_service"
    # Two workers: python -m makes a multiprocess folder itself; one: none.
    server_kind, args = ("runner", ["--workers", str(workers)]) if workers > 1 else ("uvicorn", [])
    with (
        LiveServer(f"{package}.app:app", server=server_kind, args=args, cwd=project) as service,
        prometheus(tmp_path, f"127.0.0.1:{service.port}") as base,
        ExitStack() as held,
    ):
        # Workers listen once started (the supervisor only binds the socket).
        deadline = time.monotonic() + 30
        while service.log.count("Application startup complete") < workers:
            assert time.monotonic() < deadline, service.log
            time.sleep(0.05)
        for number in range(HELD):
            websocket = held.enter_context(connect(service.ws_url(f"/ws/rooms/{number}")))
            websocket.send('{"type": "keepalive", "client_ns": 1}')
            websocket.recv(timeout=5)
        wait_for_value(base, 'up{job="ws-service"}', 1)
        promql = 'sum(websocket_connections_open{job="ws-service", endpoint="/ws/rooms/{room}"})'
        wait_for_value(base, promql, HELD)
        with urllib.request.urlopen(service.url("/metrics"), timeout=5) as response:
            exposition = response.read()
        checked = promtool_check(exposition)
        findings = checked.stdout + checked.stderr
        assert checked.returncode == 0, findings
        assert findings == b"", findings
        held.close()
        wait_for_value(base, promql, 0)
        received = 'sum(websocket_messages_received_total{endpoint="/ws/rooms/{room}"})'
        wait_for_value(base, received, HELD)
    assert "Traceback" not in service.log, service.log
