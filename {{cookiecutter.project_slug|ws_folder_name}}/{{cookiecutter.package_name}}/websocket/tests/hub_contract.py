"""The contract of every broadcast hub, as a class of tests to inherit.

``test_broadcast.py`` runs it on `MemoryHub` and ``test_redis_hub.py`` (projects with the
Redis backend) on `RedisHub` over a real redis-server: a subclass gives a ``make_hub``
fixture, which starts a hub with the options given (closed after the test; without join and
leave events unless ``join_leave=True``, so that other tests see only messages), and
``lose_history``, which loses every channel's history the way that hub can (a restart).
What a hub with a backend does when a process dies (presence expiring) is tested with real
processes in its own test module.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pytest

from ..asgi_types import Message
from ..broadcast import (
    BroadcastStats,
    ChannelOptions,
    Hub,
    HubUnavailable,
    Inbox,
    JSONValue,
    Position,
    PresenceOff,
    Refused,
    Subscription,
    run_broadcast,
)
from ..session import SessionSocket
from ..testing import ScriptedClient
from .conftest import SocketFactory

QUEUE_SIZE = 8
HISTORY_SIZE = 20
SECOND_NS = 1_000_000_000


class HubFactory(Protocol):
    def __call__(
        self,
        *,
        queue_size: int = QUEUE_SIZE,
        history_size: int = HISTORY_SIZE,
        history_ttl: float = 300.0,
        join_leave: bool = False,
        presence_limit: int = 1000,
        join_leave_limit: int | None = None,
    ) -> Awaitable[Hub]: ...


async def received(subscription: Subscription, within: float = 5.0) -> Any:
    """The next thing the subscription has for its client, parsed."""
    text = await asyncio.wait_for(subscription.next(), within)
    assert text is not None, "the subscription ended"
    return json.loads(text)


async def subscribed(
    hub: Hub,
    channel: str,
    since: Position | None = None,
    within: float = 5.0,
    user: JSONValue = None,
) -> Subscription:
    """A live subscription to ``channel``, its subscribed notice taken and checked."""
    subscription = await hub.subscribe(channel, since, user=user)
    notice = await received(subscription, within)
    assert (notice["type"], notice["channel"]) == ("subscribed", channel), notice
    assert notice["client_id"] == subscription.client_id, notice
    assert (type(notice["offset"]), type(notice["epoch"])) == (int, str), notice
    assert ("recovered" in notice) == (since is not None), notice
    return subscription


async def notice_of(hub: Hub, channel: str, since: Position | None = None) -> dict[str, Any]:
    """The subscribed notice a new subscription to ``channel`` gets (it then ends)."""
    subscription = await hub.subscribe(channel, since)
    try:
        notice: dict[str, Any] = await received(subscription)
    finally:
        await hub.unsubscribe(subscription)
    return notice


def numbered(number: int) -> dict[str, int]:
    return {"n": number}


async def messages(subscription: Subscription, count: int) -> list[Any]:
    """The next ``count`` broadcast messages' ``message``, checking their offsets follow."""
    seen = [await received(subscription) for _ in range(count)]
    for delivery in seen:
        assert delivery["type"] == "broadcast", seen
    offsets = [delivery["offset"] for delivery in seen]
    assert offsets == list(range(offsets[0], offsets[0] + count)), offsets
    return [delivery["message"] for delivery in seen]


async def broadcasts(subscription: Subscription, count: int) -> list[Any]:
    """The next ``count`` broadcast messages the subscription sends, skipping any event
    (join, leave, direct) or notice in between."""
    seen: list[Any] = []
    while len(seen) < count:
        delivery = await received(subscription)
        if delivery["type"] == "broadcast":
            seen.append(delivery)
    return seen


def counting(hub: Hub) -> BroadcastStats:
    """Have ``hub`` count in a `BroadcastStats` of its own (before it has subscriptions)."""
    stats = BroadcastStats()
    hub.count_in(stats)
    return stats


def json_sent(message: Message) -> Any:
    assert message["type"] == "websocket.send", message
    return json.loads(message["text"])


async def open_session(
    hub: Hub, make_socket: SocketFactory, path: str, query: bytes = b""
) -> tuple[ScriptedClient, asyncio.Task[None], dict[str, Any]]:
    """A broadcast session on ``path``, accepted and subscribed, with its notice."""
    client = ScriptedClient(path, reply_timeout=5.0)
    client.scope["query_string"] = query
    task = asyncio.create_task(run_broadcast(make_socket(client), hub))
    assert (await client.next_sent())["type"] == "websocket.accept"
    notice = json_sent(await client.next_sent())
    assert (notice["type"], notice["channel"]) == ("subscribed", path), notice
    return client, task, notice


@pytest.mark.usefixtures("delivery_path")  # each test on every delivery path (conftest)
class HubContract:
    """What every hub does. Subclasses provide ``make_hub`` and ``lose_history``."""

    @pytest.fixture
    async def hub(self, make_hub: HubFactory) -> Hub:
        return await make_hub()

    # Delivery

    async def test_a_new_channel_starts_at_offset_0_and_tells_its_epoch(self, hub: Hub) -> None:
        notice = await notice_of(hub, "/ws/news")
        assert notice["offset"] == 0, notice
        assert notice["epoch"], notice
        assert set(notice) == {"type", "channel", "offset", "epoch", "client_id"}
        assert len(notice["client_id"]) >= 22, notice  # 128 random bits
        assert (await notice_of(hub, "/ws/news"))["epoch"] == notice["epoch"]
        subscription = await subscribed(hub, "/ws/news")
        assert subscription.live

    async def test_each_message_gets_the_next_offset_and_every_subscriber_sees_it(
        self, hub: Hub
    ) -> None:
        first, second = await subscribed(hub, "a"), await subscribed(hub, "a")
        other = await subscribed(hub, "b")
        sent_ns = time.time_ns()
        positions = [await hub.publish("a", numbered(n)) for n in range(3)]
        on_b = await hub.publish("b", numbered(9))
        epoch = positions[0].epoch
        assert positions == [Position(n, epoch) for n in (1, 2, 3)]
        assert on_b.offset == 1
        assert on_b.epoch != epoch
        for subscription in (first, second):
            for n, position in enumerate(positions):
                delivery = await received(subscription)
                assert delivery == {
                    "type": "broadcast",
                    "channel": "a",
                    "offset": position.offset,
                    "epoch": epoch,
                    "server_ns": delivery["server_ns"],
                    "message": {"n": n},
                }
                assert abs(delivery["server_ns"] - sent_ns) < 5 * SECOND_NS
        assert (await received(other))["message"] == {"n": 9}  # and not a's before it
        assert (await notice_of(hub, "a"))["offset"] == 3  # a newcomer starts after them

    async def test_messages_arrive_in_the_order_they_were_published(self, hub: Hub) -> None:
        subscription = await subscribed(hub, "ordered")
        for number in range(QUEUE_SIZE):
            await hub.publish("ordered", numbered(number))
        assert await messages(subscription, QUEUE_SIZE) == [
            {"n": number} for number in range(QUEUE_SIZE)
        ]

    async def test_a_message_that_is_not_json_is_refused_and_takes_no_offset(
        self, hub: Hub
    ) -> None:
        with pytest.raises(ValueError, match="Out of range float values"):
            await hub.publish("strict", {"n": float("nan")})
        with pytest.raises(TypeError, match="not JSON serializable"):
            await hub.publish("strict", {"n": object()})
        assert (await hub.publish("strict", numbered(1))).offset == 1

    async def test_a_slow_subscriber_drops_its_oldest_messages_and_is_told_where(
        self, hub: Hub
    ) -> None:
        fast, slow = await subscribed(hub, "c"), await subscribed(hub, "c")
        sent = 30
        for number in range(sent):
            position = await hub.publish("c", numbered(number))
            assert (await received(fast))["message"] == {"n": number}  # never held up
        # The slow one read nothing: it gets the count of what it lost and the position it
        # is at after them, then the newest.
        lost = sent - QUEUE_SIZE
        assert await received(slow) == {
            "type": "dropped",
            "channel": "c",
            "count": lost,
            "offset": lost,
            "epoch": position.epoch,
        }
        assert await messages(slow, QUEUE_SIZE) == [{"n": number} for number in range(lost, sent)]
        assert (slow.dropped, fast.dropped) == (lost, 0)

    async def test_an_unsubscribed_subscription_ends_and_the_channel_goes_on(
        self, hub: Hub
    ) -> None:
        leaving, staying = await subscribed(hub, "d"), await subscribed(hub, "d")
        await hub.unsubscribe(leaving)
        await hub.unsubscribe(leaving)  # again: harmless
        assert await leaving.next() is None
        await hub.publish("d", numbered(1))
        assert (await received(staying))["message"] == {"n": 1}

    async def test_a_channel_whose_subscribers_all_left_keeps_its_position(self, hub: Hub) -> None:
        first = await hub.publish("e", numbered(1))
        await hub.unsubscribe(await subscribed(hub, "e"))
        again = await subscribed(hub, "e")
        assert await hub.publish("e", numbered(2)) == Position(2, first.epoch)
        assert (await received(again))["offset"] == 2

    async def test_closing_ends_every_subscription_after_what_it_had_queued(self, hub: Hub) -> None:
        reader, idle = await subscribed(hub, "f"), await subscribed(hub, "f")
        await hub.publish("f", numbered(1))
        assert (await received(reader))["message"] == {"n": 1}  # in the idle one's queue too
        await hub.close()
        assert (await received(idle))["message"] == {"n": 1}
        assert await idle.next() is None
        assert await reader.next() is None
        with pytest.raises(HubUnavailable):
            await hub.publish("f", numbered(2))
        await hub.close()  # again: harmless

    # Counting: `BroadcastStats.deliveries` is one per message sent to a client, exactly

    async def test_n_messages_sent_to_k_subscribers_are_n_times_k_deliveries_events_none(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(join_leave=True)  # join and direct events: not deliveries
        stats = counting(hub)
        subscriptions = [await subscribed(hub, "/n/k", user=f"u{n}") for n in range(3)]
        for number in range(5):
            await hub.publish("/n/k", numbered(number))
        await hub.publish_to_user("u0", {"text": "hi"})
        for subscription in subscriptions:
            assert len(await broadcasts(subscription, 5)) == 5
        assert (await received(subscriptions[0]))["type"] == "direct"
        assert stats.deliveries == 5 * 3
        for subscription in subscriptions:
            await hub.unsubscribe(subscription)  # leave events: nothing queued, nothing taken
        assert stats.deliveries == 5 * 3

    async def test_what_a_slow_subscriber_dropped_is_a_drop_not_a_delivery(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(queue_size=3)
        stats = counting(hub)
        fast, slow = await subscribed(hub, "/n/slow"), await subscribed(hub, "/n/slow")
        for number in range(10):
            await hub.publish("/n/slow", numbered(number))
            assert (await received(fast))["message"] == {"n": number}
        assert (await received(slow))["type"] == "dropped"
        assert len(await broadcasts(slow, 3)) == 3
        assert (slow.dropped, stats.drops) == (7, 7)
        assert stats.deliveries == 10 + 3
        assert stats.deliveries + stats.drops == 10 * 2

    async def test_messages_still_queued_when_a_subscriber_leaves_are_not_deliveries(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub()
        stats = counting(hub)
        reader, leaver = await subscribed(hub, "/n/left"), await subscribed(hub, "/n/left")
        for number in range(4):
            await hub.publish("/n/left", numbered(number))
        assert len(await broadcasts(reader, 4)) == 4  # all 4 are in the leaver's queue too
        assert len(await broadcasts(leaver, 1)) == 1
        await hub.unsubscribe(leaver)  # 3 never sent
        await hub.unsubscribe(leaver)  # again: harmless
        assert stats.deliveries == 4 + 1
        await hub.publish("/n/left", numbered(4))
        assert len(await broadcasts(reader, 1)) == 1
        assert stats.deliveries == 5 + 1

    async def test_a_resumed_subscriber_counts_each_missed_and_live_message_once(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub()
        stats = counting(hub)
        start = await hub.publish("/n/back", numbered(0))
        for number in range(1, 4):  # missed: in the history
            await hub.publish("/n/back", numbered(number))
        back = await hub.subscribe("/n/back", start)
        for number in range(4, 6):  # live, maybe while the history is read: merged
            await hub.publish("/n/back", numbered(number))
        assert (await received(back))["recovered"] is True
        seen = await broadcasts(back, 5)
        assert [delivery["message"]["n"] for delivery in seen] == [1, 2, 3, 4, 5]
        assert stats.deliveries == 5
        await hub.unsubscribe(back)
        assert stats.deliveries == 5

    # History and recovery

    async def test_a_subscriber_resuming_within_the_history_gets_every_missed_message_once(
        self, hub: Hub
    ) -> None:
        watcher = await subscribed(hub, "g")
        for number in range(5):
            reached = await hub.publish("g", numbered(number))
        live = [await received(watcher) for _ in range(5)]
        for number in range(5, 9):  # missed by a client that left at `reached`
            await hub.publish("g", numbered(number))
        back = await hub.subscribe("g", reached)
        assert await received(back) == {
            "type": "subscribed",
            "channel": "g",
            "offset": 5,
            "epoch": reached.epoch,
            "client_id": back.client_id,
            "recovered": True,
        }
        assert back.recovered is True
        assert await messages(back, 4) == [{"n": n} for n in range(5, 9)]
        await hub.publish("g", numbered(9))
        assert (await received(back))["offset"] == 10  # then the live ones, no gap
        # What the history gives is what subscribers were sent, to the byte.
        recovered = await hub.subscribe("g", Position(0, reached.epoch))
        assert (await received(recovered))["recovered"] is True
        assert [await received(recovered) for _ in range(5)] == live

    async def test_resuming_at_the_channel_position_recovers_nothing_missed(self, hub: Hub) -> None:
        top = await hub.publish("h", numbered(1))
        back = await subscribed(hub, "h", top)
        assert back.recovered is True
        await hub.publish("h", numbered(2))
        assert (await received(back))["offset"] == 2
        quiet = await notice_of(hub, "quiet")  # a channel with no message yet
        assert (await notice_of(hub, "quiet", Position(0, quiet["epoch"])))["recovered"] is True

    async def test_a_gap_older_than_the_history_is_not_recovered(self, hub: Hub) -> None:
        first = await hub.publish("i", numbered(0))
        for number in range(1, HISTORY_SIZE + 2):
            top = await hub.publish("i", numbered(number))
        # Message 2 is no longer kept: resuming after 1 cannot be whole.
        notice = await notice_of(hub, "i", first)
        assert notice == {
            "type": "subscribed",
            "channel": "i",
            "offset": top.offset,
            "epoch": top.epoch,
            "client_id": notice["client_id"],
            "recovered": False,
        }
        oldest_kept = Position(top.offset - HISTORY_SIZE, top.epoch)
        resumed = await subscribed(hub, "i", oldest_kept)
        assert resumed.recovered is True
        assert len(await messages(resumed, HISTORY_SIZE)) == HISTORY_SIZE

    async def test_another_epoch_or_a_position_ahead_is_not_recovered(self, hub: Hub) -> None:
        top = await hub.publish("j", numbered(1))
        for since in (Position(1, "not-" + top.epoch), Position(top.offset + 1, top.epoch)):
            notice = await notice_of(hub, "j", since)
            assert (notice["recovered"], notice["offset"], notice["epoch"]) == (
                False,
                top.offset,
                top.epoch,
            )

    async def test_without_history_only_a_client_that_missed_nothing_recovers(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(history_size=0)
        first = await hub.publish("k", numbered(1))
        second = await hub.publish("k", numbered(2))
        assert second == Position(2, first.epoch)  # positions still count
        assert (await notice_of(hub, "k", first))["recovered"] is False
        assert (await notice_of(hub, "k", second))["recovered"] is True

    async def test_the_history_expires_its_ttl_after_the_last_publish_the_position_stays(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(history_ttl=2.0)
        first = await hub.publish("l", numbered(1))
        await asyncio.sleep(1.2)
        top = await hub.publish("l", numbered(2))  # the TTL counts from here
        await asyncio.sleep(1.2)
        assert (await notice_of(hub, "l", first))["recovered"] is True
        await asyncio.sleep(1.5)
        notice = await notice_of(hub, "l", first)
        assert (notice["recovered"], notice["offset"], notice["epoch"]) == (False, 2, top.epoch)
        assert (await notice_of(hub, "l", top))["recovered"] is True
        assert await hub.publish("l", numbered(3)) == Position(3, top.epoch)

    async def test_a_lost_history_changes_the_epoch_and_a_resume_says_not_recovered(
        self, make_hub: HubFactory, lose_history: Callable[[Hub], Awaitable[Hub]]
    ) -> None:
        hub = await make_hub()
        reached = await hub.publish("m", numbered(1))
        hub = await lose_history(hub)
        notice = await notice_of(hub, "m", reached)
        assert notice["recovered"] is False, notice
        assert notice["epoch"] != reached.epoch, notice
        after = await hub.publish("m", numbered(2))
        assert after == Position(notice["offset"] + 1, notice["epoch"])

    # Sessions

    async def test_a_session_relays_each_message_to_every_connection_sender_included(
        self, hub: Hub, make_socket: SocketFactory
    ) -> None:
        sender, sending, notice = await open_session(hub, make_socket, "/ws/rooms/lobby")
        listener, listening, _ = await open_session(hub, make_socket, "/ws/rooms/lobby")
        elsewhere, elsewhere_task, _ = await open_session(hub, make_socket, "/ws/rooms/attic")
        sender.send_text('{"type": "chat", "text": "h\\u00e9llo"}')
        for client in (sender, listener):
            message = json_sent(await client.next_sent())
            assert message == {
                "type": "broadcast",
                "channel": "/ws/rooms/lobby",
                "offset": notice["offset"] + 1,
                "epoch": notice["epoch"],
                "server_ns": message["server_ns"],
                "message": {"type": "chat", "text": "h\u00e9llo"},
            }
        elsewhere.send_text('{"type": "keepalive", "n": 1}')
        reply = json_sent(await elsewhere.next_sent())  # not the lobby's message
        assert reply["type"] == "keepalive_ack", reply
        for client in (sender, listener, elsewhere):
            client.disconnect()
        await asyncio.wait_for(asyncio.gather(sending, listening, elsewhere_task), 5)

    async def test_a_session_that_stops_reading_mid_broadcast_gets_the_rest_queued_in_order(
        self, make_hub: HubFactory, make_socket: SocketFactory, delivery_path: str
    ) -> None:
        # Sent at once while it reads; while it does not (its sends would wait), what comes
        # is queued, and sent in order once it reads again; then at once again.
        hub = await make_hub()
        stats = counting(hub)
        path = "/ws/rooms/slow"
        slow, slow_task, notice = await open_session(hub, make_socket, path)
        other, other_task, _ = await open_session(hub, make_socket, path)
        offsets: dict[ScriptedClient, list[int]] = {slow: [], other: []}

        async def take(client: ScriptedClient, count: int) -> None:
            for _ in range(count):
                delivery = json_sent(await client.next_sent())
                assert delivery["type"] == "broadcast", delivery
                offsets[client].append(delivery["offset"])

        for number in range(3):
            await hub.publish(path, numbered(number))
        await take(slow, 3)
        slow.stop_reading()
        for number in range(3, 6):
            await hub.publish(path, numbered(number))
        await take(other, 6)  # delivered to every subscription of the channel, slow's too
        assert slow.sent_so_far() == []  # nothing went out while it did not read
        slow.resume_reading()
        await take(slow, 3)
        await hub.publish(path, numbered(6))
        await take(slow, 1)
        await take(other, 1)
        expected = list(range(notice["offset"] + 1, notice["offset"] + 8))
        assert offsets == {slow: expected, other: expected}
        assert (stats.deliveries, stats.drops) == (14, 0)
        sent_now = {  # at once (the subscribed notices too), and by the lane
            "queued": ((0, 0), (0, 0)),
            "sent at once": ((5, 8), (0, 0)),
            "lane": ((1, 1), (4, 7)),  # slow leaves it while it does not read, then is back
        }[delivery_path]
        assert (
            (slow.sent_at_once, other.sent_at_once),
            (slow.written_direct, other.written_direct),
        ) == sent_now, (
            slow.sent_at_once,
            other.sent_at_once,
            slow.written_direct,
            other.written_direct,
        )
        for client in (slow, other):
            client.disconnect()
        await asyncio.wait_for(asyncio.gather(slow_task, other_task), 5)

    async def test_a_session_resumes_with_since_and_epoch_in_its_query(
        self, hub: Hub, make_socket: SocketFactory
    ) -> None:
        reached = await hub.publish("/ws/rooms/q", numbered(1))
        await hub.publish("/ws/rooms/q", numbered(2))
        query = f"since={reached.offset}&epoch={reached.epoch}".encode()
        client, task, notice = await open_session(hub, make_socket, "/ws/rooms/q", query)
        assert (notice["recovered"], notice["offset"]) == (True, 1)
        missed = json_sent(await client.next_sent())
        assert (missed["offset"], missed["message"]) == (2, {"n": 2})
        client.disconnect()
        await asyncio.wait_for(task, 5)

    @pytest.mark.parametrize(
        ("query", "reason"),
        [
            (b"since=3", "give since and epoch together, once each, to resume a channel"),
            (b"since=1&since=2&epoch=e", "give since and epoch together"),
            (b"since=-1&epoch=e", "since must be the offset of a message"),
            (b"since=one&epoch=e", "since must be the offset of a message"),
            (b"since=1&epoch=" + b"e" * 65, "epoch must be the epoch of a message"),
            (b"since=1&epoch=%22%7D", "epoch must be the epoch of a message"),
            (b"last=-1", "last must be how many of the channel's last messages"),
            (b"last=two", "last must be how many of the channel's last messages"),
            (b"last=1&last=2", "give last once"),
            (b"last=2&since=1&epoch=e", "give either since and epoch (to resume) or last"),
        ],
    )
    async def test_a_malformed_resume_query_gets_an_error_and_a_close(
        self, hub: Hub, make_socket: SocketFactory, query: bytes, reason: str
    ) -> None:
        client = ScriptedClient("/ws/rooms/r", reply_timeout=5.0)
        client.scope["query_string"] = query
        task = asyncio.create_task(run_broadcast(make_socket(client), hub))
        assert (await client.next_sent())["type"] == "websocket.accept"
        error = json_sent(await client.next_sent())
        assert error["type"] == "error", error
        assert error["reason"].startswith(reason), error
        assert (await client.next_sent())["code"] == 1008
        await asyncio.wait_for(task, 5)

    @pytest.mark.parametrize(
        ("last", "offsets"), [(2, [3, 4]), (10, [1, 2, 3, 4]), (0, []), (HISTORY_SIZE + 5, None)]
    )
    async def test_a_session_opened_with_last_starts_with_the_channel_s_last_messages(
        self, hub: Hub, make_socket: SocketFactory, last: int, offsets: list[int] | None
    ) -> None:
        count = 4 if offsets is not None else HISTORY_SIZE + 3  # more than the history holds
        offsets = offsets if offsets is not None else list(range(4, HISTORY_SIZE + 4))
        for number in range(1, count + 1):
            top = await hub.publish("/ws/rooms/l", numbered(number))
        query = f"last={last}".encode()
        client, task, notice = await open_session(hub, make_socket, "/ws/rooms/l", query)
        start = offsets[0] - 1 if offsets else top.offset
        assert (notice["offset"], notice["epoch"], notice["recovered"]) == (
            start,
            top.epoch,
            True,
        )
        for offset in offsets:
            replayed = json_sent(await client.next_sent())
            assert (replayed["offset"], replayed["message"]) == (offset, numbered(offset))
        await hub.publish("/ws/rooms/l", numbered(count + 1))
        live = json_sent(await client.next_sent())
        assert (live["offset"], live["message"]) == (count + 1, numbered(count + 1))
        client.disconnect()
        await asyncio.wait_for(task, 5)

    async def test_last_on_a_channel_with_no_history_starts_at_its_position(
        self, hub: Hub, make_socket: SocketFactory
    ) -> None:
        client, task, notice = await open_session(hub, make_socket, "/ws/rooms/new", b"last=5")
        assert (notice["offset"], notice["recovered"]) == (0, True)
        await hub.publish("/ws/rooms/new", numbered(1))
        live = json_sent(await client.next_sent())
        assert (live["offset"], live["message"]) == (1, numbered(1))
        client.disconnect()
        await asyncio.wait_for(task, 5)

    async def test_a_hook_stamps_validates_or_refuses_each_client_message(
        self, hub: Hub, make_socket: SocketFactory
    ) -> None:
        def stamp(websocket: SessionSocket, message: dict[str, Any]) -> dict[str, Any]:
            if not isinstance(message.get("text"), str):
                raise Refused("a chat message needs a text")
            return {**message, "user": websocket.scope.get("user")}

        client = ScriptedClient("/ws/rooms/h", reply_timeout=5.0)
        client.scope["user"] = "alice"
        task = asyncio.create_task(run_broadcast(make_socket(client), hub, on_message=stamp))
        assert (await client.next_sent())["type"] == "websocket.accept"
        assert json_sent(await client.next_sent())["type"] == "subscribed"
        client.send_text('{"text": "hi", "user": "bob"}')
        stamped = json_sent(await client.next_sent())
        assert stamped["message"] == {"text": "hi", "user": "alice"}
        client.send_text('{"text": 7}')
        refused = json_sent(await client.next_sent())
        assert refused == {"type": "error", "reason": "a chat message needs a text"}
        assert [p.offset for p in (await hub.history("/ws/rooms/h"))[1]] == [1]

        async def asynchronous(websocket: SessionSocket, message: dict[str, Any]) -> dict[str, Any]:
            return {"n": message["n"] + 1}

        other = ScriptedClient("/ws/rooms/h", reply_timeout=5.0)
        other_task = asyncio.create_task(
            run_broadcast(make_socket(other), hub, on_message=asynchronous)
        )
        assert (await other.next_sent())["type"] == "websocket.accept"
        assert json_sent(await other.next_sent())["type"] == "subscribed"
        other.send_text('{"n": 1}')
        assert json_sent(await other.next_sent())["message"] == {"n": 2}
        client.disconnect()
        other.disconnect()
        await asyncio.wait_for(asyncio.gather(task, other_task), 5)

    async def test_a_session_answers_keepalives_and_bad_frames_itself(
        self, hub: Hub, make_socket: SocketFactory
    ) -> None:
        client, task, _ = await open_session(hub, make_socket, "/ws/chat")
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
        client, task, _ = await open_session(hub, make_socket, "/ws/chat")
        await hub.close()
        assert await client.next_sent() == {"type": "websocket.close", "code": 1012, "reason": ""}
        await asyncio.wait_for(task, 5)

    # Presence and per-user delivery

    async def test_presence_lists_every_subscriber_of_the_channel_with_its_user(
        self, hub: Hub
    ) -> None:
        alice = await subscribed(hub, "/p/a", user="alice")
        anonymous = await subscribed(hub, "/p/a")
        await subscribed(hub, "/p/b", user="bob")
        presence = await hub.presence("/p/a")
        assert (presence.count, presence.cut) == (2, False)
        assert sorted(presence.clients, key=lambda client: client["user"] is None) == [
            {"client_id": alice.client_id, "user": "alice"},
            {"client_id": anonymous.client_id, "user": None},
        ]
        assert alice.client_id != anonymous.client_id
        await hub.unsubscribe(anonymous)
        assert (await hub.presence("/p/a")).clients == [
            {"client_id": alice.client_id, "user": "alice"}
        ]
        assert (await hub.presence("/p/nobody")).count == 0

    async def test_a_presence_list_over_the_limit_is_cut_and_says_so(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(presence_limit=3, join_leave=False)
        for number in range(5):
            await subscribed(hub, "/p/big", user={"n": number})
        presence = await hub.presence("/p/big")
        assert (presence.count, len(presence.clients), presence.cut) == (5, 3, True)
        assert presence.answer("/p/big")["cut"] is True

    async def test_the_others_are_told_who_joins_and_leaves_the_joiner_is_not(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(join_leave=True)
        first = await subscribed(hub, "/p/j", user="ann")
        second = await subscribed(hub, "/p/j", user={"name": "ben"})
        client = {"client_id": second.client_id, "user": {"name": "ben"}}
        assert await received(first) == {"type": "join", "channel": "/p/j", "client": client}
        await hub.unsubscribe(second)
        assert await received(first) == {"type": "leave", "channel": "/p/j", "client": client}
        await hub.publish("/p/j", numbered(1))  # nothing else came before it
        assert (await received(first))["type"] == "broadcast"
        third = await subscribed(hub, "/p/j")
        await hub.publish("/p/j", numbered(2))
        assert (await received(third))["message"] == {"n": 2}  # not its own join

    async def test_join_and_leave_events_stop_on_a_channel_past_the_limit(
        self, make_hub: HubFactory
    ) -> None:
        # A reconnect storm of N clients would send N * (N - 1) / 2 of them: past the
        # limit of present clients (the one coming or going included), none is sent.
        hub = await make_hub(join_leave=True, join_leave_limit=3)
        subscriptions: list[Subscription] = []
        marks = iter(range(1, 100))

        async def events() -> list[list[str]]:
            """What each subscription was told before the next message."""
            await hub.publish("/p/crowd", numbered(next(marks)))
            seen: list[list[str]] = []
            for subscription in subscriptions:
                kinds = []
                while (event := await received(subscription))["type"] != "broadcast":
                    kinds.append(f"{event['type']} {event['client']['user']}")
                seen.append(kinds)
            return seen

        told = []
        for number in range(5):
            subscriptions.append(await subscribed(hub, "/p/crowd", user=f"u{number}"))
            told.append(await events())
        assert told == [
            [[]],
            [["join u1"], []],
            [["join u2"], ["join u2"], []],
            [[], [], [], []],  # 4 clients: past the limit
            [[], [], [], [], []],
        ]
        for _ in range(3):  # 5 and 4 present: silent; 3: told
            await hub.unsubscribe(subscriptions.pop())
            told.append(await events())
        assert told[5:] == [[[], [], [], []], [[], [], []], [["leave u2"], ["leave u2"]]]
        assert (await hub.presence("/p/crowd")).count == 2

    async def test_join_and_leave_events_can_be_turned_off(self, make_hub: HubFactory) -> None:
        hub = await make_hub(join_leave=False)  # hubs send them unless told not to
        first = await subscribed(hub, "/p/quiet")
        await hub.unsubscribe(await subscribed(hub, "/p/quiet"))
        await hub.publish("/p/quiet", numbered(1))
        assert (await received(first))["type"] == "broadcast"
        assert (await hub.presence("/p/quiet")).count == 1

    async def test_a_message_to_a_user_reaches_each_of_their_connections_and_nobody_else(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(join_leave=False)
        on_a = await subscribed(hub, "/p/a", user="alice")
        on_b = await subscribed(hub, "/p/b", user="alice")
        bob = await subscribed(hub, "/p/a", user="bob")
        anonymous = await subscribed(hub, "/p/a")
        sent_ns = time.time_ns()
        await hub.publish_to_user("alice", {"text": "hi"})
        for subscription in (on_a, on_b):
            direct = await received(subscription)
            assert direct == {
                "type": "direct",
                "server_ns": direct["server_ns"],
                "message": {"text": "hi"},
            }
            assert abs(direct["server_ns"] - sent_ns) < 5 * SECOND_NS
        await hub.publish_to_user("nobody-connected", {"text": "lost"})  # no error
        await hub.publish("/p/a", numbered(1))
        for subscription in (bob, anonymous, on_a):
            assert (await received(subscription))["type"] == "broadcast"

    async def test_a_session_answers_presence_and_gives_its_client_id(
        self, hub: Hub, make_socket: SocketFactory
    ) -> None:
        client, task, notice = await open_session(hub, make_socket, "/ws/rooms/who")
        client.scope["user"] = "ignored: read when the session starts"
        client.send_text('{"type": "presence"}')
        answer = json_sent(await client.next_sent())
        assert answer == {
            "type": "presence",
            "channel": "/ws/rooms/who",
            "count": 1,
            "clients": [{"client_id": notice["client_id"], "user": None}],
            "cut": False,
        }
        client.disconnect()
        await asyncio.wait_for(task, 5)

    # What a protocol of many channels per connection uses (centrifuge_protocol.py)

    async def test_history_reads_the_whole_history_or_what_follows_a_position(
        self, hub: Hub
    ) -> None:
        top, history = await hub.history("news:quiet")
        assert (top.offset, history) == (0, []), (top, history)
        for number in range(1, 6):
            await hub.publish("news:today", numbered(number))
        top, history = await hub.history("news:today")
        assert top.offset == 5, top
        assert [publication.offset for publication in history] == [1, 2, 3, 4, 5]
        assert all(publication.epoch == top.epoch for publication in history), history
        assert json.loads(history[1].text)["message"] == numbered(2)
        _, after = await hub.history("news:today", Position(3, top.epoch))
        assert [publication.offset for publication in after] == [4, 5]
        _, other_epoch = await hub.history("news:today", Position(3, "another"))
        assert [publication.offset for publication in other_epoch] == [1, 2, 3, 4, 5]

    async def test_a_history_of_history_size_keeps_the_newest_messages(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(history_size=3)
        for number in range(1, 8):
            await hub.publish("news:today", numbered(number))
        top, history = await hub.history("news:today")
        assert top.offset == 7, top
        assert [publication.offset for publication in history] == [5, 6, 7]

    async def test_the_publisher_info_given_reaches_every_subscriber_before_the_message(
        self, hub: Hub
    ) -> None:
        subscription = await subscribed(hub, "chat:lobby")
        info = {"user": "alice", "client": "c-1"}
        await hub.publish("chat:lobby", numbered(1), info=info)
        await hub.publish("chat:lobby", numbered(2))
        first, second = await received(subscription), await received(subscription)
        assert (first["info"], first["message"]) == (info, numbered(1)), first
        assert "info" not in second, second
        _, history = await hub.history("chat:lobby")
        assert json.loads(history[0].text)["info"] == info

    async def test_a_subscription_can_be_given_its_client_id(self, hub: Hub) -> None:
        subscription = await hub.subscribe("chat:lobby", user="alice", client_id="conn-1")
        notice = await received(subscription)
        assert (notice["client_id"], subscription.client_id) == ("conn-1", "conn-1")
        presence = await hub.presence("chat:lobby")
        assert presence.clients == [{"client_id": "conn-1", "user": "alice"}]
        await hub.unsubscribe(subscription)

    async def test_an_inbox_reads_the_subscriptions_of_many_channels_in_one_task(
        self, hub: Hub
    ) -> None:
        inbox = Inbox()
        subscriptions = {
            channel: await subscribed(hub, channel) for channel in ("a:1", "b:2", "c:3")
        }
        for subscription in subscriptions.values():
            subscription.attach(inbox)
        for round_ in range(3):
            for channel in subscriptions:
                await hub.publish(channel, numbered(round_))
        got: dict[str, list[int]] = {channel: [] for channel in subscriptions}
        while sum(map(len, got.values())) < 9:
            async with asyncio.timeout(5):
                ready = await inbox.ready()
            for one in ready:
                assert one is not None
                while (text := one.poll()) is not None:
                    delivery = json.loads(text)
                    got[delivery["channel"]].append(delivery["offset"])
        assert got == {channel: [1, 2, 3] for channel in subscriptions}, got
        ended = subscriptions["b:2"]
        await hub.unsubscribe(ended)
        async with asyncio.timeout(5):
            assert ended in await inbox.ready()
        assert ended.poll() is None
        assert ended.ended

    async def test_channel_options_change_what_is_kept_of_some_channels_only(
        self, make_hub: HubFactory
    ) -> None:
        hub = await make_hub(join_leave=True)
        options = {
            "short": ChannelOptions(history_size=2),
            "none": ChannelOptions(history_size=0),
            "quiet": ChannelOptions(presence=False),
            "calm": ChannelOptions(join_leave=False),
        }
        hub.use_channel_options(lambda channel: options.get(channel.partition(":")[0]))
        for channel in ("short:a", "none:a", "other:a"):
            for number in range(1, 5):
                await hub.publish(channel, numbered(number))
        assert [p.offset for p in (await hub.history("short:a"))[1]] == [3, 4]
        assert (await hub.history("none:a"))[1] == []
        assert [p.offset for p in (await hub.history("other:a"))[1]] == [1, 2, 3, 4]
        quiet = await subscribed(hub, "quiet:a", user="alice")
        with pytest.raises(PresenceOff):
            await hub.presence("quiet:a")
        assert (await hub.presence("calm:a")).count == 0
        for channel in ("calm:a", "other:b"):
            first = await subscribed(hub, channel, user="alice")
            await subscribed(hub, channel, user="bob")
            await hub.publish(channel, numbered(1))
            seen = await received(first)
            assert seen["type"] == ("broadcast" if channel == "calm:a" else "join"), seen
        await hub.unsubscribe(quiet)

    async def test_a_listener_hears_each_message_to_its_user_once_subscriptions_may_not(
        self, hub: Hub
    ) -> None:
        class Listener:
            def __init__(self) -> None:
                self.heard: list[Any] = []
                self.arrived = asyncio.Event()

            def notify(self, text: str) -> None:
                self.heard.append(json.loads(text))
                self.arrived.set()

        listener, other = Listener(), Listener()
        hub.listen_to_user("alice", listener)
        hub.listen_to_user("bob", other)
        quiet = await subscribed(hub, "news:a", user="alice")
        await hub.unsubscribe(quiet)
        quiet = await hub.subscribe("news:a", user="alice", direct=False)
        await received(quiet)  # its subscribed notice
        await hub.publish_to_user("alice", numbered(1))
        await asyncio.wait_for(listener.arrived.wait(), 5)
        assert [heard["message"] for heard in listener.heard] == [numbered(1)]
        assert other.heard == []
        hub.unlisten_to_user("alice", listener)
        hub.unlisten_to_user("alice", listener)  # again: harmless
        await hub.publish_to_user("alice", numbered(2))
        await hub.publish("news:a", numbered(3))
        assert (await received(quiet))["message"] == numbered(3)  # no direct message before
        assert [heard["message"] for heard in listener.heard] == [numbered(1)]
        await hub.unsubscribe(quiet)
