{%- set first = (cookiecutter.endpoints | ws_endpoints | first) -%}
{%- set kinds = cookiecutter.endpoints | ws_endpoints | map(attribute="kind") | list -%}
{%- set channels = "channels" in kinds -%}
{%- set broadcast = "broadcast" in kinds or channels -%}{#- the hub -#}
{%- set redis = broadcast and cookiecutter.broadcast_backend == "redis" -%}
{%- set ticker = "ticker" in kinds -%}
"""The application around the endpoints: health check, security, settings."""

from __future__ import annotations

import gc
import json
import urllib.request
{%- if channels %}
from pathlib import Path
{%- endif %}

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.typing import Origin

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.settings import (
{%- if ticker %}
    DEFAULT_TICK_SECONDS,
{%- endif %}
    Settings,
    SettingsError,
    get_settings,
)
{%- if redis %}
from {{ cookiecutter.package_name }}.websocket.redis_hub import RedisHub, ShardedRedisHub
{%- elif broadcast %}
from {{ cookiecutter.package_name }}.websocket.broadcast import MemoryHub
{%- endif %}
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer

from .contract import connect

ANY_ENDPOINT = "{{ first.example_url }}"


def test_healthz_answers_ok(live_server: LiveServer) -> None:
    with urllib.request.urlopen(live_server.url("/healthz"), timeout=5) as response:
        assert response.status == 200
        assert json.load(response) == {"status": "ok"}


def test_unknown_websocket_path_is_refused(live_server: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused, connect(live_server.ws_url("/no/such/path")):
        pass
    assert refused.value.response.status_code == 403


def test_a_page_from_another_site_cannot_open_a_websocket(live_server: LiveServer) -> None:
    url = live_server.ws_url(ANY_ENDPOINT)
    evil = Origin("https://evil.example")
    with pytest.raises(InvalidStatus) as refused, connect(url, origin=evil):
        pass
    assert refused.value.response.status_code == 403
    with connect(url, origin=Origin(live_server.url("").rstrip("/"))):
        pass  # the service's own pages may


def receive_until_closed(websocket: ClientConnection) -> None:
    for _ in range(100):  # ticks may come first
        websocket.recv(timeout=5)


def test_an_oversized_message_closes_with_1009(live_server: LiveServer) -> None:
    with connect(live_server.ws_url(ANY_ENDPOINT), max_size=None) as websocket:
        websocket.send_unchecked('{"big": "' + "x" * 70_000 + '"}')
        with pytest.raises(ConnectionClosedError) as closed:
            receive_until_closed(websocket)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def test_settings_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings().log_level == "INFO"
{%- if ticker %}
    assert Settings().tick_seconds == DEFAULT_TICK_SECONDS
{%- endif %}


def test_settings_from_environment() -> None:
    settings = Settings.from_env(
        {
            "LOG_LEVEL": "debug",
{%- if ticker %}
            "TICK_SECONDS": " 0.25 ",
{%- endif %}
            "ALLOWED_ORIGINS": "https://app.example.com, https://admin.example.com/",
            "MAX_CONNECTIONS": "50",
            "GC_THRESHOLD": "5000",
        }
    )
    assert settings.gc_threshold == 5000
    assert settings.log_level == "DEBUG"
{%- if ticker %}
    assert settings.tick_seconds == 0.25
{%- endif %}
    assert settings.allowed_origins == ("https://app.example.com", "https://admin.example.com")
    assert settings.policy().max_connections == 50


def test_the_app_sets_the_garbage_collector_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    before = gc.get_threshold()
    monkeypatch.setenv("GC_THRESHOLD", "12345")
    get_settings.cache_clear()
    try:
        create_app()
        assert gc.get_threshold() == (12345, *before[1:])
    finally:
        gc.set_threshold(*before)
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("name", "value"),
    [
{%- if ticker %}
        ("TICK_SECONDS", "0"),
        ("TICK_SECONDS", "-1"),
        ("TICK_SECONDS", "soon"),
        ("TICK_SECONDS", "nan"),
{%- endif %}
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("MAX_MESSAGE_BYTES", "1.5"),
        ("MAX_CONNECTIONS", "0"),
        ("IDLE_TIMEOUT_SECONDS", "forever"),
        ("GC_THRESHOLD", "0"),
        ("ALLOWED_ORIGINS", "app.example.com"),
{%- if broadcast %}
        ("BROADCAST_QUEUE_SIZE", "0"),
        ("HISTORY_SIZE", "-1"),
        ("HISTORY_SIZE", "lots"),
        ("HISTORY_TTL_SECONDS", "0"),
        ("PUBLISH_API_KEY", "short"),
        ("PUBLISH_API_KEY", "a key with spaces in it"),
{%- endif %}
{%- if channels %}
        ("TOKEN_HMAC_SECRET_KEY", "x" * 31),
        ("TOKEN_PUBLIC_KEY", "not a PEM key"),
        ("ANONYMOUS_CONNECTIONS", "maybe"),
        ("MAX_CHANNELS_PER_CONNECTION", "0"),
        ("CONNECTION_TOKEN_TTL_SECONDS", "0"),
        ("SUBSCRIPTION_TOKEN_TTL_SECONDS", "-1"),
        ("BROWSER_DIR", "no/such/folder"),
{%- endif %}
{%- if cookiecutter.metrics | ws_yes %}
        ("METRICS_ENABLED", "maybe"),
        ("METRICS_API_KEY", "short"),
{%- endif %}
{%- if redis %}
        ("REDIS_URL", "localhost:6379"),
        ("REDIS_URL", "redis+sentinel://sentinel-1:26379,sentinel-2:26379"),
        ("REDIS_TIMEOUT_SECONDS", "0"),
        ("REDIS_WAIT_REPLICAS", "-1"),
{%- endif %}
    ],
)
def test_settings_refuse_bad_values_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
{%- if redis %}


def test_settings_describe_the_redis_hub() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "rediss://redis.example:6380/1",
            "BROADCAST_QUEUE_SIZE": "5",
            "HISTORY_SIZE": "0",
            "HISTORY_TTL_SECONDS": "30",
        }
    )
    hub = settings.hub()
    assert isinstance(hub, RedisHub)
    assert (hub.url, hub.prefix) == ("rediss://redis.example:6380/1", settings.redis_channel_prefix)
    assert (hub.history_size, hub.history_ttl) == (0, 30.0)


def test_a_bad_redis_url_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError, match="REDIS_URL is not a Redis URL") as refused:
        Settings.from_env({"REDIS_URL": "https://user:s3cret@redis.example"})
    assert "s3cret" not in str(refused.value)  # a Redis URL can hold a password


def test_sentinel_groups_in_redis_url_are_one_shard_each() -> None:
    first = "redis+sentinel://:s3cret@sentinel-1:26379,sentinel-2,[::1]:26380/cache-a/2"
    second = "redis+sentinel://sentinel-1:26379,sentinel-2:26379/cache-b"
    settings = Settings.from_env(
        {"REDIS_URL": f"{first}, {second},redis://plain:6379/0", "REDIS_WAIT_REPLICAS": "1"}
    )
    assert settings.redis_urls == [first, second, "redis://plain:6379/0"]
    hub = settings.hub()
    assert isinstance(hub, ShardedRedisHub)
    assert [shard.url for shard in hub.shards] == settings.redis_urls
    assert [shard.wait_replicas for shard in hub.shards] == [1, 1, 1]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("redis+sentinel://:s3cret@sentinel-1:26379", "names the master after the sentinels"),
        ("redis+sentinel://:s3cret@sentinel-1:x/main", "HOST or HOST:PORT"),
        ("redis+sentinel://:s3cret@sentinel-1/main/zero", "is a number"),
        ("redis+sentinel://:s3cret@sentinel-1/main?password=s3cret", "not password"),
    ],
)
def test_a_bad_sentinel_url_is_refused_in_one_line_without_showing_it(
    value: str, problem: str
) -> None:
    with pytest.raises(SettingsError, match=problem) as refused:
        Settings.from_env({"REDIS_URL": f"redis://plain:6379/0,{value}"})
    assert "(URL 2 of 2)" in str(refused.value)
    assert "s3cret" not in str(refused.value)
    assert "\n" not in str(refused.value)
{%- elif broadcast %}


def test_settings_describe_the_memory_hub() -> None:
    hub = Settings.from_env({"BROADCAST_QUEUE_SIZE": "5", "HISTORY_SIZE": "7"}).hub()
    assert isinstance(hub, MemoryHub)
    assert (hub.history_size, hub.history_ttl) == (7, 300.0)
{%- endif %}
{%- if broadcast %}


def test_the_publish_api_key_is_a_secret_never_shown() -> None:
    with pytest.raises(SettingsError, match="PUBLISH_API_KEY must be at least") as refused:
        Settings.from_env({"PUBLISH_API_KEY": "hunter2"})
    assert "hunter2" not in str(refused.value)
    settings = Settings.from_env({"PUBLISH_API_KEY": "k" * 16 + "-s3cret"})
    assert settings.publish_api_key == "k" * 16 + "-s3cret"
    assert "s3cret" not in repr(settings)
{%- endif %}
{%- if channels %}


def test_the_token_secret_is_never_shown_and_channels_have_their_defaults() -> None:
    with pytest.raises(SettingsError, match="TOKEN_HMAC_SECRET_KEY must be at least 32") as refused:
        Settings.from_env({"TOKEN_HMAC_SECRET_KEY": "hunter2"})
    assert "hunter2" not in str(refused.value)
    settings = Settings.from_env({"TOKEN_HMAC_SECRET_KEY": "s3cret" * 6})
    assert settings.token_hmac_secret_key == "s3cret" * 6
    assert "s3cret" not in repr(settings)
    assert Settings.from_env({}).max_channels_per_connection == 128
    assert Settings.from_env({}).anonymous_connections is False


def test_the_browser_app_is_browser_in_the_working_directory_if_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).browser_folder() is None  # nothing served
    (tmp_path / "browser").mkdir()
    assert Settings.from_env({}).browser_folder() == Path("browser")
    (tmp_path / "elsewhere").mkdir()
    assert Settings.from_env({"BROWSER_DIR": "elsewhere"}).browser_folder() == Path("elsewhere")


def test_a_public_key_that_is_not_one_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\\nbm90IGEga2V5\\n-----END PUBLIC KEY-----"
    monkeypatch.setenv("TOKEN_PUBLIC_KEY", pem)  # its line breaks written as \\n
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="TOKEN_PUBLIC_KEY"):
        create_app()
{%- endif %}
