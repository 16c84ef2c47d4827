"""`RedisHub`: the broadcast hub across processes and machines, through Redis pub/sub.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``); only projects whose broadcast backend is Redis have it. It uses redis-py's
asyncio client, and passes the same contract tests as `MemoryHub` (``broadcast.py``).

- **Publishing** is one ``PUBLISH`` per message, on a pool of connections. If Redis cannot be
  reached, `publish` raises `HubUnavailable` at once (connection refused) or after
  ``timeout`` seconds (no answer): it never hangs. A pooled connection found closed (as
  after a Redis restart) is replaced and the command sent once more, at once.
- **Subscribing** uses one pub/sub connection per hub (per process) for every channel that
  has local subscribers: ``SUBSCRIBE`` when a channel gets its first local subscriber,
  ``UNSUBSCRIBE`` when its last one leaves. A subscription goes live when Redis confirms.
- **Reconnecting.** One task holds the pub/sub connection. When it breaks (Redis restarts,
  the network fails, or Redis stays silent for ``health_check_seconds`` after a ``PING``
  sent after as long a quiet), every live subscription gets a gap of unknown size (Redis
  pub/sub is at-most-once: what is published meanwhile is lost), and the task reconnects
  with capped exponential backoff (50 ms doubling up to 2 s, jittered) and subscribes again
  to every channel that still has local subscribers. Local subscribers stay, and go live
  again when Redis confirms.
- **Names.** A channel is ``prefix + channel`` on Redis, so several services (or staging and
  production) can share one Redis.

Redis disconnects a subscriber that lets its output buffer grow too far
(``client-output-buffer-limit pubsub``: 32 MiB, or 8 MiB for a minute, by default). This hub
reads its connection continuously into the subscriptions' own bounded queues, so only a
stalled process reaches that limit; it then reconnects as after any other loss.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .broadcast import DEFAULT_QUEUE_SIZE, Fanout, Hub, HubClosed, HubUnavailable, Subscription

logger = logging.getLogger(__name__)

CONNECTION_ERRORS: Final = (RedisError, OSError, TimeoutError)
"""What a lost or unreachable Redis raises."""
FIRST_RETRY_SECONDS: Final = 0.05
LAST_RETRY_SECONDS: Final = 2.0


class RedisHub(Hub):
    """A hub whose channels are Redis pub/sub channels: it reaches every process on one Redis.

    ``url`` is a Redis URL (``redis://host:6379/0``, ``rediss://`` for TLS, ``unix://``).
    ``timeout`` bounds a publish and a connection attempt, in seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        timeout: float = 2.0,
        health_check_seconds: float = 10.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.health_check_seconds = health_check_seconds
        self._fanout = Fanout(queue_size)
        self._client: Redis | None = None
        """For publishing."""
        self._subscriber: Redis | None = None
        """For the pub/sub connection, which the hub alone reconnects."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = asyncio.Event()
        self._tried = asyncio.Event()
        """Set once the first connection attempt has succeeded or failed."""
        self._commands = asyncio.Lock()
        """Held while a command is written to the pub/sub connection."""
        self._pubsub: PubSub | None = None
        """The pub/sub connection, while it is up."""
        self._subscribed: set[str] = set()
        """Channels subscribed on the current connection (confirmed or not)."""
        self._unconfirmed: Counter[str] = Counter()
        """SUBSCRIBE commands sent on the current connection that Redis has not confirmed."""

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._connected.is_set()

    async def start(self) -> None:
        """Start holding the pub/sub connection; wait up to ``timeout`` for a first answer.

        An unreachable Redis does not stop the start: the hub logs it and keeps trying, and
        publishing answers `HubUnavailable` meanwhile.
        """
        if self._task is not None:
            return
        self._closed = False
        self._client = self._new_client(Retry(NoBackoff(), 1, (RedisConnectionError,)))
        self._subscriber = self._new_client(Retry(NoBackoff(), 0, ()))
        self._task = asyncio.create_task(self._hold_connection(self._subscriber), name="RedisHub")
        try:
            async with asyncio.timeout(self.timeout):
                await self._tried.wait()
        except TimeoutError:
            pass  # the connection task logs it and keeps trying

    async def publish(self, channel: str, text: str) -> None:
        client = self._client
        if self._closed or client is None:
            raise HubClosed("broadcast unavailable: the service is stopping")
        try:
            async with asyncio.timeout(self.timeout):
                await client.publish(self.prefix + channel, text)
        except CONNECTION_ERRORS as error:
            logger.debug("publishing on %s failed: %r", channel, error)
            raise HubUnavailable(
                "broadcast unavailable: the message was not sent; try again later"
            ) from error

    async def subscribe(self, channel: str) -> Subscription:
        if self._closed:
            raise HubClosed("broadcast unavailable: the service is stopping")
        subscription = self._fanout.add(channel)
        async with self._commands:
            await self._follow(channel, joining=subscription)
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        if self._fanout.remove(subscription):
            async with self._commands:
                await self._follow(subscription.channel)

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self._fanout.end_all()
        clients = [self._client, self._subscriber]
        self._client = self._subscriber = None
        for client in clients:
            if client is not None:
                await client.aclose()

    def _new_client(self, retry: Retry) -> Redis:
        return Redis.from_url(
            self.url,
            decode_responses=True,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=retry,
        )

    async def _follow(self, channel: str, joining: Subscription | None = None) -> None:
        """Make the pub/sub connection follow the local subscribers of ``channel``.

        Called with the command lock held, ``joining`` being a subscription just added.
        Without a connection there is nothing to do: the connection task subscribes to
        every channel when it connects. Constant time in the channel's subscriber count:
        10,000 clients joining one room must not walk it 10,000 times.
        """
        pubsub = self._pubsub
        if pubsub is None:
            return
        wanted = self._fanout.has_subscriptions(channel)
        try:
            if wanted and channel not in self._subscribed:
                self._subscribed.add(channel)
                self._unconfirmed[channel] += 1
                await pubsub.subscribe(self.prefix + channel)
            elif joining is not None and not self._unconfirmed[channel]:
                joining.go_live()  # Redis confirmed this channel already; the others are live
            elif not wanted and channel in self._subscribed:
                self._subscribed.discard(channel)
                await pubsub.unsubscribe(self.prefix + channel)
        except CONNECTION_ERRORS as error:  # the connection task sees the loss too
            logger.debug("pub/sub command for %s failed: %r", channel, error)

    async def _hold_connection(self, client: Redis) -> None:
        """The hub's task: connect, listen, and after any loss reconnect and resubscribe."""
        attempts = 0
        ever_connected = False
        lost_at: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            pubsub = client.pubsub()
            try:
                channels = await self._connect(pubsub)
                if lost_at is None:
                    logger.info("connected to Redis at %s", _shown(self.url))
                else:
                    logger.warning(
                        "%s Redis at %s after %.1f s (channels subscribed: %d)",
                        "reconnected to" if ever_connected else "connected to",
                        _shown(self.url),
                        loop.time() - lost_at,
                        channels,
                    )
                attempts, lost_at, ever_connected = 0, None, True
                self._tried.set()
                await self._listen(pubsub)
            except CONNECTION_ERRORS as error:
                if lost_at is None:
                    lost_at = loop.time()
                    what = "lost the connection to" if self._pubsub is pubsub else "cannot reach"
                    logger.warning(
                        "%s Redis at %s (%s); broadcast messages are lost until it is back; "
                        "retrying",
                        what,
                        _shown(self.url),
                        _reason(error),
                    )
                else:
                    logger.debug("still cannot reach Redis: %s", _reason(error))
            except Exception:  # a bug must not end broadcasting for the life of the process
                lost_at = lost_at or loop.time()
                logger.exception("the Redis pub/sub connection failed; reconnecting")
            finally:
                self._tried.set()
                await self._drop_connection(pubsub)
            attempts += 1
            await asyncio.sleep(_backoff(attempts))

    async def _connect(self, pubsub: PubSub) -> int:
        """Connect ``pubsub`` and subscribe to every channel with local subscribers."""
        async with self._commands:
            async with asyncio.timeout(self.timeout):
                await pubsub.connect()  # type: ignore[no-untyped-call]  # redis-py types
                channels = self._fanout.channels()
                if channels:
                    await pubsub.subscribe(*(self.prefix + channel for channel in channels))
                else:
                    await pubsub.ping()
            self._subscribed = set(channels)
            self._unconfirmed = Counter(channels)
            self._pubsub = pubsub
            self._connected.set()
        return len(channels)

    async def _listen(self, pubsub: PubSub) -> None:
        """Deliver what Redis sends until the connection fails (it raises then)."""
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self.health_check_seconds)
            if message is None:
                if pinged:
                    raise TimeoutError(
                        f"no answer to a PING within {self.health_check_seconds:g} s"
                    )
                async with self._commands:
                    await pubsub.ping()
                pinged = True
                continue
            pinged = False
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind not in ("message", "subscribe"):
            return  # unsubscribe confirmations and PING answers
        channel = str(message["channel"]).removeprefix(self.prefix)
        if kind == "message":
            self._fanout.deliver(channel, str(message["data"]))
            return
        self._unconfirmed[channel] -= 1
        if self._unconfirmed[channel] <= 0:
            del self._unconfirmed[channel]
            if channel in self._subscribed:
                self._go_live(channel)

    def _go_live(self, channel: str) -> None:
        for subscription in self._fanout.subscriptions(channel):
            subscription.go_live()

    async def _drop_connection(self, pubsub: PubSub) -> None:
        """Forget ``pubsub``; live subscriptions get a gap, unless the hub is closing."""
        if self._pubsub is pubsub:
            self._pubsub = None
            self._connected.clear()
            self._subscribed.clear()
            self._unconfirmed.clear()
            if not self._closed:
                for channel in self._fanout.channels():
                    for subscription in self._fanout.subscriptions(channel):
                        subscription.interrupt()
        try:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py types
        except CONNECTION_ERRORS as error:
            logger.debug("closing the pub/sub connection failed: %r", error)


def _backoff(attempts: int) -> float:
    """Seconds to wait before reconnection attempt ``attempts`` + 1: doubling, capped, jittered."""
    ceiling = min(LAST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2.0 ** min(attempts - 1, 16))
    return ceiling * random.uniform(0.5, 1.0)


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _shown(url: str) -> str:
    """``url`` without its user name and password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
