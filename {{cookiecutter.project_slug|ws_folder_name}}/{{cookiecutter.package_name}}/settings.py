{%- set kinds = cookiecutter.endpoints | ws_endpoints | map(attribute="kind") | list -%}
{%- set channels = "channels" in kinds -%}
{%- set hub = "broadcast" in kinds or channels -%}
{%- set redis = hub and cookiecutter.broadcast_backend == "redis" -%}
{%- set metrics = cookiecutter.metrics | ws_yes -%}
{%- set ticker = "ticker" in kinds -%}
"""Settings of the service, read from environment variables (listed in README.md)."""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass{% if hub or metrics %}, field{% endif %}, fields
from functools import lru_cache
{%- if channels %}
from pathlib import Path
{%- endif %}
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

{% if redis -%}
from .websocket.broadcast import Hub
{% elif hub -%}
from .websocket.broadcast import Hub, MemoryHub
{% endif -%}
from .websocket.guard import Policy
{%- if redis %}
from .websocket.redis_hub import redis_hub
from .websocket.redis_sentinel import redis_url_problem, split_redis_urls
{%- endif %}
{%- if channels %}
from .websocket.tokens import MIN_HMAC_SECRET_BYTES
{%- endif %}
from .websocket.workers import ServerWorkers

{% if ticker -%}
DEFAULT_TICK_SECONDS = {{ cookiecutter.tick_seconds | ws_float }}
{% endif -%}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
{%- if hub or metrics %}
MIN_API_KEY_LENGTH = 16
{%- endif %}
STARTUP_REFUSED = 3
"""The exit status of a refused start: uvicorn's, hypercorn's and gunicorn's own for a worker
that failed to start, so that their supervisors stop instead of starting it again."""
{%- if not (redis and channels and ticker) %}
{%- if hub and not redis %}
MEMORY_BACKEND = (
    "the broadcast backend of this service is memory: it is not read; unset it, or render the "
    "service again with broadcast_backend redis"
)
{%- endif %}
{%- if not hub %}
NO_HUB = "this service has no broadcast endpoint: it is not read; unset it"
{%- endif %}
{%- if not channels %}
NO_CHANNELS = "this service has no channels endpoint: it is not read; unset it"
{%- endif %}
{%- if not ticker %}
NO_TICKER = "this service has no ticker endpoint: it is not read; unset it"
{%- endif %}
UNREAD_VARIABLES = {
{%- if hub and not redis %}
    "REDIS_URL": MEMORY_BACKEND,
    "REDIS_CHANNEL_PREFIX": MEMORY_BACKEND,
    "REDIS_TIMEOUT_SECONDS": MEMORY_BACKEND,
    "REDIS_WAIT_REPLICAS": MEMORY_BACKEND,
    "PRESENCE_TTL_SECONDS": MEMORY_BACKEND,
{%- elif not hub %}
    "REDIS_URL": NO_HUB,
    "REDIS_CHANNEL_PREFIX": NO_HUB,
    "REDIS_TIMEOUT_SECONDS": NO_HUB,
    "REDIS_WAIT_REPLICAS": NO_HUB,
    "BROADCAST_QUEUE_SIZE": NO_HUB,
    "HISTORY_SIZE": NO_HUB,
    "HISTORY_TTL_SECONDS": NO_HUB,
    "PUBLISH_API_KEY": NO_HUB,
    "PRESENCE_ENABLED": NO_HUB,
    "JOIN_LEAVE_EVENTS": NO_HUB,
    "JOIN_LEAVE_LIMIT": NO_HUB,
    "PRESENCE_LIST_LIMIT": NO_HUB,
    "PRESENCE_TTL_SECONDS": NO_HUB,
{%- endif %}
{%- if not channels %}
    "TOKEN_HMAC_SECRET_KEY": NO_CHANNELS,
    "TOKEN_PUBLIC_KEY": NO_CHANNELS,
    "ANONYMOUS_CONNECTIONS": NO_CHANNELS,
    "MAX_CHANNELS_PER_CONNECTION": NO_CHANNELS,
    "CONNECTION_TOKEN_TTL_SECONDS": NO_CHANNELS,
    "SUBSCRIPTION_TOKEN_TTL_SECONDS": NO_CHANNELS,
    "BROWSER_DIR": NO_CHANNELS,
{%- endif %}
{%- if not ticker %}
    "TICK_SECONDS": NO_TICKER,
{%- endif %}
}
"""Variables of ws-template's other kinds of service, which this one does not read."""
{%- endif %}

OTHER_NAMES = frozenset({"LIVE_SERVER", "LIVE_SERVER_ARGS"})
"""Variables near a setting's name that something else reads: never reported as misspelt."""
MISSPELT_CUTOFF = 0.8
"""How alike (difflib's ratio, 0 to 1) a variable's name must be to a setting's to be reported."""

Value = TypeVar("Value")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """What the service reads from its environment: each field from the variable of its name
    in capitals (``LOG_LEVEL``, ``MAX_CONNECTIONS``, ...)."""

    log_level: str = "INFO"
    """The level of the service's own log messages."""
    log_format: str = "text"
    """``text`` (readable lines) or ``json`` (one JSON object per line, for log collectors)."""
{%- if ticker %}
    tick_seconds: float = DEFAULT_TICK_SECONDS
    """The period of ticker endpoints."""
{%- endif %}
{%- if hub %}
    broadcast_queue_size: int = 100
    """Messages a broadcast connection may have waiting; past that, its oldest are dropped."""
    history_size: int = 100
    """Messages each broadcast channel keeps for clients that resume (0: no history)."""
    history_ttl_seconds: float = 300.0
    """How long a channel keeps its history after its last message."""
    publish_api_key: str = field(default="", repr=False)
    """The key of ``POST /api/publish`` (``Authorization: Bearer <key>``); empty: it refuses."""
    presence_enabled: bool = True
    """Whether {% if channels %}the hub keeps{% else %}broadcast endpoints keep{% endif %} presence: who is on each channel."""
    join_leave_events: bool = True
    join_leave_limit: int = 100
    """Whether a channel's clients are told who joins and leaves it (with presence only)."""
    presence_list_limit: int = 1000
    """Clients listed in a presence answer at most (its count is always the whole room's)."""
{%- endif %}
{%- if channels %}
    token_hmac_secret_key: str = field(default="", repr=False)
    """The secret of HS256 connection tokens, at least 32 bytes; empty: none are accepted."""
    token_public_key: str = field(default="", repr=False)
    """The PEM public key of RS256 or ES256 connection tokens; empty: none are accepted."""
    anonymous_connections: bool = False
    """Whether a channels connection with no user (no token, no identity) may connect."""
    max_channels_per_connection: int = 128
    """Channels one connection of a channels endpoint may be subscribed to at once."""
    connection_token_ttl_seconds: float = 600.0
    """How long a connection token from ``POST /api/tokens/connection`` is valid."""
    subscription_token_ttl_seconds: float = 600.0
    """How long a subscription token from ``POST /api/tokens/subscription`` is valid."""
    browser_dir: str = ""
    """A folder whose files the app serves at ``/browser/`` (README, "Channels in a
    browser"); empty: ``browser`` in the working directory, if there is one."""
{%- endif %}
{%- if redis %}
    redis_url: str = field(default="redis://localhost:6379/0", repr=False)
    """The Redis where broadcast endpoints meet (or its Sentinel group), or several
    (comma-separated) that share the channels out: the same list, in the same order, for
    every process of the service."""
    redis_channel_prefix: str = {{ (cookiecutter.package_name ~ ":") | ws_python_string }}
    """Put before every channel name in Redis, so that services can share one Redis."""
    redis_timeout_seconds: float = 2.0
    """How long a publish or a connection attempt to Redis may take."""
    redis_wait_replicas: int = 0
    """Replicas that must have a publish before it is confirmed (Redis WAIT); 0: none."""
    presence_ttl_seconds: float = 30.0
    """How soon the clients of a process that died without cleaning up leave presence lists."""
{%- endif %}
{%- if metrics %}
    metrics_enabled: bool = True
    """Whether ``GET /metrics`` serves the Prometheus metrics (off: it answers 404)."""
    metrics_api_key: str = field(default="", repr=False)
    """If set, ``GET /metrics`` wants ``Authorization: Bearer <key>``; empty: open to all."""
{%- endif %}
    allowed_origins: tuple[str, ...] = ()
    """Comma-separated origins that browsers may connect from, besides the service's own."""
    max_message_bytes: int = 65536
    messages_per_second: float = 100.0
    message_burst: int = 200
    max_connections: int = 10000
    idle_timeout_seconds: float = 60.0
    send_timeout_seconds: float = 10.0
    gc_threshold: int = 100_000
    """Allocations between two young-generation passes of Python's garbage collector."""
    host: str = "127.0.0.1"
    """The runner's (python -m) settings, each also a command-line option."""
    port: int = 8000
    workers: int = 1
    ws_per_message_deflate: bool = False
    ws_ping_interval_seconds: float = 20.0
    ws_ping_timeout_seconds: float = 20.0
    shutdown_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read the settings; an unset or empty variable keeps its default."""

        def read(name: str, parse: Callable[[str, str], Value], default: Value) -> Value:
            value = environ.get(name, "").strip()
            return parse(name, value) if value else default

        return cls(
            log_level=read("LOG_LEVEL", _log_level, cls.log_level),
            log_format=read("LOG_FORMAT", _log_format, cls.log_format),
{%- if ticker %}
            tick_seconds=read("TICK_SECONDS", _positive(float), cls.tick_seconds),
{%- endif %}
{%- if hub %}
            broadcast_queue_size=read(
                "BROADCAST_QUEUE_SIZE", _positive(int), cls.broadcast_queue_size
            ),
            history_size=read("HISTORY_SIZE", _count, cls.history_size),
            history_ttl_seconds=read(
                "HISTORY_TTL_SECONDS", _positive(float), cls.history_ttl_seconds
            ),
            publish_api_key=read("PUBLISH_API_KEY", _api_key, cls.publish_api_key),
            presence_enabled=read("PRESENCE_ENABLED", _flag, cls.presence_enabled),
            join_leave_events=read("JOIN_LEAVE_EVENTS", _flag, cls.join_leave_events),
            join_leave_limit=read("JOIN_LEAVE_LIMIT", _positive(int), cls.join_leave_limit),
            presence_list_limit=read(
                "PRESENCE_LIST_LIMIT", _positive(int), cls.presence_list_limit
            ),
{%- endif %}
{%- if channels %}
            token_hmac_secret_key=read(
                "TOKEN_HMAC_SECRET_KEY", _hmac_secret, cls.token_hmac_secret_key
            ),
            token_public_key=read("TOKEN_PUBLIC_KEY", _public_key, cls.token_public_key),
            anonymous_connections=read("ANONYMOUS_CONNECTIONS", _flag, cls.anonymous_connections),
            max_channels_per_connection=read(
                "MAX_CHANNELS_PER_CONNECTION", _positive(int), cls.max_channels_per_connection
            ),
            connection_token_ttl_seconds=read(
                "CONNECTION_TOKEN_TTL_SECONDS", _positive(float), cls.connection_token_ttl_seconds
            ),
            subscription_token_ttl_seconds=read(
                "SUBSCRIPTION_TOKEN_TTL_SECONDS",
                _positive(float),
                cls.subscription_token_ttl_seconds,
            ),
            browser_dir=read("BROWSER_DIR", _folder, cls.browser_dir),
{%- endif %}
{%- if redis %}
            redis_url=read("REDIS_URL", _redis_url, cls.redis_url),
            redis_channel_prefix=read(
                "REDIS_CHANNEL_PREFIX", _channel_prefix, cls.redis_channel_prefix
            ),
            redis_timeout_seconds=read(
                "REDIS_TIMEOUT_SECONDS", _positive(float), cls.redis_timeout_seconds
            ),
            redis_wait_replicas=read("REDIS_WAIT_REPLICAS", _count, cls.redis_wait_replicas),
            presence_ttl_seconds=read(
                "PRESENCE_TTL_SECONDS", _positive(float), cls.presence_ttl_seconds
            ),
{%- endif %}
{%- if metrics %}
            metrics_enabled=read("METRICS_ENABLED", _flag, cls.metrics_enabled),
            metrics_api_key=read("METRICS_API_KEY", _api_key, cls.metrics_api_key),
{%- endif %}
            allowed_origins=read("ALLOWED_ORIGINS", _origins, cls.allowed_origins),
            max_message_bytes=read("MAX_MESSAGE_BYTES", _positive(int), cls.max_message_bytes),
            messages_per_second=read(
                "MESSAGES_PER_SECOND", _positive(float), cls.messages_per_second
            ),
            message_burst=read("MESSAGE_BURST", _positive(int), cls.message_burst),
            max_connections=read("MAX_CONNECTIONS", _positive(int), cls.max_connections),
            idle_timeout_seconds=read(
                "IDLE_TIMEOUT_SECONDS", _idle_timeout, cls.idle_timeout_seconds
            ),
            send_timeout_seconds=read(
                "SEND_TIMEOUT_SECONDS", _positive(float), cls.send_timeout_seconds
            ),
            gc_threshold=read("GC_THRESHOLD", _positive(int), cls.gc_threshold),
            host=read("HOST", _text, cls.host),
            port=read("PORT", _port, cls.port),
            workers=read("WORKERS", _positive(int), cls.workers),
            ws_per_message_deflate=read(
                "WS_PER_MESSAGE_DEFLATE", _flag, cls.ws_per_message_deflate
            ),
            ws_ping_interval_seconds=read(
                "WS_PING_INTERVAL_SECONDS", _not_negative, cls.ws_ping_interval_seconds
            ),
            ws_ping_timeout_seconds=read(
                "WS_PING_TIMEOUT_SECONDS", _positive(float), cls.ws_ping_timeout_seconds
            ),
            shutdown_timeout_seconds=read(
                "SHUTDOWN_TIMEOUT_SECONDS", _positive(float), cls.shutdown_timeout_seconds
            ),
        )

    def check(
        self, workers: ServerWorkers | None = None, environ: Mapping[str, str] = os.environ
    ) -> None:
        """Refuse what would misbehave without a sound (README, "Refused at start-up").

        ``workers`` is what started this service, when known. Raises SettingsError, whose
        one line says which settings clash and what to do.
        """

        def given(name: str) -> bool:
            return bool(environ.get(name, "").strip())
{{ "" }}
{%- if not (redis and channels and ticker) %}
        for name, reason in UNREAD_VARIABLES.items():
            if given(name):
                raise SettingsError(f"{name} is set, but {reason}")
{%- endif %}
{%- if hub %}
        if self.history_size == 0 and given("HISTORY_TTL_SECONDS"):
            raise SettingsError(
                "HISTORY_TTL_SECONDS is set, but HISTORY_SIZE=0 keeps no history: unset "
                "HISTORY_TTL_SECONDS, or set HISTORY_SIZE to the messages to keep"
            )
        if not self.presence_enabled and given("JOIN_LEAVE_EVENTS"):
            raise SettingsError(
                "JOIN_LEAVE_EVENTS is set, but PRESENCE_ENABLED=no keeps no presence to join "
                "or leave: unset JOIN_LEAVE_EVENTS, or turn presence on"
            )
{%- endif %}
        if self.ws_ping_interval_seconds == 0 and given("WS_PING_TIMEOUT_SECONDS"):
            raise SettingsError(
                "WS_PING_TIMEOUT_SECONDS is set, but WS_PING_INTERVAL_SECONDS=0 sends no ping "
                "to time out: unset WS_PING_TIMEOUT_SECONDS, or set an interval"
            )
{%- if hub and not redis %}
        if workers is not None and workers.workers > 1:
            raise SettingsError(
                f"{workers}, but {% if channels and "broadcast" in kinds %}broadcast and channels{% elif channels %}channels{% else %}broadcast{% endif %} endpoints on the memory backend reach only the "
                "clients of their own process (the others would miss their messages): run "
                "one worker, or render the service again with broadcast_backend redis"
            )
{%- endif %}

{%- if channels %}

    def browser_folder(self) -> Path | None:
        """The folder of ``BROWSER_DIR``, or else ``browser`` if the working directory has
        one; None: no browser app to serve."""
        folder = Path(self.browser_dir or "browser")
        return folder if self.browser_dir or folder.is_dir() else None
{%- endif %}
{%- if redis %}

    @property
    def redis_urls(self) -> list[str]:
        """The Redis servers (or Sentinel groups) of ``REDIS_URL``: one, or the shards that
        share the channels."""
        return split_redis_urls(self.redis_url)
{%- endif %}

    def policy(self) -> Policy:
        """The websocket policy these settings describe (see websocket/guard.py)."""
        return Policy(
            allowed_origins=frozenset(self.allowed_origins),
            max_message_bytes=self.max_message_bytes,
            messages_per_second=self.messages_per_second,
            message_burst=self.message_burst,
            max_connections=self.max_connections,
            idle_timeout=self.idle_timeout_seconds,
            send_timeout=self.send_timeout_seconds,
        )
{%- if hub %}

    def hub(self) -> Hub:
        """The broadcast hub these settings describe (see websocket/broadcast.py)."""
{%- if redis %}
        return redis_hub(
            self.redis_urls,
            prefix=self.redis_channel_prefix,
            queue_size=self.broadcast_queue_size,
            history_size=self.history_size,
            history_ttl=self.history_ttl_seconds,
            timeout=self.redis_timeout_seconds,
            presence=self.presence_enabled,
            join_leave=self.join_leave_events,
            join_leave_limit=self.join_leave_limit,
            presence_limit=self.presence_list_limit,
            presence_ttl=self.presence_ttl_seconds,
            wait_replicas=self.redis_wait_replicas,
        )
{%- else %}
        return MemoryHub(
            self.broadcast_queue_size,
            history_size=self.history_size,
            history_ttl=self.history_ttl_seconds,
            presence=self.presence_enabled,
            join_leave=self.join_leave_events,
            join_leave_limit=self.join_leave_limit,
            presence_limit=self.presence_list_limit,
        )
{%- endif %}
{%- endif %}


def _log_level(name: str, value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _log_format(name: str, value: str) -> str:
    if value.lower() not in LOG_FORMATS:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(LOG_FORMATS)}")
    return value.lower()


def _positive(kind: Callable[[str], Value]) -> Callable[[str, str], Value]:
    def read(name: str, value: str) -> Value:
        try:
            number = kind(value)
        except ValueError:
            number = None
        if not (isinstance(number, int | float) and math.isfinite(number) and number > 0):
            unit = "whole number" if kind is int else "number"
            raise SettingsError(f"{name}={value!r} must be a positive {unit}")
        return number

    return read


def _idle_timeout(name: str, value: str) -> float:
    try:
        return _positive(float)(name, value)
    except SettingsError:
        raise SettingsError(
            f"{name}={value!r} must be a positive number of seconds; the idle timeout cannot "
            "be turned off (it is how a client that went away unseen is found): for clients "
            "that stay silent for long, set a long one (86400 is a day), or have them send "
            "keepalives"
        ) from None


{%- if channels %}


def _folder(name: str, value: str) -> str:
    if not Path(value).is_dir():
        raise SettingsError(
            f"{name}={value!r} is not a folder (relative to the working directory, "
            f"{Path.cwd()}): give the folder of the files to serve, or unset it"
        )
    return value
{%- endif %}


def _text(name: str, value: str) -> str:
    return value
{%- if hub %}


def _count(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise SettingsError(f"{name}={value!r} must be a whole number, 0 or more")
    return int(value)
{%- endif %}
{%- if hub or metrics %}


def _api_key(name: str, value: str) -> str:
    # Not the value itself in the message: it is a secret.
    if len(value) < MIN_API_KEY_LENGTH or not value.isprintable() or " " in value:
        raise SettingsError(
            f"{name} must be at least {MIN_API_KEY_LENGTH} characters with no space; make "
            f"one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value
{%- endif %}
{%- if channels %}


def _hmac_secret(name: str, value: str) -> str:
    # Not the value itself in the message: it is a secret.
    if len(value.encode()) < MIN_HMAC_SECRET_BYTES:
        raise SettingsError(
            f"{name} must be at least {MIN_HMAC_SECRET_BYTES} bytes; make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


def _public_key(name: str, value: str) -> str:
    pem = value.replace("\\n", "\n")  # a one-line variable may write its line breaks as \n
    if not (pem.startswith("-----BEGIN PUBLIC KEY-----") and pem.endswith("-----")):
        raise SettingsError(
            f"{name} must be a PEM public key (-----BEGIN PUBLIC KEY----- ...), RSA or EC P-256"
        )
    return pem
{%- endif %}


def _port(name: str, value: str) -> int:
    if not (value.isdigit() and int(value) < 65536):
        raise SettingsError(f"{name}={value!r} must be a TCP port number (0 to 65535)")
    return int(value)


def _flag(name: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={value!r} must be yes or no (or true/false, 1/0, on/off)")


def _not_negative(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 0):
        raise SettingsError(f"{name}={value!r} must be a number of seconds, 0 or more")
    return number


def _origins(name: str, value: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "null" and (
            parts.scheme not in ("http", "https") or not parts.hostname or parts.path
        ):
            raise SettingsError(
                f"{name}: {origin!r} is not an origin; write scheme://host[:port], "
                f"e.g. https://app.example.com"
            )
    return origins
{%- if redis %}


def _redis_url(name: str, value: str) -> str:
    # Not the value itself in the messages: a Redis URL can hold a password.
    urls = split_redis_urls(value) or [""]
    for number, url in enumerate(urls, 1):
        problem = redis_url_problem(url)
        if problem is not None:
            which = f" (URL {number} of {len(urls)})" if len(urls) > 1 else ""
            raise SettingsError(
                f"{name} is not a Redis URL{which}: {problem}; or several, comma-separated"
            )
    if len(set(urls)) != len(urls):
        raise SettingsError(f"{name} lists the same Redis server twice: list each shard once")
    return value


def _channel_prefix(name: str, value: str) -> str:
    return value
{%- endif %}


def misspelt_settings(environ: Mapping[str, str] = os.environ) -> list[str]:
    """One sentence for each variable set whose name is close to a setting's but is none
    (``MAX_CONECTIONS`` for ``MAX_CONNECTIONS``, ``IDLE_TIMEOUT`` for ``IDLE_TIMEOUT_SECONDS``):
    the service would ignore it without a word."""
    known = [field.name.upper() for field in fields(Settings)]
{%- if not (redis and channels and ticker) %}
    known += UNREAD_VARIABLES  # the settings of other kinds of service are refused, not ignored
{%- endif %}
    sentences = []
    for name in sorted(environ):
        if name in known or name in OTHER_NAMES or not environ[name].strip():
            continue
        close = [f"{name}_SECONDS"] if f"{name}_SECONDS" in known else []
        close = close or difflib.get_close_matches(name, known, 1, MISSPELT_CUTOFF)
        if close:
            sentences.append(
                f"{name} is set, but no setting has that name and it is ignored: "
                f"did you mean {close[0]}? (the settings are listed in README.md)"
            )
    return sentences


def refuse_to_start(error: SettingsError) -> NoReturn:
    """Stop the process, saying why in one line on stderr (exit status `STARTUP_REFUSED`)."""
    sys.stderr.write(f"{__package__}: {error}\n")  # one write: workers share the stream
    sys.stderr.flush()
    raise SystemExit(STARTUP_REFUSED)


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once (``get_settings.cache_clear()`` re-reads them)."""
    return Settings.from_env()
