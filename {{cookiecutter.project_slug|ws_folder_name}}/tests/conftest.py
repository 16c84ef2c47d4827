{%- set redis = cookiecutter.broadcast_backend == "redis" -%}
{%- if cookiecutter.framework == "fastapi" -%}
"""Fixtures: the app in-process (``TestClient``) and on a real uvicorn server."""
{%- else -%}
"""Fixtures: the app on a real uvicorn server."""
{%- endif %}

from __future__ import annotations

from collections.abc import Iterator

import pytest
{%- if cookiecutter.framework == "fastapi" %}
from fastapi.testclient import TestClient
{%- endif %}
{{ "" }}
{%- if cookiecutter.framework == "fastapi" %}
from {{ cookiecutter.package_name }}.app import create_app
{%- endif %}
from {{ cookiecutter.package_name }}.settings import get_settings
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer{% if redis %}, RedisServer{% endif %}
{{ "" }}
{%- set kinds = cookiecutter.endpoints | ws_endpoints | map(attribute="kind") | list %}
# How the tests get past auth.py. As generated, auth.py lets every client in and both are
# empty. When auth.py checks clients, put here what lets a test client in: the variables
# auth.py reads (set for every app and server under test) and the headers that every test
# connection sends. README.md ("Security and limits") fills them for its auth.py example.
AUTH_ENVIRONMENT: dict[str, str] = {}
AUTH_HEADERS: dict[str, str] = {}
{%- if "broadcast" in kinds or "channels" in kinds %}
TEST_ENVIRONMENT = {
{%- if "ticker" in kinds %}
    "TICK_SECONDS": "0.05",
{%- endif %}
    "PUBLISH_API_KEY": "test-key-0123456789abcdef",
    "JOIN_LEAVE_EVENTS": "no",  # tests of messages see only messages; test_presence turns it on
    **AUTH_ENVIRONMENT,
}
{%- else %}
TEST_ENVIRONMENT = {
{%- if "ticker" in kinds %}
    "TICK_SECONDS": "0.05",
{%- endif %}
    **AUTH_ENVIRONMENT,
}
{%- endif %}
{%- if redis %}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 and a free port, where the endpoints meet.

    Without redis-server installed the tests that need it skip, saying why; with
    ``REQUIRE_REDIS=1`` in the environment they fail instead.
    """
    reason = RedisServer.unavailable()
    if reason is not None:
        if RedisServer.required():
            pytest.fail(reason)
        pytest.skip(reason)
    with RedisServer() as server:
        yield server
{%- endif %}


@pytest.fixture(autouse=True)
def test_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fast ticks for every test; settings are read afresh."""
    for name, value in TEST_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
{%- if cookiecutter.framework == "fastapi" %}


@pytest.fixture
{%- if redis %}
def client(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    get_settings.cache_clear()
{%- else %}
def client() -> Iterator[TestClient]:
{%- endif %}
    with TestClient(create_app(), headers=AUTH_HEADERS) as client:
        yield client
{%- endif %}


@pytest.fixture(scope="module")
{%- if redis %}
def live_server(redis_server: RedisServer) -> Iterator[LiveServer]:
    """The app on a real uvicorn server on 127.0.0.1; its log must show no error."""
    environment = {**TEST_ENVIRONMENT, "REDIS_URL": redis_server.url}
    with LiveServer("{{ cookiecutter.package_name }}.app:app", env=environment) as server:
{%- else %}
def live_server() -> Iterator[LiveServer]:
    """The app on a real uvicorn server on 127.0.0.1; its log must show no error."""
    with LiveServer("{{ cookiecutter.package_name }}.app:app", env=TEST_ENVIRONMENT) as server:
{%- endif %}
        yield server
    assert "Traceback" not in server.log, server.log
