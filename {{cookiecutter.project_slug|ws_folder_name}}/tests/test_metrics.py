{%- set endpoints = cookiecutter.endpoints | ws_endpoints -%}
{%- set first = (endpoints | rejectattr("kind", "equalto", "channels") | list + endpoints) | first -%}
{%- set centrifuge = first.kind == "channels" -%}{#- the Centrifuge protocol, not keepalives -#}
{%- set broadcasts = endpoints | selectattr("kind", "equalto", "broadcast") | list -%}
{%- set hub = broadcasts or "channels" in (endpoints | map(attribute="kind") | list) -%}
{%- set redis = hub and cookiecutter.broadcast_backend == "redis" -%}
{%- set workers = not (hub and not redis) and not centrifuge -%}{#- several workers: not with a hub in memory -#}
"""``GET /metrics``: the figures move as connections open, talk, are refused and close.

Every test runs against a real uvicorn server; with ``--workers 2`` the figures are the
whole service's (prometheus-client's multiprocess mode, set up by ``python -m``).
"""

from __future__ import annotations
{{ "" }}
{%- if broadcasts %}
import json
{%- endif %}
import os
import re
{%- if workers %}
import signal
{%- endif %}
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
{%- if workers %}
from contextlib import ExitStack
from pathlib import Path
{%- endif %}

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import {% if workers %}ConnectionClosed, {% endif %}ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.typing import Origin

from {{ cookiecutter.package_name }}.websocket.testing import LiveServer{% if redis %}, RedisServer{% endif %}

from .conftest import TEST_ENVIRONMENT
from .contract import connect

APP = "{{ cookiecutter.package_name }}.app:app"
ENDPOINT = "{{ first.path }}"
"""The first endpoint's path template: its label in every metric."""
URL = "{{ first.example_url }}"
"""A concrete path of that endpoint."""
{%- if centrifuge %}
KEEPALIVE = '{"id": 1, "connect": {}}'
"""A Centrifuge connect, refused with an error reply (ANONYMOUS_CONNECTIONS=no)."""
ANSWER = '"error"'
{%- else %}
KEEPALIVE = '{"type": "keepalive", "client_ns": 1}'
ANSWER = '"keepalive_ack"'
{%- endif %}
# hypercorn (LIVE_SERVER=hypercorn) gives the app 1006 when a client closes with a code of
# its own: the server's behaviour, not the service's; uvicorn passes the code on.
CLIENT_CODE_LABEL = "1006" if os.environ.get("LIVE_SERVER") == "hypercorn" else "4xxx"
{%- if broadcasts %}
BROADCAST = "{{ broadcasts[0].path }}"
BROADCAST_URL = "{{ broadcasts[0].example_url }}"
{%- endif %}
Figures = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: LiveServer, headers: dict[str, str] | None = None) -> Figures:
    """Every sample of ``GET /metrics``, by name and labels."""
    request = urllib.request.Request(server.url("/metrics"), headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def status_of_scrape(server: LiveServer, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of ``GET /metrics``."""
    request = urllib.request.Request(server.url("/metrics"), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:  # its body is an open response
            return error.code


def figure(figures: Figures, name: str, **labels: str) -> float:
    return figures.get((name, frozenset(labels.items())), 0.0)


def moved(before: Figures, after: Figures, name: str, **labels: str) -> float:
    """How much a figure has moved between two scrapes."""
    return figure(after, name, **labels) - figure(before, name, **labels)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds: a close reaches the server after the client's call."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the figures did not move in time"
        time.sleep(0.02)


def answer_keepalive(websocket: ClientConnection) -> None:
    websocket.send(KEEPALIVE)
    for _ in range(100):  # ticks may come first
        if ANSWER in str(websocket.recv(timeout=5)):
            return
    raise AssertionError(f"no {ANSWER}")


def receive_until_closed(websocket: ClientConnection) -> None:
    for _ in range(100):  # ticks may come first
        websocket.recv(timeout=5)


@pytest.fixture(scope="module")
{%- if redis %}
def environment(redis_server: RedisServer) -> dict[str, str]:
    """The tests' settings, and the test Redis."""
    return {**TEST_ENVIRONMENT, "REDIS_URL": redis_server.url}
{%- else %}
def environment() -> dict[str, str]:
    """The tests' settings."""
    return dict(TEST_ENVIRONMENT)
{%- endif %}


@pytest.fixture(scope="module")
def server(environment: dict[str, str]) -> Iterator[LiveServer]:
    """The app on uvicorn with a small size limit, so that a test can exceed it."""
    with LiveServer(APP, env={**environment, "MAX_MESSAGE_BYTES": "1000"}) as server:
        yield server
    assert "Traceback" not in server.log, server.log


def test_metrics_are_served_in_the_prometheus_text_format(server: LiveServer) -> None:
    figures = scrape(server)
    assert figure(figures, "websocket_handshakes_refused_total", reason="origin") >= 0
    assert ("websocket_handshakes_refused_total", frozenset({("reason", "auth")})) in figures


def test_a_connection_moves_the_open_opened_message_and_close_figures(
    server: LiveServer,
) -> None:
    before = scrape(server)
    with connect(server.ws_url(URL)) as websocket:
        answer_keepalive(websocket)
        during = scrape(server)
        assert figure(during, "websocket_connections_open", endpoint=ENDPOINT) == 1
        assert moved(before, during, "websocket_connections_opened_total", endpoint=ENDPOINT) == 1
        for name, least in [
            ("websocket_messages_received_total", 1),
            ("websocket_received_bytes_total", len(KEEPALIVE)),
            ("websocket_messages_sent_total", 1),
            ("websocket_sent_bytes_total", len('{"type":"keepalive_ack"}')),
        ]:
            assert moved(before, during, name, endpoint=ENDPOINT) >= least, name
        websocket.close(4000)
    closed = "websocket_connections_closed_total"

    def counted() -> bool:
        figures = scrape(server)
        return (
            moved(before, figures, closed, endpoint=ENDPOINT, code=CLIENT_CODE_LABEL) == 1
            and figure(figures, "websocket_connections_open", endpoint=ENDPOINT) == 0
        )

    wait_for(counted)


def test_labels_carry_the_path_template_never_the_path_or_the_client(
    server: LiveServer,
) -> None:
    with connect(server.ws_url(URL)) as websocket:
        answer_keepalive(websocket)
        with urllib.request.urlopen(server.url("/metrics"), timeout=10) as response:
            text = response.read().decode()
    endpoints = set(re.findall(r'endpoint="([^"]*)"', text))
    assert ENDPOINT in endpoints
    assert "127.0.0.1" not in text
{%- if first.path != first.example_url %}
    assert URL not in endpoints
{%- endif %}

{%- if not centrifuge %}


def test_an_error_reply_is_counted(server: LiveServer) -> None:
    name = "websocket_error_replies_total"
    before = figure(scrape(server), name, endpoint=ENDPOINT)
    with connect(server.ws_url(URL)) as websocket:
        websocket.send("[1]")  # not a JSON object
        for _ in range(100):  # ticks may come first
            if '"error"' in str(websocket.recv(timeout=5)):
                break
        assert figure(scrape(server), name, endpoint=ENDPOINT) == before + 1
{%- endif %}


def test_refused_handshakes_are_counted_by_reason(server: LiveServer) -> None:
    name = "websocket_handshakes_refused_total"
    before = scrape(server)
    evil = Origin("https://evil.example")
    with pytest.raises(InvalidStatus), connect(server.ws_url(URL), origin=evil):
        pass
    with pytest.raises(InvalidStatus), connect(server.ws_url("/no/such/path")):
        pass
    after = scrape(server)
    for reason in ("origin", "unknown_path"):
        assert moved(before, after, name, reason=reason) == 1
    assert moved(before, after, name, reason="auth") == 0


def test_a_close_for_a_limit_is_counted_with_its_code(server: LiveServer) -> None:
    limits, closed = "websocket_limit_closes_total", "websocket_connections_closed_total"
    before = scrape(server)
    with connect(server.ws_url(URL), max_size=None) as websocket:
        websocket.send("x" * 2000)  # over MAX_MESSAGE_BYTES
        with pytest.raises(ConnectionClosedError):
            receive_until_closed(websocket)

    def counted() -> bool:
        after = scrape(server)
        return (
            moved(before, after, limits, endpoint=ENDPOINT, limit="size") == 1
            and moved(before, after, closed, endpoint=ENDPOINT, code="1009") == 1
        )

    wait_for(counted)


def test_metrics_can_want_a_key_or_be_turned_off(environment: dict[str, str]) -> None:
    key = "metrics-key-0123456789"
    with LiveServer(APP, env={**environment, "METRICS_API_KEY": key}) as protected:
        assert status_of_scrape(protected) == 401
        assert status_of_scrape(protected, {"Authorization": "Bearer not-the-key-at-all"}) == 401
        assert scrape(protected, {"Authorization": f"Bearer {key}"})
    with LiveServer(APP, env={**environment, "METRICS_ENABLED": "no"}) as off:
        assert status_of_scrape(off) == 404
        with connect(off.ws_url(URL)) as websocket:
            answer_keepalive(websocket)

{%- if workers %}


def worker_pids(server: LiveServer) -> list[int]:
    return [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", server.log)]


def test_with_two_workers_the_figures_are_the_services(
    environment: dict[str, str], tmp_path: Path
) -> None:
    """Sixteen connections spread over two workers: every scrape, whichever worker answers,
    counts all of them; when a worker is killed, its connections leave the open gauge."""
    shared = {**environment, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    open_gauge = "websocket_connections_open"
    with (
        LiveServer(APP, server="runner", env=shared, args=["--workers", "2"]) as server,
        ExitStack() as connections,
    ):
        # Workers listen once started (the supervisor only binds the socket).
        wait_for(lambda: server.log.count("Application startup complete") == 2, timeout=30)
        websockets = [connections.enter_context(connect(server.ws_url(URL))) for _ in range(16)]
        for websocket in websockets:
            answer_keepalive(websocket)
        for _ in range(6):  # the two workers answer in turn, or as the kernel picks
            assert figure(scrape(server), open_gauge, endpoint=ENDPOINT) == 16
        received = "websocket_messages_received_total"  # each worker adds its own every second
        wait_for(lambda: figure(scrape(server), received, endpoint=ENDPOINT) >= 16)
        serving = {int(name.split("_")[-1][:-3]) for name in os.listdir(tmp_path) if "live" in name}
        assert serving <= set(worker_pids(server))
        victim = sorted(serving)[0]
        os.kill(victim, signal.SIGKILL)
        survivors = 0
        for websocket in websockets:
            try:
                answer_keepalive(websocket)
                survivors += 1
            except (ConnectionClosed, TimeoutError):
                pass
        assert survivors < 16
        wait_for(lambda: figure(scrape(server), open_gauge, endpoint=ENDPOINT) == survivors)
{%- if redis %}


def test_with_two_workers_redis_up_reads_1_once_every_worker_is_connected(
    environment: dict[str, str], tmp_path: Path
) -> None:
    """Each worker writes its own connection to Redis into the shared folder as it changes,
    connections or not: the first scrape, whichever worker answers, sees both."""
    shared = {**environment, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with LiveServer(APP, server="runner", env=shared, args=["--workers", "2"]) as server:
        wait_for(lambda: server.log.count("connected to Redis") == 2, timeout=30)
        time.sleep(1.5)  # no scrape before: a worker that was never asked must have written
        for _ in range(6):  # the two workers answer in turn, or as the kernel picks
            assert figure(scrape(server), "broadcast_redis_up") == 1, server.log
{%- endif %}
{%- endif %}
{%- if broadcasts %}


def receive_type(websocket: ClientConnection, kind: str) -> dict[str, object]:
    for _ in range(100):
        message = json.loads(websocket.recv(timeout=5))
        if message["type"] == kind:
            return dict(message)
    raise AssertionError(f"no {kind} message")


def test_a_broadcast_moves_the_published_delivery_lag_and_recovery_figures(
    server: LiveServer,
) -> None:
    before = scrape(server)
    url = server.ws_url(BROADCAST_URL)
    with connect(url) as first, connect(url) as second:
        position = receive_type(first, "subscribed")
        receive_type(second, "subscribed")
        for number in range(16):
            first.send(json.dumps({"n": number}))
            receive_type(first, "broadcast")
            receive_type(second, "broadcast")

        def counted() -> bool:  # one delivery in 16 has its lag measured: 2 of 32
            after = scrape(server)
            return (
                moved(before, after, "broadcast_messages_published_total") == 16
                and moved(before, after, "broadcast_deliveries_total") == 32
                and moved(before, after, "broadcast_delivery_lag_seconds_count") == 2
            )

        wait_for(counted)
    since = f"?since={position['offset']}&epoch={position['epoch']}"
    with connect(server.ws_url(BROADCAST_URL + since)) as resumed:
        assert receive_type(resumed, "subscribed")["recovered"] is True
        after = scrape(server)
    assert moved(before, after, "broadcast_recoveries_total", outcome="recovered") == 1
{%- if redis %}
    assert figure(after, "broadcast_redis_up") == 1
{%- endif %}
{%- endif %}
