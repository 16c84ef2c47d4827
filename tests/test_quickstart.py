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
    demo = subprocess.Popen(
        [
            sys.executable,
            str(TEMPLATE / "dev.py"),
            "demo",
            "--port",
            "0",
            "--output",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=tool_environment(),
        start_new_session=True,
    )
    output: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 300
        port = None
        for line in demo.stdout:
            output.append(line)
            started = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if started:
                port = int(started.group(1))
                break
            assert time.monotonic() < deadline, "".join(output)
        assert port, "".join(output)
        assert "python -m websockets ws://127.0.0.1:" in "".join(output)  # how to talk to it
        with connect(f"ws://127.0.0.1:{port}/ws/echo") as websocket:
            websocket.send(json.dumps({"hello": "demo"}))
            assert json.loads(websocket.recv(timeout=5)) == {"hello": "demo"}
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(30)
    assert (tmp_path / "ws-service" / "ws_service" / "app.py").exists()
