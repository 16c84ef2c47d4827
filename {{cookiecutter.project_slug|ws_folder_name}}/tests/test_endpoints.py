{%- if cookiecutter.framework == "fastapi" -%}
"""Every configured endpoint speaks its protocol, in-process and on a real uvicorn server."""
{%- else -%}
"""Every configured endpoint speaks its protocol on a real uvicorn server."""
{%- endif %}

from __future__ import annotations

import pytest
{%- if cookiecutter.framework == "fastapi" %}
from fastapi.testclient import TestClient
{%- endif %}

from {{ cookiecutter.package_name }}.websocket.testing import LiveServer

from .client_protocol import CHECKS, LiveConnection
from .contract import connect
{%- set endpoints = cookiecutter.endpoints | ws_endpoints %}
{%- for kind in ["keepalive", "echo", "ticker", "broadcast", "channels"] %}
{%- set urls = endpoints | selectattr("kind", "equalto", kind) | map(attribute="example_url") | list %}
{%- if urls %}

{{ kind | upper }}_URLS = [
{%- for url in urls %}
    "{{ url }}",
{%- endfor %}
]
{%- endif %}
{%- endfor %}

ENDPOINTS = [
{%- for kind in ["keepalive", "echo", "ticker", "broadcast", "channels"] %}
{%- if endpoints | selectattr("kind", "equalto", kind) | list %}
    *((url, "{{ kind }}") for url in {{ kind | upper }}_URLS),
{%- endif %}
{%- endfor %}
]


{%- if cookiecutter.framework == "fastapi" %}


@pytest.mark.parametrize(("url", "kind"), ENDPOINTS)
def test_endpoint_speaks_its_protocol(client: TestClient, url: str, kind: str) -> None:
    with client.websocket_connect(url) as connection:
        CHECKS[kind](connection)
{%- endif %}


@pytest.mark.parametrize(("url", "kind"), ENDPOINTS)
def test_endpoint_speaks_its_protocol_on_uvicorn(
    live_server: LiveServer, url: str, kind: str
) -> None:
    with connect(live_server.ws_url(url)) as websocket:
        CHECKS[kind](LiveConnection(websocket))
