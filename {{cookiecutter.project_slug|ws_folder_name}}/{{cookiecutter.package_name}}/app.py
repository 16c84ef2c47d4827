{%- set kinds = cookiecutter.endpoints | ws_endpoints | map(attribute="kind") | list -%}
{%- set channels = "channels" in kinds -%}
{%- set broadcast = "broadcast" in kinds or channels -%}{#- the hub, the publish API -#}
{%- set metrics = cookiecutter.metrics | ws_yes -%}
"""The ASGI application: the service's websocket endpoints, plus ``GET /healthz``,
``GET /asyncapi.json`` (the websocket API as an AsyncAPI document){% if broadcast %},
``POST /api/publish`` and ``GET /api/presence`` (``websocket/publish_api.py``, off until
``PUBLISH_API_KEY`` is set){% endif %}{% if channels %}, ``POST /api/tokens/connection`` and
``POST /api/tokens/subscription`` (the channels endpoint's tokens, ``token_api.py``), the
files of a browser app under ``/browser/`` (``BROWSER_DIR``){% endif %}{% if metrics %}
and ``GET /metrics`` (Prometheus, ``websocket/metrics.py``; ``METRICS_ENABLED``, ``METRICS_API_KEY``){% endif %}.

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
{%- if broadcast and cookiecutter.framework == "fastapi" %}
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
{%- elif broadcast %}
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
{%- endif %}
{%- if broadcast and metrics %}
from functools import partial
{%- endif %}
{%- if cookiecutter.console_page | ws_yes %}
from pathlib import Path
{%- endif %}
{%- if cookiecutter.framework == "fastapi" %}
from typing import Any

from fastapi import FastAPI, Request
{%- if cookiecutter.console_page | ws_yes and broadcast %}
from fastapi.responses import HTMLResponse, JSONResponse
{%- elif cookiecutter.console_page | ws_yes %}
from fastapi.responses import HTMLResponse
{%- elif broadcast %}
from fastapi.responses import JSONResponse
{%- endif %}
{%- if broadcast or metrics %}
from starlette.routing import Route
{%- endif %}
{%- endif %}

from . import __version__, auth, endpoints
{%- if channels %}
from .channels import NAMESPACES, channels_config, grants_token
{%- endif %}
from .settings import {% if broadcast %}Settings, {% endif %}SettingsError, get_settings, misspelt_settings, refuse_to_start
{%- if channels %}
from .token_api import CONNECTION_PATH, SUBSCRIPTION_PATH, TokenAPI{% if cookiecutter.framework == "fastapi" %}, add_token_routes_to_openapi{% endif %}
{%- endif %}
{%- if cookiecutter.framework == "fastapi" %}
from .websocket.asyncapi import document
from .websocket.backend import create_router, websocket_routes
{%- if broadcast %}
from .websocket.broadcast import HUB_STATE_KEY, Hub, HubUnavailable
{%- endif %}
from .websocket.guard import Authenticator, WebSocketGuard
from .websocket.logs import JsonFormatter
{%- if metrics %}
from .websocket.metrics import PATH as METRICS_PATH
from .websocket.metrics import Metrics, MetricsEndpoint
{%- endif %}
{%- if broadcast %}
from .websocket.publish_api import PATH as PUBLISH_PATH
from .websocket.publish_api import PRESENCE_PATH, PublishAPI, add_to_openapi
{%- endif %}
{%- if channels %}
from .websocket.static import StaticFolder
from .websocket.tokens import TokenSigner
{%- endif %}
{%- else %}
from .websocket.asgi import Receive, Scope, Send
from .websocket.asgi_backend import Router, {% if cookiecutter.console_page | ws_yes %}respond, {% endif %}respond_json
from .websocket.asgi_types import ASGIApp
from .websocket.asyncapi import document
{%- if broadcast %}
from .websocket.broadcast import HUB_STATE_KEY, Hub
{%- endif %}
from .websocket.guard import Authenticator, WebSocketGuard
from .websocket.logs import JsonFormatter
{%- if metrics %}
from .websocket.metrics import PATH as METRICS_PATH
from .websocket.metrics import Metrics, MetricsEndpoint
{%- endif %}
{%- if broadcast %}
from .websocket.publish_api import PATH as PUBLISH_PATH
from .websocket.publish_api import PRESENCE_PATH, PublishAPI
{%- endif %}
{%- if channels %}
from .websocket.static import StaticFolder
from .websocket.tokens import TokenSigner
{%- endif %}
{%- endif %}
from .websocket.workers import server_workers

logger = logging.getLogger(__name__)
{%- if broadcast %}
{%- if "broadcast" in kinds %}

BROADCAST_PATHS = [
{%- for endpoint in cookiecutter.endpoints | ws_endpoints | selectattr("kind", "equalto", "broadcast") %}
    "{{ endpoint.path }}",
{%- endfor %}
]
"""The broadcast endpoints' paths: the channels that ``POST /api/publish`` may publish to{% if channels %}
(besides those of the namespaces in channels.py){% endif %}."""
{%- endif %}
{%- endif %}

{%- if channels %}

BROWSER_PATH = "/browser"
"""Where the app serves the files of ``BROWSER_DIR`` (or of ``browser/``): a browser app on
the service's own origin (README, "Channels in a browser")."""
{%- endif %}

TITLE = {{ cookiecutter.project_name | ws_python_string }}
DESCRIPTION = {{ cookiecutter.description | ws_python_string }}
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
    configure_logging(settings.log_level, settings.log_format)
    for sentence in misspelt_settings():
        logger.warning("%s", sentence)
    configure_gc(settings.gc_threshold)
{%- if channels %}
    channels_config(settings)  # an unusable token key stops the start, not the first connection
{%- endif %}
{%- if metrics %}
    metrics = Metrics() if settings.metrics_enabled else None
{%- endif %}
{%- if channels and metrics %}
    if metrics is not None:
        metrics.watch_channels(channels_config(settings).stats)
{%- endif %}
    app = FastAPI(title=TITLE, version=__version__{% if broadcast %}, lifespan={% if metrics %}partial(lifespan, metrics=metrics){% else %}lifespan{% endif %}{% endif %})
{%- for endpoint in cookiecutter.endpoints | ws_endpoints %}
    {{ ws_formatted(ws_call("app.include_router", ws_call("create_router", '"' ~ endpoint.path ~ '"', "endpoints." ~ endpoint.handler)), 4) }}
{%- endfor %}
    app.add_api_route("/healthz", healthz)
    app.add_api_route("/asyncapi.json", asyncapi, include_in_schema=False)
{%- if broadcast %}
    app.add_exception_handler(HubUnavailable, hub_unavailable)
    app.router.routes.append(Route(PUBLISH_PATH, publish_api(settings)))
    app.router.routes.append(Route(PRESENCE_PATH, publish_api(settings)))
{%- if channels %}
    tokens = token_api(settings, authenticate)
    app.router.routes.append(Route(CONNECTION_PATH, tokens))
    app.router.routes.append(Route(SUBSCRIPTION_PATH, tokens))
    browser = settings.browser_folder()
    if browser is not None:  # a browser app, on the service's origin
        app.mount(BROWSER_PATH, StaticFolder(browser))
        logger.info("serving the files of %s at %s/", browser.resolve(), BROWSER_PATH)
{%- endif %}
    app.openapi = openapi_of(app)  # type: ignore[method-assign]  # FastAPI's documented way
{%- endif %}
{%- if metrics %}
    if metrics is not None:
        endpoint = MetricsEndpoint(metrics, api_key=settings.metrics_api_key)
        app.router.routes.append(Route(METRICS_PATH, endpoint))
{%- endif %}
{%- if cookiecutter.console_page | ws_yes %}
    app.add_api_route("/", console, include_in_schema=False)
{%- endif %}
{%- if metrics %}
    app.add_middleware(
        WebSocketGuard, policy=settings.policy(), authenticate=authenticate, observer=metrics
    )
{%- else %}
    app.add_middleware(WebSocketGuard, policy=settings.policy(), authenticate=authenticate)
{%- endif %}
    return app


async def healthz() -> dict[str, str]:
    """Liveness probe: the process is up and serving."""
    return {"status": "ok"}


{%- if broadcast %}


async def hub_unavailable(request: Request, error: Exception) -> JSONResponse:
    """Any route whose publish failed (``HubUnavailable``{% if cookiecutter.broadcast_backend == "redis" %}: Redis is down{% endif %}) answers 503 with
    the sentence ``POST /api/publish`` gives, not 500 and a traceback in the log."""
    return JSONResponse({"detail": f"{str(error).capitalize()}."}, status_code=503)


def openapi_of(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``GET /openapi.json``: FastAPI's document plus ``POST /api/publish`` and ``GET
    /api/presence``{% if channels %} and the token routes{% endif %}, which it does not see (raw ASGI routes: ``websocket/publish_api.py``{% if channels %},
    ``token_api.py``{% endif %})."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = add_to_openapi(plain(), {% if "broadcast" in kinds %}BROADCAST_PATHS{% else %}[]{% endif %})
{%- if channels %}
            document = add_token_routes_to_openapi(document)
{%- endif %}
            app.openapi_schema = document
        return app.openapi_schema

    return openapi
{%- endif %}


async def asyncapi(request: Request) -> dict[str, Any]:
    """The websocket endpoints as an AsyncAPI 3.0 document (see websocket/asyncapi.py)."""
    host, secure = request.headers.get("host", "127.0.0.1:8000"), request.url.scheme == "https"
    routes = websocket_routes(request.app.routes)
    return document(
        routes, title=TITLE, version=__version__, description=DESCRIPTION, host=host, secure=secure
    )
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
    configure_logging(settings.log_level, settings.log_format)
    for sentence in misspelt_settings():
        logger.warning("%s", sentence)
    configure_gc(settings.gc_threshold)
{%- if channels %}
    channels_config(settings)  # an unusable token key stops the start, not the first connection
{%- endif %}
{%- if metrics %}
    metrics = Metrics() if settings.metrics_enabled else None
{%- endif %}
{%- if channels and metrics %}
    if metrics is not None:
        metrics.watch_channels(channels_config(settings).stats)
{%- endif %}
    app = Router({% if broadcast %}lifespan={% if metrics %}partial(lifespan, metrics=metrics){% else %}lifespan{% endif %}{% endif %})
{%- for endpoint in cookiecutter.endpoints | ws_endpoints %}
    {{ ws_formatted(ws_call("app.add_websocket_route", '"' ~ endpoint.path ~ '"', "endpoints." ~ endpoint.handler), 4) }}
{%- endfor %}
    app.add_http_route("/healthz", healthz)
    app.add_http_route("/asyncapi.json", asyncapi_of(app))
{%- if broadcast %}
    app.add_http_route(PUBLISH_PATH, publish_api(settings), methods=None)
    app.add_http_route(PRESENCE_PATH, publish_api(settings), methods=None)
{%- if channels %}
    tokens = token_api(settings, authenticate)
    app.add_http_route(CONNECTION_PATH, tokens, methods=None)
    app.add_http_route(SUBSCRIPTION_PATH, tokens, methods=None)
    browser = settings.browser_folder()
    if browser is not None:  # a browser app, on the service's origin
        app.mount(BROWSER_PATH, StaticFolder(browser))
        logger.info("serving the files of %s at %s/", browser.resolve(), BROWSER_PATH)
{%- endif %}
{%- endif %}
{%- if metrics %}
    if metrics is not None:
        endpoint = MetricsEndpoint(metrics, api_key=settings.metrics_api_key)
        app.add_http_route(METRICS_PATH, endpoint, methods=None)
{%- endif %}
{%- if cookiecutter.console_page | ws_yes %}
    app.add_http_route("/", console)
{%- endif %}
{%- if metrics %}
    return WebSocketGuard(
        app, policy=settings.policy(), authenticate=authenticate, observer=metrics
    )
{%- else %}
    return WebSocketGuard(app, policy=settings.policy(), authenticate=authenticate)
{%- endif %}


async def healthz(scope: Scope, receive: Receive, send: Send) -> None:
    """Liveness probe: the process is up and serving."""
    await respond_json(send, {"status": "ok"})


def asyncapi_of(router: Router) -> ASGIApp:
    """``GET /asyncapi.json``: the router's websocket endpoints as an AsyncAPI 3.0 document."""

    async def asyncapi(scope: Scope, receive: Receive, send: Send) -> None:
        host = dict(scope["headers"]).get(b"host", b"127.0.0.1:8000").decode("latin-1")
        secure = scope.get("scheme") == "https"
        routes = router.websocket_routes()
        served = document(
            routes,
            title=TITLE,
            version=__version__,
            description=DESCRIPTION,
            host=host,
            secure=secure,
        )
        await respond_json(send, served)

    return asyncapi
{%- if cookiecutter.console_page | ws_yes %}


async def console(scope: Scope, receive: Receive, send: Send) -> None:
    """The console page: try each endpoint from a browser (see console.html)."""
    headers = [(name.encode(), value.encode()) for name, value in CONSOLE_HEADERS.items()]
    await respond(send, CONSOLE_PAGE, "text/html; charset=utf-8", headers=headers)
{%- endif %}
{%- endif %}


{%- if broadcast %}


def publish_api(settings: Settings) -> PublishAPI:
    """``POST /api/publish`` and ``GET /api/presence``: publish to a channel or a user, and
    see who is on a channel, over HTTP (see README.md)."""
    return PublishAPI(
        {% if "broadcast" in kinds %}BROADCAST_PATHS{% else %}[]{% endif %},
        api_key=settings.publish_api_key,
        max_message_bytes=settings.max_message_bytes,
{%- if channels %}
        namespaces=NAMESPACES,
{%- endif %}
    )
{%- endif %}
{%- if channels %}


def token_api(settings: Settings, authenticate: Authenticator) -> TokenAPI:
    """``POST /api/tokens/connection`` and ``POST /api/tokens/subscription``: the channels
    endpoint's tokens for the user ``authenticate`` (auth.py) finds in a request."""
    secret = settings.token_hmac_secret_key
    return TokenAPI(
        authenticate=authenticate,
        namespaces=NAMESPACES,
        grants=grants_token,
        signer=TokenSigner(secret) if secret else None,
        connection_ttl=settings.connection_token_ttl_seconds,
        subscription_ttl=settings.subscription_token_ttl_seconds,
        allowed_origins=settings.policy().allowed_origins,
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


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send the service's log records to stderr at ``level``, unless logging is set up:
    readable lines, or with ``log_format`` json one JSON object per line."""
    logger = logging.getLogger(__package__)
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
{%- if broadcast %}


@asynccontextmanager
{%- if metrics %}
async def lifespan(app: object, metrics: Metrics | None = None) -> AsyncIterator[dict[str, Hub]]:
{%- else %}
async def lifespan(app: object) -> AsyncIterator[dict[str, Hub]]:
{%- endif %}
    """Start the hub with the service, and close it when the service stops.

    Handlers and routes find it in the ASGI state (``hub_of(websocket)``,
    ``hub_of(request)``); the hub comes from the settings (``settings.py``){% if metrics %}, and
    ``metrics`` counts what it does{% endif %}. Start here anything else the service needs for its life.
    """
    settings = get_settings()
    if not settings.publish_api_key:
        logger.warning("%s refuses every call: PUBLISH_API_KEY is not set", PUBLISH_PATH)
{%- if channels %}
    if not (settings.token_hmac_secret_key or settings.token_public_key):
        logger.warning(
            "channels endpoints refuse connection tokens: neither TOKEN_HMAC_SECRET_KEY nor "
            "TOKEN_PUBLIC_KEY is set"
        )
{%- endif %}
    hub = settings.hub()
{%- if channels %}
    hub.use_channel_options(NAMESPACES.options_of)  # what it keeps of each namespace's channels
{%- endif %}
{%- if metrics %}
    if metrics is not None:
        metrics.watch_hub(hub)
{%- endif %}
    async with hub:
        yield {HUB_STATE_KEY: hub}
{%- endif %}


try:
    app = create_app()
except SettingsError as error:  # one line, not a traceback, in whatever server imports it
    refuse_to_start(error)
