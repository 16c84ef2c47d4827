"""Channels endpoints under faults, checked message by message with the Centrifuge SDKs.

While a publisher sends a steady, bounded stream to twenty ``news:`` channels through
``POST /api/publish``, a fault strikes: Redis cuts the service's pub/sub connection, Redis
restarts with or without its data, a client's TCP connection is reset. Clients are the
real SDKs (centrifuge-python in this process, npm ``centrifuge`` through
``conformance/centrifuge/drive.mjs``), and what each saw is replayed against what the
publisher was told (``{"offset", "epoch"}`` of each publish): under each epoch a channel's
publications come with contiguous offsets, each once, and each is the message published
at that offset of that epoch. The Redis project is rendered with FastAPI, the memory one
with the raw-ASGI face, so both faces meet a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import urllib.error
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
import redis
from websocket.testing import LiveServer, RedisServer  # the vendored backend

from tests.conftest import render, require_redis
from tests.test_centrifuge_sdks import (
    ENDPOINTS,
    PATH,
    PUBLISH_KEY,
    SECRET,
    NodeClient,
    Proxy,
    Recorder,
    Service,
    node_client,
    python_client,
    run,
    subscribe,
    unique,
)

E = TypeVar("E")

pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.xdist_group("centrifuge-faults"),
]

CHANNELS = 20
ROUNDS = 30  # one message to each channel a round: 600 messages in all
ROUNDS_PER_SECOND = 15.0
FAULT_AFTER = 10  # rounds published before the fault
SETTLE = 20.0  # seconds the clients may take to have everything once publishing is over
ENVIRONMENT = {
    "TOKEN_HMAC_SECRET_KEY": SECRET,
    "PUBLISH_API_KEY": PUBLISH_KEY,
    "ANONYMOUS_CONNECTIONS": "yes",
}


@pytest.fixture(scope="module")
def projects(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> dict[str, tuple[Path, str]]:
    """The rendered projects by backend: (project folder, app import path)."""
    made = {}
    for framework, backend in (("fastapi", "redis"), ("asgi", "memory")):
        answers = {"endpoints": ENDPOINTS, "framework": framework, "broadcast_backend": backend}
        folder = tmp_path_factory.mktemp(f"faults-{framework}-{backend}")
        project = render(folder, cookiecutter_config, answers)
        [app] = project.glob("*/app.py")
        made[backend] = (project, f"{app.parent.name}.app:app")
    return made


@contextlib.contextmanager
def serve(
    projects: dict[str, tuple[Path, str]], backend: str, redis_url: str | None = None
) -> Iterator[Service]:
    project, app = projects[backend]
    environment = dict(ENVIRONMENT)
    if redis_url is not None:
        environment["REDIS_URL"] = redis_url
    with LiveServer(app, env=environment, cwd=project) as server:
        yield Service(server, backend)


# The stream published, as the service answered it.


@dataclass
class Published:
    """What the publisher sent and what the service answered for each message."""

    channels: list[str]
    at: dict[tuple[str, str, int], int] = field(default_factory=dict)
    """(channel, epoch, offset) -> round, from the publish answers."""
    failed: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    """Rounds of each channel with a failed attempt (its message may be in the stream
    twice: a publish that failed on the way back was still made)."""
    epochs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """Each channel's epochs, as the answers named them, in order."""
    rounds_done: int = 0
    ended: bool = False
    """True once the publisher has sent its last round."""

    def top(self) -> dict[str, tuple[str, int]]:
        """Each channel's last (epoch, offset) answered."""
        return {
            c: (
                self.epochs[c][-1],
                max(o for ch, e, o in self.at if (ch, e) == (c, self.epochs[c][-1])),
            )
            for c in self.channels
        }


async def publish_stream(
    services: list[Service],
    published: Published,
    round_done: asyncio.Event,
    more: Callable[[], bool] = lambda: False,
) -> None:
    """ROUNDS rounds at ROUNDS_PER_SECOND, one message per channel a round, through the
    services in turn; a refused publish (Redis away) is retried until it is answered. Past
    ROUNDS, rounds go on while ``more()`` (for up to SETTLE seconds' worth of rounds)."""

    def publish(number: int, channel: str, round_: int) -> None:
        deadline = time.monotonic() + SETTLE
        while True:
            service = services[number % len(services)]
            try:
                answer = service.publish(channel, {"round": round_, "channel": channel})
            except (urllib.error.URLError, OSError):
                published.failed[channel].add(round_)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            published.at[(channel, answer["epoch"], answer["offset"])] = round_
            epochs = published.epochs[channel]
            if not epochs or epochs[-1] != answer["epoch"]:
                epochs.append(answer["epoch"])
            return

    def publish_all() -> None:
        start = time.monotonic()
        number = 0
        round_ = 0
        while round_ < ROUNDS or (more() and round_ < ROUNDS + SETTLE * ROUNDS_PER_SECOND):
            round_ += 1
            for channel in published.channels:
                publish(number, channel, round_)
                number += 1
            published.rounds_done = round_
            loop.call_soon_threadsafe(round_done.set)
            time.sleep(max(0.0, start + round_ / ROUNDS_PER_SECOND - time.monotonic()))
        published.ended = True

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(publish_all)


async def rounds_published(published: Published, round_done: asyncio.Event, n: int) -> None:
    async with asyncio.timeout(SETTLE):
        while published.rounds_done < n:
            round_done.clear()
            await round_done.wait()


# What a client saw, in one shape for both SDKs.


@dataclass(frozen=True)
class Seen:
    kind: str  # "subscribed", "publication" or "unsubscribed"
    channel: str
    offset: int = 0
    epoch: str = ""
    recovered: bool = False
    was_recovering: bool = False
    round: int = 0
    code: int = 0


def seen_in_python(event: tuple[str, dict[str, Any]]) -> Seen | None:
    kind, f = event
    if kind == "subscribed":
        offset, epoch = f["offset"] or 0, f["epoch"] or ""
        return Seen(kind, f["channel"], offset, epoch, f["recovered"], f["was_recovering"])
    if kind == "publication":
        assert f["data"]["channel"] == f["channel"]
        return Seen(kind, f["channel"], f["offset"], round=f["data"]["round"])
    if kind == "unsubscribed":
        return Seen(kind, f["channel"], code=f["code"])
    return None


def seen_in_node(e: dict[str, Any]) -> Seen | None:
    kind = e["event"]
    if kind == "subscribed":
        position = e["streamPosition"] or {}
        offset, epoch = position.get("offset", 0), position.get("epoch", "")
        return Seen(kind, e["channel"], offset, epoch, e["recovered"], e["wasRecovering"])
    if kind == "publication":
        assert e["data"]["channel"] == e["channel"]
        return Seen(kind, e["channel"], e["offset"], round=e["data"]["round"])
    if kind == "unsubscribed":
        return Seen(kind, e["channel"], code=e["code"])
    return None


class View(Generic[E]):
    """What one client saw, as `Seen` events, converted once each as they come."""

    def __init__(self, events: list[E], convert: Callable[[E], Seen | None]) -> None:
        self.events, self.convert = events, convert
        self.seen: list[Seen] = []
        self.read = 0

    def __call__(self) -> list[Seen]:
        for event in self.events[self.read :]:
            made = self.convert(event)
            if made is not None:
                self.seen.append(made)
        self.read = len(self.events)
        return self.seen


def replay(seen: list[Seen], published: Published) -> dict[str, tuple[str, int]]:
    """Check what a client saw against what was published; each channel's (epoch, offset)
    reached. A subscription that recovered goes on where the client was; one that did not
    starts at the position it was given; each publication is the next offset of its
    channel's epoch, and the message published there."""
    position: dict[str, tuple[str, int]] = {}
    for event in seen:
        channel = event.channel
        if event.kind == "subscribed":
            if event.recovered:
                assert position[channel][0] == event.epoch, (event, position[channel])
                assert event.offset >= position[channel][1], (event, position[channel])
            else:
                position[channel] = (event.epoch, event.offset)
        elif event.kind == "publication":
            assert channel in position, f"a publication before a subscription: {event}"
            epoch, offset = position[channel]
            assert event.offset == offset + 1, (
                f"after {offset} of {epoch}: {event}; the channel's epochs "
                f"{published.epochs.get(channel)}, its last events: {story(seen, event)}"
            )
            round_ = published.at.get((channel, epoch, event.offset))
            if round_ is None:  # a publish whose answer was lost: a round retried
                assert event.round in published.failed.get(channel, set()), (event, epoch)
            else:
                assert event.round == round_, (event, epoch, round_)
            position[channel] = (epoch, event.offset)
    return position


def story(seen: list[Seen], event: Seen) -> list[str]:
    """The last events of ``event``'s channel up to it, briefly."""
    mine = [e for e in seen[: seen.index(event) + 1] if e.channel == event.channel]
    return [
        f"{e.kind} {e.offset}"
        + (f" {e.epoch} recovered={e.recovered}" if e.epoch else "")
        + (f" round {e.round}" if e.round else "")
        + (f" code {e.code}" if e.code else "")
        for e in mine[-8:]
    ]


def everything(seen: list[Seen], published: Published) -> bool:
    """Has the client seen each channel up to the last offset published?"""
    if not published.ended:
        return False
    reached: dict[str, tuple[str, int]] = {}
    epochs: dict[str, str] = {}
    for event in seen:
        if event.kind == "subscribed":
            if not event.recovered:
                reached[event.channel] = (event.epoch, event.offset)
            epochs[event.channel] = event.epoch
        elif event.kind == "publication":
            reached[event.channel] = (epochs[event.channel], event.offset)
    return reached == published.top()


# The clients: each SDK subscribed to every channel, through a proxy it can be cut from.


class Clients:
    """Python SDK clients and Node SDK clients, subscribed to the same channels."""

    def __init__(self, recorders: list[Recorder], nodes: list[NodeClient]) -> None:
        self.recorders, self.nodes = recorders, nodes
        self.views: dict[str, tuple[Recorder | NodeClient, View[Any]]] = {}
        for i, recorder in enumerate(recorders):
            self.views[f"python-{i}"] = (recorder, View(recorder.events, seen_in_python))
        for i, node in enumerate(nodes):
            self.views[f"node-{i}"] = (node, View(node.events, seen_in_node))

    def seen(self) -> dict[str, list[Seen]]:
        return {name: view() for name, (_, view) in self.views.items()}

    async def until(self, done: Callable[[list[Seen]], bool], what: str) -> None:
        """Wait until ``done`` holds for every client's view."""
        for name, (client, view) in self.views.items():
            await client.until(functools.partial(_holds, done, view), f"{name}: {what}", SETTLE)


def _holds(done: Callable[[list[Seen]], bool], view: View[Any]) -> bool:
    return done(view())


@contextlib.asynccontextmanager
async def clients(
    python_urls: list[str], node_urls: list[str], channels: list[str]
) -> AsyncIterator[Clients]:
    async with contextlib.AsyncExitStack() as stack:
        recorders = []
        for url in python_urls:
            client, recorder = await stack.enter_async_context(python_client(url))
            await client.connect()
            for channel in channels:
                await subscribe(client, recorder, channel).subscribe()
            recorders.append(recorder)
        # The Node client's own deadline outlasts every bounded wait of a flow (SETTLE
        # each, read now: the failover tests lengthen it).
        deadline = round((60 + 3 * SETTLE) * 1000)
        nodes = [
            await stack.enter_async_context(
                node_client({"url": url, "channels": channels, "deadline": deadline})
            )
            for url in node_urls
        ]
        group = Clients(recorders, nodes)
        await group.until(
            lambda seen: sum(e.kind == "subscribed" for e in seen) >= len(channels),
            "every channel subscribed",
        )
        yield group


async def flow_with_a_fault(
    services: list[Service],
    group: Clients,
    channels: list[str],
    fault: Callable[[], Any],
) -> Published:
    """Publish the stream through ``services``; after FAULT_AFTER rounds, ``fault()`` (in a
    thread); then wait until every client has every channel up to its last offset, and
    check each client's publications against the answers."""
    published = Published(channels)
    round_done = asyncio.Event()
    publishing = asyncio.create_task(publish_stream(services, published, round_done))
    try:
        await rounds_published(published, round_done, FAULT_AFTER)
        await asyncio.to_thread(fault)
        await publishing
    finally:
        if not publishing.done():
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
    try:
        await group.until(lambda seen: everything(seen, published), "every message")
    finally:  # a wrong event is the better report (the wait then never ends)
        reached = {name: replay(seen, published) for name, seen in group.seen().items()}
    for name, position in reached.items():
        assert position == published.top(), name
    return published


def twenty_channels() -> list[str]:
    prefix = unique("news:faults-")
    return [f"{prefix}-{n}" for n in range(1, CHANNELS + 1)]


# Redis faults.


def test_a_killed_pubsub_connection_is_refilled_from_history_message_by_message(
    projects: dict[str, tuple[Path, str]],
) -> None:
    require_redis()
    channels = twenty_channels()
    killed: list[int] = []

    def kill_pubsub(url: str) -> Callable[[], None]:
        def fault() -> None:
            with redis.Redis.from_url(url) as connection:
                killed.append(connection.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))

        return fault

    async def scenario(service: Service, url: str) -> None:
        async with clients([service.ws_url], [service.ws_url], channels) as group:
            published = await flow_with_a_fault([service], group, channels, kill_pubsub(url))
        assert published.failed == {}  # publishing never stopped
        assert all(len(epochs) == 1 for epochs in published.epochs.values())

    with RedisServer() as redis_server, serve(projects, "redis", redis_server.url) as service:
        run(scenario(service, redis_server.url))
    assert killed == [1]  # the service's one pub/sub connection


@pytest.mark.parametrize("keep_data", [True, False], ids=["keeps-data", "loses-data"])
def test_a_redis_restart_mid_stream(projects: dict[str, tuple[Path, str]], keep_data: bool) -> None:
    """With its data, every message arrives once in order in one epoch; without, clients
    move to the new epoch with recovered false, and no message of one epoch is taken for
    one of the other."""
    require_redis()
    channels = twenty_channels()

    async def scenario(service: Service, redis_server: RedisServer) -> Published:
        def restart() -> None:
            redis_server.stop()
            time.sleep(0.3)  # publishes are refused meanwhile, and retried
            redis_server.start()

        async with clients([service.ws_url], [service.ws_url], channels) as group:
            published = await flow_with_a_fault([service], group, channels, restart)
            views = group.seen()
        assert published.failed, "no publish met the restart"
        for name, seen in views.items():
            resubscribed = [e for e in seen if e.kind == "subscribed" and e.was_recovering]
            if keep_data:
                assert all(e.recovered for e in resubscribed), name
            else:
                moved = {
                    e.channel
                    for e in resubscribed
                    if not e.recovered and e.epoch == published.epochs[e.channel][1]
                }
                assert moved == set(channels), (name, resubscribed)
        return published

    with (
        RedisServer(keep_data=keep_data) as redis_server,
        serve(projects, "redis", redis_server.url) as service,
    ):
        published = run(scenario(service, redis_server))
    epochs = {len(epochs) for epochs in published.epochs.values()}
    assert epochs == ({1} if keep_data else {2})


def test_two_processes_on_one_redis_deliver_each_message_once_in_order(
    projects: dict[str, tuple[Path, str]],
) -> None:
    """Subscribers on both processes, publishes through either in turn, and the first
    process's pub/sub connection killed midway."""
    require_redis()
    channels = twenty_channels()

    async def scenario(first: Service, second: Service, url: str) -> None:
        def kill_pubsub() -> None:
            with redis.Redis.from_url(url) as connection:
                assert connection.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 2

        async with clients([first.ws_url, second.ws_url], [second.ws_url], channels) as group:
            published = await flow_with_a_fault([first, second], group, channels, kill_pubsub)
        assert published.failed == {}
        assert all(len(epochs) == 1 for epochs in published.epochs.values())

    with (
        RedisServer() as redis_server,
        serve(projects, "redis", redis_server.url) as first,
        serve(projects, "redis", redis_server.url) as second,
    ):
        run(scenario(first, second, redis_server.url))


# A client's connection reset.


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_a_reset_client_connection_reconnects_and_recovers_every_message(
    projects: dict[str, tuple[Path, str]], backend: str
) -> None:
    channels = twenty_channels()

    async def scenario(service: Service) -> None:
        proxy = Proxy(service.server.port)
        port = await proxy.start()
        url = f"ws://127.0.0.1:{port}{PATH}"
        try:
            async with clients([url], [url], channels) as group:
                resets: list[int] = []
                loop = asyncio.get_running_loop()

                async def reset() -> None:
                    resets.append(proxy.reset())

                await flow_with_a_fault(  # the fault runs in a thread: reset on the proxy's loop
                    [service],
                    group,
                    channels,
                    lambda: asyncio.run_coroutine_threadsafe(reset(), loop).result(),
                )
                assert resets[0] >= 4  # both sides of both clients' connections
                for recorder in group.recorders:
                    assert len(recorder.of("connected")) == 2
                for node in group.nodes:
                    assert len(node.of("connected")) == 2
                for name, seen in group.seen().items():
                    again = [e for e in seen if e.kind == "subscribed" and e.was_recovering]
                    assert len(again) == len(channels), name
                    assert all(e.recovered for e in again), (name, again)
        finally:
            await proxy.close()

    with contextlib.ExitStack() as stack:
        redis_url = None
        if backend == "redis":
            require_redis()
            redis_url = stack.enter_context(RedisServer()).url
        service = stack.enter_context(serve(projects, backend, redis_url))
        run(scenario(service))


def replay_cases() -> tuple[Published, list[Seen], dict[str, list[Seen]]]:
    """A channel's stream in two epochs; a view of it that is right, and views that are not."""
    published = Published(["news:a"])
    published.at = {("news:a", "e1", 1): 1, ("news:a", "e1", 2): 2, ("news:a", "e2", 1): 3}
    published.epochs["news:a"] = ["e1", "e2"]
    start = Seen("subscribed", "news:a", 0, "e1")
    good = [
        start,
        Seen("publication", "news:a", 1, round=1),
        Seen("publication", "news:a", 2, round=2),
        Seen("subscribed", "news:a", 1, "e2", was_recovering=True),
    ]
    bad = {
        "gap": [start, Seen("publication", "news:a", 2, round=2)],
        "repeat": [start, *good[1:2], Seen("publication", "news:a", 1, round=1)],
        "another epoch's message": [*good[:3], Seen("publication", "news:a", 3, round=3)],
        "wrong message": [start, Seen("publication", "news:a", 1, round=3)],
        "recovered across epochs": [
            *good[:3],
            Seen("subscribed", "news:a", 1, "e2", recovered=True, was_recovering=True),
        ],
    }
    return published, good, bad


def test_replay_follows_a_stream_into_its_new_epoch() -> None:
    published, good, _ = replay_cases()
    assert replay(good, published) == {"news:a": ("e2", 1)}


@pytest.mark.parametrize("case", sorted(replay_cases()[2]))
def test_replay_refuses_a_view_that_is_wrong(case: str) -> None:
    """The checker itself: what the tests above would miss if it let these through."""
    published, _, bad = replay_cases()
    with pytest.raises(AssertionError):
        replay(bad[case], published)
