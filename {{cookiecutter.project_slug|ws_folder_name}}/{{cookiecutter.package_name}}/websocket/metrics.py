"""Prometheus metrics of the service: `Metrics`, the guard's observer, and ``GET /metrics``.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``); only in projects generated with metrics, as it imports
``prometheus_client``. `Metrics` watches every connection through the guard
(`GuardObserver`: refusals, opens, closes, the per-endpoint `Tally` of messages and bytes);
`MetricsEndpoint` is the ASGI application that serves them in Prometheus' text format. Every
metric, its type, labels and meaning: README.md, "Metrics".

Labels are bounded: the endpoint is the route's path template (``/ws/rooms/{room}``), close
codes above the standard ones are grouped (``4xxx``), never a concrete path, user or address.

What it costs: an ``inc()`` of prometheus-client takes about a microsecond; the four counts
of a keepalive round trip would add about a fifth to it. Messages and bytes are therefore counted as plain integers in
the guard's tallies and added to the Prometheus counters when ``/metrics`` is scraped (and
every `FLUSH_SECONDS` in each worker of a multiprocess service, from its first connection
or, with a hub, from the start: ``broadcast_redis_up``, the least over workers, reads 1 within
a second of every worker connecting); opens, closes and refusals go to Prometheus at once.

Several workers: with ``PROMETHEUS_MULTIPROC_DIR`` set before the workers start (the runner,
``python -m <package> --workers N``, does it), prometheus-client keeps each worker's values in
files there and ``/metrics`` sums them over workers, whichever worker answers. Open
connections are summed over live workers only; the files of a worker that died are cleaned at
the next scrape.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, Final, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .asgi_types import Receive, Scope, Send
from .broadcast import LAG_BOUNDS, BroadcastStats, Hub
from .guard import GuardedConnection, GuardObserver, Tally

PATH: Final = "/metrics"
MULTIPROCESS_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_SECONDS: Final = 1.0
"""How often each worker of a multiprocess service adds its tallies to the shared counters."""
UNKNOWN_ENDPOINT: Final = "unknown"
"""The endpoint label of a connection whose route has no path template."""
REFUSAL_REASONS: Final = ("origin", "auth", "connection_limit", "unknown_path", "app")
LIMITS: Final = ("size", "rate", "idle", "slow_reader")
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db")

# The tally fields and the counters they feed: (attribute, metric name, help).
_TALLIED = (
    ("messages_received", "websocket_messages_received_total", "Messages received from clients."),
    ("bytes_received", "websocket_received_bytes_total", "Payload bytes received from clients."),
    ("messages_sent", "websocket_messages_sent_total", "Messages sent to clients."),
    ("bytes_sent", "websocket_sent_bytes_total", "Payload bytes sent to clients."),
    ("error_replies", "websocket_error_replies_total", 'Error replies ({"type": "error"}) sent.'),
)


def multiprocess_directory(environ: Mapping[str, str] = os.environ) -> str | None:
    """The folder of multiprocess mode, if this process runs in it."""
    return environ.get(MULTIPROCESS_VARIABLE) or None


def close_code_label(code: int | None) -> str:
    """A bounded label for a close code: the standard codes as they are, the others grouped."""
    if code is None:
        return "none"  # the server gave no close code
    if 1000 <= code <= 1015:
        return str(code)
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


def endpoint_of(scope: Mapping[str, Any]) -> str:
    """The path template of the route that took the connection (Starlette's or the Router's)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNKNOWN_ENDPOINT


class _Endpoint:
    """One endpoint's tally, what of it Prometheus has already, and its counters."""

    __slots__ = ("closed", "counters", "limit_closes", "open", "opened", "reported", "tally")

    def __init__(self, metrics: Metrics, endpoint: str) -> None:
        self.tally = Tally(endpoint)
        self.reported = [0] * len(_TALLIED)
        self.counters = [metrics.tallied[name].labels(endpoint) for _, name, _ in _TALLIED]
        self.open = metrics.connections_open.labels(endpoint)
        self.opened = metrics.connections_opened.labels(endpoint)
        self.closed: dict[str, Counter] = {}
        self.limit_closes: dict[str, Counter] = {}

    def flush(self) -> None:
        tally, reported = self.tally, self.reported
        for index, (attribute, _, _) in enumerate(_TALLIED):
            value = getattr(tally, attribute)
            if value != reported[index]:
                self.counters[index].inc(value - reported[index])
                reported[index] = value


class _Broadcast:
    """The broadcast metrics, fed by the `BroadcastStats` of the hubs watched."""

    def __init__(self, registry: CollectorRegistry, redis: bool) -> None:
        self.published = Counter(
            "broadcast_messages_published_total",
            "Messages published to broadcast channels by this service.",
            registry=registry,
        )
        self.deliveries = Counter(
            "broadcast_deliveries_total",
            "Broadcast messages handed to subscribers' connections (live and from history).",
            registry=registry,
        )
        self.drops = Counter(
            "broadcast_drops_total",
            "Broadcast messages dropped from the full queue of a slow subscriber.",
            registry=registry,
        )
        self.recoveries = Counter(
            "broadcast_recoveries_total",
            "Subscriptions that asked to resume (?since=), by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.lag = Histogram(
            "broadcast_delivery_lag_seconds",
            "Seconds from a message's publication (the publisher's clock) to its send.",
            buckets=LAG_BOUNDS,
            registry=registry,
        )
        self.redis_up: Gauge | None = None
        self.redis_reconnects: Counter | None = None
        if redis:
            self.redis_up = Gauge(
                "broadcast_redis_up",
                "1 while the hub is connected to Redis (the least over live workers).",
                registry=registry,
                multiprocess_mode="livemin",
            )
            self.redis_reconnects = Counter(
                "broadcast_redis_reconnects_total",
                "Times the hub connected to Redis again after losing it.",
                registry=registry,
            )
        self.watched: list[tuple[BroadcastStats, BroadcastStats]] = []
        """Each hub's stats, with what of them is in Prometheus already."""

    def flush(self) -> None:
        for stats, reported in self.watched:
            for counter, attribute in (
                (self.published, "published"),
                (self.drops, "drops"),
                (self.redis_reconnects, "reconnects"),
            ):
                delta = getattr(stats, attribute) - getattr(reported, attribute)
                if delta and counter is not None:
                    counter.inc(delta)
                    setattr(reported, attribute, getattr(stats, attribute))
            delta = stats.deliveries - reported.deliveries  # worked out: add to what it is of
            if delta:
                self.deliveries.inc(delta)
                reported.counted_deliveries += delta
            for outcome, count in stats.recoveries.items():
                if count != reported.recoveries[outcome]:
                    self.recoveries.labels(outcome).inc(count - reported.recoveries[outcome])
                    reported.recoveries[outcome] = count
            # The histogram's own buckets (not cumulated, as prometheus-client keeps them):
            # observe() for each delivery would cost a microsecond each.
            for index, count in enumerate(stats.lag_buckets):
                if count != reported.lag_buckets[index]:
                    self.lag._buckets[index].inc(count - reported.lag_buckets[index])
                    reported.lag_buckets[index] = count
            if stats.lag_seconds != reported.lag_seconds:
                self.lag._sum.inc(stats.lag_seconds - reported.lag_seconds)
                reported.lag_seconds = stats.lag_seconds
        ups = [stats.backend_up for stats, _ in self.watched if stats.backend_up is not None]
        if self.redis_up is not None and ups:
            self.redis_up.set(1 if all(ups) else 0)  # every shard connected


class ChannelsCounts(Protocol):
    """What `Metrics.watch_channels` reads: ``centrifuge_protocol.ChannelsStats`` (named
    here by its shape, as projects without a channels endpoint do not have that module)."""

    @property
    def replies(self) -> dict[tuple[str, str], int]: ...

    @property
    def subscribed(self) -> dict[str, int]: ...

    @property
    def published(self) -> dict[str, int]: ...

    @property
    def disconnects(self) -> dict[str, int]: ...


class _Channels:
    """The ``channels_*`` metrics, fed by the `ChannelsCounts` of the endpoints watched."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.replies = Counter(
            "channels_commands_total",
            "Commands of channels connections answered, by method and outcome (ok or the "
            "error code).",
            ["method", "outcome"],
            registry=registry,
        )
        self.subscribed = Counter(
            "channels_subscriptions_total",
            "Subscriptions made on channels connections, by namespace.",
            ["namespace"],
            registry=registry,
        )
        self.published = Counter(
            "channels_client_publications_total",
            "Messages that clients of channels connections published, by namespace.",
            ["namespace"],
            registry=registry,
        )
        self.disconnects = Counter(
            "channels_disconnects_total",
            "Channels connections the protocol closed, by code (3501 bad request, 3012 no "
            "pong, 3502 stale, 3500 invalid token, 3001 shutdown).",
            ["code"],
            registry=registry,
        )
        self.watched: list[tuple[ChannelsCounts, dict[str, dict[Any, int]]]] = []

    def flush(self) -> None:
        for stats, reported in self.watched:
            for counter, name in (
                (self.replies, "replies"),
                (self.subscribed, "subscribed"),
                (self.published, "published"),
                (self.disconnects, "disconnects"),
            ):
                counts: dict[Any, int] = getattr(stats, name)
                seen = reported[name]
                for key, count in list(counts.items()):
                    if count != seen.get(key, 0):
                        labels = key if isinstance(key, tuple) else (key,)
                        counter.labels(*labels).inc(count - seen.get(key, 0))
                        seen[key] = count


class Metrics(GuardObserver):
    """The service's Prometheus metrics, fed by the guard (pass it as its ``observer``).

    Each instance has its own registry (several apps in one process, as in tests, do not
    clash); in multiprocess mode the values live in the shared folder instead.
    """

    def __init__(self) -> None:
        directory = multiprocess_directory()
        self.multiprocess = directory is not None
        if directory is not None:  # the runner makes it; a server started otherwise may not
            Path(directory).mkdir(parents=True, exist_ok=True)
        self.registry = CollectorRegistry(auto_describe=True)
        if not self.multiprocess:  # these collectors read this process only
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        registry = self.registry
        self.connections_open = Gauge(
            "websocket_connections_open",
            "Websocket connections open now.",
            ["endpoint"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.connections_opened = Counter(
            "websocket_connections_opened_total",
            "Websocket connections accepted.",
            ["endpoint"],
            registry=registry,
        )
        self.connections_closed = Counter(
            "websocket_connections_closed_total",
            "Websocket connections ended, by close code (none: the server gave none).",
            ["endpoint", "code"],
            registry=registry,
        )
        self.handshakes_refused = Counter(
            "websocket_handshakes_refused_total",
            "Websocket handshakes refused before accept, by reason.",
            ["reason"],
            registry=registry,
        )
        self.limit_closes = Counter(
            "websocket_limit_closes_total",
            "Connections the guard closed for a limit (size, rate, idle, slow_reader).",
            ["endpoint", "limit"],
            registry=registry,
        )
        self.tallied = {
            name: Counter(name, help, ["endpoint"], registry=registry) for _, name, help in _TALLIED
        }
        for reason in REFUSAL_REASONS:  # present from the start, at 0
            self.handshakes_refused.labels(reason)
        self._endpoints: dict[str, _Endpoint] = {}
        self._flushing: asyncio.AbstractEventLoop | None = None
        self._broadcast: _Broadcast | None = None
        self._channels: _Channels | None = None

    def watch_channels(self, stats: ChannelsCounts) -> None:
        """Count what a channels endpoint does in the ``channels_*`` metrics (``stats``: its
        ``ChannelsConfig.stats``)."""
        if self._channels is None:
            self._channels = _Channels(self.registry)
        names = ("replies", "subscribed", "published", "disconnects")
        self._channels.watched.append((stats, {name: {} for name in names}))

    def watch_hub(self, hub: Hub) -> None:
        """Count what ``hub`` does in the ``broadcast_*`` metrics: call it before it starts."""
        for part in hub.parts():  # each shard of a sharded hub on its own: its own connection
            stats = BroadcastStats()
            part.count_in(stats)
            if self._broadcast is None:
                self._broadcast = _Broadcast(self.registry, redis=stats.backend_up is not None)
            self._broadcast.watched.append((stats, BroadcastStats()))
        # A worker with no connection yet writes its Redis connection all the same; with no
        # loop running yet, the first connection starts the flushes.
        with suppress(RuntimeError):
            self._flush_in(asyncio.get_running_loop())

    def refused(self, scope: Scope, reason: str) -> None:
        self.handshakes_refused.labels(reason).inc()

    def opened(self, connection: GuardedConnection) -> Tally:
        endpoint = self._endpoint(endpoint_of(connection.scope))
        endpoint.opened.inc()
        endpoint.open.inc()
        self._flush_in(connection.loop)
        return endpoint.tally

    def closed(self, connection: GuardedConnection) -> None:
        tally = connection.tally
        if tally is None:
            return
        endpoint = self._endpoint(tally.endpoint)
        endpoint.open.dec()
        code = close_code_label(connection.close_code)
        closed = endpoint.closed.get(code)
        if closed is None:
            closed = endpoint.closed[code] = self.connections_closed.labels(tally.endpoint, code)
        closed.inc()
        if connection.limit is not None:
            limit = endpoint.limit_closes.get(connection.limit)
            if limit is None:
                limit = self.limit_closes.labels(tally.endpoint, connection.limit)
                endpoint.limit_closes[connection.limit] = limit
            limit.inc()

    def flush(self) -> None:
        """Add what the tallies counted since the last flush to the Prometheus counters."""
        for endpoint in list(self._endpoints.values()):
            endpoint.flush()
        if self._broadcast is not None:
            self._broadcast.flush()
        if self._channels is not None:
            self._channels.flush()

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or the whole service's."""
        self.flush()
        directory = multiprocess_directory()
        if directory is None:
            return generate_latest(self.registry)
        _clean_dead_workers(Path(directory))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def _endpoint(self, endpoint: str) -> _Endpoint:
        found = self._endpoints.get(endpoint)
        if found is None:
            found = self._endpoints[endpoint] = _Endpoint(self, endpoint)
        return found

    def _flush_in(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush every `FLUSH_SECONDS` in ``loop`` from now on, in multiprocess mode: a worker
        that no scrape reaches still adds its figures (``/metrics`` flushes the one it asks)."""
        if self.multiprocess and self._flushing is not loop:
            self._flushing = loop
            loop.call_later(FLUSH_SECONDS, self._flush_every, loop)

    def _flush_every(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._flushing is not loop:
            return  # an app served by another loop now (tests)
        self.flush()
        loop.call_later(FLUSH_SECONDS, self._flush_every, loop)


def _clean_dead_workers(directory: Path) -> None:
    """Forget the open-connection gauges of workers that have died (killed, say)."""
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(directory))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MetricsEndpoint:
    """The ASGI application of ``GET /metrics``: `Metrics` in Prometheus' text format.

    Open to anyone who can reach it, as is usual for Prometheus; with ``api_key`` set, a
    scrape must send ``Authorization: Bearer <key>`` (compared in constant time).
    """

    def __init__(self, metrics: Metrics, *, api_key: str = "") -> None:
        self.metrics = metrics
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"MetricsEndpoint serves HTTP, not {scope['type']!r}")
        headers: list[tuple[bytes, bytes]] = []
        if scope["method"] not in ("GET", "HEAD"):
            status, body = 405, b"GET only.\n"
            headers.append((b"allow", b"GET, HEAD"))
        elif self._key and not _authorized(scope, self._key):
            status, body = 401, b"Send Authorization: Bearer <METRICS_API_KEY>.\n"
            headers.append((b"www-authenticate", b'Bearer realm="metrics"'))
        else:
            status, body = 200, self.metrics.exposition()
        content_type = CONTENT_TYPE_LATEST if status == 200 else "text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *headers,
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )


def _authorized(scope: Scope, key: bytes) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = bytes(value).strip().partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), key)
    return False
