"""`Metrics` as the guard's observer, and `MetricsEndpoint`, over scripted connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..asgi_types import Message, Receive, Scope, Send
from ..broadcast import MemoryHub, Position, run_broadcast
from ..guard import Policy, WebSocketGuard
from ..metrics import Metrics, MetricsEndpoint, close_code_label, endpoint_of
from ..session import SessionSocket, receive_json, run_websocket, send_json
from ..testing import ScriptedClient

# Each test runs on every delivery path (queued, sent at once, lane): see conftest.DELIVERY_PATHS.
pytestmark = pytest.mark.usefixtures("delivery_path")

WebSocketClass = Callable[[Scope, Receive, Send], SessionSocket]
TEMPLATE = "/ws/rooms/{room}"


class Route:
    """What a router leaves in ``scope["route"]``: the path template."""

    path = TEMPLATE


def echo_app(web_socket_class: WebSocketClass) -> Callable[[Scope, Receive, Send], Any]:
    """An echo endpoint at TEMPLATE, routed as a router would (``scope["route"]``)."""

    async def echo(websocket: SessionSocket, message: dict[str, Any]) -> None:
        await send_json(websocket, message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if not scope["path"].startswith("/ws/rooms/"):
            await send({"type": "websocket.close", "code": 1000, "reason": ""})  # no route
            return
        scope["route"] = Route()
        await run_websocket(web_socket_class(scope, receive, send), receive_json(echo))

    return app


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    text = metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


@pytest.mark.parametrize(
    ("code", "label"),
    [(1000, "1000"), (1015, "1015"), (None, "none"), (3001, "3xxx"), (4999, "4xxx"), (2, "other")],
)
def test_close_codes_become_a_bounded_set_of_labels(code: int | None, label: str) -> None:
    assert close_code_label(code) == label


def test_the_endpoint_is_the_routes_template_or_unknown() -> None:
    assert endpoint_of({"route": Route(), "path": "/ws/rooms/42"}) == TEMPLATE
    assert endpoint_of({"path": "/ws/rooms/42"}) == "unknown"


async def test_a_session_is_counted_under_its_template(web_socket_class: WebSocketClass) -> None:
    metrics = Metrics()
    guard = WebSocketGuard(echo_app(web_socket_class), policy=Policy(), observer=metrics)
    client = ScriptedClient("/ws/rooms/42")
    session = asyncio.create_task(guard(client.scope, client.receive, client.send))
    client.send_text('{"text": "h\u00e9"}')  # 14 characters, 15 bytes in UTF-8
    client.send_text("[1]")
    assert (await client.next_sent())["type"] == "websocket.accept"
    echoed, error = await client.next_sent(), await client.next_sent()
    assert sample(metrics, "websocket_connections_open", endpoint=TEMPLATE) == 1
    assert sample(metrics, "websocket_messages_received_total", endpoint=TEMPLATE) == 2
    assert sample(metrics, "websocket_received_bytes_total", endpoint=TEMPLATE) == 15 + 3
    assert sample(metrics, "websocket_messages_sent_total", endpoint=TEMPLATE) == 2
    sent_bytes = len(echoed["text"].encode()) + len(error["text"].encode())
    assert sample(metrics, "websocket_sent_bytes_total", endpoint=TEMPLATE) == sent_bytes
    assert sample(metrics, "websocket_error_replies_total", endpoint=TEMPLATE) == 1
    client.disconnect(4321)
    await session
    assert sample(metrics, "websocket_connections_open", endpoint=TEMPLATE) == 0
    closed = "websocket_connections_closed_total"
    assert sample(metrics, closed, endpoint=TEMPLATE, code="4xxx") == 1


async def test_one_text_sent_to_many_is_counted_once_per_send_with_its_bytes() -> None:
    metrics = Metrics()
    shared = '{"type":"broadcast","message":"h\u00e9"}'  # one str object, as a broadcast's
    error = '{"type":"error","reason":"no"}'
    other = '{"type":"ticker"}'  # another text: the one before is not repeated any more
    counted: list[tuple[float, float]] = []

    def scraped() -> tuple[float, float]:
        return (
            sample(metrics, "websocket_messages_sent_total", endpoint=TEMPLATE),
            sample(metrics, "websocket_sent_bytes_total", endpoint=TEMPLATE),
        )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = Route()
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        for _ in range(3):
            await send({"type": "websocket.send", "text": shared})
        counted.append(scraped())  # a scrape between the sends of one text
        for text in (error, shared, None, shared, shared, other, other):
            message = {"bytes": b"1234"} if text is None else {"text": text}
            await send({"type": "websocket.send", **message})
        await send({"type": "websocket.close", "code": 1000})

    client = ScriptedClient("/ws/rooms/1")
    await WebSocketGuard(app, policy=Policy(), observer=metrics)(
        client.scope, client.receive, client.send
    )
    size = len(shared.encode())  # 35 characters, 36 bytes in UTF-8
    assert counted == [(3, 3 * size)]
    assert scraped() == (10, 6 * size + len(error) + 4 + 2 * len(other))
    assert sample(metrics, "websocket_error_replies_total", endpoint=TEMPLATE) == 1


async def test_refusals_are_counted_by_reason(web_socket_class: WebSocketClass) -> None:
    metrics = Metrics()
    policy = Policy(max_connections=1)
    guard = WebSocketGuard(echo_app(web_socket_class), policy=policy, observer=metrics)
    foreign = ScriptedClient(
        "/ws/rooms/1", headers=[(b"origin", b"https://evil.example"), (b"host", b"example.com")]
    )
    await guard(foreign.scope, foreign.receive, foreign.send)
    lost = ScriptedClient("/nowhere")
    await guard(lost.scope, lost.receive, lost.send)
    first, second = ScriptedClient("/ws/rooms/1"), ScriptedClient("/ws/rooms/1")
    session = asyncio.create_task(guard(first.scope, first.receive, first.send))
    await first.next_sent()
    await guard(second.scope, second.receive, second.send)  # full
    first.disconnect()
    await session
    refused = "websocket_handshakes_refused_total"
    for reason, count in [("origin", 1), ("unknown_path", 1), ("connection_limit", 1)]:
        assert sample(metrics, refused, reason=reason) == count, reason
    assert sample(metrics, refused, reason="auth") == 0
    assert sample(metrics, "websocket_connections_opened_total", endpoint=TEMPLATE) == 1


async def test_a_close_for_a_limit_is_counted(web_socket_class: WebSocketClass) -> None:
    metrics = Metrics()
    policy = Policy(max_message_bytes=100)
    guard = WebSocketGuard(echo_app(web_socket_class), policy=policy, observer=metrics)
    client = ScriptedClient("/ws/rooms/1")
    client.send_text(json.dumps({"too": "x" * 200}))
    await asyncio.wait_for(guard(client.scope, client.receive, client.send), 2)
    assert sample(metrics, "websocket_limit_closes_total", endpoint=TEMPLATE, limit="size") == 1
    closed = "websocket_connections_closed_total"
    assert sample(metrics, closed, endpoint=TEMPLATE, code="1009") == 1


async def call(app: MetricsEndpoint, method: str = "GET", headers: Any = ()) -> list[Message]:
    scope = {"type": "http", "method": method, "path": "/metrics", "headers": list(headers)}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_the_endpoint_serves_get_and_can_want_a_key() -> None:
    metrics = Metrics()
    start, body = await call(MetricsEndpoint(metrics))
    assert start["status"] == 200
    assert b"websocket_handshakes_refused_total" in body["body"]
    start, _ = await call(MetricsEndpoint(metrics), "POST")
    assert start["status"] == 405
    keyed = MetricsEndpoint(metrics, api_key="k" * 20)
    assert (await call(keyed))[0]["status"] == 401
    assert (await call(keyed, headers=[(b"authorization", b"Bearer wrong")]))[0]["status"] == 401
    good = [(b"authorization", b"Bearer " + b"k" * 20)]
    assert (await call(keyed, headers=good))[0]["status"] == 200


async def test_a_watched_hub_feeds_the_broadcast_metrics() -> None:
    metrics = Metrics()
    hub = MemoryHub(join_leave=False)  # messages only: events are not deliveries
    metrics.watch_hub(hub)
    async with hub:
        first, second = await hub.subscribe("/ws/news"), await hub.subscribe("/ws/news")
        for subscription in (first, second):
            await subscription.next()  # the subscribed notice: not a delivery
        for number in range(8):
            position = await hub.publish("/ws/news", {"n": number})
            for subscription in (first, second):
                await subscription.next()
        resumed = await hub.subscribe("/ws/news", Position(0, position.epoch))
        assert resumed.recovered is True
    assert sample(metrics, "broadcast_messages_published_total") == 8
    assert sample(metrics, "broadcast_deliveries_total") == 16
    assert sample(metrics, "broadcast_recoveries_total", outcome="recovered") == 1
    # One delivery in LAG_SAMPLE (16) has its lag measured.
    assert sample(metrics, "broadcast_delivery_lag_seconds_count") == 1
    assert sample(metrics, "broadcast_delivery_lag_seconds_bucket", le="+Inf") == 1
    assert 0 <= sample(metrics, "broadcast_delivery_lag_seconds_sum") < 5
    assert "broadcast_redis_up" not in metrics.exposition().decode()  # a memory hub


class Counts:
    """The counters a channels endpoint keeps (``ChannelsStats``: this project may not have
    that module), as its protocol steps them."""

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], int] = {}
        self.subscribed: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self.disconnects: dict[str, int] = {}


def test_a_watched_channels_endpoint_feeds_the_channels_metrics_as_it_goes() -> None:
    metrics, counts = Metrics(), Counts()
    metrics.watch_channels(counts)
    counts.replies.update({("connect", "ok"): 2, ("subscribe", "102"): 1})
    counts.subscribed["news"] = 3
    metrics.exposition()
    counts.replies[("connect", "ok")] = 5
    counts.published["chat"] = 1
    counts.disconnects["3501"] = 1
    assert sample(metrics, "channels_commands_total", method="connect", outcome="ok") == 5
    assert sample(metrics, "channels_commands_total", method="subscribe", outcome="102") == 1
    assert sample(metrics, "channels_subscriptions_total", namespace="news") == 3
    assert sample(metrics, "channels_client_publications_total", namespace="chat") == 1
    assert sample(metrics, "channels_disconnects_total", code="3501") == 1


async def test_a_scrape_while_messages_wait_in_a_queue_counts_only_those_sent() -> None:
    metrics = Metrics()
    hub = MemoryHub(join_leave=False)
    metrics.watch_hub(hub)
    async with hub:
        reader, leaver = await hub.subscribe("/ws/news"), await hub.subscribe("/ws/news")
        for subscription in (reader, leaver):
            await subscription.next()  # the subscribed notice
        for number in range(3):
            await hub.publish("/ws/news", {"n": number})
            await reader.next()
        assert sample(metrics, "broadcast_deliveries_total") == 3  # the leaver sent none
        await hub.unsubscribe(leaver)  # its 3 are never sent
        await hub.publish("/ws/news", {"n": 3})
        await reader.next()
    assert sample(metrics, "broadcast_deliveries_total") == 4


async def test_broadcast_sessions_count_each_send_and_delivery_exactly(
    web_socket_class: WebSocketClass,
) -> None:
    # On every delivery path (queued, sent at once, lane): what the guard counts is what was sent.
    metrics = Metrics()
    hub = MemoryHub(join_leave=False)
    metrics.watch_hub(hub)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = Route()
        await run_broadcast(web_socket_class(scope, receive, send), hub)

    guard = WebSocketGuard(app, policy=Policy(), observer=metrics)
    async with hub:
        clients = [ScriptedClient("/ws/rooms/1", reply_timeout=5) for _ in range(3)]
        sessions = [
            asyncio.create_task(guard(client.scope, client.receive, client.send))
            for client in clients
        ]
        texts: list[str] = []
        for client in clients:
            assert (await client.next_sent())["type"] == "websocket.accept"
            texts.append((await client.next_sent())["text"])  # the subscribed notice
        for number in range(5):
            await hub.publish("/ws/rooms/1", {"n": number, "text": "h\u00e9"})
            for client in clients:
                texts.append((await client.next_sent())["text"])
        for client in clients:
            client.disconnect()
        await asyncio.gather(*sessions)
    sent = "websocket_messages_sent_total", "websocket_sent_bytes_total"
    assert [sample(metrics, name, endpoint=TEMPLATE) for name in sent] == [
        len(texts),
        sum(len(text.encode()) for text in texts),
    ]
    assert sample(metrics, "broadcast_deliveries_total") == 15
