"""The client side of the service's protocol, as checks run over one open connection.

The same checks run on any connection that offers `JsonConnection`'s few methods: a real
server's, through the ``websockets`` client, or one of an in-process test client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from websockets.sync.client import ClientConnection

SECOND_NS = 1_000_000_000


class JsonConnection(Protocol):
    def send_json(self, data: Any) -> None: ...

    def send_text(self, data: str) -> None: ...

    def send_bytes(self, data: bytes) -> None: ...

    def receive_json(self) -> Any: ...


class LiveConnection:
    """A `JsonConnection` over a real connection of the ``websockets`` client."""

    def __init__(self, websocket: ClientConnection, timeout: float = 5.0) -> None:
        self.websocket = websocket
        self.timeout = timeout

    def send_json(self, data: Any) -> None:
        self.websocket.send(json.dumps(data))

    def send_text(self, data: str) -> None:
        """A raw frame: not checked against /asyncapi.json (tests send off-protocol ones)."""
        getattr(self.websocket, "send_unchecked", self.websocket.send)(data)

    def send_bytes(self, data: bytes) -> None:
        getattr(self.websocket, "send_unchecked", self.websocket.send)(data)

    def receive_json(self) -> Any:
        return json.loads(self.websocket.recv(timeout=self.timeout))


def receive_reply(connection: JsonConnection, max_ticks: int = 100) -> Any:
    """The next message that is not a tick (ticker endpoints tick in between)."""
    for _ in range(max_ticks):
        message = connection.receive_json()
        if message.get("type") != "tick":
            return message
    raise AssertionError(f"no reply among {max_ticks} ticks")


def check_keepalive_answered(connection: JsonConnection) -> None:
    """A keepalive comes back as a keepalive_ack with the client's fields and the server clock."""
    sent_ns = time.time_ns()
    connection.send_json({"type": "keepalive", "client_ns": sent_ns, "note": "h\u00e9llo \u2713"})
    ack = receive_reply(connection)
    assert ack["type"] == "keepalive_ack", ack
    assert ack["client_ns"] == sent_ns, ack
    assert ack["note"] == "h\u00e9llo \u2713", ack
    assert isinstance(ack["server_ns"], int), ack
    assert abs(ack["server_ns"] - sent_ns) < 5 * SECOND_NS, ack  # the same machine's clock


def check_errors_answered(connection: JsonConnection) -> None:
    """What is not a JSON object gets an error reply, and the session goes on."""
    connection.send_text("not json")
    assert receive_reply(connection)["reason"].startswith("invalid JSON")
    connection.send_text("[1, 2]")
    assert receive_reply(connection) == {
        "type": "error",
        "reason": "expected a JSON object, got an array",
    }
    connection.send_bytes(b"{}")
    assert receive_reply(connection)["type"] == "error"


def check_presence_refused(connection: JsonConnection) -> None:
    """Presence is kept on broadcast endpoints only: elsewhere a request gets one sentence."""
    connection.send_text(json.dumps({"type": "presence"}))  # not one of this endpoint's messages
    assert receive_reply(connection) == {
        "type": "error",
        "reason": "presence is kept on broadcast endpoints only; this endpoint has none",
    }


def check_keepalive_endpoint(connection: JsonConnection) -> None:
    check_keepalive_answered(connection)
    check_presence_refused(connection)
    connection.send_text(json.dumps({"type": "chat", "text": "hi"}))  # not one of its messages
    assert receive_reply(connection) == {
        "type": "error",
        "reason": "this endpoint answers only keepalive messages",
    }
    check_errors_answered(connection)
    check_keepalive_answered(connection)


def check_echo_endpoint(connection: JsonConnection) -> None:
    for message in (
        {"type": "chat", "text": "h\u00e9llo \u2713", "nested": {"list": [1, 2.5, None, True]}},
        {},
        {"no": "type"},
    ):
        connection.send_json(message)
        assert connection.receive_json() == message
    check_presence_refused(connection)  # not echoed
    check_keepalive_answered(connection)
    check_errors_answered(connection)
    check_keepalive_answered(connection)


def check_ticker_endpoint(connection: JsonConnection) -> None:
    ticks = [connection.receive_json() for _ in range(3)]
    assert [tick["type"] for tick in ticks] == ["tick"] * 3, ticks
    assert [tick["seq"] for tick in ticks] == [0, 1, 2], ticks
    assert ticks[0]["server_ns"] < ticks[1]["server_ns"] < ticks[2]["server_ns"], ticks
    check_keepalive_answered(connection)
    check_presence_refused(connection)
    later = connection.receive_json()
    assert later["type"] == "tick", later
    assert later["seq"] > 2, later


def check_broadcast_endpoint(connection: JsonConnection) -> None:
    subscribed = connection.receive_json()
    assert subscribed["type"] == "subscribed", subscribed
    channel, offset, epoch = subscribed["channel"], subscribed["offset"], subscribed["epoch"]
    assert isinstance(offset, int), subscribed
    assert isinstance(epoch, str), subscribed
    for message in (
        {"type": "chat", "text": "h\u00e9llo \u2713", "nested": {"list": [1, 2.5, None, True]}},
        {},
    ):
        connection.send_json(message)
        relayed = receive_reply(connection)  # the sender gets its own message too
        offset += 1  # each message on the channel the next offset
        # endpoints.py's stamp_sender adds the sender's user, when auth.py gave one.
        stamped = {"user": relayed["message"]["user"]} if "user" in relayed["message"] else {}
        assert relayed == {
            "type": "broadcast",
            "channel": channel,
            "offset": offset,
            "epoch": epoch,
            "server_ns": relayed["server_ns"],
            "message": {**message, **stamped},
        }, relayed
        assert abs(relayed["server_ns"] - time.time_ns()) < 5 * SECOND_NS, relayed
    check_keepalive_answered(connection)
    check_errors_answered(connection)
    check_keepalive_answered(connection)


def check_channels_endpoint(connection: JsonConnection) -> None:
    """A channels endpoint's protocol: a connect with no token from a client auth.py gave
    no identity is refused with error 101 while ANONYMOUS_CONNECTIONS=no, and one auth.py
    gave a user (conftest's AUTH_HEADERS) connects (test_channels.py goes further)."""
    connection.send_json({"id": 1, "connect": {"name": "test"}})
    reply = connection.receive_json()
    assert reply["id"] == 1, reply
    if "error" in reply:
        assert reply["error"]["code"] == 101, reply
    else:
        assert reply["connect"]["client"], reply


CHECKS: dict[str, Callable[[JsonConnection], None]] = {
    "keepalive": check_keepalive_endpoint,
    "echo": check_echo_endpoint,
    "ticker": check_ticker_endpoint,
    "broadcast": check_broadcast_endpoint,
    "channels": check_channels_endpoint,
}
"""The protocol check of each endpoint kind."""
