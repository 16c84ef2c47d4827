{%- set broadcast = "broadcast" in (cookiecutter.endpoints | ws_endpoints | map(attribute="kind") | list) -%}
"""The ASGI application: the service's websocket endpoints, plus ``GET /healthz``.

Every websocket connection goes through the guard (``websocket/guard.py``): origin check,
authentication (``auth.py``), connection, size, rate, idle and slow-reader limits
(``settings.py``), and a log line when it opens and when it closes.

Run it with::

    uvicorn {{ cookiecutter.package_name }}.app:app

Settings come from the environment (see ``settings.py``).
"""

from __future__ import annotations

{% if broadcast -%}
import collections.abc
import contextlib
{% endif -%}
import logging
{%- if cookiecutter.framework == "fastapi" %}

from fastapi import FastAPI
{%- endif %}

from . import auth, endpoints
from .settings import get_settings
{%- if cookiecutter.framework == "fastapi" %}
from .websocket.backend import create_router
{%- if broadcast %}
from .websocket.broadcast import HUB_STATE_KEY, Hub
{%- endif %}
from .websocket.guard import Authenticator, WebSocketGuard
{%- else %}
from .websocket.asgi import Receive, Scope, Send
from .websocket.asgi_backend import Router, respond_json
{%- if broadcast %}
from .websocket.broadcast import HUB_STATE_KEY, Hub
{%- endif %}
from .websocket.guard import Authenticator, WebSocketGuard
{%- endif %}

{%- if cookiecutter.framework == "fastapi" %}

TITLE = {{ cookiecutter.project_name | ws_python_string }}


def create_app(authenticate: Authenticator = auth.authenticate) -> FastAPI:
    """Build the application: one router per websocket endpoint, and the health check."""
    settings = get_settings()
    configure_logging(settings.log_level)
    app = FastAPI(title=TITLE{% if broadcast %}, lifespan=lifespan{% endif %})
{%- for endpoint in cookiecutter.endpoints | ws_endpoints %}
    {{ ws_formatted(ws_call("app.include_router", ws_call("create_router", '"' ~ endpoint.path ~ '"', "endpoints." ~ endpoint.handler)), 4) }}
{%- endfor %}
    app.add_api_route("/healthz", healthz)
    app.add_middleware(WebSocketGuard, policy=settings.policy(), authenticate=authenticate)
    return app


async def healthz() -> dict[str, str]:
    """Liveness probe: the process is up and serving."""
    return {"status": "ok"}
{%- else %}


def create_app(authenticate: Authenticator = auth.authenticate) -> WebSocketGuard:
    """Build the application: a route per websocket endpoint, and the health check."""
    settings = get_settings()
    configure_logging(settings.log_level)
    app = Router({% if broadcast %}lifespan=lifespan{% endif %})
{%- for endpoint in cookiecutter.endpoints | ws_endpoints %}
    {{ ws_formatted(ws_call("app.add_websocket_route", '"' ~ endpoint.path ~ '"', "endpoints." ~ endpoint.handler), 4) }}
{%- endfor %}
    app.add_http_route("/healthz", healthz)
    return WebSocketGuard(app, policy=settings.policy(), authenticate=authenticate)


async def healthz(scope: Scope, receive: Receive, send: Send) -> None:
    """Liveness probe: the process is up and serving."""
    await respond_json(send, {"status": "ok"})
{%- endif %}


def configure_logging(level: str) -> None:
    """Send the service's log records to stderr at ``level``, unless logging is set up."""
    logger = logging.getLogger(__package__)
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
{%- if broadcast %}


@contextlib.asynccontextmanager
async def lifespan(app: object) -> collections.abc.AsyncIterator[dict[str, Hub]]:
    """Start the broadcast hub with the service, and close it when the service stops.

    Handlers find it in the ASGI state (``hub_of(websocket)``); the hub comes from the
    settings (``settings.py``). Start here anything else the service needs for its life.
    """
    async with get_settings().hub() as hub:
        yield {HUB_STATE_KEY: hub}
{%- endif %}


app = create_app()
