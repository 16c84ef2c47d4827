"""The framework-free face: its API, the `Router`, and frames on a real server."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .. import asgi_backend, session
from ..asgi import Message, Receive, Scope, Send, WebSocket
from ..asgi_backend import Router, respond_json
from ..testing import LiveServer, ScriptedClient


def test_helpers_are_the_session_helpers() -> None:
    for name in (
        "run_websocket",
        "every",
        "drain_text",
        "receive_json",
        "now_ns",
        "keepalive_loop",
    ):
        assert getattr(asgi_backend, name) is getattr(session, name)


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await respond_json(send, {"status": "ok", "params": scope.get("path_params", {})})


async def call_http(app: Router, method: str, path: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    return sent


def status_and_body(sent: list[Message]) -> tuple[int, Any]:
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_http_routes_answer_404_405_and_fill_path_params() -> None:
    app = Router()
    app.add_http_route("/healthz", ok)
    app.add_http_route("/items/{item}", ok)
    assert status_and_body(await call_http(app, "GET", "/healthz")) == (
        200,
        {"status": "ok", "params": {}},
    )
    assert status_and_body(await call_http(app, "GET", "/items/7"))[1]["params"] == {"item": "7"}
    assert status_and_body(await call_http(app, "GET", "/nothing")) == (
        404,
        {"detail": "Not Found"},
    )
    sent = await call_http(app, "POST", "/healthz")
    assert status_and_body(sent) == (405, {"detail": "Method Not Allowed"})
    assert (b"allow", b"GET, HEAD") in sent[0]["headers"]


async def test_a_mount_takes_its_prefix_and_all_under_it_with_the_prefix_in_root_path() -> None:
    async def where(scope: Scope, receive: Receive, send: Send) -> None:
        await respond_json(send, [scope["root_path"], scope["path"]])

    app = Router()
    app.mount("/browser/", where)
    for method, path in (("GET", "/browser"), ("GET", "/browser/"), ("POST", "/browser/a/b.js")):
        assert status_and_body(await call_http(app, method, path)) == (200, ["/browser", path])
    for path in ("/browserx", "/browser.js", "/"):
        assert status_and_body(await call_http(app, "GET", path))[0] == 404


async def test_websocket_routes_match_exactly_and_fill_path_params() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(websocket: WebSocket) -> None:
        seen.append(websocket.path_params)
        await websocket.close()

    app = Router()
    app.add_websocket_route("/rooms/{room}/users/{user}", handler)
    for path in ("/rooms/lobby/users/ann", "/rooms/lobby/users/ann/extra", "/rooms//users/x"):
        client = ScriptedClient(path)
        await app(client.scope, client.receive, client.send)
    assert seen == [{"room": "lobby", "user": "ann"}]


async def test_unknown_websocket_path_is_refused_before_accept() -> None:
    client = ScriptedClient("/nowhere")
    client.scope["extensions"] = {"websocket.http.response": {}}
    await Router()(client.scope, client.receive, client.send)
    assert client.sent_so_far() == [{"type": "websocket.close", "code": 1000, "reason": ""}]


async def run_lifespan(app: Router, scope: Scope, sent: list[Message]) -> None:
    """Start and stop ``app`` as a server does; its answers go to ``sent``."""
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)


async def test_lifespan_startup_and_shutdown_are_acknowledged() -> None:
    sent: list[Message] = []
    await run_lifespan(Router(), {"type": "lifespan"}, sent)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


async def test_the_lifespan_runs_around_the_app_s_life_and_its_state_reaches_the_scope() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Router) -> AsyncIterator[dict[str, str]]:
        events.append("started")
        yield {"resource": "ready"}
        events.append("stopped")

    scope: Scope = {"type": "lifespan", "state": {}}
    sent: list[Message] = []
    await run_lifespan(Router(lifespan=lifespan), scope, sent)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert events == ["started", "stopped"]
    assert scope["state"] == {"resource": "ready"}  # servers copy it into every connection


async def test_a_failing_startup_is_reported_to_the_server_and_raised() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Router) -> AsyncIterator[None]:
        raise OSError("the database is not there")
        yield

    sent: list[Message] = []
    with pytest.raises(OSError, match="the database is not there"):
        await run_lifespan(Router(lifespan=lifespan), {"type": "lifespan", "state": {}}, sent)
    [failed] = sent
    assert failed["type"] == "lifespan.startup.failed"
    assert "OSError: the database is not there" in failed["message"]  # the server logs it


async def test_lifespan_state_needs_a_server_that_supports_it() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Router) -> AsyncIterator[dict[str, str]]:
        yield {"resource": "ready"}

    sent: list[Message] = []
    with pytest.raises(RuntimeError, match="does not support ASGI lifespan state"):
        await run_lifespan(Router(lifespan=lifespan), {"type": "lifespan"}, sent)
    assert [message["type"] for message in sent] == ["lifespan.startup.failed"]


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(f"{__package__}.sample_asgi_app:app") as live:
        yield live


@pytest.mark.parametrize("frame", ["text", "", "h\u00e9llo \u2713", b"\x00\xffbinary", b""])
def test_frames_come_back_as_sent_on_a_real_server(server: LiveServer, frame: str | bytes) -> None:
    with connect(server.ws_url("/ws/raw-echo")) as websocket:
        websocket.send(frame)
        assert websocket.recv(timeout=5) == frame


def test_unknown_paths_are_refused_on_a_real_server(server: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused, connect(server.ws_url("/ws/nowhere")):
        pass
    assert refused.value.response.status_code == 403
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.url("/nowhere"), timeout=5)
    missing.value.close()  # it holds the connection
    assert missing.value.code == 404


def test_websocket_routes_lists_what_was_added_in_order() -> None:
    async def chat(websocket: WebSocket) -> None:
        await websocket.close()

    router = Router()
    router.add_websocket_route("/ws/chat", chat)
    router.add_http_route("/healthz", respond_healthz)
    router.add_websocket_route("/ws/rooms/{room}")

    assert router.websocket_routes() == [
        ("/ws/chat", chat),
        ("/ws/rooms/{room}", asgi_backend.keepalive_loop),
    ]


async def respond_healthz(scope: Scope, receive: Receive, send: Send) -> None:
    await respond_json(send, {"status": "ok"})
