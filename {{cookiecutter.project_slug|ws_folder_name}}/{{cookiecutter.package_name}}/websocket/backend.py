"""The websocket backend for FastAPI: `create_router` and the session helpers.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). This module's names are the backend's documented public API; the
helpers themselves live in ``session.py`` and serve every face of the backend.

Typical use, one handler per endpoint::

    async def chat(websocket: WebSocket) -> None:
        await run_websocket(websocket, receive_json(on_message))

    app.include_router(create_router("/ws/chat", chat))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

from fastapi import APIRouter, WebSocket
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from starlette.routing import BaseRoute, WebSocketRoute, compile_path
from starlette.types import Receive, Scope, Send

from . import session
from .session import drain_text, every, keepalive_loop, now_ns, receive_json, run_websocket

__all__ = [
    "TaskFactory",
    "WebSocketHandler",
    "create_router",
    "drain_text",
    "every",
    "keepalive_loop",
    "now_ns",
    "receive_json",
    "run_websocket",
    "websocket_routes",
]

WebSocketHandler: TypeAlias = Callable[[WebSocket], Awaitable[None]]
"""A coroutine function that serves one websocket connection from start to end."""

TaskFactory: TypeAlias = session.TaskFactory[WebSocket]
"""Something to run for the length of a session, given its socket (see `run_websocket`)."""


def create_router(endpoint: str, handler: WebSocketHandler | None = None) -> APIRouter:
    """Build a websocket router bound to endpoint.

    ``endpoint`` is a FastAPI websocket path (for example ``/ws/ecc``, or
    ``/ws/rooms/{room}``, whose value is then in ``websocket.path_params``). ``handler``
    serves each connection and defaults to `keepalive_loop`. Returns an ``APIRouter`` with
    one websocket entrypoint, for ``app.include_router``.
    """
    router = APIRouter()
    router.routes.append(
        WebSocketRoute(endpoint, _Endpoint(handler or keepalive_loop), name=endpoint)
    )
    return router


class _EndpointTemplate:
    """What a `create_router` route puts in ``scope["route"]``: its ``path`` is the path
    template (prefixes of included routers too), from which the metrics label the endpoint,
    as from a Starlette or `Router` route."""

    __slots__ = ("path", "pattern")

    def __init__(self, path: str) -> None:
        self.path = path
        self.pattern = compile_path(path)[0]


class _Endpoint:
    """The ASGI application of a `create_router` route: the handler, given the connection
    and nothing else, with the route's path template in ``scope["route"]``.

    Mounted as Starlette's ``WebSocketRoute`` (an ASGI application as it is, with no
    session wrapper), not FastAPI's ``APIWebSocketRoute``: FastAPI's dependency solving,
    exit stacks and wrappers cost about 5 KiB per open connection (bench/memory.py) and give
    a handler of one ``WebSocket`` nothing. FastAPI sets no ``scope["route"]`` for such a
    route, so this finds its own template once, among the app's routes.
    """

    __slots__ = ("__wrapped__", "templates")

    def __init__(self, handler: WebSocketHandler) -> None:
        self.__wrapped__ = handler
        self.templates: list[_EndpointTemplate] | None = None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # What the route awaits is the handler's coroutine itself: no frame of this call is
        # held for the connection's life.
        templates = self.templates
        if templates is None:  # the first connection: the app's routes are all mounted
            routes = getattr(scope.get("app"), "routes", [])
            mounted = [path for path, app in _websocket_apps(routes) if app is self]
            templates = self.templates = [_EndpointTemplate(path) for path in mounted]
        if len(templates) == 1:
            scope["route"] = templates[0]
        else:  # not found, or the router included at several prefixes
            path, root = scope["path"], scope.get("root_path", "")
            if root and path.startswith(root):  # the path under a mount, as routes match it
                path = path[len(root) :]
            for template in templates:
                if template.pattern.match(path):
                    scope["route"] = template
                    break
        return self.__wrapped__(WebSocket(scope, receive=receive, send=send))


def websocket_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, object]]:
    """The websocket endpoints among ``routes`` (an app's ``app.routes``), as (path, handler),
    included routers walked into with their prefixes: what ``GET /asyncapi.json`` describes."""
    return [
        (path, app.__wrapped__ if isinstance(app, _Endpoint) else app)
        for path, app in _websocket_apps(routes)
    ]


def _websocket_apps(routes: Sequence[BaseRoute]) -> list[tuple[str, object]]:
    return [
        (context.path, context.endpoint)
        for context in iter_route_contexts(routes)
        if isinstance(context.original_route, APIWebSocketRoute | WebSocketRoute) and context.path
    ]
