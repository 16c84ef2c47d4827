"""The broadcast hub in memory: its subscriptions' bounded queues, and the hub contract."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from ..broadcast import HUB_STATE_KEY, MemoryHub, Subscription, hub_of
from ..testing import ScriptedClient
from .conftest import SocketFactory
from .hub_contract import QUEUE_SIZE, HubContract, received


class TestMemoryHub(HubContract):
    @pytest.fixture
    async def hub(self) -> AsyncIterator[MemoryHub]:
        async with MemoryHub(queue_size=QUEUE_SIZE) as hub:
            yield hub


def live_subscription(queue_size: int = 3) -> Subscription:
    subscription = Subscription("/ws/news", queue_size)
    subscription.go_live()
    return subscription


async def everything_in(subscription: Subscription) -> list[object]:
    """What the subscription has queued for its client, in order (it ends it)."""
    subscription.end()
    items = []
    while (text := await subscription.next()) is not None:
        items.append(text if text.startswith("m") else json.loads(text))
    return items


SUBSCRIBED = {"type": "subscribed", "channel": "/ws/news"}


def dropped(count: int | None) -> dict[str, object]:
    return {"type": "dropped", "channel": "/ws/news", "count": count}


async def test_a_full_queue_drops_its_oldest_message_and_reports_the_gap_in_place() -> None:
    subscription = live_subscription(queue_size=3)
    for number in range(5):
        subscription.deliver(f"m{number}")
    assert subscription.dropped == 2
    assert await everything_in(subscription) == [SUBSCRIBED, dropped(2), "m2", "m3", "m4"]


async def test_what_the_client_already_took_is_not_counted_as_dropped() -> None:
    subscription = live_subscription(queue_size=2)
    subscription.deliver("m0")
    assert await received(subscription) == SUBSCRIBED
    assert await subscription.next() == "m0"
    for number in range(1, 4):
        subscription.deliver(f"m{number}")
    assert await everything_in(subscription) == [dropped(1), "m2", "m3"]


async def test_a_lost_backend_leaves_a_gap_of_unknown_size_where_it_happened() -> None:
    subscription = live_subscription(queue_size=5)
    subscription.deliver("m0")
    subscription.interrupt()
    subscription.go_live()  # resubscribed: no second subscribed notice
    subscription.deliver("m1")
    assert await everything_in(subscription) == [SUBSCRIBED, "m0", dropped(None), "m1"]


async def test_gaps_side_by_side_become_one_and_unknown_stays_unknown() -> None:
    subscription = live_subscription(queue_size=2)
    subscription.deliver("m0")
    subscription.interrupt()
    subscription.go_live()
    for number in range(1, 4):  # m0 and m1 are dropped on either side of the unknown gap
        subscription.deliver(f"m{number}")
    assert await everything_in(subscription) == [SUBSCRIBED, dropped(None), "m2", "m3"]


async def test_the_subscribed_notice_is_never_dropped_to_make_room() -> None:
    subscription = live_subscription(queue_size=1)
    for number in range(4):
        subscription.deliver(f"m{number}")
    assert await everything_in(subscription) == [SUBSCRIBED, dropped(3), "m3"]


async def test_an_ended_subscription_takes_no_more_messages() -> None:
    subscription = live_subscription()
    subscription.end()
    subscription.deliver("m0")
    assert await everything_in(subscription) == [SUBSCRIBED]


def test_a_queue_holds_at_least_one_message() -> None:
    with pytest.raises(ValueError, match="queue_size must be at least 1"):
        Subscription("/ws/news", 0)


async def test_the_hub_is_found_in_the_asgi_state(make_socket: SocketFactory) -> None:
    client = ScriptedClient("/ws/news")
    async with MemoryHub() as hub:
        client.scope["state"] = {HUB_STATE_KEY: hub}
        assert hub_of(make_socket(client)) is hub


async def test_without_a_hub_in_the_state_the_error_says_what_to_do(
    make_socket: SocketFactory,
) -> None:
    with pytest.raises(RuntimeError, match="run the app with its lifespan"):
        hub_of(make_socket(ScriptedClient("/ws/news")))
