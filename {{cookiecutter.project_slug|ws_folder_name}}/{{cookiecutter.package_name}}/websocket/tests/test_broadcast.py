"""The broadcast hub in memory: its subscriptions' bounded queues, and the hub contract."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from unittest.mock import ANY  # a matcher for the random client_id

import pytest

from ..broadcast import (
    HUB_STATE_KEY,
    LAG_SAMPLE,
    RECEIVE_ONLY,
    BroadcastStats,
    Fanout,
    Hub,
    MemoryHub,
    Position,
    Publication,
    Subscription,
    hub_of,
    run_broadcast,
)
from ..session import DirectLink, LinkStop
from ..testing import ScriptedClient
from .conftest import SocketFactory
from .hub_contract import QUEUE_SIZE, HubContract, HubFactory, received

# The hub contract and each test of a session run on every delivery path (queued, sent at
# once, lane: conftest.DELIVERY_PATHS); those of a subscription or a lane alone need none.
on_every_path = pytest.mark.usefixtures("delivery_path")


class TestMemoryHub(HubContract):
    @pytest.fixture
    async def make_hub(self) -> AsyncIterator[HubFactory]:
        hubs: list[Hub] = []

        async def make(
            *,
            queue_size: int = QUEUE_SIZE,
            history_size: int = 20,
            history_ttl: float = 300.0,
            join_leave: bool = False,
            presence_limit: int = 1000,
            join_leave_limit: int | None = None,
        ) -> Hub:
            hub = MemoryHub(
                queue_size,
                history_size=history_size,
                history_ttl=history_ttl,
                join_leave=join_leave,
                presence_limit=presence_limit,
                join_leave_limit=join_leave_limit,
            )
            hubs.append(hub)
            await hub.start()
            return hub

        yield make
        for hub in hubs:
            await hub.close()

    @pytest.fixture
    def lose_history(self, make_hub: HubFactory) -> Callable[[Hub], object]:
        async def restart(hub: Hub) -> Hub:  # a memory hub's history is its process's
            await hub.close()
            return await make_hub()

        return restart


EPOCH = "e1"


def message(offset: int, epoch: str = EPOCH) -> Publication:
    return Publication(offset, epoch, f"m{offset}")


def live_subscription(queue_size: int = 3, at: int = 0) -> Subscription:
    subscription = Subscription("/ws/news", queue_size)
    subscription.resume((), Position(at, EPOCH))
    return subscription


async def everything_in(subscription: Subscription) -> list[object]:
    """What the subscription has queued for its client, in order (it ends it)."""
    subscription.end()
    items = []
    while (text := await subscription.next()) is not None:
        items.append(text if text.startswith("m") else json.loads(text))
    return items


def subscribed(offset: int = 0, **recovered: bool) -> dict[str, object]:
    notice: dict[str, object] = {"type": "subscribed", "channel": "/ws/news", "offset": offset}
    return notice | {"epoch": EPOCH, "client_id": ANY} | recovered


def dropped(count: int | None, offset: int, epoch: str = EPOCH) -> dict[str, object]:
    notice: dict[str, object] = {"type": "dropped", "channel": "/ws/news", "count": count}
    return notice | {"offset": offset, "epoch": epoch}


async def test_a_full_queue_drops_its_oldest_message_and_reports_the_gap_in_place() -> None:
    subscription = live_subscription(queue_size=3)
    for offset in range(1, 6):
        subscription.deliver(message(offset))
    assert subscription.dropped == 2
    assert await everything_in(subscription) == [subscribed(), dropped(2, 2), "m3", "m4", "m5"]


async def test_a_waiting_next_wakes_for_a_delivery_and_a_cancelled_one_loses_nothing() -> None:
    subscription = live_subscription(queue_size=3)
    assert await received(subscription) == subscribed()
    waiting = asyncio.create_task(subscription.next())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="another call waits"):
        await subscription.next()  # one reader at a time
    subscription.deliver(message(1))
    assert await asyncio.wait_for(waiting, 1) == "m1"
    cancelled = asyncio.create_task(subscription.next())
    await asyncio.sleep(0)
    subscription.deliver(message(2))  # wakes it, but it is cancelled before it runs
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    subscription.deliver(message(3))
    assert await everything_in(subscription) == ["m2", "m3"]


async def test_what_the_client_already_took_is_not_counted_as_dropped() -> None:
    subscription = live_subscription(queue_size=2)
    subscription.deliver(message(1))
    assert await received(subscription) == subscribed()
    assert await subscription.next() == "m1"
    for offset in range(2, 5):
        subscription.deliver(message(offset))
    assert await everything_in(subscription) == [dropped(1, 2), "m3", "m4"]


async def test_duplicates_are_skipped_and_a_gap_in_offsets_is_reported() -> None:
    subscription = live_subscription(queue_size=5)
    for offset in (1, 1, 2, 5, 4, 6):
        subscription.deliver(message(offset))
    assert await everything_in(subscription) == [
        subscribed(),
        "m1",
        "m2",
        dropped(2, 4),
        "m5",
        "m6",
    ]


async def test_another_epoch_is_a_gap_of_unknown_size_then_its_messages() -> None:
    subscription = live_subscription(queue_size=5, at=7)
    subscription.deliver(message(8))
    subscription.deliver(message(3, "e2"))
    subscription.deliver(message(4, "e2"))
    assert await everything_in(subscription) == [
        subscribed(7),
        "m8",
        dropped(None, 2, "e2"),
        "m3",
        "m4",
    ]


async def test_a_subscription_waits_and_buffers_until_resumed_then_merges_in_order() -> None:
    subscription = Subscription("/ws/news", 3, since=Position(2, EPOCH))
    assert subscription.waiting
    assert not subscription.live
    assert subscription.history_since == Position(2, EPOCH)
    subscription.deliver(message(5))  # live ones arrive while the history is read
    subscription.deliver(message(6))
    history = [message(3), message(4), message(5)]
    subscription.resume(history, Position(5, EPOCH))
    assert subscription.live
    assert subscription.recovered is True
    assert await everything_in(subscription) == [
        subscribed(2, recovered=True),
        "m3",
        "m4",
        "m5",
        "m6",
    ]


async def test_the_history_replayed_on_resume_is_never_dropped_for_a_small_queue() -> None:
    subscription = Subscription("/ws/news", 2, since=Position(0, EPOCH))
    subscription.resume([message(offset) for offset in range(1, 6)], Position(5, EPOCH))
    subscription.deliver(message(6))
    assert await everything_in(subscription) == [subscribed(0, recovered=True)] + [
        f"m{offset}" for offset in range(1, 7)
    ]


async def test_a_resume_the_history_cannot_cover_starts_from_the_top_without_recovery() -> None:
    subscription = Subscription("/ws/news", 3, since=Position(1, EPOCH))
    subscription.deliver(message(9))
    subscription.resume([message(5), message(6), message(7), message(8)], Position(8, EPOCH))
    assert subscription.recovered is False
    assert await everything_in(subscription) == [subscribed(8, recovered=False), "m9"]


async def test_a_held_subscription_catches_up_from_the_history_and_reports_what_is_gone() -> None:
    subscription = live_subscription(queue_size=5, at=0)
    subscription.deliver(message(1))
    subscription.hold()  # the hub lost its backend
    assert subscription.history_since == Position(1, EPOCH)
    subscription.resume([message(4), message(5)], Position(5, EPOCH))  # 2 and 3 are gone
    subscription.deliver(message(6))
    assert await everything_in(subscription) == [
        subscribed(),
        "m1",
        dropped(2, 3),
        "m4",
        "m5",
        "m6",
    ]


async def test_a_held_subscription_whose_epoch_is_gone_is_told_its_new_position() -> None:
    subscription = live_subscription(queue_size=5, at=4)
    subscription.hold()
    subscription.resume((), Position(0, "e2"))
    subscription.deliver(message(1, "e2"))
    assert await everything_in(subscription) == [subscribed(4), dropped(None, 0, "e2"), "m1"]


async def test_gaps_side_by_side_become_one_and_unknown_stays_unknown() -> None:
    subscription = live_subscription(queue_size=2)
    subscription.deliver(message(1))
    subscription.deliver(message(1, "e2"))  # an unknown gap after m1
    for offset in range(2, 4):  # m1 and e2's m1 are dropped on either side of it
        subscription.deliver(message(offset, "e2"))
    assert await everything_in(subscription) == [subscribed(), dropped(None, 1, "e2"), "m2", "m3"]


async def test_the_subscribed_notice_is_never_dropped_to_make_room() -> None:
    subscription = live_subscription(queue_size=1)
    for offset in range(1, 5):
        subscription.deliver(message(offset))
    assert await everything_in(subscription) == [subscribed(), dropped(3, 3), "m4"]


async def test_an_ended_subscription_takes_no_more_messages() -> None:
    subscription = live_subscription()
    subscription.end()
    subscription.deliver(message(1))
    assert await everything_in(subscription) == [subscribed()]


def test_a_queue_holds_at_least_one_message() -> None:
    with pytest.raises(ValueError, match="queue_size must be at least 1"):
        Subscription("/ws/news", 0)


def counting_fanout() -> tuple[Fanout, BroadcastStats]:
    """A fan-out as a hub with a backend has one, counting in stats of its own."""
    fanout = Fanout(queue_size=5)
    fanout.stats = BroadcastStats()
    return fanout, fanout.stats


async def test_messages_held_while_the_backend_is_away_are_counted_once_when_sent() -> None:
    fanout, stats = counting_fanout()
    subscription = fanout.add("/ws/news")
    subscription.resume((), Position(0, EPOCH))
    fanout.deliver("/ws/news", message(1))
    fanout.hold_all()  # the hub lost its backend; back, it hears 2 to 4 before it reads
    for offset in (2, 3, 4):
        fanout.deliver("/ws/news", message(offset))
    history = [message(1), message(2), message(3)]  # read before 4 was published
    subscription.resume(subscription.needed(history), Position(3, EPOCH))
    fanout.deliver("/ws/news", message(4))  # heard twice: skipped
    fanout.deliver("/ws/news", message(5))
    assert await everything_in(subscription) == [subscribed(), "m1", "m2", "m3", "m4", "m5"]
    assert stats.deliveries == 5
    fanout.remove(subscription)
    assert stats.deliveries == 5


async def test_a_recovery_merge_counts_a_message_in_the_history_and_live_once() -> None:
    fanout, stats = counting_fanout()
    subscription = fanout.add("/ws/news", since=Position(2, EPOCH))
    fanout.deliver("/ws/news", message(5))  # live ones arrive while the history is read
    fanout.deliver("/ws/news", message(6))
    subscription.resume([message(3), message(4), message(5)], Position(5, EPOCH))
    fanout.deliver("/ws/news", message(6))  # a duplicate live one
    assert await everything_in(subscription) == [
        subscribed(2, recovered=True),
        "m3",
        "m4",
        "m5",
        "m6",
    ]
    assert stats.deliveries == 4


class Link:
    """A connection's side of a `WRITE_DIRECT` link, kept in a list: what was written,
    and the faults a test gives it (a write that raises, a link that stops at a write)."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.stop_told: LinkStop | None = None
        self.fails = False
        self.stops_at_write = False

    def open(self, stop: LinkStop) -> DirectLink | None:
        self.stop_told = stop
        return DirectLink(str, self, None)  # str(text) is the text; the link writes here

    def write(self, text: str) -> None:
        if self.fails:
            raise OSError("the transport broke")
        self.written.append(text)
        if self.stops_at_write:
            self.stop()

    def stop(self) -> None:
        stop, self.stop_told = self.stop_told, None
        assert stop is not None
        stop.link_stopped()


def member(fanout: Fanout, link: Link | None) -> Subscription:
    """A live subscription of /ws/news at offset 0 whose notice was sent; in the lane
    through ``link``, if one is given."""
    subscription = fanout.add("/ws/news")
    subscription.resume((), Position(0, EPOCH))
    assert json.loads(subscription.poll() or "")["type"] == "subscribed"
    if link is not None:
        assert subscription.go_direct(link.open)
        assert subscription.in_lane
    return subscription


def sent(subscription: Subscription) -> list[object]:
    """What the subscription has queued, taken as its reader would."""
    texts = []
    while (text := subscription.poll()) is not None:
        texts.append(text if text.startswith("m") else json.loads(text))
    return texts


def published(offset: int, epoch: str = EPOCH) -> Publication:
    return Publication(offset, epoch, f"m{offset}", time.time_ns())


def test_a_lane_writes_each_message_to_every_member_and_counts_as_the_queue_does() -> None:
    lane, lane_stats = counting_fanout()
    queue, queue_stats = counting_fanout()
    links = [Link() for _ in range(6)]
    members = [member(lane, link) for link in links]
    queued = [member(queue, None) for _ in links]
    for offset in (1, 2, 3):
        lane.deliver("/ws/news", published(offset))
        queue.deliver("/ws/news", published(offset))
    for link, subscription in zip(links, members, strict=True):
        assert link.written == ["m1", "m2", "m3"]
        assert sent(subscription) == []  # nothing queued
        assert subscription.position == Position(3, EPOCH)
    assert [sent(subscription) for subscription in queued] == [["m1", "m2", "m3"]] * 6
    assert lane_stats.deliveries == queue_stats.deliveries == 18
    assert sum(lane_stats.lag_buckets) == sum(queue_stats.lag_buckets) == 18 // LAG_SAMPLE
    assert lane_stats.lag_countdown == queue_stats.lag_countdown


@pytest.mark.parametrize(
    ("arriving", "queued"),
    [
        (published(4), [dropped(1, 3), "m4"]),  # one missed
        (published(2), []),  # one heard again
        (published(1, "e2"), [dropped(None, 0, "e2"), "m1"]),  # another epoch
    ],
)
def test_a_message_the_lane_cannot_write_sends_every_member_back_to_its_queue(
    arriving: Publication, queued: list[object]
) -> None:
    fanout, _ = counting_fanout()
    links = [Link(), Link()]
    members = [member(fanout, link) for link in links]
    fanout.deliver("/ws/news", published(1))
    fanout.deliver("/ws/news", published(2))
    fanout.deliver("/ws/news", arriving)
    for link, subscription in zip(links, members, strict=True):
        assert link.written == ["m1", "m2"]
        assert not subscription.in_lane
        link.stop()  # a stop that comes late for a link it left: nothing happens
        assert sent(subscription) == queued  # as the queue takes it: gaps, duplicates
        assert subscription.go_direct(link.open)  # and back, at its place


def test_a_member_whose_write_fails_gets_that_message_queued_and_leaves() -> None:
    fanout, stats = counting_fanout()
    broken, fine = Link(), Link()
    members = [member(fanout, broken), member(fanout, fine)]
    broken.fails = True
    fanout.deliver("/ws/news", published(1))
    fanout.deliver("/ws/news", published(2))
    assert (broken.written, fine.written) == ([], ["m1", "m2"])
    assert not members[0].in_lane
    assert stats.deliveries == 2  # the failed write is not one
    assert sent(members[0]) == ["m1", "m2"]
    assert stats.deliveries == 4


def test_a_member_whose_link_stops_at_a_write_has_that_message_and_queues_the_next() -> None:
    fanout, stats = counting_fanout()
    slow, fine = Link(), Link()
    members = [member(fanout, slow), member(fanout, fine)]
    slow.stops_at_write = True  # its transport's buffer filled up with this write
    fanout.deliver("/ws/news", published(1))
    assert not members[0].in_lane
    assert members[0].position == Position(1, EPOCH)
    fanout.deliver("/ws/news", published(2))
    assert (slow.written, fine.written) == (["m1"], ["m1", "m2"])
    assert sent(members[0]) == ["m2"]
    assert stats.deliveries == 4


def test_members_leave_the_lane_when_the_backend_is_lost_and_when_they_end() -> None:
    fanout, _ = counting_fanout()
    links = [Link(), Link()]
    members = [member(fanout, link) for link in links]
    fanout.deliver("/ws/news", published(1))
    fanout.hold_all()
    assert [subscription.in_lane for subscription in members] == [False, False]
    assert not members[0].go_direct(links[0].open)  # not while it waits
    members[0].resume([published(2)], Position(2, EPOCH))
    assert sent(members[0]) == ["m2"]
    assert members[0].go_direct(links[0].open)
    fanout.remove(members[0])
    assert not members[0].in_lane
    fanout.deliver("/ws/news", published(3))
    assert links[0].written == ["m1"]  # nothing written to it once it left


async def test_a_memory_hub_forgets_a_channel_nobody_follows_after_its_position_ttl() -> None:
    now = [0.0]
    async with MemoryHub(history_ttl=10.0, clock=lambda: now[0]) as hub:
        kept = await hub.publish("/ws/kept", {"n": 1})
        subscription = await hub.subscribe("/ws/kept")
        gone = await hub.publish("/ws/gone", {"n": 1})
        now[0] += 2 * 86400  # two days: past the position TTL of both
        await hub.publish("/ws/other", {"n": 1})  # a publish sweeps what is no longer kept
        assert (await hub.publish("/ws/kept", {"n": 2})) == Position(2, kept.epoch)
        again = await hub.publish("/ws/gone", {"n": 2})
        assert again.offset == 1
        assert again.epoch != gone.epoch
        await hub.unsubscribe(subscription)


async def test_the_hub_is_found_in_the_asgi_state(make_socket: SocketFactory) -> None:
    client = ScriptedClient("/ws/news")
    async with MemoryHub() as hub:
        client.scope["state"] = {HUB_STATE_KEY: hub}
        assert hub_of(make_socket(client)) is hub
        assert hub_of(client.scope) is hub


async def test_without_a_hub_in_the_state_the_error_says_what_to_do(
    make_socket: SocketFactory,
) -> None:
    with pytest.raises(RuntimeError, match="run the app with its lifespan"):
        hub_of(make_socket(ScriptedClient("/ws/news")))


@on_every_path
async def test_a_receive_only_session_refuses_client_messages_and_relays_the_service_s(
    make_socket: SocketFactory,
) -> None:
    async with MemoryHub(join_leave=False) as hub:
        client = ScriptedClient("/ws/news", reply_timeout=5.0)
        task = asyncio.create_task(run_broadcast(make_socket(client), hub, publish=False))
        assert (await client.next_sent())["type"] == "websocket.accept"
        assert json.loads((await client.next_sent())["text"])["type"] == "subscribed"
        client.send_text('{"type": "chat", "text": "from a client"}')
        refused = json.loads((await client.next_sent())["text"])
        assert refused == {"type": "error", "reason": RECEIVE_ONLY}
        assert (await hub.history("/ws/news"))[1] == []  # nothing was published
        await hub.publish("/ws/news", {"text": "from the service"})
        relayed = json.loads((await client.next_sent())["text"])
        assert (relayed["offset"], relayed["message"]) == (1, {"text": "from the service"})
        client.disconnect()
        await asyncio.wait_for(task, 5)


@on_every_path
async def test_a_hook_that_cannot_be_hashed_serves_as_well(make_socket: SocketFactory) -> None:
    # The readers of a channel's clients are shared by hook; a hook that is no key (an
    # object with __eq__ and no __hash__) gets a reader of its own.
    class Stamp:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, Stamp)

        __hash__ = None  # type: ignore[assignment]

        def __call__(self, websocket: object, message: dict[str, Any]) -> dict[str, Any]:
            return {**message, "stamped": True}

    async with MemoryHub(join_leave=False) as hub:
        client = ScriptedClient("/ws/news", reply_timeout=5.0)
        task = asyncio.create_task(run_broadcast(make_socket(client), hub, on_message=Stamp()))
        assert (await client.next_sent())["type"] == "websocket.accept"
        assert json.loads((await client.next_sent())["text"])["type"] == "subscribed"
        client.send_text('{"text": "hi"}')
        relayed = json.loads((await client.next_sent())["text"])
        assert relayed["message"] == {"text": "hi", "stamped": True}
        client.disconnect()
        await asyncio.wait_for(task, 5)
