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

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias, get_type_hints

from fastapi import APIRouter, WebSocket
from fastapi.routing import APIWebSocketRoute, iter_route_contexts
from starlette.routing import BaseRoute, WebSocketRoute

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
    # FastAPI's APIWebSocketRoute puts itself in scope["route"], whose path template labels the
    # metrics; its dependency solving costs about 5 KiB per open connection (bench/memory.py),
    # which Starlette's WebSocketRoute would save, but FastAPI sets no scope["route"] for it.
    router.add_api_websocket_route(endpoint, _entrypoint(handler or keepalive_loop), name=endpoint)
    return router


def websocket_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, object]]:
    """The websocket endpoints among ``routes`` (an app's ``app.routes``), as (path, handler),
    included routers walked into with their prefixes: what ``GET /asyncapi.json`` describes."""
    return [
        (context.path, context.endpoint)
        for context in iter_route_contexts(routes)
        if isinstance(context.original_route, APIWebSocketRoute | WebSocketRoute) and context.path
    ]


def _entrypoint(serve: WebSocketHandler) -> WebSocketHandler:
    """What FastAPI calls for each connection: ``serve`` itself when FastAPI can call it so
    (a coroutine function of one ``WebSocket`` parameter), else a wrapper that calls it.

    Either way ``serve`` gets the connection and nothing else; calling it directly saves a
    coroutine frame per open connection.
    """
    try:
        parameters = list(inspect.signature(serve).parameters.values())
        hints = get_type_hints(serve)
    except (NameError, TypeError, ValueError):  # unresolvable annotations, not a function
        parameters, hints = [], {}
    if (
        inspect.iscoroutinefunction(serve)
        and len(parameters) == 1
        and parameters[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        and parameters[0].default is inspect.Parameter.empty
        and hints.get(parameters[0].name) is WebSocket
    ):
        return serve

    async def websocket_entrypoint(websocket: WebSocket) -> None:
        await serve(websocket)

    # Keep what was set on serve (its AsyncAPI declaration, say), not its signature: FastAPI
    # must see this wrapper's.
    vars(websocket_entrypoint).update(getattr(serve, "__dict__", {}))
    return websocket_entrypoint
