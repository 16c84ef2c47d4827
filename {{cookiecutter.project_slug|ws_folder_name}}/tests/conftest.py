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
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer

TEST_ENVIRONMENT = {"TICK_SECONDS": "0.05"}


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
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as client:
        yield client
{%- endif %}


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    """The app on a real uvicorn server on 127.0.0.1; its log must show no error."""
    with LiveServer("{{ cookiecutter.package_name }}.app:app", env=TEST_ENVIRONMENT) as server:
        yield server
    assert "Traceback" not in server.log, server.log
