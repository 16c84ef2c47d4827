{%- set broadcast = "broadcast" in (cookiecutter.endpoints | ws_endpoints | map(attribute="kind") | list) -%}
"""The ASGI application: the service's websocket endpoints, plus ``GET /healthz``{% if broadcast %}
and ``POST /api/publish`` (``websocket/publish_api.py``, off until ``PUBLISH_API_KEY`` is set){% endif %}.

Every websocket connection goes through the guard (``websocket/guard.py``): origin check,
authentication (``auth.py``), connection, size, rate, idle and slow-reader limits
(``settings.py``), and a log line when it opens and when it closes.

Run it with ``python -m {{ cookiecutter.package_name }}`` (see ``__main__.py``), or any ASGI server::

    uvicorn {{ cookiecutter.package_name }}.app:app

Settings come from the environment (see ``settings.py``).
"""

from __future__ import annotations

import gc
import logging
{%- if broadcast %}
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
{%- endif %}
{%- if cookiecutter.console_page | ws_yes %}
from pathlib import Path
{%- endif %}
{%- if cookiecutter.framework == "fastapi" %}

from fastapi import FastAPI
{%- if cookiecutter.console_page | ws_yes %}
from fastapi.responses import HTMLResponse
{%- endif %}
{%- if broadcast %}
from starlette.routing import Route
{%- endif %}
{%- endif %}

from . import auth, endpoints
from .settings import {% if broadcast %}Settings, {% endif %}SettingsError, get_settings, refuse_to_start
{%- if cookiecutter.framework == "fastapi" %}
from .websocket.backend import create_router
{%- if broadcast %}
from .websocket.broadcast import HUB_STATE_KEY, Hub
{%- endif %}
from .websocket.guard import Authenticator, WebSocketGuard
{%- if broadcast %}
from .websocket.publish_api import PATH as PUBLISH_PATH
from .websocket.publish_api import PublishAPI
{%- endif %}
{%- else %}
from .websocket.asgi import Receive, Scope, Send
from .websocket.asgi_backend import Router, {% if cookiecutter.console_page | ws_yes %}respond, {% endif %}respond_json
{%- if broadcast %}
from .websocket.broadcast import HUB_STATE_KEY, Hub
{%- endif %}
from .websocket.guard import Authenticator, WebSocketGuard
{%- if broadcast %}
from .websocket.publish_api import PATH as PUBLISH_PATH
from .websocket.publish_api import PublishAPI
{%- endif %}
{%- endif %}
from .websocket.workers import server_workers
{%- if broadcast %}

logger = logging.getLogger(__name__)

BROADCAST_PATHS = [
{%- for endpoint in cookiecutter.endpoints | ws_endpoints | selectattr("kind", "equalto", "broadcast") %}
    "{{ endpoint.path }}",
{%- endfor %}
]
"""The broadcast endpoints' paths: the channels that ``POST /api/publish`` may publish to."""
{%- endif %}

{%- if cookiecutter.framework == "fastapi" %}

TITLE = {{ cookiecutter.project_name | ws_python_string }}
{%- endif %}
{%- if cookiecutter.console_page | ws_yes %}

CONSOLE_PAGE = Path(__file__).with_name("console.html").read_bytes()
CONSOLE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
{%- endif %}
{%- if cookiecutter.framework == "fastapi" %}


def create_app(authenticate: Authenticator = auth.authenticate) -> FastAPI:
    """Build the application: one router per websocket endpoint, and the health check."""
    settings = get_settings()
    settings.check(server_workers())
    configure_logging(settings.log_level)
    configure_gc(settings.gc_threshold)
    app = FastAPI(title=TITLE{% if broadcast %}, lifespan=lifespan{% endif %})
{%- for endpoint in cookiecutter.endpoints | ws_endpoints %}
    {{ ws_formatted(ws_call("app.include_router", ws_call("create_router", '"' ~ endpoint.path ~ '"', "endpoints." ~ endpoint.handler)), 4) }}
{%- endfor %}
    app.add_api_route("/healthz", healthz)
{%- if broadcast %}
    app.router.routes.append(Route(PUBLISH_PATH, publish_api(settings)))
{%- endif %}
{%- if cookiecutter.console_page | ws_yes %}
    app.add_api_route("/", console, include_in_schema=False)
{%- endif %}
    app.add_middleware(WebSocketGuard, policy=settings.policy(), authenticate=authenticate)
    return app


async def healthz() -> dict[str, str]:
    """Liveness probe: the process is up and serving."""
    return {"status": "ok"}
{%- if cookiecutter.console_page | ws_yes %}


async def console() -> HTMLResponse:
    """The console page: try each endpoint from a browser (see console.html)."""
    return HTMLResponse(CONSOLE_PAGE, headers=CONSOLE_HEADERS)
{%- endif %}
{%- else %}


def create_app(authenticate: Authenticator = auth.authenticate) -> WebSocketGuard:
    """Build the application: a route per websocket endpoint, and the health check."""
    settings = get_settings()
    settings.check(server_workers())
    configure_logging(settings.log_level)
    configure_gc(settings.gc_threshold)
    app = Router({% if broadcast %}lifespan=lifespan{% endif %})
{%- for endpoint in cookiecutter.endpoints | ws_endpoints %}
    {{ ws_formatted(ws_call("app.add_websocket_route", '"' ~ endpoint.path ~ '"', "endpoints." ~ endpoint.handler), 4) }}
{%- endfor %}
    app.add_http_route("/healthz", healthz)
{%- if broadcast %}
    app.add_http_route(PUBLISH_PATH, publish_api(settings), methods=None)
{%- endif %}
{%- if cookiecutter.console_page | ws_yes %}
    app.add_http_route("/", console)
{%- endif %}
    return WebSocketGuard(app, policy=settings.policy(), authenticate=authenticate)


async def healthz(scope: Scope, receive: Receive, send: Send) -> None:
    """Liveness probe: the process is up and serving."""
    await respond_json(send, {"status": "ok"})
{%- if cookiecutter.console_page | ws_yes %}


async def console(scope: Scope, receive: Receive, send: Send) -> None:
    """The console page: try each endpoint from a browser (see console.html)."""
    headers = [(name.encode(), value.encode()) for name, value in CONSOLE_HEADERS.items()]
    await respond(send, CONSOLE_PAGE, "text/html; charset=utf-8", headers=headers)
{%- endif %}
{%- endif %}


{%- if broadcast %}


def publish_api(settings: Settings) -> PublishAPI:
    """``POST /api/publish``: publish to a broadcast channel over HTTP (see README.md)."""
    return PublishAPI(
        BROADCAST_PATHS,
        api_key=settings.publish_api_key,
        max_message_bytes=settings.max_message_bytes,
    )
{%- endif %}


def configure_gc(threshold: int) -> None:
    """Let ``threshold`` allocations pass between the garbage collector's young passes.

    With Python's default (700), a process holding thousands of connections runs young
    collections that find nothing and then full ones that pause every connection for as
    long as it takes to walk them all (README, "Garbage collection"). Reference counting
    frees all but cyclic garbage at once either way.
    """
    gc.set_threshold(threshold, *gc.get_threshold()[1:])


def configure_logging(level: str) -> None:
    """Send the service's log records to stderr at ``level``, unless logging is set up."""
    logger = logging.getLogger(__package__)
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
{%- if broadcast %}


@asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[dict[str, Hub]]:
    """Start the broadcast hub with the service, and close it when the service stops.

    Handlers and routes find it in the ASGI state (``hub_of(websocket)``,
    ``hub_of(request)``); the hub comes from the settings (``settings.py``). Start here
    anything else the service needs for its life.
    """
    settings = get_settings()
    if not settings.publish_api_key:
        logger.warning("%s refuses every call: PUBLISH_API_KEY is not set", PUBLISH_PATH)
    async with settings.hub() as hub:
        yield {HUB_STATE_KEY: hub}
{%- endif %}


try:
    app = create_app()
except SettingsError as error:  # one line, not a traceback, in whatever server imports it
    refuse_to_start(error)
