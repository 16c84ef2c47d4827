"""The application around the endpoints: health check, unknown paths, settings."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from {{ cookiecutter.package_name }}.settings import DEFAULT_TICK_SECONDS, Settings, SettingsError


def test_healthz_answers_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_unknown_websocket_path_is_refused(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/no/such/endpoint"):
        pass


def test_settings_defaults() -> None:
    assert Settings.from_env({}) == Settings(log_level="INFO", tick_seconds=DEFAULT_TICK_SECONDS)


def test_settings_from_environment() -> None:
    settings = Settings.from_env({"LOG_LEVEL": "debug", "TICK_SECONDS": " 0.25 "})
    assert settings == Settings(log_level="DEBUG", tick_seconds=0.25)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TICK_SECONDS", "0"),
        ("TICK_SECONDS", "-1"),
        ("TICK_SECONDS", "soon"),
        ("TICK_SECONDS", "nan"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_settings_refuse_bad_values_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
