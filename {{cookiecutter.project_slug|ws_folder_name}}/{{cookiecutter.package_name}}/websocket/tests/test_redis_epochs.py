"""A Redis whose history went back, and publishes that wait for a replica, on real servers.

A failover to a replica that lacked the last writes (or a restart from an older snapshot)
leaves a channel's offset behind what its clients have seen, under the same epoch: the next
publishes would give those offsets to other messages. Here the offset is put back by hand
(``HSET``), and the hub that saw the higher offset must start a new epoch instead, so that
subscribers and resuming clients are told. Then ``wait_replicas``: a publish is confirmed
once a replica has it, and fails when none confirms in time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from ..broadcast import HubUnavailable, Position, envelope_parts, new_epoch
from ..redis_hub import PUBLISH_SCRIPT, RedisHub
from ..testing import RedisServer
from .hub_contract import messages, numbered, received, subscribed
from .test_redis_hub import new_hub, redis_server, redis_server_or_skip, wait_until

__all__ = ["redis_server"]  # the fixture, shared with test_redis_hub


def beside(hub: RedisHub, url: str) -> RedisHub:
    """Another hub (another process) of the same service as ``hub``."""
    other = new_hub(url)
    other.prefix = hub.prefix
    return other


def go_back(commands: Pipeline, hub: RedisHub, channel: str, offset: int, top: int) -> None:
    """Put ``channel`` back from offset ``top`` to ``offset`` on Redis, its epoch unchanged,
    as a replica promoted without the last publishes has it: the offset, and the history
    without the entries after it."""
    meta, history = hub._keys(channel)
    commands.hset(meta, "offset", offset)
    commands.xdel(history, *(f"{n}-0" for n in range(offset + 1, top + 1)))
    commands.execute_command("XSETID", history, f"{offset}-0")


async def put_offset_back(url: str, hub: RedisHub, channel: str, offset: int, top: int) -> None:
    async with Redis.from_url(url) as client, client.pipeline() as commands:
        go_back(commands, hub, channel, offset, top)
        await commands.execute()


async def test_a_publish_after_the_offset_went_back_starts_a_new_epoch_and_tells_subscribers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with new_hub(redis_server.url) as hub:
        subscription = await subscribed(hub, "room")
        for n in range(1, 6):
            last = await hub.publish("room", numbered(n))
        assert await messages(subscription, 5) == [numbered(n) for n in range(1, 6)]
        await put_offset_back(redis_server.url, hub, "room", 3, 5)
        with caplog.at_level(logging.WARNING):
            after = await hub.publish("room", numbered(6))
        assert after.epoch != last.epoch
        assert after.offset == 1
        gap = await received(subscription)
        assert (gap["type"], gap["count"], gap["epoch"]) == ("dropped", None, after.epoch), gap
        delivery = await received(subscription)
        assert (delivery["offset"], delivery["message"]) == (1, numbered(6)), delivery
        resumed = await subscribed(hub, "room", last)  # a client that had offset 5
        assert resumed.recovered is False
    assert any("was back at offset 3" in r.getMessage() for r in caplog.records), caplog.text


async def test_without_detection_the_offsets_would_be_reissued_under_the_same_epoch(
    redis_server: RedisServer,
) -> None:
    """The hazard itself: a hub that never saw the channel has nothing to compare with, so
    Redis gives offset 4 again under the same epoch (what every hub did before)."""
    async with new_hub(redis_server.url) as hub:
        for n in range(1, 6):
            last = await hub.publish("room", numbered(n))
        await put_offset_back(redis_server.url, hub, "room", 3, 5)
        async with beside(hub, redis_server.url) as stranger:
            again = await stranger.publish("room", numbered(6))
        assert again == Position(4, last.epoch)


async def test_a_subscriber_that_saw_more_than_redis_has_moves_to_a_new_epoch_on_resync(
    redis_server: RedisServer,
) -> None:
    """In one transaction: the hub's pub/sub connection is killed, the offset goes back, and
    a process that never saw the channel publishes (offset 4 again). The hub's resync reads
    the position with what it had seen, starts a new epoch, and its subscriber is told
    instead of taking offset 4 of another message for one it has."""
    async with new_hub(redis_server.url) as hub:
        subscription = await subscribed(hub, "room")
        for n in range(1, 6):
            last = await hub.publish("room", numbered(n))
        assert len(await messages(subscription, 5)) == 5
        head, tail = envelope_parts("room", numbered(6))
        stranger: list[str | int] = [
            new_epoch(),
            "",
            0,
            hub.prefix + "room",
            head,
            tail,
            20,
            60_000,
            60_000,
        ]
        async with Redis.from_url(redis_server.url) as client, client.pipeline() as fault:
            fault.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            go_back(fault, hub, "room", 3, 5)
            fault.eval(PUBLISH_SCRIPT, 2, *hub._keys("room"), *stranger)
            *_, reused = await fault.execute()
        assert reused[:2] == [4, last.epoch.encode()]
        await wait_until("resubscribed", lambda: subscription.live)
        gap = await received(subscription)
        assert (gap["type"], gap["count"]) == ("dropped", None), gap
        assert gap["epoch"] != last.epoch
        after = await hub.publish("room", numbered(7))
        assert after.epoch == gap["epoch"]
        delivery = await received(subscription)
        assert (delivery["offset"], delivery["message"]) == (after.offset, numbered(7))


async def test_a_history_read_after_the_offset_went_back_starts_a_new_epoch(
    redis_server: RedisServer,
) -> None:
    async with new_hub(redis_server.url) as hub:
        for n in range(1, 4):
            last = await hub.publish("room", numbered(n))
        await put_offset_back(redis_server.url, hub, "room", 1, 3)
        top, history = await hub.history("room", Position(0, last.epoch))
        assert top.epoch != last.epoch
        assert (top.offset, history) == (0, [])


async def test_an_offset_that_did_not_go_back_keeps_its_epoch(redis_server: RedisServer) -> None:
    async with new_hub(redis_server.url) as hub, beside(hub, redis_server.url) as other:
        first = await hub.publish("room", numbered(1))
        for n in range(2, 5):  # another hub moves the channel on: ahead is fine
            await other.publish("room", numbered(n))
        assert await hub.publish("room", numbered(5)) == Position(5, first.epoch)
        assert (await hub.history("room"))[0] == Position(5, first.epoch)


@pytest.fixture
def replicated_redis() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and a replica of it."""
    with redis_server_or_skip() as master, redis_server_or_skip() as replica:
        yield master, replica


async def replicate(master: RedisServer, replica: RedisServer) -> None:
    async with Redis.from_url(replica.url) as client:
        await client.replicaof("127.0.0.1", master.port)
    async with Redis.from_url(master.url) as client:

        async def linked() -> bool:
            info = await client.info("replication")
            return bool(info.get("connected_slaves")) and "online" in str(info.get("slave0"))

        for _ in range(500):
            if await linked():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the replica did not connect")


async def test_a_publish_that_waits_for_a_replica_is_confirmed_once_it_has_it(
    replicated_redis: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = replicated_redis
    await replicate(master, replica)
    # Replicas confirm within 2 s (half the timeout), even on a busy machine.
    async with new_hub(master.url, wait_replicas=1, timeout=4.0) as hub:
        subscription = await subscribed(hub, "room")
        position = await hub.publish("room", numbered(1))
        async with Redis.from_url(replica.url, decode_responses=True) as client:
            meta = await client.hgetall(hub._keys("room")[0])
        assert meta == {"epoch": position.epoch, "offset": "1"}  # on the replica already
        replica.pause()  # the replica stops confirming
        try:
            with pytest.raises(HubUnavailable, match="no replica confirmed"):
                await hub.publish("room", numbered(2))
        finally:
            replica.resume()
        # Redis ran it: subscribers had it, and the caller was told it may have been.
        assert await messages(subscription, 2) == [numbered(1), numbered(2)]


async def test_a_publish_that_waits_for_a_replica_fails_without_one(
    redis_server: RedisServer,
) -> None:
    async with new_hub(redis_server.url, wait_replicas=1, timeout=0.4) as hub:
        with pytest.raises(HubUnavailable, match="no replica confirmed"):
            await hub.publish("room", numbered(1))
        await hub.subscribe("room")  # commands that are not publishes do not wait
        assert (await hub.history("room"))[0].offset == 1
