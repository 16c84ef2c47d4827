"""Fixtures for the backend's own tests: every WebSocket face that this project has."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import selectors
from collections.abc import Callable

import pytest

from ..asgi_types import Receive, Scope, Send
from ..session import SessionSocket
from ..testing import ScriptedClient

SocketFactory = Callable[[ScriptedClient], SessionSocket]

# The faces the session helpers serve, by module; a project keeps the ones it uses.
FACES = {
    "starlette": "starlette.websockets",
    "asgi": f"{__name__.rsplit('.', 2)[0]}.asgi",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@pytest.fixture(params=[face for face, module in FACES.items() if _installed(module)])
def web_socket_class(
    request: pytest.FixtureRequest,
) -> Callable[[Scope, Receive, Send], SessionSocket]:
    """The WebSocket class of one face (each test that uses it runs once per face)."""
    web_socket: Callable[[Scope, Receive, Send], SessionSocket]
    web_socket = importlib.import_module(FACES[request.param]).WebSocket
    return web_socket


@pytest.fixture
def make_socket(web_socket_class: Callable[[Scope, Receive, Send], SessionSocket]) -> SocketFactory:
    """Wrap a scripted client in a WebSocket of one face."""

    def make(client: ScriptedClient) -> SessionSocket:
        return web_socket_class(client.scope, client.receive, client.send)

    return make


DELIVERY_PATHS = {
    "queued": (False, False, False),
    "sent at once": (True, False, False),
    "lane": (True, True, True),
}
"""The ways a broadcast delivery reaches a connection: queued for the connection's task; sent
at once from the hub's delivery where the server offers `SEND_TEXT_NOW`; written by the
channel's `Lane` where it offers `WRITE_DIRECT` too (sent at once until the lane takes it).
The last offers everything `LeanProtocol` does: `RECEIVE_DIRECT` too, so what the client
sends is handed to the app as it comes (keepalives answered with no task woken)."""


@pytest.fixture(params=list(DELIVERY_PATHS))
def delivery_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once on each delivery path: the scripted clients it makes offer
    `SEND_TEXT_NOW`, `WRITE_DIRECT` and `RECEIVE_DIRECT`, the first, or none
    (`ScriptedClient`'s defaults)."""
    path: str = request.param
    sends_now, writes_direct, hands_over = DELIVERY_PATHS[path]
    monkeypatch.setattr(ScriptedClient, "sends_now_by_default", sends_now)
    monkeypatch.setattr(ScriptedClient, "writes_direct_by_default", writes_direct)
    monkeypatch.setattr(ScriptedClient, "hands_over_by_default", hands_over)
    return path


@pytest.fixture
def client() -> ScriptedClient:
    return ScriptedClient("/ws/test")


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps ahead whenever it would wait for a timer.

    Timers fire in order at exactly their scheduled (virtual) times and the test takes no
    real time: schedules can be asserted exactly. Only for code that waits on timers.
    """

    def __init__(self) -> None:
        super().__init__(_ClockAdvancingSelector(self))
        self.virtual_time = 0.0

    def time(self) -> float:
        return self.virtual_time


class _ClockAdvancingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0 if timeout is not None else None)
        if not ready and timeout:
            self._loop.virtual_time += timeout  # the next timer is due now
        return ready
