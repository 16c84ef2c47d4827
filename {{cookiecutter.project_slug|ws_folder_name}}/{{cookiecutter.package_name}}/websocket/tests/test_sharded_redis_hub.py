"""Channels spread over three real redis-servers: the hub contract, the spread, a lost shard.

Each test talks to ``redis-server`` processes started here on 127.0.0.1 and free ports.
Without redis-server they skip, saying why, unless ``REQUIRE_REDIS=1``, which makes them fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from redis.asyncio import Redis

from ..broadcast import Hub, HubUnavailable, Position, Subscription
from ..redis_hub import DIRECT_CHANNEL, RedisHub, ShardedRedisHub, redis_hub, shard_index
from ..testing import RedisServer
from .hub_contract import (
    HISTORY_SIZE,
    QUEUE_SIZE,
    HubContract,
    HubFactory,
    numbered,
    received,
    subscribed,
)
from .test_redis_hub import redis_server_or_skip, wait_until

SHARDS = 3
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def shard_servers() -> Iterator[list[RedisServer]]:
    """Three redis-servers for the tests that do not stop them."""
    with ExitStack() as stack:
        yield [stack.enter_context(redis_server_or_skip()) for _ in range(SHARDS)]


@pytest.fixture
def keeping_shard_servers() -> Iterator[list[RedisServer]]:
    """Three redis-servers for one test, whose restarts keep their data."""
    with ExitStack() as stack:
        yield [stack.enter_context(redis_server_or_skip(keep_data=True)) for _ in range(SHARDS)]


def new_hub(servers: list[RedisServer], prefix: str = "", **options: Any) -> ShardedRedisHub:
    """A sharded hub with a prefix of its own (unless given): tests do not hear each other."""
    options = {
        "queue_size": QUEUE_SIZE,
        "history_size": HISTORY_SIZE,
        "join_leave": False,
    } | options
    prefix = prefix or f"sharded-{next(_prefixes)}:"
    return ShardedRedisHub([server.url for server in servers], prefix=prefix, **options)


class TestShardedRedisHub(HubContract):
    @pytest.fixture
    async def make_hub(self, shard_servers: list[RedisServer]) -> AsyncIterator[HubFactory]:
        hubs: list[Hub] = []

        async def make(
            *,
            queue_size: int = QUEUE_SIZE,
            history_size: int = HISTORY_SIZE,
            history_ttl: float = 300.0,
            join_leave: bool = False,
            presence_limit: int = 1000,
            join_leave_limit: int | None = None,
        ) -> Hub:
            hub = new_hub(
                shard_servers,
                queue_size=queue_size,
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
    def lose_history(self, shard_servers: list[RedisServer]) -> Callable[[Hub], Awaitable[Hub]]:
        async def flush(hub: Hub) -> Hub:  # every shard loses every key
            for server in shard_servers:
                async with Redis.from_url(server.url) as client:
                    await client.flushall()
            return hub

        return flush


def test_a_channel_s_shard_is_stable_and_one_more_shard_moves_only_channels_to_it() -> None:
    # Fixed values: every process, on any machine and Python, must agree on them.
    assert [shard_index(f"/ws/rooms/{n}", 3) for n in range(8)] == [0, 0, 0, 1, 2, 1, 2, 0]
    channels = [f"/ws/rooms/{n}" for n in range(3000)]
    counts = [sum(shard_index(c, 3) == shard for c in channels) for shard in range(3)]
    assert min(counts) > 900, counts  # about a third each
    moved = [c for c in channels if shard_index(c, 3) != shard_index(c, 4)]
    assert all(shard_index(c, 4) == 3 for c in moved)  # only to the new shard
    assert 0.2 < len(moved) / len(channels) < 0.3  # about a quarter of them


def test_one_url_is_a_plain_redis_hub_and_a_url_twice_is_refused() -> None:
    assert type(redis_hub(["redis://127.0.0.1:1/0"])) is RedisHub
    assert type(redis_hub(["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0"])) is ShardedRedisHub
    with pytest.raises(ValueError, match="the same Redis URL twice"):
        ShardedRedisHub(["redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"])


async def test_channels_are_spread_over_every_shard_each_on_one_only(
    shard_servers: list[RedisServer],
) -> None:
    channels = [f"/ws/rooms/{n}" for n in range(30)]
    async with new_hub(shard_servers) as hub:
        prefix = hub.shards[0].prefix
        subscriptions = [await subscribed(hub, channel) for channel in channels]
        for channel in channels:
            await hub.publish(channel, {"on": channel})
        holders: dict[str, list[int]] = {channel: [] for channel in channels}
        for index, server in enumerate(shard_servers):
            async with Redis.from_url(server.url, decode_responses=True) as client:
                keys = [str(key) for key in await client.keys(prefix + "*:meta")]
                followed = [str(name) for name in await client.pubsub_channels(prefix + "*")]
            for key in keys:
                holders[key.removeprefix(prefix + "{").removesuffix("}:meta")].append(index)
            followed.remove(prefix + DIRECT_CHANNEL)  # per-user delivery: on every shard
            for name in followed:  # each shard's pub/sub carries its own channels only
                assert holders[name.removeprefix(prefix)] == [index], name
        for channel, subscription in zip(channels, subscriptions, strict=True):
            assert holders[channel] == [shard_index(channel, SHARDS)], channel
            delivery = await received(subscription)
            assert (delivery["offset"], delivery["message"]) == (1, {"on": channel})
        assert {shard for held in holders.values() for shard in held} == set(range(SHARDS))


def one_channel_per_shard() -> list[str]:
    """A channel on each shard, shard 0's first."""
    found: dict[int, str] = {}
    for n in itertools.count():
        found.setdefault(shard_index(f"/ws/rooms/{n}", SHARDS), f"/ws/rooms/{n}")
        if len(found) == SHARDS:
            return [found[shard] for shard in range(SHARDS)]
    raise AssertionError("unreachable")


class ShardedTraffic:
    """Live traffic on one channel per shard: a publisher hub publishing on each without a
    pause (retrying while its shard is away), two subscribers per channel on another hub
    (another process of the service, as far as Redis can tell), reading everything."""

    def __init__(self, servers: list[RedisServer]) -> None:
        prefix = f"sharded-{next(_prefixes)}:"
        options = {"queue_size": 1000, "history_size": 1000, "timeout": 0.5}
        self.publisher = new_hub(servers, prefix, **options)
        self.subscriber = new_hub(servers, prefix, **options)
        self.channels = one_channel_per_shard()
        self.published: dict[str, list[int]] = {channel: [] for channel in self.channels}
        self.numbers: dict[str, dict[int, int]] = {channel: {} for channel in self.channels}
        """The number published at each offset, by channel, as the publisher was told."""
        self.refused: dict[str, int] = dict.fromkeys(self.channels, 0)
        self.subscriptions: dict[str, list[Subscription]] = {c: [] for c in self.channels}
        self.received: dict[str, list[list[dict[str, Any]]]] = {c: [] for c in self.channels}
        self._stop = asyncio.Event()
        self._done = asyncio.Event()  # publishing has ended: the readers stop
        self._tasks: list[asyncio.Task[None]] = []
        self._publishers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> ShardedTraffic:
        await self.publisher.start()
        await self.subscriber.start()
        for channel in self.channels:
            for _ in range(2):
                subscription = await subscribed(self.subscriber, channel)
                seen: list[dict[str, Any]] = []
                self.subscriptions[channel].append(subscription)
                self.received[channel].append(seen)
                self._tasks.append(asyncio.create_task(self._read(channel, subscription, seen)))
            self._publishers.append(asyncio.create_task(self._publish(channel)))
        await self.go_on(self.channels, 20)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()  # a publish in flight still lands, and its readers wait for it
        await asyncio.gather(*self._publishers)
        self._done.set()
        await asyncio.gather(*self._tasks)
        await self.subscriber.close()
        await self.publisher.close()

    async def _publish(self, channel: str) -> None:
        number = 0
        while not self._stop.is_set():
            try:
                position = await self.publisher.publish(channel, numbered(number))
            except HubUnavailable:
                self.refused[channel] += 1
                await asyncio.sleep(0.05)
                continue
            self.published[channel].append(position.offset)
            self.numbers[channel][position.offset] = number
            number += 1
            await asyncio.sleep(0.003)

    async def _read(self, channel: str, subscription: Subscription, seen: list[Any]) -> None:
        published = self.published[channel]
        give_up = None
        while not self._done.is_set() or not seen or seen[-1].get("offset") != published[-1]:
            if self._done.is_set():
                give_up = give_up or time.monotonic() + 20  # the check says what is missing
                if time.monotonic() > give_up:
                    return
            try:
                text = await asyncio.wait_for(subscription.next(), 0.2)
            except TimeoutError:
                continue
            assert text is not None
            seen.append(json.loads(text))

    def delivered(self, channel: str) -> int:
        """Messages every subscriber of ``channel`` has received."""
        return min(len(seen) for seen in self.received[channel])

    async def go_on(self, channels: list[str], more: int = 50) -> None:
        """Let ``more`` messages more be published and received on each of ``channels``."""
        targets = {channel: self.delivered(channel) + more for channel in channels}
        await wait_until(
            "delivering",
            lambda: all(self.delivered(c) >= target for c, target in targets.items()),
            within=20,
        )

    def check_every_subscriber_got_every_message_in_order(self) -> None:
        """No notice, contiguous offsets up to the last publish, and every message published,
        in order. A publish whose answer was lost with its shard (killed after the script
        ran) was retried by the publisher: that one message may come twice, at two offsets.
        """
        for channel in self.channels:
            published, numbers = self.published[channel], self.numbers[channel]
            for seen in self.received[channel]:
                assert [d["type"] for d in seen if d["type"] != "broadcast"] == [], channel
                offsets = [d["offset"] for d in seen]
                assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), offsets
                assert offsets[0] <= published[0]
                assert offsets[-1] == published[-1]
                got = {d["offset"]: d["message"]["n"] for d in seen}
                assert all(got[offset] == n for offset, n in numbers.items()), channel
                sequence = [got[offset] for offset in offsets if offset >= published[0]]
                assert sequence == sorted(sequence), channel  # in the order published
                assert sorted(set(sequence)) == list(range(len(published))), channel
                repeated = len(sequence) - len(set(sequence))
                assert repeated <= 1 if channel == self.channels[0] else repeated == 0


async def test_losing_one_shard_holds_only_its_channels_which_catch_up_when_it_is_back(
    keeping_shard_servers: list[RedisServer],
) -> None:
    lost = keeping_shard_servers[0]  # the shard of the traffic's first channel
    async with ShardedTraffic(keeping_shard_servers) as traffic:
        gone, *others = traffic.channels
        before = Position(traffic.published[gone][-1], traffic.received[gone][0][-1]["epoch"])
        os.kill(lost.pid, signal.SIGKILL)  # no goodbye: the shard is lost
        lost.stop()
        await wait_until("found out", lambda: not traffic.subscriber.shards[0].connected)
        refused = traffic.refused[gone]
        await traffic.go_on(others, 100)  # the other shards' channels keep flowing
        assert traffic.refused[gone] > refused  # publishing on the lost one is refused
        assert all(s.waiting for s in traffic.subscriptions[gone])  # its clients wait
        for channel in others:
            assert all(s.live for s in traffic.subscriptions[channel])
        lost.start()  # back, with its data
        await traffic.go_on(traffic.channels, 50)
        assert all(s.live for s in traffic.subscriptions[gone])
        resumed = await subscribed(traffic.subscriber, gone, before)  # a client from before
        assert resumed.recovered is True
        await traffic.subscriber.unsubscribe(resumed)
    traffic.check_every_subscriber_got_every_message_in_order()
