{%- set endpoints = cookiecutter.endpoints | ws_endpoints -%}
{%- set broadcasts = endpoints | selectattr("kind", "equalto", "broadcast") | list -%}
{%- set redis = broadcasts and cookiecutter.broadcast_backend == "redis" -%}
"""The Python client (``client.py``) on a real server: keepalives, refusals{% if broadcasts %}, and a restart
under a connected client that resumes{% endif %}."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable{% if broadcasts %}, Iterator{% endif %}
{%- if broadcasts %}
from typing import Any
{%- endif %}

import pytest

from {{ cookiecutter.package_name }}.client import Client, Refused{% if broadcasts %}, service_message{% endif %}
{%- if redis %}
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer, RedisServer
{%- else %}
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer
{%- endif %}
{{ "" }}
{%- if broadcasts %}
from .conftest import AUTH_HEADERS, TEST_ENVIRONMENT
from .contract import Contract
{%- else %}
from .conftest import AUTH_HEADERS
{%- endif %}

FIRST_URL = "{{ (endpoints | rejectattr("kind", "equalto", "channels") | list + endpoints | list) | map(attribute="example_url") | first }}"


async def wait_for(condition: str, check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not {condition} after {within} s"
        await asyncio.sleep(0.02)


async def test_the_client_measures_keepalive_round_trips(live_server: LiveServer) -> None:
    url = live_server.ws_url(FIRST_URL)
    async with Client(url, headers=AUTH_HEADERS, keepalive_seconds=0.05) as client:
        await wait_for("a keepalive answered", lambda: client.round_trip is not None)
        assert client.round_trip is not None
        assert 0 < client.round_trip < 5
        assert client.connections == 1
        await client.send({"type": "keepalive", "client_ns": 7, "mine": True})
        # The client's own keepalives go on meanwhile; their acks are not passed on.
        acks: list[dict[str, object]] = []
        while not acks or acks[-1].get("client_ns") != 7:
            message = await asyncio.wait_for(client.receive(), 10)
            if message["type"] == "keepalive_ack":
                acks.append(message)
        assert [ack["client_ns"] for ack in acks] == [7]
        assert acks[0]["mine"] is True


def test_the_terminal_client_prints_the_replies_to_piped_lines(live_server: LiveServer) -> None:
    lines = [json.dumps({"type": "keepalive", "client_ns": n}) for n in (1, 2, 3)]
    client = "{{ cookiecutter.package_name }}.client"
    headers = [f"--header={name}:{value}" for name, value in AUTH_HEADERS.items()]
    done = subprocess.run(
        [sys.executable, "-m", client, live_server.ws_url(FIRST_URL), *headers],
        input="\n".join([*lines, "not json", ""]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    # The input ended at once; the replies still came and were printed, in order.
    assert [m["client_ns"] for m in printed if m["type"] == "keepalive_ack"] == [1, 2, 3]
    assert "(not JSON: type a JSON object)" in done.stdout


async def test_a_refused_handshake_is_not_retried(live_server: LiveServer) -> None:
    async with Client(live_server.ws_url("/no/such/endpoint"), headers=AUTH_HEADERS) as client:
        with pytest.raises(Refused, match="HTTP 403"):
            await asyncio.wait_for(client.receive(), 10)
        with pytest.raises(Refused):
            await client.send({"text": "anyone?"})
        assert client.connections == 0
{%- if broadcasts %}


BROADCAST_URL = "{{ broadcasts[0].example_url }}"
COUNT = 60


@pytest.fixture
{%- if redis %}
def restarting(redis_server: RedisServer) -> Iterator[LiveServer]:
    environment = {**TEST_ENVIRONMENT, "REDIS_URL": redis_server.url}
{%- else %}
def restarting() -> Iterator[LiveServer]:
    environment = TEST_ENVIRONMENT
{%- endif %}
    """A server of the app for one test, which restarts it (on the same port)."""
    with LiveServer("{{ cookiecutter.package_name }}.app:app", env=environment) as server:
        yield server


def check_against_the_document(
    server: LiveServer, received: list[dict[str, Any]], sent: list[dict[str, Any]]
) -> None:
    """What the client received and sent, checked against the served /asyncapi.json."""
    channel = Contract.served_by(server.url("")).channel(BROADCAST_URL)
    for message in received:
        channel.check("server", message)
    for message in sent:
        channel.check("client", message)


def numbers(messages: list[dict[str, Any]]) -> list[int]:
    """The ``n`` of each broadcast among ``messages`` (typed as the client types them)."""
    typed = [service_message(m) for m in messages]
    return [t["message"]["n"] for t in typed if t is not None and t["type"] == "broadcast"]


async def test_a_client_reconnects_after_a_restart_and_resumes(
    restarting: LiveServer, live_server: LiveServer
) -> None:
    # The listener is on the server that restarts; the publisher (another client) is on
    # {% if redis %}the other server, on the same Redis: nothing it publishes meanwhile may be lost{% else %}the same one (the memory hub's history goes with the process){% endif %}.
    options: dict[str, Any] = {
        "first_retry_seconds": 0.05,
        "last_retry_seconds": 0.5,
        "headers": AUTH_HEADERS,
    }
    publisher_server = {{ "live_server" if redis else "restarting" }}
    async with (
        Client(restarting.ws_url(BROADCAST_URL), **options) as listener,
        Client(publisher_server.ws_url(BROADCAST_URL), **options) as publisher,
    ):
        assert (await listener.receive())["type"] == "subscribed"
        assert (await publisher.receive())["type"] == "subscribed"
        for n in range(COUNT):
            await publisher.send({"n": n})
            if n == COUNT // 3:
                await asyncio.to_thread(restarting.restart)
            await asyncio.sleep(0.01)
        received: list[dict[str, Any]] = []
        while not numbers(received) or numbers(received)[-1] != COUNT - 1:
            received.append(await asyncio.wait_for(listener.receive(), 20))
    assert listener.connections == 2
    notices = [m for m in received if m["type"] == "subscribed"]
{%- if redis %}
    assert notices == [
        {
            "type": "subscribed",
            "channel": BROADCAST_URL,
            "offset": notices[0]["offset"],
            "epoch": notices[0]["epoch"],
            "client_id": notices[0]["client_id"],
            "recovered": True,
        }
    ]
    assert listener.recovered is True
    check_against_the_document(restarting, received, sent=[{"n": n} for n in range(COUNT)])
    assert numbers(received) == list(range(COUNT))  # every message, once, in order
    offsets = [m["offset"] for m in received if m["type"] == "broadcast"]
    assert offsets == list(range(offsets[0], offsets[0] + COUNT))
{%- else %}
    # A new process is a new epoch: the client is told it could not recover, and goes on.
    assert [notice["recovered"] for notice in notices] == [False]
    assert listener.recovered is False
    check_against_the_document(restarting, received, sent=[{"n": n} for n in range(COUNT)])
    seen = numbers(received)
    assert seen == sorted(set(seen))  # in order, none twice
{%- endif %}


async def test_a_client_with_last_starts_with_the_channel_s_last_messages_then_resumes(
    live_server: LiveServer,
) -> None:
    url = live_server.ws_url(BROADCAST_URL)
    async with Client(url, headers=AUTH_HEADERS) as publisher:
        assert (await publisher.receive())["type"] == "subscribed"
        for n in range(5):
            await publisher.send({"n": n})
        received = [await asyncio.wait_for(publisher.receive(), 5) for _ in range(5)]
    async with Client(url, headers=AUTH_HEADERS, last=2) as late:
        assert "last=2" in late.resume_url()
        notice = await asyncio.wait_for(late.receive(), 5)
        assert (notice["type"], notice["recovered"]) == ("subscribed", True)
        replayed = [await asyncio.wait_for(late.receive(), 5) for _ in range(2)]
        assert numbers(replayed) == [3, 4]
        assert late.position == (received[-1]["offset"], received[-1]["epoch"])
        assert "last" not in late.resume_url()  # a reconnection resumes from its position
{%- endif %}
