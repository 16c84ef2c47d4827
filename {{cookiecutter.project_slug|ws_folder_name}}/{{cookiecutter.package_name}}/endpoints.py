"""Websocket handlers, one per endpoint, each built from the backend's session helpers.

A handler serves one connection for its whole life: ``run_websocket`` accepts it, runs the
tasks it is given side by side and closes the socket when the session ends. Every endpoint
answers ``{"type": "keepalive"}`` with a ``keepalive_ack``. To add an endpoint, write a
handler here, declare its messages for ``GET /asyncapi.json`` (``websocket/asyncapi.py``) and
mount it in ``app.py`` with one {% if cookiecutter.framework == "fastapi" %}``create_router``{% else %}``add_websocket_route``{% endif %} line.
{%- if "broadcast" in (cookiecutter.endpoints | ws_endpoints | map(attribute="kind") | list) %}

Broadcast handlers hand the connection to ``run_broadcast`` with the service's hub, which
``app.py``'s lifespan starts and stops (see ``websocket/broadcast.py``), and with
``stamp_sender``, which sees each message a client sends before it is published.
{%- endif %}
{%- if "channels" in (cookiecutter.endpoints | ws_endpoints | map(attribute="kind") | list) %}

Channels handlers hand the connection to ``run_channels`` (the Centrifuge client protocol,
``websocket/centrifuge_protocol.py``) with the hub and the namespaces of ``channels.py``.
{%- endif %}
"""

from __future__ import annotations
{%- set endpoints = cookiecutter.endpoints | ws_endpoints %}
{%- set kinds = endpoints | map(attribute="kind") | unique | list %}
{%- set imports = [] %}
{%- if kinds | reject("in", ["broadcast", "channels"]) | list %}{% set imports = imports + ["run_websocket"] %}{% endif %}
{%- if "keepalive" in kinds or "ticker" in kinds %}{% set imports = imports + ["keepalive_loop"] %}{% endif %}
{%- if "echo" in kinds %}{% set imports = imports + ["receive_json"] %}{% endif %}
{%- if "ticker" in kinds %}{% set imports = imports + ["TaskFactory", "every", "now_ns"] %}{% endif %}
{{ "" }}
{%- if "ticker" in kinds %}
import itertools
{%- endif %}
{%- if "echo" in kinds or "broadcast" in kinds %}
from typing import Any
{%- endif %}
{%- if cookiecutter.framework == "fastapi" %}
{%- if "ticker" in kinds or "echo" in kinds or "broadcast" in kinds %}
{{ "" }}
{%- endif %}
from fastapi import WebSocket
{%- endif %}
{%- if cookiecutter.framework == "fastapi" or "ticker" in kinds or "echo" in kinds or "broadcast" in kinds %}
{{ "" }}
{%- endif %}
{%- if "channels" in kinds %}
from .channels import RPC, channels_config
{%- endif %}
{%- if "ticker" in kinds or "channels" in kinds %}
from .settings import get_settings
{%- endif %}
{%- if cookiecutter.framework == "asgi" %}
from .websocket.asgi import WebSocket
{%- endif %}
{%- set ns = namespace(declared=[]) %}
{%- for kind in ["broadcast", "echo", "keepalive", "ticker"] %}{% if kind in kinds %}{% set ns.declared = ns.declared + [kind | upper ~ "_ENDPOINT"] %}{% endif %}{% endfor %}
{%- if "channels" in kinds %}{% set ns.declared = ns.declared + ["channels_endpoint"] %}{% endif %}
{%- set asyncapi_line = "from .websocket.asyncapi import " ~ (ns.declared + ["declares"]) | join(", ") %}
{%- macro asyncapi_import() %}
{%- if asyncapi_line | length <= 100 %}
{{ asyncapi_line }}
{%- else %}
from .websocket.asyncapi import (
{%- for name in ns.declared + ["declares"] %}
    {{ name }},
{%- endfor %}
)
{%- endif %}
{%- endmacro %}
{%- set face = "backend" if cookiecutter.framework == "fastapi" else "asgi_backend" %}
{%- set imports = imports | sort(case_sensitive=true) %}
{%- set import_line = "from .websocket." ~ face ~ " import " ~ imports | join(", ") %}
{%- if face == "backend" %}{{ asyncapi_import() }}{% endif %}{#- isort: asgi_backend < asyncapi < backend #}
{%- if not imports %}
{%- elif import_line | length <= 100 %}
{{ import_line }}
{%- else %}
from .websocket.{{ face }} import (
{%- for name in imports %}
    {{ name }},
{%- endfor %}
)
{%- endif %}
{%- if face == "asgi_backend" %}{{ asyncapi_import() }}{% endif %}
{%- if "broadcast" in kinds %}
from .websocket.broadcast import hub_of, presence_user, run_broadcast
{%- elif "channels" in kinds %}
from .websocket.broadcast import hub_of
{%- endif %}
{%- if "channels" in kinds %}
from .websocket.centrifuge_protocol import run_channels
{%- endif %}
{%- for endpoint in endpoints %}


@declares({% if endpoint.kind == "channels" %}channels_endpoint(RPC){% else %}{{ endpoint.kind | upper }}_ENDPOINT{% endif %})
async def {{ endpoint.handler }}(websocket: WebSocket) -> None:
{%- if endpoint.kind == "keepalive" %}
    """``{{ endpoint.path }}``: answers each keepalive with a keepalive_ack."""
    await run_websocket(websocket, keepalive_loop)
{%- elif endpoint.kind == "echo" %}
    """``{{ endpoint.path }}``: sends every JSON object back unchanged."""
    await run_websocket(websocket, receive_json(echo))
{%- elif endpoint.kind == "ticker" %}
    """``{{ endpoint.path }}``: a tick every ``TICK_SECONDS``, and keepalive answers."""
    ticks = every(get_settings().tick_seconds, tick_sender())
    await run_websocket(websocket, ticks, keepalive_loop)
{%- elif endpoint.kind == "broadcast" %}
    """``{{ endpoint.path }}``: every JSON object goes to every client on the same path."""
    await run_broadcast(websocket, hub_of(websocket), on_message=stamp_sender)
{%- elif endpoint.kind == "channels" %}
    """``{{ endpoint.path }}``: many channels, in the Centrifuge client protocol (channels.py)."""
    await run_channels(websocket, hub_of(websocket), channels_config(get_settings()))
{%- endif %}
{%- endfor %}
{%- if "broadcast" in kinds %}


def stamp_sender(websocket: WebSocket, message: dict[str, Any]) -> dict[str, Any]:
    """What a broadcast endpoint publishes of a message its client sent: the message with
    ``user`` set to who auth.py says the sender is (removed for an anonymous sender), so
    that nobody can sign as someone else.

    Change it to validate or enrich messages (it may be ``async``), or raise
    ``Refused("a sentence")`` (from ``.websocket.broadcast``) to refuse one: its sender gets
    ``{"type": "error", "reason": "a sentence"}`` and nothing is published.
    """
    message.pop("user", None)
    user = presence_user(websocket.scope.get("user"))
    if user is not None:
        message["user"] = user
    return message
{%- endif %}
{%- if "echo" in kinds %}


async def echo(websocket: WebSocket, message: dict[str, Any]) -> None:
    """Send a JSON object back unchanged."""
    await websocket.send_json(message)
{%- endif %}
{%- if "ticker" in kinds %}


def tick_sender() -> TaskFactory:
    """A tick task for one connection: ``{"type": "tick", "seq": n, "server_ns": ...}``.

    ``seq`` counts the ticks sent on the connection, from 0.
    """
    seq = itertools.count()

    async def send_tick(websocket: WebSocket) -> None:
        await websocket.send_json({"type": "tick", "seq": next(seq), "server_ns": now_ns()})

    return send_tick
{%- endif %}
