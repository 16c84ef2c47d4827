{%- set endpoints = cookiecutter.endpoints | ws_endpoints -%}
{%- set first = (endpoints | rejectattr("kind", "equalto", "channels") | list + endpoints) | first -%}
{%- set centrifuge = first.kind == "channels" -%}{#- the Centrifuge protocol, not keepalives -#}
{%- set kinds = endpoints | map(attribute="kind") | list -%}
{%- set channels = "channels" in kinds -%}
{%- set broadcast = "broadcast" in kinds or channels -%}{#- the hub -#}
{%- set memory = broadcast and cookiecutter.broadcast_backend != "redis" -%}
{%- set redis = broadcast and cookiecutter.broadcast_backend == "redis" -%}
{%- set ticker = "ticker" in kinds -%}
"""The runner, ``python -m {{ cookiecutter.package_name }}``: production defaults, options, bad settings."""

from __future__ import annotations

{% if memory -%}
import importlib.util
{% endif -%}
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import Close, Frame, Opcode
from websockets.sync.client import ClientConnection

from {{ cookiecutter.package_name }}.settings import STARTUP_REFUSED
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer

from .conftest import AUTH_ENVIRONMENT
from .contract import connect

PACKAGE = "{{ cookiecutter.package_name }}"
APP = "{{ cookiecutter.package_name }}.app:app"
ANY_ENDPOINT = "{{ first.example_url }}"


@pytest.fixture(scope="module")
def runner() -> Iterator[LiveServer]:
    with LiveServer(
        APP, server="runner", env={**AUTH_ENVIRONMENT, "MAX_MESSAGE_BYTES": "1024"}
    ) as server:
        yield server


def test_compression_is_off_unless_asked(runner: LiveServer) -> None:
    with connect(runner.ws_url(ANY_ENDPOINT)) as websocket:  # the client offers deflate
        assert websocket.response is not None
        assert websocket.response.headers.get("Sec-WebSocket-Extensions") is None
    with (
        LiveServer(
            APP, server="runner", env=AUTH_ENVIRONMENT, args=["--ws-per-message-deflate"]
        ) as compressing,
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
        with LiveServer(APP, server="runner", env=AUTH_ENVIRONMENT) as server:
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


def test_json_logs_are_one_object_per_line_with_the_events_fields_as_keys() -> None:
    with LiveServer(APP, server="runner", env={**AUTH_ENVIRONMENT, "LOG_FORMAT": "json"}) as server:
        with connect(server.ws_url(ANY_ENDPOINT)) as websocket:
{%- if centrifuge %}
            websocket.send('{"id": 987654321, "connect": {}}')
            while "error" not in json.loads(websocket.recv(timeout=5)):
                pass  # an anonymous connect is refused (ANONYMOUS_CONNECTIONS=no)
{%- else %}
            websocket.send('{"type": "keepalive", "client_ns": 987654321}')
            while json.loads(websocket.recv(timeout=5))["type"] != "keepalive_ack":
                pass  # subscribed notices and ticks may come first
{%- endif %}
        entries = json_log_until_closed(server)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert any("Uvicorn running on" in entry["message"] for entry in entries)  # uvicorn's too
    events = {entry["event"]: entry for entry in entries if "event" in entry}
    assert events["open"]["path"] == ANY_ENDPOINT
    assert events["open"]["client"].startswith("127.0.0.1:")
    assert events["close"]["code"] == 1000
    assert events["close"]["duration_seconds"] >= 0
    assert "987654321" not in server.log  # never message contents


def json_log_until_closed(server: LiveServer, closes: int = 1) -> list[dict[str, Any]]:
    """The entries of ``server``'s JSON log, once it has logged ``closes`` closes."""
    deadline = time.monotonic() + 10
    while server.log.count('"event": "close"') < closes:
        assert time.monotonic() < deadline, server.log
        time.sleep(0.02)
    return [json.loads(line) for line in server.log.splitlines() if line.strip()]


def test_a_close_that_crosses_the_reply_is_logged_with_the_clients_code() -> None:
    # The client's message and its close reach the server in one write: the reply finds
    # the connection closing, before the session has read the close.
    message = Frame(Opcode.TEXT, {% if centrifuge %}b'{"id": 1, "connect": {}}'{% else %}b'{"type": "keepalive"}'{% endif %}).serialize(mask=True)
    close = Frame(Opcode.CLOSE, Close(4001, "bye").serialize()).serialize(mask=True)
    with LiveServer(APP, server="runner", env={**AUTH_ENVIRONMENT, "LOG_FORMAT": "json"}) as server:
        for _ in range(3):
            with connect(server.ws_url(ANY_ENDPOINT)) as websocket:
                websocket.socket.sendall(message + close)
                with pytest.raises(ConnectionClosed):
                    receive_until_closed(websocket)
        entries = json_log_until_closed(server, closes=3)
    assert [entry["code"] for entry in entries if entry.get("event") == "close"] == [4001] * 3


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
{%- if redis %}
        (
            (),
            {"REDIS_URL": "redis://:secret@127.0.0.1:1/0, redis://:secret@127.0.0.1:1/0"},
            "REDIS_URL lists the same Redis server twice: list each shard once",
        ),
        (
            (),
            {"REDIS_URL": "redis://h:1/0,http://h:2"},
            "REDIS_URL is not a Redis URL (URL 2 of 2)",
        ),
{%- endif %}
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
    assert "secret" not in result.stderr


def start(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Start ``python ARGS`` on 127.0.0.1 and a free port, and wait for it to stop by itself."""
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


GUNICORN_HALT = "gunicorn.errors.HaltServer: <HaltServer 'Worker failed to boot.' 3>"
"""How gunicorn's arbiter ends when a second worker's failed boot reaches it while it halts
for the first: it raises HaltServer again, uncaught, and exits with 1 (benoitc/gunicorn#366;
about 1 start in 7 here with two workers). Its own traceback, after the workers' lines."""


def refusal_of(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines in which the service refused to start (one per process that refused)."""
    output = result.stdout + result.stderr
    if output.rstrip().endswith(GUNICORN_HALT):
        output = output[: output.index("Traceback")]
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith(f"{PACKAGE}: ")]
{%- if not (redis and channels and ticker) %}


UNREAD = [
{%- if not broadcast %}
    "BROADCAST_QUEUE_SIZE",
    "HISTORY_SIZE",
    "HISTORY_TTL_SECONDS",
    "PUBLISH_API_KEY",
    "PRESENCE_ENABLED",
    "JOIN_LEAVE_EVENTS",
    "JOIN_LEAVE_LIMIT",
    "PRESENCE_LIST_LIMIT",
{%- endif %}
{%- if not redis %}
    "PRESENCE_TTL_SECONDS",
    "REDIS_CHANNEL_PREFIX",
    "REDIS_TIMEOUT_SECONDS",
    "REDIS_WAIT_REPLICAS",
    "REDIS_URL",
{%- endif %}
{%- if not channels %}
    "TOKEN_HMAC_SECRET_KEY",
    "TOKEN_PUBLIC_KEY",
    "ANONYMOUS_CONNECTIONS",
    "MAX_CHANNELS_PER_CONNECTION",
    "CONNECTION_TOKEN_TTL_SECONDS",
    "SUBSCRIPTION_TOKEN_TTL_SECONDS",
    "BROWSER_DIR",
{%- endif %}
{%- if not ticker %}
    "TICK_SECONDS",
{%- endif %}
]
"""Variables of ws-template's other kinds of service, which this one does not read."""
{%- endif %}


CLASHES = [
{%- if not (redis and channels and ticker) %}
    *(({name: "5"}, f"{name} is set, but ") for name in UNREAD if name != "REDIS_URL"),
{%- endif %}
{%- if not redis %}
    ({"REDIS_URL": "redis://user:secret@127.0.0.1:1/0"}, "REDIS_URL is set, but "),
{%- endif %}
{%- if broadcast %}
    (
        {"HISTORY_SIZE": "0", "HISTORY_TTL_SECONDS": "60"},
        "HISTORY_TTL_SECONDS is set, but HISTORY_SIZE=0 keeps no history",
    ),
    (
        {"PRESENCE_ENABLED": "no", "JOIN_LEAVE_EVENTS": "yes"},
        "JOIN_LEAVE_EVENTS is set, but PRESENCE_ENABLED=no keeps no presence",
    ),
{%- endif %}
    (
        {"WS_PING_INTERVAL_SECONDS": "0", "WS_PING_TIMEOUT_SECONDS": "5"},
        "WS_PING_TIMEOUT_SECONDS is set, but WS_PING_INTERVAL_SECONDS=0",
    ),
]


@pytest.mark.parametrize(("env", "message"), CLASHES)
def test_settings_that_would_be_ignored_stop_the_runner_with_one_line(
    env: dict[str, str], message: str
) -> None:
    result = start("-m", PACKAGE, "--port", "0", **env)
    assert result.returncode != 0
    [line] = refusal_of(result)
    assert message in line, line
    assert "secret" not in result.stderr


@pytest.mark.parametrize(("env", "message"), CLASHES)
def test_settings_that_would_be_ignored_stop_uvicorn_started_by_hand(
    env: dict[str, str], message: str
) -> None:
    result = start("-m", "uvicorn", APP, "--port", "0", **env)
    assert result.returncode == STARTUP_REFUSED
    [line] = refusal_of(result)
    assert message in line, line
    assert "secret" not in result.stderr
{%- if memory %}


def workers_case(
    name: str, args: list[str], env: dict[str, str], told: str, exits_0: bool | None
) -> object:
    """A way to start several workers: ``told`` is what the refusal says of it; ``exits_0``
    when the server's supervisor stops with status 0 after a worker fails to start (None: it
    may or may not)."""
    module = "uvicorn_worker" if name.startswith("gunicorn") else name.partition(" ")[0]
    return pytest.param(
        args,
        env,
        told,
        exits_0,
        id=name,
        marks=pytest.mark.skipif(not installed(module), reason=f"{module} is not installed"),
    )


def installed(module: str) -> bool:
    return module in ("runner", "uvicorn") or importlib.util.find_spec(module) is not None


RUNNER = f"python -m {PACKAGE} was started with %d worker processes (--workers or WORKERS)"
GUNICORN = ["-m", "gunicorn", "--bind", "127.0.0.1:0"]
UVICORN = "uvicorn was started with 2 worker processes (--workers or WEB_CONCURRENCY)"
SEVERAL_WORKERS = [
    workers_case("runner --workers", ["-m", PACKAGE, "--workers", "2"], {}, RUNNER % 2, False),
    workers_case("runner WORKERS", ["-m", PACKAGE], {"WORKERS": "3"}, RUNNER % 3, False),
    workers_case("uvicorn --workers", ["-m", "uvicorn", APP, "--workers", "2"], {}, UVICORN, True),
    workers_case(
        "uvicorn WEB_CONCURRENCY", ["-m", "uvicorn", APP], {"WEB_CONCURRENCY": "2"}, UVICORN, True
    ),
    workers_case(
        "hypercorn --workers",
        ["-m", "hypercorn", APP, "--bind", "127.0.0.1:0", "--workers", "2"],
        {},
        "hypercorn was started with 2 worker processes (--workers)",
        None,  # hypercorn 0.18's run() ends with 0 or the second worker's status, by timing
    ),
    workers_case(
        "gunicorn -w",
        [*GUNICORN, "-w", "2", "-k", "uvicorn_worker.UvicornWorker", APP],
        {},
        "gunicorn was started with 2 worker processes "
        "(-w, WEB_CONCURRENCY or its configuration file)",
        False,
    ),
]


@pytest.mark.parametrize(("args", "env", "told", "exits_0"), SEVERAL_WORKERS)
def test_several_workers_on_the_memory_hub_are_refused_in_one_line(
    args: list[str], env: dict[str, str], told: str, exits_0: bool | None
) -> None:
    if "uvicorn" in args or PACKAGE in args:
        args = [*args, "--port", "0"]
    result = start(*args, **env)  # it returned: the server stopped by itself
    lines = refusal_of(result)
    assert lines, result.stdout + result.stderr
    for line in lines:  # the runner refuses once, before any worker; a server's workers each
        assert line == (
            f"{PACKAGE}: {told}, but {% if channels and "broadcast" in kinds %}broadcast and channels{% elif channels %}channels{% else %}broadcast{% endif %} endpoints on the memory backend reach only "
            "the clients of their own process (the others would miss their messages): run "
            "one worker, or render the service again with broadcast_backend redis"
        )
    if exits_0 is not None:
        assert (result.returncode == 0) == exits_0, result.returncode
{%- endif %}
