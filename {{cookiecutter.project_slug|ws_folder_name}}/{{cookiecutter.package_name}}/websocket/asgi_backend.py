"""The websocket backend without a framework: `Router` and the session helpers.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). The counterpart of ``backend.py`` for raw ASGI: handlers take the
`WebSocket` of ``asgi.py``, and `Router` is the whole ASGI application. It needs nothing
but the standard library (run it with uvicorn or any ASGI server).

Typical use, one handler per endpoint::

    async def chat(websocket: WebSocket) -> None:
        await run_websocket(websocket, receive_json(on_message))

    app = Router()
    app.add_websocket_route("/ws/chat", chat)

What the app needs for its whole life (a broadcast hub, a connection pool) comes from a
``lifespan``, as in Starlette and FastAPI: ``Router(lifespan=lifespan)``.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from http import HTTPStatus
from typing import Any, NamedTuple, TypeAlias

from . import session
from .asgi import WebSocket
from .asgi_types import ASGIApp, Receive, Scope, Send
from .session import drain_text, every, keepalive_loop, now_ns, receive_json, run_websocket

__all__ = [
    "ASGIApp",
    "Lifespan",
    "Route",
    "Router",
    "TaskFactory",
    "WebSocketHandler",
    "drain_text",
    "every",
    "keepalive_loop",
    "now_ns",
    "receive_json",
    "respond",
    "respond_json",
    "run_websocket",
]

WebSocketHandler: TypeAlias = Callable[[WebSocket], Awaitable[None]]
"""A coroutine function that serves one websocket connection from start to end."""

TaskFactory: TypeAlias = session.TaskFactory[WebSocket]
"""Something to run for the length of a session, given its socket (see `run_websocket`)."""

Lifespan: TypeAlias = Callable[["Router"], AbstractAsyncContextManager[Mapping[str, Any] | None]]
"""Given the app, an async context manager entered at startup and left at shutdown.

What it yields, if not None, is added to the ASGI state: every connection's
``scope["state"]`` (Starlette's ``lifespan`` works the same way)."""

_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


def _compile(path: str) -> re.Pattern[str]:
    """A regular expression for ``path``: each ``{name}`` matches one path segment, and
    ``{name:path}`` the rest of the path (slashes too), as in Starlette."""
    pattern, end = "", 0
    for parameter in _PARAMETER.finditer(path):
        matches = ".*" if parameter.group(2) else "[^/]+"
        pattern += re.escape(path[end : parameter.start()]) + f"(?P<{parameter.group(1)}>{matches})"
        end = parameter.end()
    return re.compile(pattern + re.escape(path[end:]))


class Route(NamedTuple):
    """One route of a `Router`; the one that takes a request is its ``scope["route"]``."""

    path: str
    """The path template (``/ws/rooms/{room}``), as Starlette's routes have it."""
    pattern: re.Pattern[str]


class Router:
    """A small ASGI application: websocket and HTTP routes by path, and the lifespan.

    A path is matched exactly, ``{name}`` matching one segment; the values land in
    ``scope["path_params"]`` (``websocket.path_params``) and the `Route` in
    ``scope["route"]`` (its ``path`` is the template, for metrics). A handshake to an unknown path
    is refused before accept, which servers answer with HTTP 403 (as Starlette does; a 404
    through the ASGI denial-response extension makes uvicorn's default websockets-sansio
    implementation log a spurious error, uvicorn PR #3138). An unknown HTTP path gets 404,
    a known one with another method 405. ``lifespan`` (see `Lifespan`) starts and stops
    what the app needs; without one, startup and shutdown are just acknowledged.
    """

    def __init__(self, lifespan: Lifespan | None = None) -> None:
        self._websocket_routes: list[tuple[Route, WebSocketHandler]] = []
        self._http_routes: list[tuple[Route, ASGIApp, frozenset[str] | None]] = []
        self._lifespan = lifespan

    def add_websocket_route(self, path: str, handler: WebSocketHandler | None = None) -> None:
        """Serve websocket connections to ``path`` with ``handler`` (default: `keepalive_loop`)."""
        self._websocket_routes.append((Route(path, _compile(path)), handler or keepalive_loop))

    def websocket_routes(self) -> list[tuple[str, WebSocketHandler]]:
        """The websocket routes, as (path, handler), in the order they were added."""
        return [(route.path, handler) for route, handler in self._websocket_routes]

    def add_http_route(
        self, path: str, app: ASGIApp, methods: tuple[str, ...] | None = ("GET", "HEAD")
    ) -> None:
        """Serve HTTP requests to ``path`` with the ASGI application ``app``; ``methods``
        None: every method (``app`` answers those it does not take)."""
        self._http_routes.append(
            (Route(path, _compile(path)), app, None if methods is None else frozenset(methods))
        )

    def mount(self, prefix: str, app: ASGIApp) -> None:
        """Serve HTTP requests to ``prefix`` and every path under it with ``app``, every
        method, ``prefix`` added to the scope's ``root_path`` (what is under it in
        ``path_params["path"]``), as Starlette's ``Mount`` does (``static.StaticFolder``)."""
        prefix = prefix.rstrip("/")

        async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
            await app({**scope, "root_path": scope.get("root_path", "") + prefix}, receive, send)

        self.add_http_route(prefix, mounted, methods=None)
        self.add_http_route(prefix + "/{path:path}", mounted, methods=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # here, not in a method: a coroutine less each
            for route, handler in self._websocket_routes:
                match = route.pattern.fullmatch(scope["path"])
                if match:
                    scope["path_params"] = match.groupdict()
                    scope["route"] = route
                    del match  # not held by this frame for the connection's life
                    await handler(WebSocket(scope, receive, send))
                    return
            await send({"type": "websocket.close", "code": 1000, "reason": ""})
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._serve_lifespan(scope, receive, send)

    async def _serve_lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Enter the lifespan at startup and leave it at shutdown, reporting failures.

        A failure is sent to the server (which logs it and, at startup, exits) and raised.
        """
        await receive()  # lifespan.startup
        context = self._lifespan(self) if self._lifespan else nullcontext()
        started = False
        try:
            async with context as state:
                if state is not None:
                    if "state" not in scope:
                        raise RuntimeError(
                            "The server does not support ASGI lifespan state, which the "
                            "app's lifespan needs; run it with uvicorn or hypercorn."
                        )
                    scope["state"].update(state)
                await send({"type": "lifespan.startup.complete"})
                started = True
                await receive()  # lifespan.shutdown
        except BaseException:
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed: set[str] = set()
        for route, app, methods in self._http_routes:
            match = route.pattern.fullmatch(scope["path"])
            if match:
                if methods is None or scope["method"] in methods:
                    scope["path_params"] = match.groupdict()
                    scope["route"] = route
                    await app(scope, receive, send)
                    return
                allowed |= methods
        if allowed:
            headers = [(b"allow", ", ".join(sorted(allowed)).encode())]
            await respond_json(send, {"detail": HTTPStatus(405).phrase}, 405, headers)
        else:
            await respond_json(send, {"detail": HTTPStatus(404).phrase}, 404)


async def respond(
    send: Send,
    content: bytes,
    content_type: str,
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a complete HTTP response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(content)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})


async def respond_json(
    send: Send, body: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a complete HTTP response with ``body`` as JSON."""
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    await respond(send, content, "application/json", status, headers)
