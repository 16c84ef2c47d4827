"""The README's first quick-start command renders the default project and serves it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from websockets.sync.client import connect

from tests.conftest import TEMPLATE, tool_environment


def test_dev_demo_renders_installs_and_serves_the_default_project(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(TEMPLATE / "dev.py"),
        "demo",
        "--port",
        "0",
        "--output",
        str(tmp_path),
    ]
    output: list[str] = []
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=tool_environment(),
        start_new_session=True,  # so that stopping it stops uvicorn too
    ) as demo:
        try:
            port = wait_for_port(demo, output)
            assert "python -m websockets ws://127.0.0.1:" in "".join(output)  # how to talk to it
            with connect(f"ws://127.0.0.1:{port}/ws/echo") as websocket:
                websocket.send(json.dumps({"hello": "demo"}))
                assert json.loads(websocket.recv(timeout=5)) == {"hello": "demo"}
        finally:
            os.killpg(demo.pid, signal.SIGTERM)
    assert (tmp_path / "ws-service" / "ws_service" / "app.py").exists()


def wait_for_port(demo: subprocess.Popen[str], output: list[str], timeout: float = 300) -> int:
    """The port uvicorn reports it listens on; the demo's output so far goes to ``output``."""
    assert demo.stdout is not None
    deadline = time.monotonic() + timeout
    for line in demo.stdout:
        output.append(line)
        started = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
        if started:
            return int(started.group(1))
        assert time.monotonic() < deadline, "".join(output)
    raise AssertionError(f"the demo stopped before serving:\n{''.join(output)}")
