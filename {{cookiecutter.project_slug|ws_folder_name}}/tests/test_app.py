"""The application around the endpoints: health check, unknown paths, settings."""

from __future__ import annotations

import json
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from {{ cookiecutter.package_name }}.settings import DEFAULT_TICK_SECONDS, Settings, SettingsError
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer


def test_healthz_answers_ok(live_server: LiveServer) -> None:
    with urllib.request.urlopen(live_server.url("/healthz"), timeout=5) as response:
        assert response.status == 200
        assert json.load(response) == {"status": "ok"}


def test_unknown_websocket_path_is_refused(live_server: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused, connect(live_server.ws_url("/no/such/path")):
        pass
    assert refused.value.response.status_code == 403


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
