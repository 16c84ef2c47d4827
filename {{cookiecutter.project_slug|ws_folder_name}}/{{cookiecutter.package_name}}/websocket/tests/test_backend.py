"""The FastAPI face: the documented API and `create_router`."""

from __future__ import annotations

import inspect

from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.routing import APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.routing import WebSocketRoute

from .. import backend
from ..asyncapi import KEEPALIVE_ENDPOINT, declares, messages_of
from ..backend import (
    create_router,
    drain_text,
    keepalive_loop,
    run_websocket,
    websocket_routes,
)

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
    "websocket_routes",
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
    assert parameters(backend.receive_json) == [
        ("handle", positional, empty),
        ("presence", inspect.Parameter.KEYWORD_ONLY, None),
    ]
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


def endpoint_of(router: APIRouter) -> object:
    (route,) = router.routes
    assert isinstance(route, WebSocketRoute)  # Starlette's: no dependency solving per connection
    assert not isinstance(route, APIWebSocketRoute)
    [(_, handler)] = websocket_routes(router.routes)
    return handler


def test_create_router_calls_any_handler_itself_with_the_connection_alone() -> None:
    async def plain(websocket: WebSocket) -> None:
        await run_websocket(websocket, drain_text)

    async def with_option(websocket: WebSocket, greeting: str = "hi") -> None:
        async def greet(websocket: WebSocket) -> None:
            await websocket.send_json({"greeting": greeting})

        await run_websocket(websocket, greet, drain_text)

    assert endpoint_of(create_router("/plain", plain)) is plain
    assert endpoint_of(create_router("/default")) is keepalive_loop
    assert endpoint_of(create_router("/option", with_option)) is with_option
    app = FastAPI()
    app.include_router(create_router("/option", with_option))
    # The handler gets the connection and nothing else: FastAPI does not take ``greeting``
    # for a query parameter.
    with TestClient(app) as client, client.websocket_connect("/option?greeting=x") as websocket:
        assert websocket.receive_json() == {"greeting": "hi"}


def test_the_route_that_took_a_connection_is_in_its_scope_with_the_path_template() -> None:
    async def tell_route(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"route": websocket.scope["route"].path})
        await websocket.close()

    app = FastAPI()
    outer = APIRouter(prefix="/v1")
    outer.include_router(create_router("/rooms/{room}", tell_route))
    app.include_router(outer)
    app.include_router(create_router("/ws", tell_route))
    twice = APIRouter()
    twice.include_router(create_router("/{room}", tell_route))
    app.include_router(twice, prefix="/a")
    app.include_router(twice, prefix="/b")
    with TestClient(app) as client:
        for url, template in (
            ("/ws", "/ws"),
            ("/v1/rooms/42", "/v1/rooms/{room}"),  # the template, never the path
            ("/a/1", "/a/{room}"),
            ("/b/2", "/b/{room}"),
        ):
            with client.websocket_connect(url) as websocket:
                assert websocket.receive_json() == {"route": template}, url


def test_websocket_routes_finds_every_websocket_endpoint_with_its_prefix() -> None:
    app = FastAPI()
    app.include_router(create_router("/ws/a"))
    outer, inner = APIRouter(prefix="/v1"), APIRouter(prefix="/rooms")
    inner.include_router(create_router("/{room}", keepalive_loop))
    outer.include_router(inner)
    app.include_router(outer)
    app.add_api_route("/healthz", lambda: {})

    found = websocket_routes(app.routes)

    assert [path for path, _ in found] == ["/ws/a", "/v1/rooms/{room}"]


def test_a_wrapped_handler_keeps_its_asyncapi_declaration() -> None:
    @declares(KEEPALIVE_ENDPOINT)
    async def serve(websocket: WebSocket, greeting: str = "hi") -> None:  # FastAPI can't call it
        await keepalive_loop(websocket)

    app = FastAPI()
    app.include_router(create_router("/ws/wrapped", serve))

    [(path, handler)] = websocket_routes(app.routes)
    assert path == "/ws/wrapped"
    assert handler is serve
    assert messages_of(handler) is KEEPALIVE_ENDPOINT
