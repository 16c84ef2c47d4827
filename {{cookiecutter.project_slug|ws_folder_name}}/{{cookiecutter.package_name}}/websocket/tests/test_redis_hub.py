"""The Redis hub on a real redis-server: the hub contract, two hubs, and Redis faults.

Each test talks to a ``redis-server`` started here on 127.0.0.1 and a free port. Without
redis-server they skip, saying why, unless ``REQUIRE_REDIS=1``, which makes them fail.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis

from ..broadcast import HubUnavailable, run_broadcast
from ..redis_hub import RedisHub
from ..testing import RedisServer, ScriptedClient
from .conftest import SocketFactory
from .hub_contract import QUEUE_SIZE, HubContract, json_sent, numbered, received, subscribed

_prefixes = itertools.count()


def redis_server_or_skip() -> RedisServer:
    reason = RedisServer.unavailable()
    if reason is not None:
        if RedisServer.required():
            pytest.fail(reason)
        pytest.skip(reason)
    return RedisServer()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the tests that do not stop it."""
    with redis_server_or_skip() as server:
        yield server


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server for one test, which may stop and restart it."""
    with redis_server_or_skip() as server:
        yield server


def new_hub(url: str, **options: float) -> RedisHub:
    """A hub with a prefix of its own: tests that share a server do not hear each other."""
    return RedisHub(url, prefix=f"test-{next(_prefixes)}:", queue_size=QUEUE_SIZE, **options)


class TestRedisHub(HubContract):
    @pytest.fixture
    async def hub(self, redis_server: RedisServer) -> AsyncIterator[RedisHub]:
        async with new_hub(redis_server.url) as hub:
            yield hub


async def wait_until(condition: str, check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not {condition} after {within} s"
        await asyncio.sleep(0.01)


async def test_two_hubs_on_one_redis_deliver_to_each_other_in_one_order(
    redis_server: RedisServer,
) -> None:
    # Two hubs stand for two processes: each publishes, both subscribers see every
    # message, each publisher's in its order, and both see the same interleaving.
    first, second = new_hub(redis_server.url), new_hub(redis_server.url)
    second.prefix = first.prefix
    async with first, second:
        here, there = await subscribed(first, "room"), await subscribed(second, "room")
        for number in range(QUEUE_SIZE // 2):
            await first.publish("room", numbered(number))
            await second.publish("room", numbered(100 + number))
        seen_here = [await received(here) for _ in range(QUEUE_SIZE)]
        seen_there = [await received(there) for _ in range(QUEUE_SIZE)]
    assert seen_here == seen_there
    numbers = [message["n"] for message in seen_here]
    assert [n for n in numbers if n < 100] == list(range(QUEUE_SIZE // 2))
    assert [n for n in numbers if n >= 100] == [100 + n for n in range(QUEUE_SIZE // 2)]


async def test_a_hub_starts_while_redis_is_down_and_subscribers_go_live_when_it_is_up(
    own_redis_server: RedisServer,
) -> None:
    own_redis_server.stop()
    async with new_hub(own_redis_server.url, timeout=0.5) as hub:
        waiting = await hub.subscribe("later")
        assert not waiting.live
        own_redis_server.start()
        assert await received(waiting, within=10) == {"type": "subscribed", "channel": "later"}
        await hub.publish("later", numbered(1))
        assert await received(waiting) == {"n": 1}


async def test_publishing_while_redis_is_down_fails_at_once(
    own_redis_server: RedisServer,
) -> None:
    async with new_hub(own_redis_server.url, timeout=2.0) as hub:
        own_redis_server.stop()
        started = time.monotonic()
        with pytest.raises(HubUnavailable, match="the message was not sent"):
            await hub.publish("room", numbered(1))
        assert time.monotonic() - started < 1.0  # refused connection: no wait, no retry


async def test_publishing_to_a_redis_that_does_not_answer_gives_up_after_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        async with new_hub(url, timeout=0.5) as hub:
            started = time.monotonic()
            with pytest.raises(HubUnavailable):
                await hub.publish("room", numbered(1))
            assert time.monotonic() - started < 2.0  # the 0.5 s timeout, not a hang


async def test_a_redis_restart_keeps_local_subscribers_who_are_told_of_the_gap(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RedisHub.__module__)
    async with new_hub(own_redis_server.url) as hub:
        subscription = await subscribed(hub, "room")
        await hub.publish("room", numbered(1))
        assert await received(subscription) == {"n": 1}
        own_redis_server.stop()
        gap = await received(subscription)  # as soon as the hub notices the loss
        assert gap == {"type": "dropped", "channel": "room", "count": None}
        own_redis_server.start()
        await wait_until("resubscribed", lambda: subscription.live)
        await hub.publish("room", numbered(2))
        assert await received(subscription) == {"n": 2}
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("lost the connection to Redis at redis://127.0.0.1:") for m in messages)
    assert any(m.startswith("reconnected to Redis") for m in messages), messages
    assert any(m.endswith("(channels subscribed: 1)") for m in messages), messages


async def test_a_silent_redis_is_found_out_by_a_ping_and_subscribers_are_told(
    own_redis_server: RedisServer,
) -> None:
    async with new_hub(own_redis_server.url, timeout=0.5, health_check_seconds=0.2) as hub:
        subscription = await subscribed(hub, "room")
        await asyncio.sleep(1.0)  # quiet spells: each PING is answered, nothing is lost
        assert subscription.live
        own_redis_server.pause()
        try:
            gap = await received(subscription)  # no answer to a PING within 0.2 s
            assert gap == {"type": "dropped", "channel": "room", "count": None}
            started = time.monotonic()
            with pytest.raises(HubUnavailable):
                await hub.publish("room", numbered(1))
            assert time.monotonic() - started < 1.5  # the 0.5 s timeout, not a hang
        finally:
            own_redis_server.resume()
        await wait_until("resubscribed", lambda: subscription.live)
        await hub.publish("room", numbered(2))
        assert await received(subscription) == {"n": 2}


async def test_a_session_gets_an_error_reply_while_redis_is_down(
    own_redis_server: RedisServer, make_socket: SocketFactory
) -> None:
    async with new_hub(own_redis_server.url, timeout=2.0) as hub:
        own_redis_server.stop()
        client = ScriptedClient("/ws/chat", reply_timeout=5.0)
        session = asyncio.create_task(run_broadcast(make_socket(client), hub))
        assert (await client.next_sent())["type"] == "websocket.accept"
        started = time.monotonic()
        client.send_text('{"text": "anyone?"}')
        reply = json_sent(await client.next_sent())
        assert reply == {
            "type": "error",
            "reason": "broadcast unavailable: the message was not sent; try again later",
        }
        assert time.monotonic() - started < 1.0
        client.send_text('{"type": "keepalive"}')  # the session goes on
        assert json_sent(await client.next_sent())["type"] == "keepalive_ack"
        client.disconnect()
        await asyncio.wait_for(session, 5)


async def test_closing_the_hub_leaves_no_connection_or_task_behind(
    redis_server: RedisServer,
) -> None:
    async def connected_clients() -> int:
        async with Redis.from_url(redis_server.url) as observer:
            clients = await observer.client_list()
            return len(clients) - 1  # not the observer itself

    before, tasks_before = await connected_clients(), len(asyncio.all_tasks())
    hub = new_hub(redis_server.url)
    await hub.start()
    subscription = await subscribed(hub, "room")
    await hub.publish("room", numbered(1))
    assert await received(subscription) == {"n": 1}
    assert await connected_clients() == before + 2  # pub/sub, and one for publishing
    await hub.close()
    assert len(asyncio.all_tasks()) == tasks_before
    for _ in range(100):  # Redis sees the connections close a moment later
        if await connected_clients() == before:
            break
        await asyncio.sleep(0.02)
    assert await connected_clients() == before
