{%- set first = (cookiecutter.endpoints | ws_endpoints | first) -%}
"""The runner, ``python -m {{ cookiecutter.package_name }}``: production defaults, options, bad settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection

from {{ cookiecutter.package_name }}.websocket.testing import LiveServer

from .contract import connect

APP = "{{ cookiecutter.package_name }}.app:app"
ANY_ENDPOINT = "{{ first.example_url }}"


@pytest.fixture(scope="module")
def runner() -> Iterator[LiveServer]:
    with LiveServer(APP, server="runner", env={"MAX_MESSAGE_BYTES": "1024"}) as server:
        yield server


def test_compression_is_off_unless_asked(runner: LiveServer) -> None:
    with connect(runner.ws_url(ANY_ENDPOINT)) as websocket:  # the client offers deflate
        assert websocket.response is not None
        assert websocket.response.headers.get("Sec-WebSocket-Extensions") is None
    with (
        LiveServer(APP, server="runner", args=["--ws-per-message-deflate"]) as compressing,
        connect(compressing.ws_url(ANY_ENDPOINT)) as websocket,
    ):
        assert websocket.response is not None
        assert "permessage-deflate" in websocket.response.headers["Sec-WebSocket-Extensions"]


def receive_until_closed(websocket: ClientConnection) -> None:
    for _ in range(100):  # ticks may come first
        websocket.recv(timeout=5)


def test_the_server_itself_refuses_messages_over_the_size_limit(runner: LiveServer) -> None:
    with connect(runner.ws_url(ANY_ENDPOINT), max_size=None) as websocket:
        websocket.send("x" * 2000)  # over MAX_MESSAGE_BYTES=1024: never reaches the app
        with pytest.raises(ConnectionClosedError) as closed:
            receive_until_closed(websocket)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def test_json_logs_are_one_object_per_line_with_the_events_fields_as_keys() -> None:
    with LiveServer(APP, server="runner", env={"LOG_FORMAT": "json"}) as server:
        with connect(server.ws_url(ANY_ENDPOINT)) as websocket:
            websocket.send('{"type": "keepalive", "client_ns": 987654321}')
            websocket.recv(timeout=5)
        deadline = time.monotonic() + 10
        while '"event": "close"' not in server.log:
            assert time.monotonic() < deadline, server.log
            time.sleep(0.02)
    entries = [json.loads(line) for line in server.log.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert any("Uvicorn running on" in entry["message"] for entry in entries)  # uvicorn's too
    events = {entry["event"]: entry for entry in entries if "event" in entry}
    assert events["open"]["path"] == ANY_ENDPOINT
    assert events["open"]["client"].startswith("127.0.0.1:")
    assert events["close"]["code"] == 1000
    assert events["close"]["duration_seconds"] >= 0
    assert "987654321" not in server.log  # never message contents


def run_module(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_help_explains_every_option_and_its_variable() -> None:
    result = run_module("--help")
    assert result.returncode == 0
    for variable in ("HOST", "PORT", "WORKERS", "LOG_LEVEL", "WS_PER_MESSAGE_DEFLATE"):
        assert f"({variable})" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"PORT": "eighty"}, "PORT='eighty' must be a TCP port number"),
        ((), {"MAX_CONNECTIONS": "-1"}, "MAX_CONNECTIONS='-1' must be a positive whole number"),
        (("--reload", "--workers", "2"), {}, "--reload runs a single process"),
        (("--port", "70000"), {}, "--port 70000 is not a TCP port"),
    ],
)
def test_a_bad_setting_stops_the_runner_with_one_clear_line(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_module(*args, **env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
