"""`RedisHub`: the broadcast hub across processes and machines, through Redis.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``); only projects whose broadcast backend is Redis have it. It uses redis-py's
asyncio client, and passes the same contract tests as `MemoryHub` (``broadcast.py``).

- **Publishing** is one Lua script per message, so it is one atomic step in Redis: it bumps
  the channel's offset (a hash, which also holds the epoch), appends the message to the
  channel's history (a stream trimmed to ``history_size`` entries, entry id = offset,
  expiring ``history_ttl`` seconds after the last publish) and publishes it prefixed
  with its offset and epoch. Every process therefore sees a channel's messages with
  contiguous offsets in one order. If Redis cannot be reached, `publish` raises
  `HubUnavailable` at once (connection refused) or after ``timeout`` seconds (no answer):
  it never hangs. A pooled connection found closed (as after a Redis restart) is replaced
  and the command sent once more, at once. Any process can publish: ``async with
  RedisHub(url, prefix=...) as hub: await hub.publish(channel, message)``.
- **Subscribing** uses one pub/sub connection per hub (per process) for every channel that
  has local subscribers: ``SUBSCRIBE`` when a channel gets its first local subscriber,
  ``UNSUBSCRIBE`` when its last one leaves. Once Redis confirms, the hub reads the
  channel's position and the history its subscribers need (one script, one round trip),
  while what arrives meanwhile waits in each subscription; then they go live, each
  checking offsets so that nothing is sent twice. Later subscribers of a live channel
  without ``since`` go live at once from the position the hub follows.
- **Reconnecting.** One task holds the pub/sub connection. When it breaks (Redis restarts,
  the network fails, or Redis stays silent for ``health_check_seconds`` after a ``PING``
  sent after as long a quiet), every subscription waits, and the task reconnects with
  capped exponential backoff (50 ms doubling up to 2 s, jittered) and subscribes again to
  every channel that still has local subscribers. Each subscription is then filled from
  the history, in order, with what was published meanwhile; only what the history no
  longer holds is reported lost (``dropped`` with its count, or ``null`` when Redis lost
  the channel's keys: a new epoch).
- **Names.** A channel is ``prefix + channel`` on Redis, its keys ``prefix{channel}:meta``
  and ``prefix{channel}:history`` (the braces keep them in one Redis Cluster slot), so
  several services (or staging and production) can share one Redis.

Redis disconnects a subscriber that lets its output buffer grow too far
(``client-output-buffer-limit pubsub``: 32 MiB, or 8 MiB for a minute, by default). This hub
reads its connection continuously into the subscriptions' own bounded queues, so only a
stalled process reaches that limit; it then reconnects as after any other loss.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .broadcast import (
    DEFAULT_HISTORY_SIZE,
    DEFAULT_HISTORY_TTL,
    DEFAULT_QUEUE_SIZE,
    POSITION_TTL,
    BroadcastStats,
    Fanout,
    Hub,
    HubClosed,
    HubUnavailable,
    Position,
    Publication,
    Subscription,
    envelope_parts,
    new_epoch,
)

logger = logging.getLogger(__name__)

CONNECTION_ERRORS: Final = (RedisError, OSError, TimeoutError)
"""What a lost or unreachable Redis raises."""
FIRST_RETRY_SECONDS: Final = 0.05
LAST_RETRY_SECONDS: Final = 2.0

# KEYS: meta, history. ARGV: pub/sub channel, text head, text tail, epoch if new,
# history size, history TTL (ms), position TTL (ms). The text is the envelope with its
# offset and epoch put in (see broadcast.envelope_parts); it is published after them.
PUBLISH_SCRIPT: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local text = ARGV[2] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[3]
if tonumber(ARGV[5]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], offset .. '-0', 't', text)
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[1], offset .. ' ' .. epoch .. ' ' .. text)
return {offset, epoch}
"""

# KEYS: meta, history. ARGV: epoch if new, first offset wanted ('' for none), position TTL,
# the epoch of that offset (another epoch: the whole history is wanted).
READ_SCRIPT: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('DEL', KEYS[2])
end
local entries = {}
if ARGV[2] ~= '' then
  local first = '-'
  if epoch == ARGV[4] then first = ARGV[2] .. '-0' end
  entries = redis.call('XRANGE', KEYS[2], first, '+')
end
return {redis.call('HGET', KEYS[1], 'offset'), epoch, entries}
"""


class RedisHub(Hub):
    """A hub whose channels live on Redis: it reaches every process on one Redis.

    ``url`` is a Redis URL (``redis://host:6379/0``, ``rediss://`` for TLS, ``unix://``).
    ``timeout`` bounds a publish, a history read and a connection attempt, in seconds.
    Every process of a service must use the same ``prefix``, ``history_size`` and
    ``history_ttl``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        timeout: float = 2.0,
        health_check_seconds: float = 10.0,
    ) -> None:
        if history_size < 0 or history_ttl <= 0:
            raise ValueError("history_size must be 0 or more and history_ttl more than 0.")
        self.url = url
        self.prefix = prefix
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.timeout = timeout
        self.health_check_seconds = health_check_seconds
        self._history_ms = max(1, round(history_ttl * 1000))
        self._position_ms = max(self._history_ms, round(POSITION_TTL * 1000))
        self._fanout = Fanout(queue_size)
        self._client: Redis | None = None
        """For publishing and reading history."""
        self._publish_script: AsyncScript | None = None
        self._read_script: AsyncScript | None = None
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
        self._latest: dict[str, Position] = {}
        """The position of each channel followed on the current connection, once synced."""
        self._syncing: dict[str, asyncio.Task[None]] = {}
        """Channels whose waiting subscriptions are being resumed."""

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
        self._publish_script = self._client.register_script(PUBLISH_SCRIPT)
        self._read_script = self._client.register_script(READ_SCRIPT)
        self._subscriber = self._new_client(Retry(NoBackoff(), 0, ()))
        self._task = asyncio.create_task(self._hold_connection(self._subscriber), name="RedisHub")
        try:
            async with asyncio.timeout(self.timeout):
                await self._tried.wait()
        except TimeoutError:
            pass  # the connection task logs it and keeps trying

    def count_in(self, stats: BroadcastStats) -> None:
        super().count_in(stats)
        self._fanout.stats = stats
        stats.backend_up = self.connected

    async def publish(self, channel: str, message: Mapping[str, Any]) -> Position:
        script = self._publish_script
        if self._closed or script is None:
            raise HubClosed("broadcast unavailable: the service is stopping")
        head, tail = envelope_parts(channel, message)
        keys = self._keys(channel)
        args: list[str | int] = [
            self.prefix + channel,
            head,
            tail,
            new_epoch(),
            self.history_size,
            self._history_ms,
            self._position_ms,
        ]
        try:
            async with asyncio.timeout(self.timeout):
                offset, epoch = await script(keys=keys, args=args)
        except CONNECTION_ERRORS as error:
            logger.debug("publishing on %s failed: %r", channel, error)
            raise HubUnavailable(
                "broadcast unavailable: the message was not sent; try again later"
            ) from error
        if self.stats is not None:
            self.stats.published += 1
        return Position(int(offset), str(epoch))

    async def subscribe(self, channel: str, since: Position | None = None) -> Subscription:
        if self._closed:
            raise HubClosed("broadcast unavailable: the service is stopping")
        subscription = self._fanout.add(channel, since)
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
        tasks = [*self._syncing.values(), *([task] if task is not None else [])]
        self._syncing.clear()
        for each in tasks:
            each.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._fanout.end_all()
        clients = [self._client, self._subscriber]
        self._client = self._subscriber = None
        self._publish_script = self._read_script = None
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

    def _keys(self, channel: str) -> list[str]:
        tagged = self.prefix + "{" + channel + "}"  # one Redis Cluster slot for both
        return [tagged + ":meta", tagged + ":history"]

    async def _read(
        self, channel: str, since: Position | None
    ) -> tuple[Position, list[Publication]]:
        """``channel``'s position and its history after ``since`` (all of it if ``since`` is
        of another epoch; none for None), in one atomic read."""
        script = self._read_script
        if self._closed or script is None:
            raise HubClosed("broadcast unavailable: the service is stopping")
        first, epoch = ("", "") if since is None else (str(since.offset + 1), since.epoch)
        async with asyncio.timeout(self.timeout):
            top, epoch, entries = await script(
                keys=self._keys(channel), args=[new_epoch(), first, self._position_ms, epoch]
            )
        history = [
            Publication(int(entry_id.partition("-")[0]), epoch, fields[1])
            for entry_id, fields in entries
        ]
        return Position(int(top), epoch), history

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
                latest = self._latest.get(channel)
                if latest is not None and joining.since is None:
                    joining.resume((), latest)  # the channel is followed: live at once
                else:
                    self._sync_soon(channel)
            elif not wanted and channel in self._subscribed:
                self._subscribed.discard(channel)
                self._latest.pop(channel, None)
                await pubsub.unsubscribe(self.prefix + channel)
        except CONNECTION_ERRORS as error:  # the connection task sees the loss too
            logger.debug("pub/sub command for %s failed: %r", channel, error)

    def _sync_soon(self, channel: str) -> None:
        if channel not in self._syncing and not self._closed:
            self._syncing[channel] = asyncio.create_task(
                self._sync(channel), name=f"RedisHub sync {channel}"
            )

    async def _sync(self, channel: str) -> None:
        """Resume the waiting subscriptions of ``channel`` (Redis confirmed it)."""
        pubsub = self._pubsub
        attempts = 0
        try:
            while self._pubsub is pubsub and channel in self._subscribed:
                waiting = [s for s in self._fanout.subscriptions(channel) if s.waiting]
                if not waiting:
                    return
                try:
                    top, history = await self._read(channel, _earliest(waiting))
                except HubClosed:
                    return
                except CONNECTION_ERRORS as error:
                    logger.debug("reading the history of %s failed: %r", channel, error)
                    attempts += 1
                    await asyncio.sleep(_backoff(attempts))
                    continue
                if self._pubsub is not pubsub or channel not in self._subscribed:
                    return  # the connection was lost meanwhile: the next one syncs again
                self._latest[channel] = _newer(self._latest.get(channel), top)
                for subscription in waiting:
                    subscription.resume(subscription.needed(history), top)
        finally:
            if self._syncing.get(channel) is asyncio.current_task():
                del self._syncing[channel]

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
                if ever_connected and self.stats is not None:
                    self.stats.reconnects += 1
                attempts, lost_at, ever_connected = 0, None, True
                self._tried.set()
                await self._listen(pubsub)
            except CONNECTION_ERRORS as error:
                if lost_at is None:
                    lost_at = loop.time()
                    what = "lost the connection to" if self._pubsub is pubsub else "cannot reach"
                    logger.warning(
                        "%s Redis at %s (%s); broadcast waits, and catches up from the "
                        "history when it is back; retrying",
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
            if self.stats is not None:
                self.stats.backend_up = True
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
            offset, _, rest = str(message["data"]).partition(" ")
            epoch, _, text = rest.partition(" ")
            if not (offset.isdigit() and epoch and text):
                logger.warning(
                    "ignored a message on %s published without a position (another "
                    "version of the service on the same Redis and prefix?)",
                    channel,
                )
                return
            publication = Publication(int(offset), epoch, text, _published_ns(text))
            if channel in self._latest:
                self._latest[channel] = _newer(
                    self._latest[channel], Position(publication.offset, epoch)
                )
            self._fanout.deliver(channel, publication)
            return
        self._unconfirmed[channel] -= 1
        if self._unconfirmed[channel] <= 0:
            del self._unconfirmed[channel]
            if channel in self._subscribed:
                self._sync_soon(channel)

    async def _drop_connection(self, pubsub: PubSub) -> None:
        """Forget ``pubsub``; subscriptions wait for the next, unless the hub is closing."""
        if self._pubsub is pubsub:
            self._pubsub = None
            self._connected.clear()
            if self.stats is not None:
                self.stats.backend_up = False
            self._subscribed.clear()
            self._unconfirmed.clear()
            self._latest.clear()
            for task in self._syncing.values():
                task.cancel()
            self._syncing.clear()
            if not self._closed:
                self._fanout.hold_all()
        try:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py types
        except CONNECTION_ERRORS as error:
            logger.debug("closing the pub/sub connection failed: %r", error)


def _published_ns(text: str) -> int:
    """The ``server_ns`` of a broadcast envelope (it follows the position); 0 if not found."""
    start = text.find(',"server_ns":')
    if start < 0:
        return 0
    start += len(',"server_ns":')
    digits = text[start : text.find(",", start)]
    return int(digits) if digits.isdigit() else 0


class ShardedRedisHub(Hub):
    """A hub whose channels are spread over several independent Redis servers (shards).

    Each channel lives on one shard, chosen from its name alone (`shard_index`), with its
    pub/sub channel, its history stream and its offset: a publish is still one atomic Lua
    step on one server. Each shard is a `RedisHub` of its own (one pub/sub connection, one
    connection task, its own reconnection), so losing a shard holds only that shard's
    channels, and their subscribers catch up from its history when it is back; the other
    channels keep flowing. ``urls`` lists the shards; every process of a service must list
    the same ones in the same order (another order sends channels to other shards). Adding
    a shard moves about one channel in N+1 to it: those channels start a new epoch there
    (their clients resume with ``recovered: false`` once). The other options are
    `RedisHub`'s.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        prefix: str = "",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        timeout: float = 2.0,
        health_check_seconds: float = 10.0,
    ) -> None:
        if not urls:
            raise ValueError("ShardedRedisHub needs at least one Redis URL.")
        if len(set(urls)) != len(urls):
            raise ValueError("ShardedRedisHub got the same Redis URL twice.")
        self.shards = [
            RedisHub(
                url,
                prefix=prefix,
                queue_size=queue_size,
                history_size=history_size,
                history_ttl=history_ttl,
                timeout=timeout,
                health_check_seconds=health_check_seconds,
            )
            for url in urls
        ]

    @property
    def connected(self) -> bool:
        """True while every shard's pub/sub connection is up."""
        return all(shard.connected for shard in self.shards)

    def parts(self) -> Sequence[Hub]:
        return self.shards

    def count_in(self, stats: BroadcastStats) -> None:
        """Count every shard in ``stats`` (`backend_up` is then the last shard's to change:
        count each of `parts` in its own to see each shard's connection)."""
        super().count_in(stats)
        for shard in self.shards:
            shard.count_in(stats)

    def shard_of(self, channel: str) -> RedisHub:
        """The shard that holds ``channel``."""
        return self.shards[shard_index(channel, len(self.shards))]

    async def start(self) -> None:
        """Start every shard (each waits up to ``timeout`` for its first answer, together)."""
        await asyncio.gather(*(shard.start() for shard in self.shards))

    async def publish(self, channel: str, message: Mapping[str, Any]) -> Position:
        return await self.shard_of(channel).publish(channel, message)

    async def subscribe(self, channel: str, since: Position | None = None) -> Subscription:
        return await self.shard_of(channel).subscribe(channel, since)

    async def unsubscribe(self, subscription: Subscription) -> None:
        await self.shard_of(subscription.channel).unsubscribe(subscription)

    async def close(self) -> None:
        await asyncio.gather(*(shard.close() for shard in self.shards))


def redis_hub(urls: Sequence[str], **options: Any) -> Hub:
    """A `RedisHub` for one URL, a `ShardedRedisHub` for several (``options``: theirs)."""
    if len(urls) == 1:
        return RedisHub(urls[0], **options)
    return ShardedRedisHub(urls, **options)


@lru_cache(maxsize=65536)
def shard_index(channel: str, shards: int) -> int:
    """The shard (0 to ``shards`` - 1) of ``channel``: jump consistent hash (Lamping and
    Veach, 2014) of a 64-bit BLAKE2b digest of its name. The same on every process and
    Python version; going from N to N+1 shards moves only the channels that go to the new
    one."""
    key = int.from_bytes(hashlib.blake2b(channel.encode(), digest_size=8).digest(), "big")
    bucket, candidate = -1, 0
    while candidate < shards:
        bucket = candidate
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def _earliest(subscriptions: list[Subscription]) -> Position | None:
    """The earliest position after which ``subscriptions`` need the history, if any does.

    Positions of several epochs (rare: Redis lost the channel's keys meanwhile) ask for
    the whole history (an epoch nobody has)."""
    wanted = [s.history_since for s in subscriptions if s.history_since is not None]
    if not wanted:
        return None
    if len({position.epoch for position in wanted}) > 1:
        return Position(0, "")
    return min(wanted)


def _newer(known: Position | None, seen: Position) -> Position:
    """The position a channel is at, given the one ``known`` and one just ``seen``."""
    if known is None or known.epoch != seen.epoch or seen.offset > known.offset:
        return seen
    return known


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
