"""Sessions of each face on a real server: close codes, logs, and no task left behind."""

from __future__ import annotations

import importlib.util
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect

from ..testing import LiveServer

# A sample app per face; a project keeps the ones it uses.
SAMPLE_APPS = {
    "fastapi": f"{__package__}.sample_app",
    "asgi": f"{__package__}.sample_asgi_app",
}


@pytest.fixture(
    scope="module",
    params=[face for face, module in SAMPLE_APPS.items() if importlib.util.find_spec(module)],
)
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    with LiveServer(f"{SAMPLE_APPS[request.param]}:app") as live:
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


def test_unknown_websocket_path_is_refused_before_accept(server: LiveServer) -> None:
    log_start = len(server.log)
    with pytest.raises(InvalidStatus) as refused, connect(server.ws_url("/ws/nowhere")):
        pass
    assert refused.value.response.status_code == 403
    time.sleep(0.1)
    assert "ERROR" not in server.log[log_start:], server.log[log_start:]
