"""The Redis hub on a real redis-server: the hub contract, two hubs, and Redis faults.

Each test talks to a ``redis-server`` started here on 127.0.0.1 and a free port. Without
redis-server they skip, saying why, unless ``REQUIRE_REDIS=1``, which makes them fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from ..broadcast import (
    BroadcastStats,
    Hub,
    HubUnavailable,
    Position,
    Subscription,
    run_broadcast,
)
from ..redis_hub import MAYBE_PUBLISHED, NOT_SENT, RedisHub
from ..testing import RedisServer, ScriptedClient
from .conftest import SocketFactory
from .hub_contract import (
    HISTORY_SIZE,
    QUEUE_SIZE,
    HubContract,
    HubFactory,
    json_sent,
    messages,
    numbered,
    received,
    subscribed,
)

_prefixes = itertools.count()


def redis_server_or_skip(*, keep_data: bool = False) -> RedisServer:
    reason = RedisServer.unavailable()
    if reason is not None:
        if RedisServer.required():
            pytest.fail(reason)
        pytest.skip(reason)
    return RedisServer(keep_data=keep_data)


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


def new_hub(url: str, **options: Any) -> RedisHub:
    """A hub with a prefix of its own: tests that share a server do not hear each other.
    No join or leave events unless ``join_leave=True``."""
    options = {
        "queue_size": QUEUE_SIZE,
        "history_size": HISTORY_SIZE,
        "join_leave": False,
    } | options
    return RedisHub(url, prefix=f"test-{next(_prefixes)}:", **options)


@pytest.fixture
def keeping_redis_server() -> Iterator[RedisServer]:
    """A redis-server for one test whose restarts keep the data (an append-only file)."""
    with redis_server_or_skip(keep_data=True) as server:
        yield server


class TestRedisHub(HubContract):
    @pytest.fixture
    async def make_hub(self, redis_server: RedisServer) -> AsyncIterator[HubFactory]:
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
                redis_server.url,
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
    def lose_history(self, redis_server: RedisServer) -> Callable[[Hub], Awaitable[Hub]]:
        async def flush(hub: Hub) -> Hub:  # Redis loses every key, as in a restart without data
            async with Redis.from_url(redis_server.url) as client:
                await client.flushall()
            return hub

        return flush


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
        seen_here = await messages(here, QUEUE_SIZE)
        seen_there = await messages(there, QUEUE_SIZE)
    assert seen_here == seen_there
    numbers = [message["n"] for message in seen_here]
    assert [n for n in numbers if n < 100] == list(range(QUEUE_SIZE // 2))
    assert [n for n in numbers if n >= 100] == [100 + n for n in range(QUEUE_SIZE // 2)]


PUBLISHER = """
import asyncio, importlib, sys
url, prefix, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
RedisHub = importlib.import_module(sys.argv[5]).RedisHub
async def main():
    async with RedisHub(url, prefix=prefix, history_size=1000) as hub:
        print("ready", flush=True)
        sys.stdin.readline()
        async def publish(task):  # ten tasks at once: their publishes share batches
            for n in range(task, count, 10):
                await hub.publish("room", {"by": name, "n": n})
        await asyncio.gather(*(publish(task) for task in range(10)))
asyncio.run(main())
"""


async def test_publishers_in_several_processes_give_contiguous_offsets_in_one_order(
    redis_server: RedisServer,
) -> None:
    # Three processes publish at once on one channel, each from ten tasks; two hubs (two
    # more processes, as far as Redis knows) see offsets 1..N with no gap and in one order,
    # each task's messages in the order it sent them, and the history holds the same.
    count, names = 300, ["p0", "p1", "p2"]
    prefix = f"test-{next(_prefixes)}:"
    first, second = (
        new_hub(redis_server.url, queue_size=1000, history_size=1000),
        new_hub(redis_server.url, queue_size=1000, history_size=1000),
    )
    first.prefix = second.prefix = prefix
    module = RedisHub.__module__
    async with first, second:
        here, there = await subscribed(first, "room"), await subscribed(second, "room")
        processes = [
            await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", PUBLISHER, redis_server.url, prefix, name, str(count)),
                module,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for name in names
        ]
        try:
            for process in processes:
                assert process.stdout is not None
                assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"
            for process in processes:  # all at once
                assert process.stdin is not None
                process.stdin.write(b"go\n")
            total = count * len(names)
            seen_here = [await received(here, within=30) for _ in range(total)]
            seen_there = [await received(there, within=30) for _ in range(total)]
        finally:
            for process in processes:
                if process.stdin is not None:
                    process.stdin.close()
                assert await asyncio.wait_for(process.wait(), 30) == 0
    assert [d["offset"] for d in seen_here] == list(range(1, total + 1))
    assert seen_here == seen_there
    for name in names:
        numbers = [d["message"]["n"] for d in seen_here if d["message"]["by"] == name]
        assert sorted(numbers) == list(range(count))
        for task in range(10):
            assert [n for n in numbers if n % 10 == task] == list(range(task, count, 10))
    async with new_hub(redis_server.url, history_size=1000) as reader:
        reader.prefix = prefix
        replay = await subscribed(reader, "room", Position(0, seen_here[0]["epoch"]))
        assert replay.recovered is True
        assert [await received(replay) for _ in range(total)] == seen_here


PRESENT = """
import asyncio, importlib, sys
url, prefix, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
RedisHub = importlib.import_module(sys.argv[4]).RedisHub
async def main():
    async with RedisHub(url, prefix=prefix, presence_ttl=ttl) as hub:
        for user in ("kim", "lee"):
            await hub.subscribe("room", user=user)
        print("ready", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_the_clients_of_a_killed_process_leave_presence_within_the_ttl(
    redis_server: RedisServer,
) -> None:
    # A process with two clients is SIGKILLed: it cleans nothing up. Its clients stay
    # listed while their expiry runs (renewed every TTL / 3 until the kill), then go.
    ttl, prefix = 1.5, f"test-{next(_prefixes)}:"
    async with new_hub(redis_server.url, presence_ttl=ttl) as hub:
        hub.prefix = prefix
        await subscribed(hub, "room", user="here")
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", PRESENT, redis_server.url, prefix, str(ttl)),
            RedisHub.__module__,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"
            await asyncio.sleep(ttl * 1.5)  # renewed at least once: still there
            users = sorted(str(c["user"]) for c in (await hub.presence("room")).clients)
            assert users == ["here", "kim", "lee"]
        finally:
            process.kill()
            await process.wait()
        killed_at = time.monotonic()
        while (await hub.presence("room")).count > 1:
            assert time.monotonic() - killed_at < ttl + 1.0, "still listed after the TTL"
            await asyncio.sleep(0.05)
        assert [c["user"] for c in (await hub.presence("room")).clients] == ["here"]


async def test_a_hub_that_closes_removes_its_clients_at_once_and_says_they_left(
    redis_server: RedisServer,
) -> None:
    staying = new_hub(redis_server.url, presence_ttl=60, join_leave=True)
    stopping = new_hub(redis_server.url, join_leave=True)
    stopping.prefix = staying.prefix
    async with staying:
        watcher = await subscribed(staying, "room", user="watcher")
        async with stopping:
            leaving = await subscribed(stopping, "room", user="leaver")
            joined = await received(watcher)
            assert (joined["type"], joined["client"]["user"]) == ("join", "leaver")
            assert (await staying.presence("room")).count == 2
        left = await received(watcher)
        assert left == {
            "type": "leave",
            "channel": "room",
            "client": {"client_id": leaving.client_id, "user": "leaver"},
        }
        assert (await staying.presence("room")).clients == [
            {"client_id": watcher.client_id, "user": "watcher"}
        ]


async def test_a_message_to_a_user_reaches_their_connections_on_every_hub(
    redis_server: RedisServer,
) -> None:
    first, second = (
        new_hub(redis_server.url, join_leave=False),
        new_hub(redis_server.url, join_leave=False),
    )
    second.prefix = first.prefix
    async with first, second:
        here = await subscribed(first, "a", user={"id": 7})
        there = await subscribed(second, "b", user={"id": 7})
        other = await subscribed(second, "a", user={"id": 8})
        await first.publish_to_user({"id": 7}, {"n": 1})
        for subscription in (here, there):
            assert (await received(subscription))["message"] == {"n": 1}
        await second.publish("a", numbered(2))
        assert (await received(other))["message"] == {"n": 2}  # and nothing before it


async def test_a_hub_starts_while_redis_is_down_and_subscribers_go_live_when_it_is_up(
    own_redis_server: RedisServer,
) -> None:
    own_redis_server.stop()
    async with new_hub(own_redis_server.url, timeout=0.5) as hub:
        waiting = await hub.subscribe("later")
        assert not waiting.live
        own_redis_server.start()
        notice = await received(waiting, within=10)
        assert (notice["type"], notice["offset"]) == ("subscribed", 0)
        await hub.publish("later", numbered(1))
        assert (await received(waiting))["message"] == {"n": 1}


async def test_a_burst_of_a_thousand_publishes_from_one_process_is_all_published(
    redis_server: RedisServer,
) -> None:
    async with new_hub(redis_server.url) as hub:
        positions = await asyncio.gather(
            *(hub.publish("burst", numbered(number)) for number in range(1000))
        )
        assert sorted(position.offset for position in positions) == list(range(1, 1001))
        assert len({position.epoch for position in positions}) == 1
        top, _ = await hub.history("burst")
        assert top.offset == 1000


async def test_publishing_while_redis_is_down_fails_at_once(
    own_redis_server: RedisServer,
) -> None:
    # The hub's connection, used a moment before, is found closed before the publish is
    # written to it: the message was not sent, and the hub says so.
    async with new_hub(own_redis_server.url, timeout=2.0) as hub:
        await hub.publish("room", numbered(0))
        own_redis_server.stop()
        await asyncio.sleep(0.1)  # the loop, blocked meanwhile, sees Redis close the connection
        started = time.monotonic()
        with pytest.raises(HubUnavailable, match="the message was not sent") as failure:
            await hub.publish("room", numbered(1))
        assert time.monotonic() - started < 1.0  # refused connection: no wait, no retry
        assert failure.value.maybe_published is False


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


async def test_closing_a_hub_that_is_writing_a_ping_ends_its_connection_task(
    redis_server: RedisServer,
) -> None:
    # A hub whose pub/sub connection is quiet pings Redis every health_check_seconds;
    # here every few milliseconds, and each hub is closed at a random moment, often while a
    # PING is written. On Python 3.11 the cancellation of a task whose write completes in
    # the same turn of the event loop is lost (asyncio.wait_for, under which redis-py
    # writes): close must still end the connection task, not wait for it for good.
    rng = random.Random(7)
    for attempt in range(40):
        hub = new_hub(redis_server.url, health_check_seconds=0.005, timeout=1.0)
        await hub.start()
        await asyncio.sleep(rng.uniform(0.0, 0.03))
        try:
            async with asyncio.timeout(10):
                await hub.close()
        except TimeoutError:
            pytest.fail(f"close did not end the connection task (attempt {attempt})")


def hold_up_the_event_loop(seconds: float) -> None:
    """Keep the event loop from running for ``seconds``, as a busy machine can."""
    time.sleep(seconds)


async def test_a_batch_whose_time_runs_out_as_it_is_written_to_a_frozen_redis_gives_up(
    own_redis_server: RedisServer,
) -> None:
    # Redis is frozen, and the event loop is held up (as by a busy machine) right while a
    # publish is written, for longer than the hub's timeout: the batch's time runs out in
    # the turn that completes the write, where Python 3.11 loses the cancellation that
    # says so. The batch must give up all the same (the publish may have been published)
    # and the next publish, once Redis goes on, go through.
    server = own_redis_server
    async with new_hub(server.url, timeout=0.3) as hub:
        batcher = hub._batcher
        assert batcher is not None
        await hub.publish("room", numbered(0))
        server.pause()
        try:
            batches = batcher.batches
            first = asyncio.create_task(hub.publish("room", numbered(1)))
            for _ in range(10_000):  # a turn of the loop at a time: no await between the
                if batcher.batches > batches:  # count and the write, which is under way
                    break
                await asyncio.sleep(0)
            hold_up_the_event_loop(0.5)
            outcome = (await asyncio.gather(first, return_exceptions=True))[0]
            await wait_until("the batch given up", lambda: batcher._writer is None, within=5)
        finally:
            server.resume()
        assert may_have_been_published(outcome)
        assert (await hub.publish("room", numbered(2))).offset in (2, 3)


class Traffic:
    """Live traffic on one channel through a fault: a publisher hub publishing without a
    pause (retrying while Redis is away), three subscribers on another hub reading all."""

    def __init__(self, url: str) -> None:
        self.publisher = new_hub(url, queue_size=1000, history_size=1000, timeout=0.5)
        self.subscriber = new_hub(url, queue_size=1000, history_size=1000, timeout=0.5)
        self.subscriber.prefix = self.publisher.prefix
        self.stats = BroadcastStats()
        self.subscriber.count_in(self.stats)
        self.published: list[int] = []
        self.received: list[list[dict[str, Any]]] = []
        self._stop = asyncio.Event()
        self._done = asyncio.Event()  # publishing has ended: the readers stop
        self._tasks: list[asyncio.Task[None]] = []
        self._publishers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Traffic:
        await self.publisher.start()
        await self.subscriber.start()
        for _ in range(3):
            subscription = await subscribed(self.subscriber, "room")
            seen: list[dict[str, Any]] = []
            self.received.append(seen)
            self._tasks.append(asyncio.create_task(self._read(subscription, seen)))
        self._publishers.append(asyncio.create_task(self._publish()))
        await wait_until("publishing", lambda: len(self.published) >= 20)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()  # a publish in flight still lands, and its readers wait for it
        await asyncio.gather(*self._publishers)
        self._done.set()
        await asyncio.gather(*self._tasks)
        await self.subscriber.close()
        await self.publisher.close()

    async def _publish(self) -> None:
        number = 0
        while not self._stop.is_set():
            try:
                position = await self.publisher.publish("room", numbered(number))
            except HubUnavailable:
                await asyncio.sleep(0.05)
                continue
            self.published.append(position.offset)
            number += 1
            await asyncio.sleep(0.002)

    async def _read(self, subscription: Subscription, seen: list[dict[str, Any]]) -> None:
        give_up = None
        while not self._done.is_set() or not seen or seen[-1].get("offset") != self.published[-1]:
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

    async def go_on(self, more: int = 50) -> None:
        """Let ``more`` messages more be published and delivered after a fault."""
        target = len(self.published) + more
        await wait_until("publishing again", lambda: len(self.published) >= target, within=20)

    def check_every_subscriber_got_every_message_once(self) -> None:
        for seen in self.received:
            assert [d["type"] for d in seen if d["type"] != "broadcast"] == []
            offsets = [d["offset"] for d in seen]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), offsets
            assert offsets[0] <= self.published[0]
            assert offsets[-1] == self.published[-1]
            assert [d["message"]["n"] for d in seen if d["offset"] >= self.published[0]] == list(
                range(len(self.published))
            )

    def check_each_message_sent_was_counted_once(self) -> None:
        """Held while Redis was away, then read from the history and heard live (merged):
        each message a subscriber was sent is one delivery, none twice."""
        assert self.stats.deliveries == sum(len(seen) for seen in self.received)


async def test_pubsub_connections_killed_under_traffic_lose_no_message(
    redis_server: RedisServer,
) -> None:
    async with Traffic(redis_server.url) as traffic, Redis.from_url(redis_server.url) as admin:
        for _ in range(3):
            await admin.client_kill_filter(_type="pubsub")
            await traffic.go_on()
    traffic.check_every_subscriber_got_every_message_once()
    traffic.check_each_message_sent_was_counted_once()


async def test_a_redis_restart_that_keeps_its_data_loses_no_message_under_traffic(
    keeping_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RedisHub.__module__)
    async with Traffic(keeping_redis_server.url) as traffic:
        keeping_redis_server.stop()
        await asyncio.sleep(0.5)
        keeping_redis_server.start()
        await traffic.go_on()
    traffic.check_every_subscriber_got_every_message_once()
    traffic.check_each_message_sent_was_counted_once()
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("lost the connection to Redis at redis://127.0.0.1:") for m in messages)
    assert any(m.startswith("reconnected to Redis") for m in messages), messages
    assert any(m.endswith("(channels subscribed: 1)") for m in messages), messages


async def test_a_redis_restart_that_loses_its_data_is_a_new_epoch_told_to_subscribers(
    own_redis_server: RedisServer,
) -> None:
    async with new_hub(own_redis_server.url) as hub:
        subscription = await subscribed(hub, "room")
        before = await hub.publish("room", numbered(1))
        assert (await received(subscription))["offset"] == 1
        own_redis_server.stop()
        own_redis_server.start()
        await wait_until("resubscribed", lambda: subscription.live)
        gap = await received(subscription)
        assert (gap["type"], gap["count"], gap["offset"]) == ("dropped", None, 0), gap
        assert gap["epoch"] != before.epoch, gap
        after = await hub.publish("room", numbered(2))
        assert after.epoch == gap["epoch"]
        assert (await received(subscription))["offset"] == after.offset == 1
        resumed = await subscribed(hub, "room", before)  # a client of the old epoch
        assert resumed.recovered is False


async def test_a_silent_redis_is_found_out_by_a_ping_and_subscribers_catch_up(
    own_redis_server: RedisServer,
) -> None:
    async with new_hub(own_redis_server.url, timeout=0.5, health_check_seconds=0.2) as hub:
        subscription = await subscribed(hub, "room")
        await asyncio.sleep(1.0)  # quiet spells: each PING is answered, nothing is lost
        assert subscription.live
        own_redis_server.pause()
        try:
            await wait_until("found out", lambda: not hub.connected)  # no PONG within 0.2 s
            assert subscription.waiting
            started = time.monotonic()
            with pytest.raises(HubUnavailable):
                await hub.publish("room", numbered(1))
            assert time.monotonic() - started < 1.5  # the 0.5 s timeout, not a hang
        finally:
            own_redis_server.resume()
        await wait_until("resubscribed", lambda: subscription.live)
        position = await hub.publish("room", numbered(2))
        delivery = await received(subscription)
        assert (delivery["offset"], delivery["message"]) == (position.offset, {"n": 2})


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
        assert reply == {"type": "error", "reason": NOT_SENT}
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
    assert (await received(subscription))["message"] == {"n": 1}
    # pub/sub, and the pool's: one, or two when a presence write ran beside a history read
    assert await connected_clients() in (before + 2, before + 3)
    await hub.close()
    assert len(asyncio.all_tasks()) == tasks_before
    for _ in range(100):  # Redis sees the connections close a moment later
        if await connected_clients() == before:
            break
        await asyncio.sleep(0.02)
    assert await connected_clients() == before


async def test_publishes_from_many_tasks_share_batches_and_keep_one_order_everywhere(
    redis_server: RedisServer,
) -> None:
    # 50 tasks on each of two hubs publish 20 messages each, all at once: the hubs write
    # them in batches (far fewer writes than publishes), and both subscribers see offsets
    # 1..2000 in one order, each task's messages in the order it sent them.
    tasks, each = 50, 20
    first = new_hub(redis_server.url, queue_size=2500, history_size=2500)
    second = new_hub(redis_server.url, queue_size=2500, history_size=2500)
    second.prefix = first.prefix
    async with first, second:
        here, there = await subscribed(first, "room"), await subscribed(second, "room")
        batches_before = [hub._batcher.batches for hub in (first, second) if hub._batcher]

        async def publish(hub: RedisHub, name: str) -> None:
            for number in range(each):
                await hub.publish("room", {"by": name, "n": number})

        await asyncio.gather(
            *(
                publish(hub, f"{h}-{t}")
                for h, hub in enumerate((first, second))
                for t in range(tasks)
            )
        )
        batches = [hub._batcher.batches for hub in (first, second) if hub._batcher]
        total = 2 * tasks * each
        seen_here = [await received(here) for _ in range(total)]
        seen_there = [await received(there) for _ in range(total)]
    assert sum(batches) - sum(batches_before) < total / 5, (batches_before, batches)
    assert [d["offset"] for d in seen_here] == list(range(1, total + 1))
    assert seen_here == seen_there
    by_task: dict[str, list[int]] = {}
    for delivery in seen_here:
        by_task.setdefault(delivery["message"]["by"], []).append(delivery["message"]["n"])
    assert by_task == {f"{h}-{t}": list(range(each)) for h in range(2) for t in range(tasks)}


async def test_a_thousand_channels_subscribed_at_once_take_few_subscribe_commands(
    redis_server: RedisServer,
) -> None:
    # Subscribing to 1,000 channels at once: the SUBSCRIBE commands name many channels
    # each (up to 512), every subscription goes live, and a publish on each reaches it.
    channels = [f"c{number}" for number in range(1000)]
    async with new_hub(redis_server.url) as hub, Redis.from_url(redis_server.url) as admin:
        before = (await admin.info("commandstats")).get("cmdstat_subscribe", {"calls": 0})
        subscriptions = await asyncio.gather(*(hub.subscribe(c) for c in channels))
        notices = [await received(s, within=10) for s in subscriptions]
        after = (await admin.info("commandstats"))["cmdstat_subscribe"]
        assert {n["type"] for n in notices} == {"subscribed"}
        assert after["calls"] - before["calls"] <= 10, (before, after)
        await asyncio.gather(*(hub.publish(c, numbered(i)) for i, c in enumerate(channels)))
        for number, subscription in enumerate(subscriptions):
            assert (await received(subscription))["message"] == {"n": number}
        before = (await admin.info("commandstats")).get("cmdstat_unsubscribe", {"calls": 0})
        await asyncio.gather(*(hub.unsubscribe(s) for s in subscriptions[:600]))
        names = [hub.prefix + channel for channel in channels]
        await wait_until(
            "unsubscribed", lambda: hub._pubsub_writer is None and not hub._pubsub_queue
        )
        after = (await admin.info("commandstats"))["cmdstat_unsubscribe"]
        assert after["calls"] - before["calls"] <= 10, (before, after)
        numbers = dict(await admin.pubsub_numsub(*names))
        assert [numbers[name.encode()] for name in names] == [0] * 600 + [1] * 400


async def test_a_redis_that_forgot_the_scripts_gets_them_again_and_nothing_is_lost(
    redis_server: RedisServer,
) -> None:
    # SCRIPT FLUSH (as after a restart): the next batch's scripts are answered NOSCRIPT,
    # loaded, and those commands sent again; each runs once, in order.
    async with new_hub(redis_server.url) as hub, Redis.from_url(redis_server.url) as admin:
        subscription = await subscribed(hub, "room")
        await hub.publish("room", numbered(0))
        await admin.script_flush()
        positions = await asyncio.gather(*(hub.publish("room", numbered(n)) for n in range(1, 6)))
        assert [p.offset for p in positions] == [2, 3, 4, 5, 6]
        seen = [await received(subscription) for _ in range(6)]
        assert [(d["offset"], d["message"]["n"]) for d in seen] == [(n + 1, n) for n in range(6)]
        top, history = await hub.history("room")
        assert (top.offset, len(history)) == (6, 6)


def publisher_and_subscriber(url: str) -> tuple[RedisHub, RedisHub]:
    """Two hubs on one prefix (two processes, as far as Redis knows), for a batch's faults."""
    publisher = new_hub(url, queue_size=500, history_size=500, timeout=3.0)
    subscriber = new_hub(url, queue_size=500, history_size=500, timeout=3.0)
    subscriber.prefix = publisher.prefix
    return publisher, subscriber


async def a_held_batch_and_one_behind(
    publisher: RedisHub, hold: Callable[[], Awaitable[object]]
) -> tuple[list[asyncio.Task[Position]], list[asyncio.Task[Position]]]:
    """Publishes of messages 20..69 on "room", written to Redis in one batch after ``hold``
    stopped Redis from running them, and of 70..119, issued behind that batch: none answered."""
    batcher = publisher._batcher
    assert batcher is not None
    batches = batcher.batches
    await hold()
    written = [asyncio.create_task(publisher.publish("room", numbered(n))) for n in range(20, 70)]
    await wait_until("the batch written", lambda: batcher.batches > batches)
    waiting = [asyncio.create_task(publisher.publish("room", numbered(n))) for n in range(70, 120)]
    await asyncio.sleep(0.2)
    assert not any(task.done() for task in [*written, *waiting])
    return written, waiting


async def test_redis_killed_mid_batch_fails_that_batch_and_recovery_loses_nothing(
    keeping_redis_server: RedisServer,
) -> None:
    # Redis freezes with a batch of 50 publishes written to it and 50 more waiting behind;
    # then it is killed (SIGKILL) and restarted with its data. The written batch fails,
    # each of its publishes with MAYBE_PUBLISHED (here Redis never ran them, which the hub
    # cannot know); the waiting batch fails as a whole with NOT_SENT (it was never written)
    # or succeeds as a whole; every publish answered is in the history at its offset,
    # and the subscribers (on another hub) get every message of the history exactly once,
    # in order, one by one, with no gap.
    server = keeping_redis_server
    publisher, subscriber = publisher_and_subscriber(server.url)
    async with publisher, subscriber:
        readers = [await subscribed(subscriber, "room") for _ in range(3)]
        first = await asyncio.gather(*(publisher.publish("room", numbered(n)) for n in range(20)))
        answered = dict(enumerate(first))

        async def freeze() -> None:
            server.pause()

        written, waiting = await a_held_batch_and_one_behind(publisher, freeze)
        os.kill(server.pid, signal.SIGKILL)
        server.stop()
        outcomes = await asyncio.gather(*written, return_exceptions=True)
        assert {may_have_been_published(outcome) for outcome in outcomes} == {True}, outcomes
        server.start()
        later = await asyncio.gather(*waiting, return_exceptions=True)
        failed = [outcome for outcome in later if not isinstance(outcome, Position)]
        assert len(failed) in (0, len(later)), later
        assert not any(may_have_been_published(outcome) for outcome in failed), failed
        answered |= {70 + i: p for i, p in enumerate(later) if isinstance(p, Position)}
        await wait_until("resubscribed", lambda: all(r.live for r in readers))
        for n in range(120, 140):
            answered[n] = await publisher.publish("room", numbered(n))
        top, history = await publisher.history("room")
    texts = {p.offset: json.loads(p.text)["message"]["n"] for p in history}
    assert list(texts) == list(range(1, top.offset + 1))  # no gap in the history
    assert set(texts.values()).isdisjoint(range(20, 70))  # the failed batch never ran
    assert {n: p.offset for n, p in answered.items()} == {n: o for o, n in texts.items()}
    for reader in readers:
        seen: list[tuple[int, int]] = []
        while len(seen) < top.offset:
            delivery = await received(reader)
            if delivery["type"] == "broadcast":
                seen.append((delivery["offset"], delivery["message"]["n"]))
        assert seen == sorted(texts.items())


async def test_a_connection_lost_mid_batch_fails_that_batch_only_and_the_next_one_runs(
    own_redis_server: RedisServer,
) -> None:
    # Redis holds a written batch of 50 publishes unrun (CLIENT PAUSE WRITE) with 50 more
    # waiting behind it, and the batch's connection is killed while Redis stays up: exactly
    # the 50 written fail, with MAYBE_PUBLISHED (none ran, which the hub cannot know); the
    # 50 waiting go in the next batch, on a new connection, and are all published, in the
    # order they were issued, right after the 20 before. Subscribers on another hub get
    # offsets 1..70 once each.
    publisher, subscriber = publisher_and_subscriber(own_redis_server.url)
    async with publisher, subscriber, Redis.from_url(own_redis_server.url) as admin:
        reader = await subscribed(subscriber, "room")
        for n in range(20):
            await publisher.publish("room", numbered(n))
        written, waiting = await a_held_batch_and_one_behind(
            publisher,
            lambda: admin.client_pause(10_000, all=False),  # scripts wait, CLIENT KILL not
        )
        assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
        outcomes = await asyncio.gather(*written, return_exceptions=True)
        assert {may_have_been_published(outcome) for outcome in outcomes} == {True}, outcomes
        assert not any(task.done() for task in waiting)
        await admin.client_unpause()
        later = await asyncio.gather(*waiting)
        assert [position.offset for position in later] == list(range(21, 71))
        seen = [await received(reader) for _ in range(70)]
        top, history = await publisher.history("room")
    sent = [*range(20), *range(70, 120)]
    assert [(d["offset"], d["message"]["n"]) for d in seen] == list(
        zip(range(1, 71), sent, strict=True)
    )
    assert top.offset == 70
    assert [json.loads(p.text)["message"]["n"] for p in history] == sent


def may_have_been_published(outcome: object) -> bool:
    """Whether ``outcome``, a failed publish, says the message may have been published (an
    assertion error for anything else), its text saying the same."""
    assert isinstance(outcome, HubUnavailable), outcome
    assert str(outcome) == (MAYBE_PUBLISHED if outcome.maybe_published else NOT_SENT)
    return outcome.maybe_published


async def test_publishes_given_up_before_they_are_written_are_never_written(
    own_redis_server: RedisServer,
) -> None:
    # Redis holds a written batch of 50 publishes unrun (CLIENT PAUSE WRITE) with 50 more
    # waiting behind it, and the callers of every other waiting one give up (their tasks
    # are cancelled, as by a client that left). Once Redis goes on, the held batch runs,
    # then the 25 still awaited, in their order; the 25 given up never run.
    publisher, subscriber = publisher_and_subscriber(own_redis_server.url)
    async with publisher, subscriber, Redis.from_url(own_redis_server.url) as admin:
        for n in range(20):
            await publisher.publish("room", numbered(n))
        written, waiting = await a_held_batch_and_one_behind(
            publisher, lambda: admin.client_pause(10_000, all=False)
        )
        for task in waiting[::2]:
            task.cancel()
        await asyncio.sleep(0.1)
        await admin.client_unpause()
        await asyncio.gather(*written)
        later = await asyncio.gather(*waiting[1::2])
        assert [position.offset for position in later] == list(range(71, 96))
        assert all(task.cancelled() for task in waiting[::2])
        top, history = await publisher.history("room")
    assert top.offset == 95
    sent = [*range(70), *range(71, 120, 2)]
    assert [json.loads(p.text)["message"]["n"] for p in history] == sent


async def test_a_publish_written_to_a_frozen_redis_may_have_been_published_and_was(
    own_redis_server: RedisServer,
) -> None:
    # Redis freezes (SIGSTOP) with a publish written to it: its caller gets MAYBE_PUBLISHED
    # after the hub's timeout. A publish issued behind it waits for a new connection, which
    # the frozen Redis does not answer: its caller gets NOT_SENT after its timeout. Redis
    # then goes on before that connection's batch gives up: the batch connects, and must
    # not write the command given up. Redis runs what was written to it, as the first
    # answer warned: the history holds the first publish and not the second.
    server = own_redis_server
    async with new_hub(server.url, timeout=0.5) as hub:
        batcher = hub._batcher
        assert batcher is not None
        assert (await hub.publish("room", numbered(0))).offset == 1
        batches = batcher.batches
        server.pause()
        try:
            first = asyncio.create_task(hub.publish("room", numbered(1)))
            await wait_until("the publish written", lambda: batcher.batches > batches)
            second = asyncio.create_task(hub.publish("room", numbered(2)))
            outcomes = await asyncio.gather(first, second, return_exceptions=True)
        finally:
            server.resume()
        assert [may_have_been_published(outcome) for outcome in outcomes] == [True, False]
        assert (await hub.publish("room", numbered(3))).offset == 3
        assert batcher.batches == batches + 2  # the first's and the third's
        top, history = await hub.history("room")
    assert [json.loads(p.text)["message"]["n"] for p in history] == [0, 1, 3]
    assert top.offset == 3


async def test_presence_renewals_of_many_channels_share_batches(redis_server: RedisServer) -> None:
    # 200 channels with a client each and a TTL of 0.9 s: renewed every 0.3 s, every
    # channel at once, so each renewal is a few batches, not 200; and the clients stay
    # listed well past the TTL.
    async with new_hub(redis_server.url, presence_ttl=0.9) as hub:
        channels = [f"r{number}" for number in range(200)]
        for channel in channels:
            await subscribed(hub, channel, user=channel)
        batcher = hub._batcher
        assert batcher is not None
        before = batcher.batches
        await asyncio.sleep(2.0)  # six renewals or so
        renewing = batcher.batches - before
        counts = await asyncio.gather(*(hub.presence(channel) for channel in channels))
    assert [presence.count for presence in counts] == [1] * 200
    assert 0 < renewing <= 60, renewing
