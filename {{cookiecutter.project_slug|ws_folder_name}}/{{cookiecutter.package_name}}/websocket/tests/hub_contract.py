"""The contract of every broadcast hub, as a class of tests to inherit.

``test_broadcast.py`` runs it on `MemoryHub` and ``test_redis_hub.py`` (projects with the
Redis backend) on `RedisHub` over a real redis-server: a subclass gives a ``hub`` fixture,
a started hub whose subscriptions hold `QUEUE_SIZE` messages.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from ..asgi_types import Message
from ..broadcast import Hub, HubUnavailable, Subscription, run_broadcast
from ..testing import ScriptedClient
from .conftest import SocketFactory

QUEUE_SIZE = 8
SECOND_NS = 1_000_000_000


async def received(subscription: Subscription, within: float = 5.0) -> Any:
    """The next thing the subscription has for its client, parsed."""
    text = await asyncio.wait_for(subscription.next(), within)
    assert text is not None, "the subscription ended"
    return json.loads(text)


async def subscribed(hub: Hub, channel: str) -> Subscription:
    """A subscription to ``channel`` that is live (its subscribed notice has come)."""
    subscription = await hub.subscribe(channel)
    assert await received(subscription) == {"type": "subscribed", "channel": channel}
    return subscription


def numbered(number: int) -> str:
    return json.dumps({"n": number})


def json_sent(message: Message) -> Any:
    assert message["type"] == "websocket.send", message
    return json.loads(message["text"])


async def open_session(
    hub: Hub, make_socket: SocketFactory, path: str
) -> tuple[ScriptedClient, asyncio.Task[None]]:
    """A broadcast session on ``path``, accepted and subscribed."""
    client = ScriptedClient(path, reply_timeout=5.0)
    task = asyncio.create_task(run_broadcast(make_socket(client), hub))
    assert (await client.next_sent())["type"] == "websocket.accept"
    assert json_sent(await client.next_sent()) == {"type": "subscribed", "channel": path}
    return client, task


class HubContract:
    """What every hub does. Subclasses provide the ``hub`` fixture."""

    async def test_a_subscription_starts_with_the_subscribed_notice(self, hub: Hub) -> None:
        subscription = await subscribed(hub, "/ws/news")
        assert subscription.live

    async def test_a_message_reaches_every_subscriber_of_its_channel_and_no_other(
        self, hub: Hub
    ) -> None:
        first, second = await subscribed(hub, "a"), await subscribed(hub, "a")
        other = await subscribed(hub, "b")
        await hub.publish("a", numbered(1))
        await hub.publish("b", numbered(2))
        assert await received(first) == {"n": 1}
        assert await received(second) == {"n": 1}
        assert await received(other) == {"n": 2}  # and not 1 before it

    async def test_messages_arrive_in_the_order_they_were_published(self, hub: Hub) -> None:
        subscription = await subscribed(hub, "ordered")
        for number in range(QUEUE_SIZE):
            await hub.publish("ordered", numbered(number))
        assert [await received(subscription) for _ in range(QUEUE_SIZE)] == [
            {"n": number} for number in range(QUEUE_SIZE)
        ]

    async def test_a_slow_subscriber_drops_its_oldest_messages_and_is_told_how_many(
        self, hub: Hub
    ) -> None:
        fast, slow = await subscribed(hub, "c"), await subscribed(hub, "c")
        sent = 30
        for number in range(sent):
            await hub.publish("c", numbered(number))
            assert await received(fast) == {"n": number}  # never held up by the slow one
        # The slow one read nothing: it gets the count of what it lost, then the newest.
        lost = sent - QUEUE_SIZE
        assert await received(slow) == {"type": "dropped", "channel": "c", "count": lost}
        assert [await received(slow) for _ in range(QUEUE_SIZE)] == [
            {"n": number} for number in range(lost, sent)
        ]
        assert (slow.dropped, fast.dropped) == (lost, 0)

    async def test_an_unsubscribed_subscription_ends_and_the_channel_goes_on(
        self, hub: Hub
    ) -> None:
        leaving, staying = await subscribed(hub, "d"), await subscribed(hub, "d")
        await hub.unsubscribe(leaving)
        await hub.unsubscribe(leaving)  # again: harmless
        assert await leaving.next() is None
        await hub.publish("d", numbered(1))
        assert await received(staying) == {"n": 1}

    async def test_a_channel_whose_subscribers_all_left_can_be_joined_again(self, hub: Hub) -> None:
        await hub.unsubscribe(await subscribed(hub, "e"))
        again = await subscribed(hub, "e")
        await hub.publish("e", numbered(1))
        assert await received(again) == {"n": 1}

    async def test_closing_ends_every_subscription_after_what_it_had_queued(self, hub: Hub) -> None:
        reader, idle = await subscribed(hub, "f"), await subscribed(hub, "f")
        await hub.publish("f", numbered(1))
        assert await received(reader) == {"n": 1}  # so it is in the idle one's queue too
        await hub.close()
        assert await received(idle) == {"n": 1}
        assert await idle.next() is None
        assert await reader.next() is None
        try:
            await hub.publish("f", numbered(2))
        except HubUnavailable:
            pass
        else:
            raise AssertionError("a closed hub published")
        await hub.close()  # again: harmless

    async def test_a_session_relays_each_message_to_every_connection_sender_included(
        self, hub: Hub, make_socket: SocketFactory
    ) -> None:
        sender, sending = await open_session(hub, make_socket, "/ws/rooms/lobby")
        listener, listening = await open_session(hub, make_socket, "/ws/rooms/lobby")
        elsewhere, elsewhere_task = await open_session(hub, make_socket, "/ws/rooms/attic")
        sent_ns = time.time_ns()
        sender.send_text('{"type": "chat", "text": "h\\u00e9llo"}')
        for client in (sender, listener):
            message = json_sent(await client.next_sent())
            assert message == {
                "type": "broadcast",
                "channel": "/ws/rooms/lobby",
                "server_ns": message["server_ns"],
                "message": {"type": "chat", "text": "h\u00e9llo"},
            }
            assert abs(message["server_ns"] - sent_ns) < 5 * SECOND_NS
        elsewhere.send_text('{"type": "keepalive", "n": 1}')
        reply = json_sent(await elsewhere.next_sent())  # not the lobby's message
        assert reply["type"] == "keepalive_ack", reply
        for client in (sender, listener, elsewhere):
            client.disconnect()
        await asyncio.wait_for(asyncio.gather(sending, listening, elsewhere_task), 5)

    async def test_a_session_answers_keepalives_and_bad_frames_itself(
        self, hub: Hub, make_socket: SocketFactory
    ) -> None:
        client, task = await open_session(hub, make_socket, "/ws/chat")
        client.send_text('{"type": "keepalive", "client_ns": 7}')
        ack = json_sent(await client.next_sent())
        assert (ack["type"], ack["client_ns"]) == ("keepalive_ack", 7)
        client.send_text("[1]")
        assert json_sent(await client.next_sent()) == {
            "type": "error",
            "reason": "expected a JSON object, got an array",
        }
        client.disconnect()
        await asyncio.wait_for(task, 5)

    async def test_closing_the_hub_closes_its_sessions_with_1012(
        self, hub: Hub, make_socket: SocketFactory
    ) -> None:
        client, task = await open_session(hub, make_socket, "/ws/chat")
        await hub.close()
        assert await client.next_sent() == {"type": "websocket.close", "code": 1012, "reason": ""}
        await asyncio.wait_for(task, 5)
