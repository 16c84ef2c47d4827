"""The README's first quick-start command renders the default project and serves it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

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
            printed = "".join(output)
            assert "python -m websockets ws://127.0.0.1:" in printed  # how to talk to it
            with connect(f"ws://127.0.0.1:{port}/ws/echo") as websocket:
                websocket.send(json.dumps({"hello": "demo"}))
                assert json.loads(websocket.recv(timeout=5)) == {"hello": "demo"}
            with connect(f"ws://127.0.0.1:{port}/ws/rooms/room-1") as room:
                assert json.loads(room.recv(timeout=5))["type"] == "subscribed"
            the_printed_channels_instructions_work(port, printed)
        finally:
            os.killpg(demo.pid, signal.SIGTERM)
    assert (tmp_path / "ws-service" / "ws_service" / "app.py").exists()


def the_printed_channels_instructions_work(port: int, printed: str) -> None:
    """Anyone reads news:today, which the printed curl command publishes to; the printed
    tokens are users of chat:lobby."""
    [key] = re.findall(r"Authorization: Bearer ([\w-]+)", printed)
    tokens = dict(re.findall(r"^    (alice|bob): ([\w.-]+)$", printed, re.MULTILINE))
    assert set(tokens) == {"alice", "bob"}
    url = f"ws://127.0.0.1:{port}/connection/websocket"
    with connect(url) as anonymous, connect(url) as alice:
        assert command(anonymous, 1, "connect", {})["connect"]["client"]
        assert "subscribe" in command(anonymous, 2, "subscribe", {"channel": "news:today"})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/publish",
            data=json.dumps({"channel": "news:today", "message": {"text": "hello"}}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["offset"] == 1
        push = json.loads(anonymous.recv(timeout=5))["push"]
        assert push == {"channel": "news:today", "pub": {"data": {"text": "hello"}, "offset": 1}}
        refused = command(anonymous, 3, "subscribe", {"channel": "chat:lobby"})
        assert refused["error"]["code"] == 103  # chat is for users

        command(alice, 1, "connect", {"token": tokens["alice"]})
        assert "subscribe" in command(alice, 2, "subscribe", {"channel": "chat:lobby"})
        assert command(alice, 3, "publish", {"channel": "chat:lobby", "data": {"n": 1}}) == {
            "id": 3,
            "publish": {},
        }
        pub = json.loads(alice.recv(timeout=5))["push"]["pub"]
        assert (pub["data"], pub["info"]["user"]) == ({"n": 1}, "alice")


def command(websocket: ClientConnection, id_: int, method: str, body: object) -> dict[str, Any]:
    """Send one Centrifuge command and return its reply."""
    websocket.send(json.dumps({"id": id_, method: body}))
    reply: dict[str, Any] = json.loads(websocket.recv(timeout=5))
    assert reply["id"] == id_, reply
    return reply


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
