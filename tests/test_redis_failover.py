"""A Redis master lost under traffic, with Sentinel: delivery resumes, nothing is lost unsaid.

Each test starts a `SentinelGroup` (a master, a replica, three sentinels with a 500 ms
``down-after-milliseconds``, tests/sentinel_group.py), two processes of a rendered Redis
project with ``REDIS_URL`` naming the group, and Centrifuge SDK clients on both (Python on
each, Node on the second), subscribed to twenty channels. While a publisher sends a steady
stream through both processes (tests/test_centrifuge_faults.py), the master is SIGKILLed.
Then every client's publications are replayed one by one against the publisher's answers:
contiguous offsets within an epoch, each the message published at that offset of that epoch;
no (channel, epoch, offset) was ever answered for two messages; a subscription resumed across
the failover either recovered or said ``recovered: false``; and each answered publish was
either delivered to every client or reported lost by a new epoch of its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websocket.broadcast import HubUnavailable, Position, Subscription  # the vendored backend
from websocket.redis_hub import RedisHub, redis_hub, shard_index
from websocket.testing import LiveServer
from websockets.asyncio.client import connect

from tests import test_centrifuge_faults
from tests.conftest import render, unavailable
from tests.sentinel_group import MASTER_NAME, SentinelGroup, sentinel_unavailable
from tests.test_centrifuge_faults import (
    ENVIRONMENT,
    Clients,
    Published,
    Seen,
    clients,
    everything,
    publish_stream,
    replay,
    rounds_published,
    twenty_channels,
)
from tests.test_centrifuge_sdks import ENDPOINTS, PUBLISH_KEY, Service, run, unique

pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.xdist_group("redis-failover"),
]

DOWN_AFTER_MS = int(os.environ.get("FAILOVER_DOWN_AFTER_MS", "500"))
"""The sentinels' ``down-after-milliseconds``; ``FAILOVER_DOWN_AFTER_MS=30000`` (Sentinel's
default) measures the bound with it (the waits below grow by as much)."""
FAULT_AFTER = 8  # rounds published before the fault
RESUME_WITHIN = 10.0 + DOWN_AFTER_MS / 1000
"""Seconds from the kill until every client has a message published after it (the README
states the bound)."""
SETTLE = 30.0 + DOWN_AFTER_MS / 1000
PRESENCE_TTL = 3.0
REPLICA_BACK_WITHIN = 40.0
"""Seconds the sentinels may take to make a restarted old master a replica (14-16 s in
every run here, under load too)."""


def presence_counts(service: Service, channels: list[str]) -> list[int]:
    counts = []
    for channel in channels:
        request = urllib.request.Request(
            service.server.url("/api/presence?" + urllib.parse.urlencode({"channel": channel})),
            headers={"Authorization": f"Bearer {PUBLISH_KEY}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            counts.append(json.load(response)["count"])
    return counts


def presence_rebuilt(group: SentinelGroup, services: list[Service], room: str) -> float:
    """Remove every presence entry from the master (as a promoted replica that never had
    them); the seconds until both services list the room's two clients again."""
    assert all(presence_counts(s, [room]) == [2] for s in services)
    with group.replica.client() as master:
        keys = list(master.scan_iter(match="*presence*", count=1000))
        assert keys, "no presence on the new master"
        master.delete(*keys)
    assert presence_counts(services[0], [room]) == [0]
    start = time.monotonic()
    while not all(presence_counts(s, [room]) == [2] for s in services):
        assert time.monotonic() - start < 2 * PRESENCE_TTL, "presence is not rebuilt"
        time.sleep(0.1)
    return time.monotonic() - start


class AnsweredOnce(dict[tuple[str, str, int], int]):
    """`Published.at` that remembers a position answered for two different rounds."""

    def __init__(self) -> None:
        super().__init__()
        self.reissued: list[tuple[tuple[str, str, int], int, int]] = []

    def __setitem__(self, key: tuple[str, str, int], round_: int) -> None:
        if key in self and self[key] != round_:
            self.reissued.append((key, self[key], round_))
        super().__setitem__(key, round_)


@pytest.fixture(autouse=True)
def sentinel_installed() -> None:
    """Every test here runs Sentinel groups: skipped where they cannot run (failed in CI)."""
    missing = sentinel_unavailable()
    if missing:
        unavailable(missing)


@pytest.fixture(autouse=True)
def patient_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    """The publisher retries a refused publish for as long as the master may be away."""
    monkeypatch.setattr(test_centrifuge_faults, "SETTLE", SETTLE)


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> tuple[Path, str]:
    answers = {"endpoints": ENDPOINTS, "framework": "fastapi", "broadcast_backend": "redis"}
    folder = render(tmp_path_factory.mktemp("failover"), cookiecutter_config, answers)
    [app] = folder.glob("*/app.py")
    return folder, f"{app.parent.name}.app:app"


@contextlib.contextmanager
def group_and_services(
    project: tuple[Path, str], settings: dict[str, str] | None = None, **group_options: Any
) -> Iterator[tuple[SentinelGroup, list[Service]]]:
    folder, app = project
    with contextlib.ExitStack() as stack:
        group = stack.enter_context(SentinelGroup(down_after_ms=DOWN_AFTER_MS, **group_options))
        environment = {
            **ENVIRONMENT,
            "REDIS_URL": group.url,
            "REDIS_TIMEOUT_SECONDS": "1",
            "PRESENCE_TTL_SECONDS": str(PRESENCE_TTL),
            **(settings or {}),
        }
        services = [
            Service(stack.enter_context(LiveServer(app, env=environment, cwd=folder)), "redis")
            for _ in range(2)
        ]
        yield group, services


async def flow_through_a_failover(
    services: list[Service],
    group: Clients,
    channels: list[str],
    fault: Callable[[Callable[[], None]], None],
) -> tuple[Published, float]:
    """Publish the stream through both services; after FAULT_AFTER rounds, ``fault(mark)``
    (in a thread), which calls ``mark()`` as it kills the master; the seconds from then until
    every Python client has a message published after it (the stream goes on until then,
    however long a client takes to come back); then wait until every client has everything,
    and replay each client's view."""
    published = Published(channels)
    published.at = AnsweredOnce()
    round_done = asyncio.Event()
    waiting = [True]  # for a message published after the failover
    publishing = asyncio.create_task(
        publish_stream(services, published, round_done, more=lambda: waiting[0])
    )
    try:
        await rounds_published(published, round_done, FAULT_AFTER)
        marks: list[tuple[float, int]] = []

        def mark() -> None:
            marks.append((time.monotonic(), published.rounds_done))

        await asyncio.to_thread(fault, mark)
        killed_at, after = marks[0][0], marks[0][1] + 1  # rounds later began after the kill
        for recorder in group.recorders:
            await recorder.until(
                functools.partial(has_a_round_after, recorder.of, after),
                "a message published after the failover",
                SETTLE,
            )
        resumed = time.monotonic() - killed_at
        waiting[0] = False
        await publishing
    finally:
        waiting[0] = False
        if not publishing.done():
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
    try:
        await group.until(lambda seen: everything(seen, published), "every message")
    finally:
        reached = {name: replay(seen, published) for name, seen in group.seen().items()}
    for name, position in reached.items():
        assert position == published.top(), name
    assert isinstance(published.at, AnsweredOnce)
    assert published.at.reissued == [], "positions answered for two messages"
    for name, seen in group.seen().items():
        check_delivered_or_reported(name, seen, published)
    return published, resumed


def has_a_round_after(of: Callable[[str], list[dict[str, Any]]], after: int) -> bool:
    return any(f["data"]["round"] > after for f in of("publication"))


def check_delivered_or_reported(name: str, seen: list[Seen], published: Published) -> None:
    """Each answered publish reached the client, or the client was told it would not: it was
    subscribed (the first time, or with ``recovered: false``) at a later offset of the
    message's epoch, or moved from that epoch into a later one (``recovered: false``)."""
    for channel in published.channels:
        epochs = published.epochs[channel]
        got: set[tuple[str, int, int]] = set()
        entered: dict[str, int] = {}  # epoch -> offset the client was put at, unrecovered
        left: set[str] = set()  # epochs the client was moved out of
        epoch = ""
        for event in (e for e in seen if e.channel == channel):
            if event.kind == "subscribed" and not event.recovered:
                if event.epoch != epoch:
                    left.add(epoch)
                epoch = event.epoch
                entered[epoch] = max(entered.get(epoch, 0), event.offset)
            elif event.kind == "publication":
                got.add((epoch, event.offset, event.round))
        first = next(e for e in seen if e.channel == channel and e.kind == "subscribed")
        for (c, e, offset), round_ in published.at.items():
            if c != channel or (
                first.epoch in epochs and epochs.index(e) < epochs.index(first.epoch)
            ):
                continue
            told = offset <= entered.get(e, 0) or e in left
            assert (e, offset, round_) in got or told, (
                f"{name}: {channel} {e} offset {offset} (round {round_}) was answered "
                "but neither delivered nor reported lost"
            )


def told_of_a_new_epoch(seen: list[Seen], published: Published) -> set[str]:
    """The channels a client was moved to the second epoch of, ``recovered: false``."""
    return {
        e.channel
        for e in seen
        if e.kind == "subscribed"
        and not e.recovered
        and published.epochs[e.channel][1:2] == [e.epoch]
    }


def kill_master(
    group: SentinelGroup, timings: dict[str, float]
) -> Callable[[Callable[[], None]], None]:
    def fault(mark: Callable[[], None]) -> None:
        mark()
        group.master.kill()
        timings["failover"] = group.wait_for_new_master()

    return fault


def test_a_master_killed_under_traffic_fails_over_and_no_message_is_lost(
    project: tuple[Path, str],
) -> None:
    """The replica was in sync: every message arrives once, in order, in one epoch, and the
    old master coming back becomes a replica without disturbing anything."""
    channels = twenty_channels()
    timings: dict[str, float] = {}

    async def scenario(group: SentinelGroup, first: Service, second: Service) -> float:
        urls = [first.ws_url, second.ws_url]
        room = f"/ws/rooms/{unique('failover-')}"  # a broadcast room, for its presence
        async with (
            connect(first.server.ws_url(room)),
            connect(second.server.ws_url(room)),
            clients(urls, [second.ws_url], channels) as together,
        ):
            published, resumed = await flow_through_a_failover(
                [first, second], together, channels, kill_master(group, timings)
            )
            await asyncio.to_thread(group.restart_old_master)
            assert {len(epochs) for epochs in published.epochs.values()} == {1}
            timings["presence"] = await asyncio.to_thread(
                presence_rebuilt, group, [first, second], room
            )
            views = together.seen()
        for name, seen in views.items():
            again = [e for e in seen if e.kind == "subscribed" and e.was_recovering]
            assert all(e.recovered for e in again), (name, again)
        return resumed

    with group_and_services(project) as (group, (first, second)):
        resumed = run(scenario(group, first, second))
    print(
        f"failover {timings['failover']:.1f} s, delivery resumed {resumed:.1f} s, presence "
        f"rebuilt {timings['presence']:.1f} s"
    )
    assert resumed < RESUME_WITHIN
    assert timings["presence"] <= PRESENCE_TTL


def test_a_promoted_replica_that_lacks_the_last_publishes_starts_new_epochs(
    project: tuple[Path, str],
) -> None:
    """Replication to the replica is cut, publishes go on for half a second (answered, and
    delivered live), then the master is killed: the replica promoted has the channels at
    older offsets under the same epochs. Each channel moves to a new epoch; clients are told
    (``recovered: false``), and no offset is answered for two messages."""
    channels = twenty_channels()
    timings: dict[str, float] = {}

    async def scenario(group: SentinelGroup, first: Service, second: Service) -> Published:
        def fault(mark: Callable[[], None]) -> None:
            group.relay.cut()
            time.sleep(0.5)  # about 7 rounds, 140 publishes the replica will not have
            kill_master(group, timings)(mark)

        urls = [first.ws_url, second.ws_url]
        async with clients(urls, [second.ws_url], channels) as together:
            published, resumed = await flow_through_a_failover(
                [first, second], together, channels, fault
            )
            views = together.seen()
        print(f"failover {timings['failover']:.1f} s, delivery resumed {resumed:.1f} s")
        assert resumed < RESUME_WITHIN
        assert {len(epochs) for epochs in published.epochs.values()} == {2}
        for name, seen in views.items():
            assert told_of_a_new_epoch(seen, published) == set(channels), name
        return published

    with group_and_services(project, failover_timeout_ms=60_000) as (group, (first, second)):
        run(scenario(group, first, second))


def refused_for_want_of_a_replica(service: Service, channel: str) -> str:
    """Publish on ``channel`` through ``service`` until the answer is a 503 saying that no
    replica confirmed the message (the hub may first need to reach the new master); that
    answer's detail. A publish answered meanwhile fails the test: no replica could have it."""
    deadline = time.monotonic() + SETTLE
    while True:
        try:
            answer = service.publish(channel, {"probe": True})
        except urllib.error.HTTPError as error:
            detail = str(json.load(error).get("detail", ""))
            if error.code == 503 and "no replica confirmed" in detail:
                return detail
        else:
            raise AssertionError(f"a publish was answered with no replica to have it: {answer}")
        assert time.monotonic() < deadline, "publishes were never refused for want of a replica"
        time.sleep(0.05)


@pytest.mark.parametrize("replica_behind", [False, True], ids=["in-sync", "replica-behind"])
def test_with_wait_replicas_every_answered_publish_survives_a_killed_master(
    project: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, replica_behind: bool
) -> None:
    """``REDIS_WAIT_REPLICAS=1``: a publish is answered once the replica has it, so the
    replica promoted when the master is killed under traffic has every answered publish.
    Each client gets each of them, message by message; a channel moves to a new epoch
    (and every client is told, ``recovered: false``) only where the publish in flight at
    the kill, refused, had been run by the old master and seen by a process: at most one
    channel, the publisher sending one message at a time. With replication cut half a
    second before the kill (``replica_behind``), that publish is refused and run at least
    once: exactly one channel moves. The new master has no replica until the old one
    comes back as its replica: meanwhile every publish is refused (503, "no replica
    confirmed"), then answered again."""
    # The publish in flight at the kill is retried until the old master is a replica.
    monkeypatch.setattr(test_centrifuge_faults, "SETTLE", SETTLE + REPLICA_BACK_WITHIN)
    channels = twenty_channels()
    timings: dict[str, float] = {}

    async def scenario(group: SentinelGroup, first: Service, second: Service) -> Published:
        def fault(mark: Callable[[], None]) -> None:
            if replica_behind:
                group.relay.cut()
                time.sleep(0.5)  # the publish in flight is refused (and run) at least once
            kill_master(group, timings)(mark)
            start = time.monotonic()
            detail = refused_for_want_of_a_replica(first, unique("news:probe-"))
            timings["refused"] = time.monotonic() - start
            assert detail.startswith("Broadcast unavailable: no replica confirmed"), detail
            start = time.monotonic()
            group.restart_old_master(REPLICA_BACK_WITHIN)
            timings["replica back"] = time.monotonic() - start

        urls = [first.ws_url, second.ws_url]
        async with clients(urls, [second.ws_url], channels) as together:
            published, resumed = await flow_through_a_failover(
                [first, second], together, channels, fault
            )
            views = together.seen()
        moved = {c for c in channels if len(published.epochs[c]) > 1}
        refused = {c for c in channels if published.failed.get(c)}
        print(
            f"failover {timings['failover']:.1f} s, refused for want of a replica after "
            f"{timings['refused']:.1f} s, old master a replica again after "
            f"{timings['replica back']:.1f} s, delivery resumed {resumed:.1f} s; channels "
            f"with a refused publish {len(refused)}, moved to a new epoch {len(moved)}"
        )
        assert {len(epochs) for epochs in published.epochs.values()} <= {1, 2}
        assert len(moved) == 1 if replica_behind else len(moved) <= 1, moved
        assert moved <= refused, (moved, dict(published.failed))
        for name, seen in views.items():
            assert told_of_a_new_epoch(seen, published) == moved, name
            again = [
                e
                for e in seen
                if e.kind == "subscribed" and e.was_recovering and e.channel not in moved
            ]
            assert all(e.recovered for e in again), (name, again)
        return published

    settings = {"REDIS_WAIT_REPLICAS": "1"}
    lossy = {"failover_timeout_ms": 60_000} if replica_behind else {}
    with group_and_services(project, settings, **lossy) as (group, (first, second)):
        run(scenario(group, first, second))


async def next_text(subscription: Subscription) -> str:
    text = await asyncio.wait_for(subscription.next(), 5)
    assert text is not None, "the subscription ended"
    return text


async def received_in_order(
    subscription: Subscription, positions: list[Position]
) -> list[dict[str, Any]]:
    """Read the subscribed notice and a broadcast for each of ``positions`` (the publishes'
    answers), asserting they came once and in order, in one epoch from offset 1; the
    broadcasts."""
    texts = [json.loads(await next_text(subscription)) for _ in range(len(positions) + 1)]
    assert texts[0]["type"] == "subscribed"
    broadcasts = texts[1:]
    assert [t["type"] for t in broadcasts] == ["broadcast"] * len(positions), json.dumps(texts)
    assert [Position(t["offset"], t["epoch"]) for t in broadcasts] == positions
    assert positions == [Position(n, positions[0].epoch) for n in range(1, len(positions) + 1)]
    return broadcasts


def test_a_failover_that_leaves_the_old_master_running_moves_every_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``SENTINEL FAILOVER``: the old master stays up as a replica, so no connection breaks
    by itself (its pub/sub connection would still hear the replicated publishes). The hub
    asks the sentinels every second and moves both connections to the new master; every
    message arrives once, in order, in one epoch."""

    async def scenario(group: SentinelGroup) -> None:
        async with RedisHub(group.url, prefix="moved:", timeout=1.0) as hub:
            subscription = await hub.subscribe("room")
            positions = [await hub.publish("room", {"n": n}) for n in range(1, 6)]
            # A planned failover: the replica has every publish first. (SENTINEL FAILOVER
            # itself does not wait for it: a replica a publish behind would be promoted, and
            # the hub would rightly start a new epoch, the case of the test above.)
            with group.master.client() as master:
                assert master.execute_command("WAIT", 1, 5000) == 1
            with group.sentinels[0].client() as sentinel:
                sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
            await asyncio.to_thread(group.wait_for_new_master)
            # Writes the old master takes until it is demoted would be lost (and detected: a
            # new epoch); here publishing waits until it is a replica, refusing writes.
            await asyncio.to_thread(group.wait_until_replica, group.master)
            deadline = time.monotonic() + 10
            while True:  # publishes refused by the demoted master are retried
                try:
                    positions.append(await hub.publish("room", {"n": 6}))
                    break
                except HubUnavailable:
                    assert time.monotonic() < deadline, "no publish after the failover"
                    await asyncio.sleep(0.05)
            replica_port = group.replica.port
            while not all(getattr(c, "port", 0) == replica_port for c in hub._connections()):
                assert time.monotonic() < deadline, "a connection stayed on the old master"
                await asyncio.sleep(0.05)
            positions += [await hub.publish("room", {"n": n}) for n in range(7, 11)]
            broadcasts = await received_in_order(subscription, positions)
        assert [b["message"]["n"] for b in broadcasts] == list(range(1, 11))

    with SentinelGroup() as group, caplog.at_level(logging.WARNING):
        asyncio.run(scenario(group))
    assert any("moved to 127.0.0.1:" in r.getMessage() for r in caplog.records), caplog.text


def test_with_a_sentinel_group_per_shard_one_fails_over_while_the_other_carries_on() -> None:
    """Two shards, each its own Sentinel group (``REDIS_URL`` lists both): the first's
    master is killed. Publishes on the second shard's channel are answered all along;
    those on the first's are refused until its replica is promoted, then answered again.
    Each subscriber gets every answered message once, in order, in one epoch."""

    async def scenario(first: SentinelGroup, second: SentinelGroup) -> None:
        names = [f"room-{n}" for n in range(100)]
        lost = next(name for name in names if shard_index(name, 2) == 0)
        kept = next(name for name in names if shard_index(name, 2) == 1)
        answered: dict[str, list[Position]] = {lost: [], kept: []}
        async with redis_hub([first.url, second.url], prefix="shards:", timeout=1.0) as hub:
            subscriptions = {channel: await hub.subscribe(channel) for channel in answered}
            for n in range(1, 4):
                for channel, positions in answered.items():
                    positions.append(await hub.publish(channel, {"n": n}))
            with first.master.client() as master:  # the replica has all: nothing is lost
                assert master.execute_command("WAIT", 1, 5000) == 1
            first.master.kill()
            refused, n = 0, 3
            deadline = time.monotonic() + 30 + DOWN_AFTER_MS / 1000
            while True:  # until the first shard answers again, after refusing
                n += 1
                answered[kept].append(await hub.publish(kept, {"n": n}))  # never refused
                try:
                    answered[lost].append(await hub.publish(lost, {"n": n}))
                    if refused:
                        break
                except HubUnavailable:
                    refused += 1
                assert time.monotonic() < deadline, "the first shard did not come back"
                await asyncio.sleep(0.05)
            for channel, positions in answered.items():
                positions.append(await hub.publish(channel, {"n": n + 1}))
            for channel, positions in answered.items():
                await received_in_order(subscriptions[channel], positions)
        print(f"first shard refused {refused} publishes; the second answered all {n + 1}")
        assert refused > 0

    with (
        SentinelGroup(down_after_ms=DOWN_AFTER_MS) as first,
        SentinelGroup(down_after_ms=DOWN_AFTER_MS) as second,
    ):
        asyncio.run(scenario(first, second))
