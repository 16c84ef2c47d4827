{%- set endpoints = cookiecutter.endpoints | ws_endpoints | selectattr("kind", "equalto", "broadcast") | list -%}
"""Broadcast endpoints on a real uvicorn server: each message reaches every client of its path."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from {{ cookiecutter.package_name }}.websocket.testing import LiveServer

BROADCAST_PATHS = [
{%- for endpoint in endpoints %}
    "{{ endpoint.path }}",
{%- endfor %}
]

OpenClient = Callable[[str], ClientConnection]


def filled(path: str, value: str) -> str:
    """``path`` with each ``{name}`` parameter filled in as ``name-<value>``."""
    return re.sub(r"\{(\w+)\}", rf"\1-{value}", path)


def receive(websocket: ClientConnection) -> Any:
    return json.loads(websocket.recv(timeout=5))


@pytest.fixture
def clients(live_server: LiveServer) -> Iterator[OpenClient]:
    """Opens subscribed clients on a path; closes them all at the end of the test."""
    with ExitStack() as stack:

        def open_client(path: str) -> ClientConnection:
            websocket = stack.enter_context(connect(live_server.ws_url(path)))
            assert receive(websocket) == {"type": "subscribed", "channel": path}
            return websocket

        yield open_client


@pytest.mark.parametrize("path", BROADCAST_PATHS)
def test_a_message_reaches_every_client_of_its_path_and_no_other(
    clients: OpenClient, path: str
) -> None:
    url = filled(path, "1")
    sender, listener = clients(url), clients(url)
    # Another value of a path parameter is another channel (another room, say).
    elsewhere = clients(filled(path, "2")) if "{" in path else None
    sender.send(json.dumps({"text": "hi"}))
    for websocket in (sender, listener):  # the sender gets its own message too
        relayed = receive(websocket)
        assert (relayed["type"], relayed["channel"], relayed["message"]) == (
            "broadcast",
            url,
            {"text": "hi"},
        )
    if elsewhere is not None:
        elsewhere.send(json.dumps({"type": "keepalive"}))
        assert receive(elsewhere)["type"] == "keepalive_ack"  # and not the message


def test_every_client_sees_each_sender_s_messages_in_order_and_in_one_order(
    clients: OpenClient,
) -> None:
    url = filled(BROADCAST_PATHS[0], "1")
    senders = [clients(url) for _ in range(3)]
    listeners = [clients(url) for _ in range(2)]
    count = 30  # each; under the rate limit's burst
    for seq in range(count):
        for number, sender in enumerate(senders):
            sender.send(json.dumps({"sender": number, "seq": seq}))
    seen = [
        [receive(websocket)["message"] for _ in range(count * len(senders))]
        for websocket in listeners + senders
    ]
    assert all(sequence == seen[0] for sequence in seen)  # one order for everyone
    for number in range(len(senders)):
        assert [m["seq"] for m in seen[0] if m["sender"] == number] == list(range(count))
