"""Broadcast: every message published on a channel reaches every connection on that channel.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Framework-free, standard library only: `run_broadcast` is written against
`SessionSocket`, like the other session helpers, so it serves every face.

A `Hub` carries messages between the connections of a channel. `MemoryHub` does it inside
one process; `RedisHub` (``redis_hub.py``, in projects that chose the Redis backend) does it
through Redis pub/sub, across processes and machines. Both keep their local subscribers in
a `Fanout` and pass the same contract tests (``tests/hub_contract.py``).

Every subscription has its own bounded queue, filled without waiting: a slow subscriber
never delays the publisher or the other subscribers. When its queue is full, its oldest
queued message is dropped (it gets the newest ones) and the gap is reported to it in order,
as ``{"type": "dropped", "channel": ..., "count": n}``; ``"count": null`` marks a gap of
unknown size, when a hub lost its backend for a while. Messages already queued are sent
before the gap notice; nothing is ever reordered.

The client protocol of a broadcast connection (`run_broadcast`):

- ``{"type": "subscribed", "channel": ...}`` comes first, once the connection receives
  the channel's messages (at once in memory; once Redis confirms the subscription);
- each JSON object the client sends, keepalives aside, is published to the channel and
  reaches every connection on it, the sender's included, as ``{"type": "broadcast",
  "channel": ..., "server_ns": ..., "message": {...}}``; every connection sees the
  channel's messages in the same order;
- a message the hub cannot publish (its backend is unreachable) gets ``{"type": "error",
  "reason": ...}`` at once, and the session goes on;
- when the hub closes (the service shuts down), the connection is closed with 1012.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from .session import (
    WS,
    JsonHandler,
    SessionSocket,
    TaskFactory,
    now_ns,
    receive_json,
    run_websocket,
    send_json,
)

logger = logging.getLogger(__name__)

SERVICE_RESTART: Final = 1012
HUB_STATE_KEY: Final = "broadcast_hub"
"""Where the app's lifespan puts its hub in the ASGI state (see `hub_of`)."""
DEFAULT_QUEUE_SIZE: Final = 100


class HubUnavailable(Exception):
    """The hub could not publish a message (its backend is unreachable): it was not sent."""


class HubClosed(HubUnavailable):
    """The hub is closed (the service is stopping): nothing can be published any more."""


@dataclass
class _Gap:
    """Messages lost at this place in a subscription's queue; None when the count is unknown."""

    count: int | None


@dataclass(frozen=True)
class _Notice:
    """A notice for the subscriber (never dropped to make room)."""

    text: str


class Subscription:
    """One connection's place on a channel: the queue of what to send it, bounded.

    Hubs fill it with `deliver` (never waits); the connection empties it with `next`.
    """

    def __init__(self, channel: str, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size!r}.")
        self.channel = channel
        self.queue_size = queue_size
        self.dropped = 0
        """How many messages were dropped because the queue was full."""
        self.live = False
        """True while the hub delivers the channel's messages to this subscription."""
        self._entries: deque[str | _Gap | _Notice] = deque()
        self._messages = 0
        self._ever_live = False
        self._ended = False
        self._wakeup = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self._ended

    def go_live(self) -> None:
        """From now on the channel's messages arrive; the first time, say so to the client."""
        if self._ended or self.live:
            return
        self.live = True
        if not self._ever_live:
            self._ever_live = True
            self._put(_Notice(subscribed_notice(self.channel)))

    def interrupt(self) -> None:
        """The hub lost its backend: messages published from now on may never arrive."""
        if self.live:
            self.live = False
            self._put(_Gap(None))

    def deliver(self, text: str) -> None:
        """Queue one message; when the queue is full, drop the oldest queued message."""
        if self._ended:
            return
        if self._messages >= self.queue_size:
            self._drop_oldest()
        self._messages += 1
        self._put(text)

    def end(self) -> None:
        """No more messages will come: `next` returns what is queued, then None."""
        self._ended = True
        self.live = False
        self._wakeup.set()

    async def next(self) -> str | None:
        """The next text to send the client (a message or a notice); None once ended."""
        while not self._entries:
            if self._ended:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        entry = self._entries.popleft()
        if isinstance(entry, _Notice):
            return entry.text
        if isinstance(entry, _Gap):
            return dropped_notice(self.channel, entry.count)
        self._messages -= 1
        return entry

    def _put(self, entry: str | _Gap | _Notice) -> None:
        last = self._entries[-1] if self._entries else None
        if isinstance(entry, _Gap) and isinstance(last, _Gap):
            last.count = _added(last.count, entry.count)
        else:
            self._entries.append(entry)
        self._wakeup.set()

    def _drop_oldest(self) -> None:
        """Drop the oldest queued message; a gap takes its place (or grows, beside one)."""
        index = next(i for i, entry in enumerate(self._entries) if isinstance(entry, str))
        del self._entries[index]
        self._messages -= 1
        self.dropped += 1
        gaps = [
            i
            for i in (index - 1, index)
            if 0 <= i < len(self._entries) and isinstance(self._entries[i], _Gap)
        ]
        if not gaps:
            self._entries.insert(index, _Gap(1))
            return
        gap = self._entries[gaps[0]]
        assert isinstance(gap, _Gap)
        gap.count = _added(gap.count, 1)
        if len(gaps) == 2:  # the dropped message sat between two gaps: one gap now
            second = self._entries[gaps[1]]
            assert isinstance(second, _Gap)
            gap.count = _added(gap.count, second.count)
            del self._entries[gaps[1]]


def _added(count: int | None, more: int | None) -> int | None:
    """Two gaps' sizes together; unknown if either is."""
    return None if count is None or more is None else count + more


class Fanout:
    """A hub's local subscriptions, by channel: delivers a channel's messages to each live one."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._channels: dict[str, set[Subscription]] = {}

    def add(self, channel: str) -> Subscription:
        subscription = Subscription(channel, self.queue_size)
        self._channels.setdefault(channel, set()).add(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> bool:
        """End ``subscription``; True if its channel has no subscription left."""
        subscription.end()
        subscribers = self._channels.get(subscription.channel)
        if subscribers is None or subscription not in subscribers:
            return False
        subscribers.discard(subscription)
        if subscribers:
            return False
        del self._channels[subscription.channel]
        return True

    def channels(self) -> list[str]:
        """The channels that have at least one subscription."""
        return list(self._channels)

    def subscriptions(self, channel: str) -> list[Subscription]:
        return list(self._channels.get(channel, ()))

    def has_subscriptions(self, channel: str) -> bool:
        return channel in self._channels  # remove() drops a channel's empty set

    def deliver(self, channel: str, text: str) -> None:
        for subscription in self._channels.get(channel, ()):
            if subscription.live:
                subscription.deliver(text)

    def end_all(self) -> None:
        for subscribers in self._channels.values():
            for subscription in subscribers:
                subscription.end()
        self._channels.clear()


class Hub(abc.ABC):
    """Carries messages between the connections of each channel.

    Use it as an async context manager (``async with hub:``), which starts and closes it,
    or call `start` and `close`. ``publish`` delivers a text to every live subscription of
    the channel, in this process and, for hubs with a backend, in every process on it.
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Get ready to publish and subscribe."""

    @abc.abstractmethod
    async def publish(self, channel: str, text: str) -> None:
        """Send ``text`` to every subscription of ``channel``, or raise `HubUnavailable`.

        Returns without waiting for subscribers: each has its own bounded queue.
        """

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> Subscription:
        """A new subscription to ``channel``; it receives messages once it is live."""

    @abc.abstractmethod
    async def unsubscribe(self, subscription: Subscription) -> None:
        """End ``subscription`` (again is harmless)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End every subscription and release the hub's connections (again is harmless)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class MemoryHub(Hub):
    """A hub inside one process: reaches the connections of this process only."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._fanout = Fanout(queue_size)
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def publish(self, channel: str, text: str) -> None:
        if self._closed:
            raise HubClosed("The broadcast hub is closed; nothing can be published.")
        self._fanout.deliver(channel, text)

    async def subscribe(self, channel: str) -> Subscription:
        if self._closed:
            raise HubClosed("The broadcast hub is closed; nothing can be subscribed.")
        subscription = self._fanout.add(channel)
        subscription.go_live()
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        self._fanout.remove(subscription)

    async def close(self) -> None:
        self._closed = True
        self._fanout.end_all()


def subscribed_notice(channel: str) -> str:
    return _compact({"type": "subscribed", "channel": channel})


def dropped_notice(channel: str, count: int | None) -> str:
    return _compact({"type": "dropped", "channel": channel, "count": count})


def envelope(channel: str, message: Mapping[str, Any]) -> str:
    """The text that every connection on ``channel`` receives for a client's ``message``."""
    return _compact(
        {"type": "broadcast", "channel": channel, "server_ns": now_ns(), "message": message}
    )


def _compact(value: Any) -> str:
    return _ENCODER.encode(value)


# One encoder for every message (json.dumps with options builds a new one each call), with
# the options of session.send_json: compact, UTF-8 as is, no NaN.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def hub_of(websocket: SessionSocket) -> Hub:
    """The hub that the app's lifespan put in the ASGI state (under `HUB_STATE_KEY`)."""
    state = websocket.scope.get("state") or {}
    hub = state.get(HUB_STATE_KEY)
    if not isinstance(hub, Hub):
        raise RuntimeError(
            "No broadcast hub in the ASGI state: run the app with its lifespan "
            "(uvicorn does unless --lifespan off; use TestClient as a context manager)."
        )
    return hub


async def run_broadcast(websocket: WS, hub: Hub, channel: str | None = None) -> None:
    """Serve one connection of a broadcast endpoint until it ends (see the module's docs).

    ``channel`` defaults to the connection's path, so ``/ws/rooms/{room}`` has one channel
    per room. Accepts and closes the socket as `run_websocket` does; the subscription
    ends with the session.
    """
    channel = channel or str(websocket.scope["path"])
    subscription = await hub.subscribe(channel)
    try:
        await run_websocket(websocket, _relay(subscription), receive_json(_publisher(hub, channel)))
    finally:
        await hub.unsubscribe(subscription)
        if subscription.dropped:
            logger.warning(
                "websocket %s: %d broadcast messages dropped for a slow reader",
                channel,
                subscription.dropped,
            )


def _relay(subscription: Subscription) -> TaskFactory[SessionSocket]:
    async def relaying(websocket: SessionSocket) -> None:
        while (text := await subscription.next()) is not None:
            await websocket.send_text(text)
        await websocket.close(SERVICE_RESTART)  # the hub closed: the service is stopping

    return relaying


def _publisher(hub: Hub, channel: str) -> JsonHandler[SessionSocket]:
    async def publish(websocket: SessionSocket, message: dict[str, Any]) -> None:
        try:
            await hub.publish(channel, envelope(channel, message))
        except HubUnavailable as error:
            await send_json(websocket, {"type": "error", "reason": str(error)})

    return publish
