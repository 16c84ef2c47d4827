{%- set first = (cookiecutter.endpoints | ws_endpoints | first) -%}
"""The runner, ``python -m {{ cookiecutter.package_name }}``: production defaults, options, bad settings."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.websocket.testing import LiveServer

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


@pytest.mark.skipif(not os.path.exists("/proc/self/limits"), reason="reads /proc (Linux)")
def test_the_runner_lifts_its_open_file_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves no room to lower the soft one")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the runner inherits 256
    try:
        with LiveServer(APP, server="runner") as server:
            limits = Path(f"/proc/{server.pid}/limits").read_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)], line


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
