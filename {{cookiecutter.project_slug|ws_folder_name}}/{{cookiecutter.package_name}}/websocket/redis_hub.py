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
  it never hangs. The error says whether the message may have been published all the
  same (``maybe_published``: it was written to Redis, whose answer never came) or was not
  (`NOT_SENT`). Any process can publish: ``async with RedisHub(url, prefix=...) as hub:
  await hub.publish(channel, message)``.
- **Pipelining.** Publishes, history reads and presence updates go to Redis through one
  `CommandBatcher` (``redis_batch.py``) on a connection of their own: a lone command is
  written at once, and those issued while a batch is out are written together as soon as
  its replies are in, in the order they were issued. A batch that fails fails each of its
  callers (`HubUnavailable`: `MAYBE_PUBLISHED` once written) and is never sent again; a
  command whose caller gave up before it was written is never written; a connection found
  closed by Redis (a restart) is replaced before it is used.
- **Subscribing** uses one pub/sub connection per hub (per process) for every channel that
  has local subscribers: ``SUBSCRIBE`` when a channel gets its first local subscriber,
  ``UNSUBSCRIBE`` when its last one leaves (those asked for while others are written go
  together, up to `SUBSCRIBE_BATCH` channels a command). Once Redis confirms, the hub reads the
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
- **Failover.** ``url`` may name a Sentinel group (``redis+sentinel://``, see
  ``redis_sentinel.py``): both connections reconnect to its master, and are moved there when
  it changes. Redis replicates asynchronously, so a promoted replica may lack the last
  publishes: a channel's offset goes back under the same epoch. The hub remembers the
  highest position it has seen of each channel and gives it to the publish and read
  scripts, which then start a new epoch for the channel (`EPOCH_OF_CHANNEL`): an offset is
  never given to two messages in one epoch, and subscribers are told (``null``).
  ``wait_replicas`` makes each publish wait for that many replicas (``WAIT``).
- **Presence** of a channel is a hash (client_id -> ``{"client_id", "user"}``) and a sorted
  set (client_id -> expiry time, Redis's clock) on the channel's Redis. A subscription is
  added there when it subscribes (one script, which also publishes its ``join`` event on
  the channel's pub/sub channel, prefixed ``p <client_id>`` so its own process skips it)
  and removed when it leaves (``leave``). Each process renews the expiry of its own
  clients every ``presence_ttl / 3`` seconds, which also puts them back after Redis lost
  them; a process that dies without cleaning up (SIGKILL) stops renewing, and its clients
  drop out of every list within ``presence_ttl`` seconds: expired entries are removed when
  the list is read. No ``leave`` event is sent for them. `close` removes its clients at
  once (with their ``leave`` events). Join and leave events are published only while the
  channel's presence holds at most ``join_leave_limit`` clients (counted in the script, on
  every process: `Hub.announces`), and delivered only while the process has at most that
  many subscribers of the channel: a storm of N clients would otherwise hear each of the
  first events N times.
- **Per-user delivery** (`publish_to_user`) publishes on one pub/sub channel per hub,
  ``prefix + "#direct"``, that every process follows: each delivers to its own connections
  of that user (a user is matched by its compact JSON).
- **Names.** A channel is ``prefix + channel`` on Redis, its keys ``prefix{channel}:meta``,
  ``prefix{channel}:history``, ``prefix{channel}:presence`` and
  ``prefix{channel}:presence-expiry`` (the braces keep them in one Redis Cluster slot), so
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
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from .broadcast import (
    DEFAULT_HISTORY_SIZE,
    DEFAULT_HISTORY_TTL,
    DEFAULT_JOIN_LEAVE_LIMIT,
    DEFAULT_PRESENCE_LIMIT,
    DEFAULT_QUEUE_SIZE,
    POSITION_TTL,
    PRESENCE_OFF,
    BroadcastStats,
    ChannelOptions,
    Fanout,
    Hub,
    HubClosed,
    HubUnavailable,
    JSONValue,
    Kept,
    Position,
    Presence,
    PresenceOff,
    Publication,
    Subscription,
    UserListener,
    checked_join_leave_limit,
    direct_message,
    envelope_parts,
    new_epoch,
    presence_event,
)
from .redis_batch import CommandBatcher, NotReplicated, Script, Unanswered
from .redis_sentinel import RedisTarget, follow_master
from .session import dumps, loads

logger = logging.getLogger(__name__)

CONNECTION_ERRORS: Final = (RedisError, OSError, TimeoutError)
"""What a lost or unreachable Redis raises."""
NOT_SENT: Final = "broadcast unavailable: the message was not sent; try again later"
"""A publish that failed before its command was written to Redis: it was not published."""
MAYBE_PUBLISHED: Final = (
    "broadcast unavailable: the message may have been published (it was sent, but no answer "
    "came); sending it again may publish it twice"
)
"""A publish written to Redis whose answer never came: Redis may have run it."""
SUBSCRIBE_BATCH: Final = 512
"""Channels named in one SUBSCRIBE or UNSUBSCRIBE command at most (as Centrifuge does)."""
STOP_RETRY_SECONDS: Final = 0.1
"""How long `RedisHub.close` waits for a cancelled task before cancelling it again."""
FIRST_RETRY_SECONDS: Final = 0.05
LAST_RETRY_SECONDS: Final = 2.0
DEFAULT_PRESENCE_TTL: Final = 30.0
DIRECT_CHANNEL: Final = "#direct"
"""The pub/sub channel (after the prefix) of per-user delivery: no channel path starts so."""
PRESENCE_BATCH: Final = 500
"""Clients written to presence in one script call (Lua's unpack has a limit)."""
SEEN_CHANNELS: Final = 100_000
"""Channels whose highest position a hub remembers at most (the oldest are forgotten)."""

# KEYS: presence hash, presence expiry set. ARGV: TTL (ms), pub/sub channel, join/leave
# limit (0: none), then for each client: client_id, its JSON, its event text ('' for none).
# Adds (or renews) the clients, expiring TTL after Redis's own clock, and publishes their
# events while the channel has at most the limit of clients (Hub.announces).
JOIN_SCRIPT: Final = """
local time = redis.call('TIME')
local expiry = time[1] * 1000 + math.floor(time[2] / 1000) + tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
for i = 4, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], expiry, ARGV[i])
  if ARGV[i + 2] ~= '' and (limit == 0 or redis.call('ZCARD', KEYS[2]) <= limit) then
    redis.call('PUBLISH', ARGV[2], 'p ' .. ARGV[i] .. ' ' .. ARGV[i + 2])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 0
"""

# KEYS: presence hash, presence expiry set. ARGV: pub/sub channel, join/leave limit (0:
# none), then for each client: client_id, its event text ('' for none). Removes the
# clients, publishes their events while the channel had at most the limit of clients.
LEAVE_SCRIPT: Final = """
local limit = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local present = redis.call('ZCARD', KEYS[2])
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  if ARGV[i + 1] ~= '' and (limit == 0 or present <= limit) then
    redis.call('PUBLISH', ARGV[1], 'p ' .. ARGV[i] .. ' ' .. ARGV[i + 1])
  end
end
return 0
"""

# KEYS: presence hash, presence expiry set. ARGV: the most clients to list. Removes the
# expired clients (in batches), then answers the count and up to that many clients' JSON.
PRESENCE_SCRIPT: Final = """
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
while true do
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 500)
  if #expired == 0 then break end
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREM', KEYS[2], unpack(expired))
end
local count = redis.call('ZCARD', KEYS[2])
local ids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)
local clients = {}
if #ids > 0 then clients = redis.call('HMGET', KEYS[1], unpack(ids)) end
return {count, clients}
"""

# Both scripts below start with this: the channel's epoch, a new one if the channel has
# none, or if it has gone back: the hub has seen it (in this epoch, ARGV[2]) at an offset
# (ARGV[3]) that Redis no longer has (a failover to a replica that lacked the last writes,
# a restart from an older snapshot). Its offsets would be given again to other messages:
# a new epoch (and an empty history) tells every client instead. ARGV[1]: epoch if new.
# Sets `went_back` to the offset Redis was back at, for the hub to log, and `fresh` when
# the epoch is new.
EPOCH_OF_CHANNEL: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local went_back = false
local fresh = false
if epoch and epoch == ARGV[2] then
  local top = tonumber(redis.call('HGET', KEYS[1], 'offset'))
  if top < tonumber(ARGV[3]) then went_back = top end
end
if not epoch or went_back then
  epoch = ARGV[1]
  fresh = true
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('DEL', KEYS[2])
end
"""

# KEYS: meta, history. ARGV: epoch if new, epoch seen, offset seen (see EPOCH_OF_CHANNEL),
# pub/sub channel, text head, text tail, history size, history TTL (ms), position TTL
# (ms). The text is the envelope with its offset and epoch put in (see
# broadcast.envelope_parts); it is published after them.
PUBLISH_SCRIPT: Final = (
    EPOCH_OF_CHANNEL
    + """
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local text = ARGV[5] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[6]
if tonumber(ARGV[7]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[7], offset .. '-0', 't', text)
  redis.call('PEXPIRE', KEYS[2], ARGV[8])
end
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('PUBLISH', ARGV[4], offset .. ' ' .. epoch .. ' ' .. text)
return {offset, epoch, went_back}
"""
)

# KEYS: meta, history. ARGV: epoch if new, epoch seen, offset seen (see EPOCH_OF_CHANNEL),
# first offset wanted ('' for none), position TTL, the epoch of that offset (another
# epoch: the whole history is wanted).
READ_SCRIPT: Final = (
    EPOCH_OF_CHANNEL
    + """
if fresh then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
local entries = {}
if ARGV[4] ~= '' then
  local first = '-'
  if epoch == ARGV[6] then first = ARGV[4] .. '-0' end
  entries = redis.call('XRANGE', KEYS[2], first, '+')
end
return {redis.call('HGET', KEYS[1], 'offset'), epoch, entries, went_back}
"""
)

PUBLISH: Final = Script(PUBLISH_SCRIPT)
READ: Final = Script(READ_SCRIPT)
JOIN: Final = Script(JOIN_SCRIPT)
LEAVE: Final = Script(LEAVE_SCRIPT)
PRESENCE: Final = Script(PRESENCE_SCRIPT)


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
        presence: bool = True,
        join_leave: bool = True,
        presence_limit: int = DEFAULT_PRESENCE_LIMIT,
        presence_ttl: float = DEFAULT_PRESENCE_TTL,
        join_leave_limit: int | None = DEFAULT_JOIN_LEAVE_LIMIT,
        wait_replicas: int = 0,
    ) -> None:
        if wait_replicas < 0:
            raise ValueError("wait_replicas must be 0 or more.")
        if history_size < 0 or history_ttl <= 0:
            raise ValueError("history_size must be 0 or more and history_ttl more than 0.")
        if presence_limit < 1 or presence_ttl <= 0:
            raise ValueError("presence_limit must be at least 1 and presence_ttl more than 0.")
        self.join_leave_limit = checked_join_leave_limit(join_leave_limit)
        self.presence_enabled = presence
        self.join_leave = presence and join_leave
        self.defaults = Kept(history_size, history_ttl, presence, self.join_leave)
        self.presence_limit = presence_limit
        self.presence_ttl = presence_ttl
        self._presence_ms = max(1, round(presence_ttl * 1000))
        self.direct_sink: Callable[[str, str], None] = self.deliver_direct_here
        """Where the direct messages this hub hears go (a sharded hub sends them to every
        shard's subscriptions): called with the user's key and the text."""
        self._renewing: asyncio.Task[None] | None = None
        self.url = url
        self.wait_replicas = wait_replicas
        self._target = RedisTarget(url, timeout)
        self._following: asyncio.Task[None] | None = None
        self._seen: dict[str, Position] = {}
        """The highest position of each channel this hub has seen (published, heard or
        read), across reconnections: what Redis must not go back from (`EPOCH_OF_CHANNEL`)."""
        self.prefix = prefix
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.timeout = timeout
        self.health_check_seconds = health_check_seconds
        self._history_ms = max(1, round(history_ttl * 1000))
        self._position_ms = max(self._history_ms, round(POSITION_TTL * 1000))
        self._fanout = Fanout(queue_size)
        self._batcher: CommandBatcher | None = None
        """For every command but pub/sub's: publishing, history, presence."""
        self._subscriber: Redis | None = None
        """For the pub/sub connection, which the hub alone reconnects."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = asyncio.Event()
        self._tried = asyncio.Event()
        """Set once the first connection attempt has succeeded or failed."""
        self._commands = asyncio.Lock()
        """Held while a command is written to the pub/sub connection."""
        self._pubsub_queue: list[tuple[bool, str]] = []
        """(SUBSCRIBE or not, channel) to write to the pub/sub connection, in order."""
        self._pubsub_writer: asyncio.Task[None] | None = None
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
        scripts = (PUBLISH, READ, JOIN, LEAVE, PRESENCE)
        self._batcher = CommandBatcher(
            self._target.connection(),
            scripts,
            self.timeout,
            wait_replicas=self.wait_replicas,
            wait_ms=max(1, round(self.timeout * 500)),  # half the batch's time
        )
        self._subscriber = self._target.client()
        self._task = asyncio.create_task(self._hold_connection(self._subscriber), name="RedisHub")
        if self._target.sentinel:
            self._following = asyncio.create_task(
                follow_master(self._target, self._connections, self._move),
                name="RedisHub master",
            )
        if self.presence_enabled:
            self._renewing = asyncio.create_task(self._renew_presence(), name="RedisHub presence")
        try:
            async with asyncio.timeout(self.timeout):
                await self._tried.wait()
        except TimeoutError:
            pass  # the connection task logs it and keeps trying

    def count_in(self, stats: BroadcastStats) -> None:
        super().count_in(stats)
        self._fanout.stats = stats
        stats.backend_up = self.connected

    async def publish(
        self, channel: str, message: Mapping[str, Any], *, info: Mapping[str, Any] | None = None
    ) -> Position:
        batcher = self._batcher
        if self._closed or batcher is None:
            raise HubClosed("broadcast unavailable: the service is stopping")
        head, tail = envelope_parts(channel, message, info)
        keys = self._keys(channel)
        kept = self.kept(channel)
        history_ms = self._history_ms
        if kept.history_ttl != self.history_ttl:
            history_ms = max(1, round(kept.history_ttl * 1000))
        args: list[str | int] = [
            *self._seen_args(channel),
            self.prefix + channel,
            head,
            tail,
            kept.history_size,
            history_ms,
            max(history_ms, self._position_ms),
        ]
        try:
            offset, epoch, went_back = await batcher.run_script(PUBLISH, keys, args, durable=True)
        except NotReplicated as error:
            logger.debug("publishing on %s was not confirmed: %r", channel, error)
            raise HubUnavailable(
                "broadcast unavailable: no replica confirmed the message in time (it may "
                "have been delivered); try again later",
                maybe_published=True,
            ) from error
        except CONNECTION_ERRORS as error:
            logger.debug("publishing on %s failed: %r", channel, error)
            raise _publish_failed(error) from error
        if self.stats is not None:
            self.stats.published += 1
        position = Position(int(offset), str(epoch))
        self._went_back(channel, went_back, position)
        self._see(channel, position)
        return position

    async def subscribe(
        self,
        channel: str,
        since: Position | None = None,
        *,
        user: JSONValue = None,
        client_id: str | None = None,
        direct: bool = True,
    ) -> Subscription:
        if self._closed:
            raise HubClosed("broadcast unavailable: the service is stopping")
        subscription = self._fanout.add(channel, since, user, client_id, direct)
        async with self._commands:
            self._follow(channel, joining=subscription)
        kept = self.kept(channel)
        if kept.presence:
            await self._join(channel, [subscription], events=kept.join_leave)
        return subscription

    def listen_to_user(self, user: JSONValue, listener: UserListener) -> None:
        self._fanout.listen(user, listener)  # the direct channel is always followed

    def unlisten_to_user(self, user: JSONValue, listener: UserListener) -> None:
        self._fanout.unlisten(user, listener)

    async def history(
        self, channel: str, since: Position | None = None
    ) -> tuple[Position, list[Publication]]:
        # Another epoch than any (""): the whole history, when no position is given.
        wanted = Position(0, "") if since is None else since
        try:
            return await self._read(channel, wanted)
        except CONNECTION_ERRORS as error:
            logger.debug("reading the history of %s failed: %r", channel, error)
            raise HubUnavailable("history unavailable: try again later") from error

    async def unsubscribe(self, subscription: Subscription) -> None:
        leaving = not subscription.ended
        if self._fanout.remove(subscription):
            async with self._commands:
                self._follow(subscription.channel)
        if leaving and not self._closed and self.kept(subscription.channel).presence:
            await self._leave(subscription.channel, [subscription])

    async def presence(self, channel: str) -> Presence:
        batcher = self._batcher
        if not self.kept(channel).presence:
            raise PresenceOff(PRESENCE_OFF)
        if self._closed or batcher is None:
            raise HubClosed("broadcast unavailable: the service is stopping")
        try:
            count, infos = await batcher.run_script(
                PRESENCE, self._presence_keys(channel), [self.presence_limit]
            )
        except CONNECTION_ERRORS as error:
            logger.debug("reading the presence of %s failed: %r", channel, error)
            raise HubUnavailable("presence unavailable: try again later") from error
        clients = [loads(info) for info in infos if info is not None]
        return Presence(int(count), clients, len(clients) < int(count))

    async def publish_to_user(self, user: JSONValue, message: Mapping[str, Any]) -> None:
        batcher = self._batcher
        if self._closed or batcher is None:
            raise HubClosed("broadcast unavailable: the service is stopping")
        data = dumps(user) + "\n" + direct_message(message)
        try:
            await batcher.call("PUBLISH", self.prefix + DIRECT_CHANNEL, data)
        except CONNECTION_ERRORS as error:
            logger.debug("publishing to a user failed: %r", error)
            raise _publish_failed(error) from error

    async def close(self) -> None:
        if not self._closed and self.presence_enabled and self._batcher is not None:
            await self._leave_all()
        self._closed = True
        task, self._task = self._task, None
        following, renewing = self._following, self._renewing
        self._following = self._renewing = None
        await _stop([t for t in (following, renewing) if t is not None])
        writer, self._pubsub_writer = self._pubsub_writer, None
        tasks = [*self._syncing.values(), *(t for t in (task, writer) if t is not None)]
        self._syncing.clear()
        await _stop(tasks)
        self._fanout.end_all()
        batcher, subscriber = self._batcher, self._subscriber
        self._batcher = self._subscriber = None
        if batcher is not None:
            await batcher.aclose()
        if subscriber is not None:
            await subscriber.aclose()
        await self._target.aclose()

    def _connections(self) -> list[AbstractConnection | None]:
        """The connections to the master: commands' and pub/sub's (see `follow_master`)."""
        batcher, pubsub = self._batcher, self._pubsub
        return [
            None if batcher is None else batcher.connection,
            None if pubsub is None else pubsub.connection,
        ]

    async def _move(self, connection: AbstractConnection) -> None:
        """Get ``connection`` to the master: the commands' before their next batch, the
        pub/sub one at once (the connection task reconnects it and resubscribes)."""
        batcher = self._batcher
        if batcher is not None and connection is batcher.connection:
            await batcher.move()
        else:
            await connection.disconnect()

    def _seen_args(self, channel: str) -> tuple[str, str, int]:
        """A fresh epoch, and the epoch and offset of ``channel`` seen (`EPOCH_OF_CHANNEL`)."""
        seen = self._seen.get(channel)
        return (new_epoch(), "", 0) if seen is None else (new_epoch(), seen.epoch, seen.offset)

    def _see(self, channel: str, position: Position) -> None:
        """Remember ``position`` of ``channel`` if it is the highest seen."""
        seen = self._seen
        known = seen.get(channel)
        if known is None:
            if len(seen) >= SEEN_CHANNELS:
                del seen[next(iter(seen))]
            seen[channel] = position
        elif position.offset > known.offset or position.epoch != known.epoch:
            seen[channel] = position

    def _went_back(self, channel: str, went_back: object, now: Position) -> None:
        if went_back is not None:
            seen = self._seen.get(channel)
            logger.warning(
                "channel %s was back at offset %s on Redis at %s, after %s had been seen "
                "(a failover or a restart lost messages): it goes on in a new epoch, so "
                "its clients are told",
                channel,
                went_back,
                self._target.shown,
                seen.offset if seen is not None else "?",
            )

    def _keys(self, channel: str) -> list[str]:
        tagged = self.prefix + "{" + channel + "}"  # one Redis Cluster slot for both
        return [tagged + ":meta", tagged + ":history"]

    def _presence_keys(self, channel: str) -> list[str]:
        tagged = self.prefix + "{" + channel + "}"
        return [tagged + ":presence", tagged + ":presence-expiry"]

    async def _join(
        self, channel: str, subscriptions: Sequence[Subscription], events: bool
    ) -> None:
        """Add (or renew) ``subscriptions`` in ``channel``'s presence, with their join events
        if ``events``. A failure is logged only: the next renewal puts them in."""
        batcher = self._batcher
        for start in range(0, len(subscriptions), PRESENCE_BATCH):
            if batcher is None or self._closed:
                return
            args: list[str | int] = [
                self._presence_ms,
                self.prefix + channel,
                self.join_leave_limit or 0,
            ]
            for subscription in subscriptions[start : start + PRESENCE_BATCH]:
                client = {"client_id": subscription.client_id, "user": subscription.user}
                event = presence_event("join", subscription) if events else ""
                args += [subscription.client_id, dumps(client), event]
            try:
                await batcher.run_script(JOIN, self._presence_keys(channel), args)
            except CONNECTION_ERRORS as error:
                logger.debug("writing the presence of %s failed: %r", channel, error)
                return

    async def _leave(self, channel: str, subscriptions: Sequence[Subscription]) -> None:
        """Remove ``subscriptions`` from ``channel``'s presence, with their leave events."""
        batcher = self._batcher
        events = self.kept(channel).join_leave
        for start in range(0, len(subscriptions), PRESENCE_BATCH):
            if batcher is None:
                return
            args: list[str | int] = [self.prefix + channel, self.join_leave_limit or 0]
            for subscription in subscriptions[start : start + PRESENCE_BATCH]:
                event = presence_event("leave", subscription) if events else ""
                args += [subscription.client_id, event]
            try:
                await batcher.run_script(LEAVE, self._presence_keys(channel), args)
            except CONNECTION_ERRORS as error:  # they expire within the TTL
                logger.debug("removing presence from %s failed: %r", channel, error)
                return

    async def _leave_all(self) -> None:
        """Remove every local subscription from presence (the hub closes), every channel at
        once: their scripts share batches."""
        await asyncio.gather(
            *(
                self._leave(channel, self._fanout.subscriptions(channel))
                for channel in self._fanout.channels()
                if self.kept(channel).presence
            )
        )

    async def _renew_presence(self) -> None:
        """Every ``presence_ttl / 3`` seconds, renew the presence of every local client, every
        channel at once: their scripts share batches."""
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            await asyncio.gather(
                *(
                    self._join(channel, self._fanout.subscriptions(channel), events=False)
                    for channel in self._fanout.channels()
                    if self.kept(channel).presence
                )
            )

    def deliver_direct_here(self, user_key: str, text: str) -> None:
        """Queue a direct message for this hub's own subscriptions of ``user_key``."""
        self._fanout.notify_user(user_key, text)

    async def _read(
        self, channel: str, since: Position | None
    ) -> tuple[Position, list[Publication]]:
        """``channel``'s position and its history after ``since`` (all of it if ``since`` is
        of another epoch; none for None), in one atomic read."""
        batcher = self._batcher
        if self._closed or batcher is None:
            raise HubClosed("broadcast unavailable: the service is stopping")
        first, epoch = ("", "") if since is None else (str(since.offset + 1), since.epoch)
        args: list[str | int] = [*self._seen_args(channel), first, self._position_ms, epoch]
        top, epoch, entries, went_back = await batcher.run_script(READ, self._keys(channel), args)
        history = [
            Publication(int(entry_id.partition("-")[0]), epoch, fields[1])
            for entry_id, fields in entries
        ]
        position = Position(int(top), epoch)
        self._went_back(channel, went_back, position)
        self._see(channel, position)
        return position, history

    def _follow(self, channel: str, joining: Subscription | None = None) -> None:
        """Make the pub/sub connection follow the local subscribers of ``channel``.

        Called with the command lock held (so not while the connection task connects),
        ``joining`` being a subscription just added. Without a connection there is nothing
        to do: the connection task subscribes to every channel when it connects. Constant
        time in the channel's subscriber count: 10,000 clients joining one room must not
        walk it 10,000 times.
        """
        if self._pubsub is None:
            return
        wanted = self._fanout.has_subscriptions(channel)
        if wanted and channel not in self._subscribed:
            self._subscribed.add(channel)
            self._unconfirmed[channel] += 1
            self._write_soon(True, channel)
        elif joining is not None and not self._unconfirmed[channel]:
            latest = self._latest.get(channel)
            if latest is not None and joining.since is None:
                joining.resume((), latest)  # the channel is followed: live at once
            else:
                self._sync_soon(channel)
        elif not wanted and channel in self._subscribed:
            self._subscribed.discard(channel)
            self._latest.pop(channel, None)
            self._write_soon(False, channel)

    def _write_soon(self, subscribe: bool, channel: str) -> None:
        """Queue a SUBSCRIBE (or UNSUBSCRIBE) of ``channel`` on the pub/sub connection."""
        self._pubsub_queue.append((subscribe, channel))
        if self._pubsub_writer is None:
            self._pubsub_writer = asyncio.create_task(
                self._write_pubsub(), name="RedisHub pub/sub commands"
            )

    async def _write_pubsub(self) -> None:
        """Write the queued SUBSCRIBE and UNSUBSCRIBE commands, in their order: those queued
        while some are written go together next, each command naming up to
        `SUBSCRIBE_BATCH` channels."""
        try:
            while self._pubsub_queue:
                async with self._commands:
                    queue, self._pubsub_queue = self._pubsub_queue, []
                    pubsub = self._pubsub
                    if pubsub is None:
                        continue  # the connection task subscribes to all when it connects
                    for subscribe, channels in _runs(queue, SUBSCRIBE_BATCH):
                        names = [self.prefix + channel for channel in channels]
                        try:
                            if subscribe:
                                await pubsub.subscribe(*names)
                            else:
                                await pubsub.unsubscribe(*names)
                        except CONNECTION_ERRORS as error:  # the connection task sees it too
                            logger.debug("pub/sub command failed: %r", error)
                            break
        finally:
            if self._pubsub_writer is asyncio.current_task():
                self._pubsub_writer = None

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
                    logger.info("connected to Redis at %s", self._target.shown)
                else:
                    logger.warning(
                        "%s Redis at %s after %.1f s (channels subscribed: %d)",
                        "reconnected to" if ever_connected else "connected to",
                        self._target.shown,
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
                        self._target.shown,
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
                await pubsub.subscribe(
                    self.prefix + DIRECT_CHANNEL, *(self.prefix + channel for channel in channels)
                )
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
            data = str(message["data"])
            if data.startswith("p "):  # a join or leave event
                # Published while the channel had at most the limit of clients; those who
                # came since would hear it too: not once the channel is past it here.
                if self.announces(self._fanout.count(channel)):
                    client_id, _, text = data[2:].partition(" ")
                    self._fanout.notify(channel, text, client_id)
                return
            if channel == DIRECT_CHANNEL:
                user_key, _, text = data.partition("\n")
                self.direct_sink(user_key, text)
                return
            offset, _, rest = data.partition(" ")
            epoch, _, text = rest.partition(" ")
            if not (offset.isdigit() and epoch and text):
                logger.warning(
                    "ignored a message on %s published without a position (another "
                    "version of the service on the same Redis and prefix?)",
                    channel,
                )
                return
            publication = Publication(int(offset), epoch, text, _published_ns(text))
            self._see(channel, Position(publication.offset, epoch))
            if channel in self._latest:
                self._latest[channel] = _newer(
                    self._latest[channel], Position(publication.offset, epoch)
                )
            self._fanout.deliver(channel, publication)
            return
        if channel == DIRECT_CHANNEL:
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
            self._pubsub_queue.clear()
            self._latest.clear()
            for task in self._syncing.values():
                task.cancel()
            self._syncing.clear()
            if not self._closed:
                self._fanout.hold_all()
        try:
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # redis-py 7
        except CONNECTION_ERRORS as error:
            logger.debug("closing the pub/sub connection failed: %r", error)


def _runs(queue: Sequence[tuple[bool, str]], most: int) -> list[tuple[bool, list[str]]]:
    """``queue`` as commands: each run of one kind cut into lists of at most ``most``."""
    runs: list[tuple[bool, list[str]]] = []
    for subscribe, channel in queue:
        if not runs or runs[-1][0] != subscribe or len(runs[-1][1]) >= most:
            runs.append((subscribe, []))
        runs[-1][1].append(channel)
    return runs


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
        presence: bool = True,
        join_leave: bool = True,
        presence_limit: int = DEFAULT_PRESENCE_LIMIT,
        presence_ttl: float = DEFAULT_PRESENCE_TTL,
        join_leave_limit: int | None = DEFAULT_JOIN_LEAVE_LIMIT,
        wait_replicas: int = 0,
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
                presence=presence,
                join_leave=join_leave,
                presence_limit=presence_limit,
                presence_ttl=presence_ttl,
                join_leave_limit=join_leave_limit,
                wait_replicas=wait_replicas,
            )
            for url in urls
        ]
        self.join_leave_limit = join_leave_limit
        for shard in self.shards:  # a user's connections are on the shards of their channels
            shard.direct_sink = self._deliver_direct

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

    def use_channel_options(self, options_of: Callable[[str], ChannelOptions | None]) -> None:
        super().use_channel_options(options_of)
        for shard in self.shards:
            shard.use_channel_options(options_of)

    def shard_of(self, channel: str) -> RedisHub:
        """The shard that holds ``channel``."""
        return self.shards[shard_index(channel, len(self.shards))]

    async def start(self) -> None:
        """Start every shard (each waits up to ``timeout`` for its first answer, together)."""
        await asyncio.gather(*(shard.start() for shard in self.shards))

    async def publish(
        self, channel: str, message: Mapping[str, Any], *, info: Mapping[str, Any] | None = None
    ) -> Position:
        return await self.shard_of(channel).publish(channel, message, info=info)

    async def subscribe(
        self,
        channel: str,
        since: Position | None = None,
        *,
        user: JSONValue = None,
        client_id: str | None = None,
        direct: bool = True,
    ) -> Subscription:
        return await self.shard_of(channel).subscribe(
            channel, since, user=user, client_id=client_id, direct=direct
        )

    def listen_to_user(self, user: JSONValue, listener: UserListener) -> None:
        self.shards[0].listen_to_user(user, listener)  # each shard's messages reach them all

    def unlisten_to_user(self, user: JSONValue, listener: UserListener) -> None:
        self.shards[0].unlisten_to_user(user, listener)

    async def history(
        self, channel: str, since: Position | None = None
    ) -> tuple[Position, list[Publication]]:
        return await self.shard_of(channel).history(channel, since)

    async def presence(self, channel: str) -> Presence:
        return await self.shard_of(channel).presence(channel)

    async def publish_to_user(self, user: JSONValue, message: Mapping[str, Any]) -> None:
        """Published on the shard of the user's name; every process hears it from there."""
        shard = self.shards[shard_index(DIRECT_CHANNEL + dumps(user), len(self.shards))]
        await shard.publish_to_user(user, message)

    def _deliver_direct(self, user_key: str, text: str) -> None:
        for shard in self.shards:
            shard.deliver_direct_here(user_key, text)

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


async def _stop(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again those still running.

    One cancellation is not always enough: on Python 3.11, `asyncio.wait_for` returns the
    result of what it waits for when that result comes in the same turn of the event loop
    as the cancellation, and the cancellation is lost (python/cpython#86296, fixed in
    3.12). redis-py writes every command under `asyncio.wait_for` (its ``socket_timeout``),
    so a hub task cancelled while writing a PING or a SUBSCRIBE could go on listening for
    good, and `RedisHub.close` wait for it forever.
    """
    running = {task for task in tasks if not task.done()}
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=STOP_RETRY_SECONDS)


def _publish_failed(error: Exception) -> HubUnavailable:
    """The error for a publish that failed with ``error``: `MAYBE_PUBLISHED` if its command
    was written to Redis, else `NOT_SENT`."""
    if isinstance(error, Unanswered):
        return HubUnavailable(MAYBE_PUBLISHED, maybe_published=True)
    return HubUnavailable(NOT_SENT)


def _backoff(attempts: int) -> float:
    """Seconds to wait before reconnection attempt ``attempts`` + 1: doubling, capped, jittered."""
    ceiling = min(LAST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2.0 ** min(attempts - 1, 16))
    return ceiling * random.uniform(0.5, 1.0)


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__
