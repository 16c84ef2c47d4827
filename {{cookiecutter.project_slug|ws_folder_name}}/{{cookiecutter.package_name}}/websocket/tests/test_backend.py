"""The FastAPI face: the documented API, `create_router`, and sessions on a real uvicorn."""

from __future__ import annotations

import inspect
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.sync.client import connect

from .. import backend
from ..backend import create_router, drain_text, run_websocket
from ..testing import LiveServer

DOCUMENTED_API = {
    "create_router",
    "run_websocket",
    "every",
    "drain_text",
    "receive_json",
    "now_ns",
    "keepalive_loop",
    "WebSocketHandler",
    "TaskFactory",
}


def test_public_api_is_the_documented_one() -> None:
    assert set(backend.__all__) == DOCUMENTED_API
    assert all(hasattr(backend, name) for name in DOCUMENTED_API)


def parameters(function: object) -> list[tuple[str, inspect._ParameterKind, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_signatures_are_the_documented_ones() -> None:
    positional, varargs = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL
    empty = inspect.Parameter.empty
    assert parameters(backend.create_router) == [
        ("endpoint", positional, empty),
        ("handler", positional, None),
    ]
    assert parameters(backend.run_websocket) == [
        ("websocket", positional, empty),
        ("task_factories", varargs, empty),
    ]
    assert parameters(backend.every) == [
        ("seconds", positional, empty),
        ("tick", positional, empty),
    ]
    assert parameters(backend.drain_text) == [("websocket", positional, empty)]
    assert parameters(backend.receive_json) == [("handle", positional, empty)]
    assert parameters(backend.now_ns) == []
    assert parameters(backend.keepalive_loop) == [("websocket", positional, empty)]
    coroutines = {"run_websocket", "drain_text", "keepalive_loop"}
    for name in ("create_router", "every", "receive_json", "now_ns", *coroutines):
        assert inspect.iscoroutinefunction(getattr(backend, name)) == (name in coroutines), name


def test_create_router_defaults_to_the_keepalive_protocol() -> None:
    app = FastAPI()
    app.include_router(create_router("/ws"))
    with TestClient(app) as client, client.websocket_connect("/ws") as websocket:
        websocket.send_json({"type": "keepalive", "n": 1})
        ack = websocket.receive_json()
    assert ack["type"] == "keepalive_ack"
    assert ack["n"] == 1
    assert isinstance(ack["server_ns"], int)


def test_create_router_hands_path_parameters_to_the_handler() -> None:
    async def greet(websocket: WebSocket) -> None:
        await websocket.send_json({"room": websocket.path_params["room"]})

    async def room(websocket: WebSocket) -> None:
        await run_websocket(websocket, greet, drain_text)

    app = FastAPI()
    app.include_router(create_router("/rooms/{room}", room))
    with TestClient(app) as client, client.websocket_connect("/rooms/lobby") as websocket:
        assert websocket.receive_json() == {"room": "lobby"}


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(f"{__package__}.sample_app:app") as live:
        yield live


def task_count(server: LiveServer) -> int:
    with urllib.request.urlopen(server.url("/tasks"), timeout=5) as response:
        return int(response.read())


def wait_for_task_count(server: LiveServer, expected: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while (count := task_count(server)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def test_real_client_sees_1011_after_an_error_and_it_is_logged_once(server: LiveServer) -> None:
    with (
        connect(server.ws_url("/ws/fail")) as websocket,
        pytest.raises(ConnectionClosedError) as closed,
    ):
        websocket.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011
    time.sleep(0.1)
    assert server.log.count("RuntimeError: a bug in a task") == 1
    assert "/ws/fail" in server.log


def test_real_client_sees_1000_when_the_session_ends_normally(server: LiveServer) -> None:
    with connect(server.ws_url("/ws/finish")) as websocket:
        assert websocket.recv(timeout=5) == "bye"
        with pytest.raises(ConnectionClosedOK) as closed:
            websocket.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1000


@pytest.mark.parametrize("departure", ["close frame", "TCP reset"])
def test_sessions_leave_no_task_behind_when_the_client_leaves(
    server: LiveServer, departure: str
) -> None:
    baseline, log_start = task_count(server), len(server.log)
    for _ in range(5):
        with connect(server.ws_url("/ws/tick")) as websocket:
            assert websocket.recv(timeout=5) == "tick"
            if departure == "TCP reset":  # vanish with no close frame, as a crashed client does
                linger_0s = struct.pack("ii", 1, 0)  # close() then sends RST, not FIN
                websocket.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_0s)
                websocket.socket.close()
    assert wait_for_task_count(server, baseline) == baseline
    assert "Traceback" not in server.log[log_start:]
