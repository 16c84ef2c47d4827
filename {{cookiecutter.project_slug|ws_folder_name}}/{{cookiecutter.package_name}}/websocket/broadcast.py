"""Broadcast: every message published on a channel reaches every connection on that channel.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Framework-free, standard library only: `run_broadcast` is written against
`SessionSocket`, like the other session helpers, so it serves every face.

A `Hub` carries messages between the connections of a channel. `MemoryHub` does it inside
one process; `RedisHub` (``redis_hub.py``, in projects that chose the Redis backend) does it
through Redis, across processes and machines. Both keep their local subscribers in a
`Fanout` and pass the same contract tests (``tests/hub_contract.py``).

**Positions.** Every message published on a channel gets the channel's next ``offset``
(1, 2, 3, ... with no gaps, the same on every process) and the channel's ``epoch``, a string
that names the channel's current history and changes only when that history is lost (a
memory hub restarted, Redis lost the channel's keys). `Hub.publish` returns the message's
`Position`.

**History and recovery.** A hub keeps each channel's last ``history_size`` messages (0: none)
for ``history_ttl`` seconds after its last publish, and the channel's position for at least a
day. A subscription made with ``since`` (a `Position` the client reached) first receives every
message after it, from the history, then the live ones: no gap, no duplicate. When the history
cannot cover the gap (another epoch, too old, or ``since`` ahead of the channel), the
subscription starts from the channel's current position and says it did not recover.

Every subscription has its own bounded queue, filled without waiting: a slow subscriber
never delays the publisher or the other subscribers. When its queue is full, its oldest
queued message is dropped (it gets the newest ones) and the gap is reported to it in
order. Each subscription checks the offsets it is given, so it never sends a message twice
or out of order, and reports any gap it sees (the hub's own, not only a full queue).

The client protocol of a broadcast connection (`run_broadcast`); a *position* is an
``offset`` and an ``epoch``, the next message having ``offset + 1``:

- ``{"type": "subscribed", "channel", "offset", "epoch"}`` comes first, once the connection
  receives the channel's messages, with the position they continue from. A connection
  opened with ``?since=OFFSET&epoch=EPOCH`` also gets ``"recovered": true`` (every message
  after that position follows, then the live ones) or ``"recovered": false`` (they could
  not be recovered: reload your state; messages continue from the position given). A
  malformed ``since`` or ``epoch`` gets ``{"type": "error", "reason"}`` and a close (1008);
- a connection opened with ``?last=N`` starts with the channel's last N messages that the
  history still holds (at most its ``history_size``): its subscribed notice gives the
  position before the first of them and ``"recovered"`` (false: they were gone from the
  history meanwhile; messages continue from the position given), and they follow it;
- each JSON object the client sends, keepalives aside, is published to the channel and
  reaches every connection on it, the sender's included, as ``{"type": "broadcast",
  "channel", "offset", "epoch", "server_ns", "message": {...}}``; every connection sees the
  channel's messages in the same order. The endpoint's ``on_message`` hook, if any, sees
  each such message first: it gives the message to publish (stamped with the sender, say)
  or raises `Refused`, and the client gets ``{"type": "error", "reason"}`` instead;
- ``{"type": "dropped", "channel", "count", "offset", "epoch"}`` reports ``count`` messages
  lost just before the position given (``null``: an unknown number, as when the epoch
  changed); the client can resume after the position it had reached by reconnecting with
  ``since``, while the history still holds those messages;
- a message the hub cannot publish (its backend is unreachable) gets ``{"type": "error",
  "reason": ...}`` at once, and the session goes on;
- when the hub closes (the service shuts down), the connection is closed with 1012.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import functools
import inspect
import itertools
import logging
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Final, NamedTuple, Protocol, Self, TypeAlias
from urllib.parse import parse_qs

from .session import (
    WS,
    JsonHandler,
    OpenDirect,
    SendCounter,
    SendNow,
    SessionSocket,
    TaskFactory,
    Writer,
    cancel_and_wait,
    dumps,
    now_ns,
    receive_json,
    run_websocket,
    send_json,
    server_direct,
    server_sender,
)

logger = logging.getLogger(__name__)

SERVICE_RESTART: Final = 1012
POLICY_VIOLATION: Final = 1008
TRY_AGAIN_LATER: Final = 1013
HUB_STATE_KEY: Final = "broadcast_hub"
"""Where the app's lifespan puts its hub in the ASGI state (see `hub_of`)."""
DEFAULT_QUEUE_SIZE: Final = 100
DEFAULT_HISTORY_SIZE: Final = 100
DEFAULT_HISTORY_TTL: Final = 300.0
POSITION_TTL: Final = 86400.0
"""A channel keeps its position this long after its last publish (or its history TTL, if
longer), so that a client that saw nothing new for a while still resumes without a reload."""
MAX_EPOCH_LENGTH: Final = 64
LAG_BOUNDS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the delivery-lag buckets of `BroadcastStats` (then +Inf)."""
LAG_SAMPLE: Final = 16
"""One live delivery in this many has its lag measured (a clock read and a bucket search
per delivery cost a tenth of a delivery; one in 16 keeps the distribution). A countdown
picks them, and counts the live deliveries too (`BroadcastStats.deliveries`): one small
integer decremented per send, not a count incremented and a modulo of it."""
_EPOCH = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
CLIENT_ID_BYTES: Final = 16
"""Random bytes in a client_id (22 characters of base64url)."""
DEFAULT_PRESENCE_LIMIT: Final = 1000
"""Clients listed in a presence answer at most (its ``count`` is always the whole room's)."""
DEFAULT_JOIN_LEAVE_LIMIT: Final = 100
"""Clients a channel has at most for its join and leave events to be sent (see
`Hub.announces`): past it, a reconnect storm of N clients would send N squared of them."""

JSONValue = str | int | float | bool | None | list[Any] | dict[str, Any]
"""A value that is JSON: what a presence list shows of a client's user."""


@dataclass(frozen=True, slots=True)
class Presence:
    """Who is on a channel: ``count`` connections on every process, ``clients`` listing up
    to the hub's ``presence_limit`` of them (``cut``: the list is shorter than ``count``)."""

    count: int
    clients: list[dict[str, JSONValue]]
    cut: bool

    def answer(self, channel: str) -> dict[str, Any]:
        """The ``presence`` message a client or the presence API gets."""
        return {
            "type": "presence",
            "channel": channel,
            "count": self.count,
            "clients": self.clients,
            "cut": self.cut,
        }


class HubUnavailable(Exception):
    """The hub could not do what was asked (its backend is unreachable). For a publish,
    ``maybe_published`` says whether the message may have been published all the same: it
    reached the backend, whose answer never came (publishing it again may publish it twice;
    a client resuming by position sees it if it was). False: it was not published."""

    def __init__(self, reason: str, *, maybe_published: bool = False) -> None:
        super().__init__(reason)
        self.maybe_published = maybe_published


def presence_user(identity: object) -> JSONValue:
    """What presence shows of the identity auth.py returned: itself if it is JSON (a name, a
    dict of public fields...), else its ``str``; None stays None (anonymous)."""
    if identity is None or isinstance(identity, str | int | float | bool):
        return identity
    if isinstance(identity, list | dict):
        try:
            _compact(identity)
        except (TypeError, ValueError):
            return str(identity)
        return identity
    return str(identity)


class HubClosed(HubUnavailable):
    """The hub is closed (the service is stopping): nothing can be published any more."""


class PresenceOff(HubUnavailable):
    """The hub keeps no presence (``presence=False``): nobody can be listed."""


class Position(NamedTuple):
    """A place in a channel's stream: after the message numbered ``offset`` of ``epoch``."""

    offset: int
    epoch: str


def new_epoch() -> str:
    """A fresh epoch: random, so a history that was lost never seems to continue."""
    return secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """What a hub keeps of one channel, where it differs from the hub's own settings (None:
    the hub's). ``presence`` and ``join_leave`` can only turn off what the hub keeps."""

    history_size: int | None = None
    history_ttl: float | None = None
    presence: bool | None = None
    join_leave: bool | None = None


class Kept(NamedTuple):
    """What a hub keeps of one channel: its settings, narrowed by the channel's options."""

    history_size: int
    history_ttl: float
    presence: bool
    join_leave: bool


@dataclass(frozen=True, slots=True)
class Publication:
    """One published message: its position and the text every subscriber is sent."""

    offset: int
    epoch: str
    text: str
    published_ns: int = 0
    """When it was published (`now_ns`, the publisher's clock); 0: unknown (history)."""


class BroadcastStats:
    """What a hub has done, in plain counters that an observer reads (``metrics.py``).

    The hub adds to them as it goes (``Hub.count_in``); nothing here is locked or awaited.
    ``lag_buckets[i]`` counts live deliveries sent at most ``LAG_BOUNDS[i]`` seconds after
    their publication (the last, any later), not cumulated, of one delivery in `LAG_SAMPLE`;
    ``lag_seconds`` is their sum.
    """

    __slots__ = (
        "backend_up",
        "counted_deliveries",
        "drops",
        "lag_buckets",
        "lag_countdown",
        "lag_seconds",
        "published",
        "reconnects",
        "recoveries",
    )

    def __init__(self) -> None:
        self.published = 0
        """Messages this process published."""
        self.counted_deliveries = 0
        """`deliveries` but the live ones of the current round of ``lag_countdown``."""
        self.drops = 0
        """Messages dropped from full subscriber queues (slow readers)."""
        self.recoveries = {"recovered": 0, "not_recovered": 0}
        """Subscriptions made with ``since``, by outcome."""
        self.lag_buckets = [0] * (len(LAG_BOUNDS) + 1)
        self.lag_seconds = 0.0
        self.lag_countdown = LAG_SAMPLE
        """Live deliveries to send until the next one whose lag is measured; each round
        adds `LAG_SAMPLE` to ``counted_deliveries``."""
        self.backend_up: bool | None = None
        """Whether the hub's backend (Redis) is connected; None: the hub has none."""
        self.reconnects = 0
        """Times the hub connected to its backend again after losing it."""

    @property
    def deliveries(self) -> int:
        """Messages sent to subscribers' connections, live and from the history.

        Counted as they are sent: what was dropped for a slow reader, still queued when
        the subscription ended or skipped as a duplicate is not. A live send only steps
        the lag countdown (one counter per send, not two); its rounds are added up here."""
        return self.counted_deliveries + LAG_SAMPLE - self.lag_countdown


@dataclass(slots=True)
class _Gap:
    """``count`` messages lost just before the position ``offset``/``epoch`` (count None:
    unknown)."""

    count: int | None
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class _Replayed:
    """A message from the history, sent on resume: never dropped to make room (the history
    is bounded by its own size)."""

    publication: Publication


@dataclass(frozen=True, slots=True)
class _Notice:
    """A notice for the subscriber (never dropped to make room)."""

    text: str


@dataclass(frozen=True, slots=True)
class _Event:
    """A join, leave or direct message for the subscriber (see `Subscription.notify`)."""

    text: str


class Subscription:
    """One connection's place on a channel: the queue of what to send it, bounded.

    A new subscription waits (it buffers what the hub delivers, up to its queue size) until
    the hub `resume`\\ s it with the channel's position and, when it asked for them with
    ``since``, the messages it missed. Hubs fill it with `deliver` (never waits); the
    connection empties it with `next`.
    """

    __slots__ = (
        "_counter",
        "_early",
        "_ended",
        "_entries",
        "_epoch",
        "_events",
        "_held",
        "_inbox",
        "_lane",
        "_messages",
        "_offset",
        "_resumed",
        "_waiter",
        "channel",
        "client_id",
        "dropped",
        "dropped_events",
        "in_lane",
        "queue_size",
        "recovered",
        "since",
        "stats",
        "user",
        "user_key",
    )

    def __init__(
        self,
        channel: str,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        since: Position | None = None,
        stats: BroadcastStats | None = None,
        user: JSONValue = None,
        client_id: str | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size!r}.")
        self.channel = channel
        self.client_id = client_id or secrets.token_urlsafe(CLIENT_ID_BYTES)
        """Names this connection in presence lists: random, so nobody can guess another's
        (a connection of many channels gives each of its subscriptions its own id)."""
        self.user = user
        """Who the client is (what auth.py returned, as JSON), or None."""
        self.user_key = None if user is None else _compact(user)
        """``user`` as compact JSON: what per-user delivery matches."""
        self.stats = stats
        self.queue_size = queue_size
        self.since = since
        """The position the client asked to resume from, if any."""
        self.recovered: bool | None = None
        """Once resumed with ``since``: whether every message after it could be sent."""
        self.dropped = 0
        """How many messages were dropped because the queue was full."""
        self.dropped_events = 0
        """How many events were dropped because ``queue_size`` of them were waiting."""
        self._offset = 0
        self._epoch = ""
        self._resumed = False
        self._held: deque[Publication] | None = deque(maxlen=queue_size)
        """What the hub delivered while the subscription waits to be resumed; None when live."""
        self._entries: list[Publication | _Replayed | _Gap | _Notice | _Event] = []
        """What to send, oldest first: a list (56 bytes empty, where a deque is 600; a
        connection of many channels has many), short enough to take from the front."""
        self._messages = 0
        self._events = 0
        """Events (join, leave, direct) queued: at most ``queue_size``, later ones dropped."""
        self._early: list[str] | None = []
        """Events that came before the subscribed notice, sent right after it."""
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        """What `next` waits on while nothing is queued (an ``asyncio.Event`` costs a deque
        of 600 bytes per subscriber, and more work per delivery)."""
        self._inbox: Reader | None = None
        """Where this subscription says it has something to send, when read by `poll`."""
        self._lane: Lane | None = None
        """Its channel's `Lane` (given by the `Fanout` that made it), if any."""
        self._counter: SendCounter | None = None
        """Its link's counter while it is in the lane."""
        self.in_lane = False
        """Whether its channel's messages are written to its connection by the `Lane`
        (nothing queued then; its position is the lane's)."""

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def live(self) -> bool:
        """True while the channel's messages go straight to the client's queue."""
        return self._held is None and not self._ended

    @property
    def waiting(self) -> bool:
        """True while the subscription waits for the hub to `resume` it."""
        return self._held is not None and not self._ended

    @property
    def position(self) -> Position | None:
        """The position of the last message queued or accounted for; None before `resume`."""
        if self.in_lane and self._lane is not None:
            return Position(self._lane.offset, self._lane.epoch)
        return Position(self._offset, self._epoch) if self._resumed else None

    @property
    def history_since(self) -> Position | None:
        """The position after which this subscription needs the channel's history, if any."""
        return self.position if self._resumed else self.since

    def needed(self, history: Sequence[Publication]) -> Sequence[Publication]:
        """What this subscription needs of ``history`` (a channel's messages, contiguous,
        in order, of one epoch): those after its position, all of them if of another epoch."""
        since = self.history_since
        if since is None or not history:
            return ()
        if since.epoch != history[0].epoch:
            return history
        start = since.offset + 1 - history[0].offset
        if start <= 0:
            return history
        return list(itertools.islice(history, start, None))

    def resume(self, history: Sequence[Publication], top: Position) -> None:
        """Go live at the channel's position ``top``, after the ``history`` it needs.

        ``history`` holds the channel's messages in order (those at or before the
        subscription's position are skipped). The first time, the subscribed notice is
        queued, with ``recovered`` when the subscription was made with ``since``; later
        (the hub lost its backend meanwhile), a gap the history does not cover is
        reported. Then what arrived while it waited follows, duplicates skipped.
        """
        if self._held is None or self._ended:
            return
        if not self._resumed:
            self._resumed = True
            since = self.since
            start = top
            if since is not None:
                self.recovered = _recoverable(since, top, history)
                start = since if self.recovered else top
                if self.stats is not None:
                    self.stats.recoveries["recovered" if self.recovered else "not_recovered"] += 1
            self._offset, self._epoch = start
            self._put(
                _Notice(subscribed_notice(self.channel, start, self.recovered, self.client_id))
            )
            early, self._early = self._early, None
            for text in early or ():
                self.notify(text)
        for publication in history:
            self._accept(publication, replayed=True)
        if top.epoch != self._epoch:
            self._put(_Gap(None, top.offset, top.epoch))
            self._offset, self._epoch = top
        elif top.offset > self._offset:
            self._put(_Gap(top.offset - self._offset, top.offset, top.epoch))
            self._offset = top.offset
        held, self._held = self._held, None
        for publication in held:
            self._accept(publication)
        self._wake()  # live now: a relay takes it to its channel's lane (see `go_direct`)

    def hold(self) -> None:
        """The hub lost its backend: wait for it to `resume` this subscription."""
        self.leave_lane()
        if self._held is None and not self._ended:
            self._held = deque(maxlen=self.queue_size)

    def deliver(self, publication: Publication) -> None:
        """Queue one message; when the queue is full, drop the oldest queued message."""
        if self.in_lane:
            self.leave_lane()
        if self._held is not None:
            if not self._ended:
                self._held.append(publication)
            return
        self._accept(publication)

    def notify(self, text: str) -> None:
        """Queue an event (join, leave, direct message): not a message of the channel's stream,
        so it has no offset; when ``queue_size`` events wait already, it is dropped."""
        if self._ended:
            return
        if self._early is not None:
            if len(self._early) < self.queue_size:
                self._early.append(text)
            return
        if self._events >= self.queue_size:
            self.dropped_events += 1
            return
        self._events += 1
        self._entries.append(_Event(text))
        self._wake()

    def end(self) -> None:
        """No more messages will come: `next` returns what is queued, then None."""
        self.leave_lane()
        self._ended = True
        self._wake()

    def go_direct(self, open_direct: OpenDirect) -> bool:
        """Join its channel's `Lane` through the connection's `WRITE_DIRECT` (its reader
        calls this once it has sent all that was queued): True if it did. It stays there
        until the link stops, the reader leaves (`leave_lane`), or a message comes that the
        lane cannot write (out of order, another epoch)."""
        lane = self._lane
        if (
            lane is None
            or self.in_lane
            or self._entries
            or self._held is not None
            or self._ended
            or not self._resumed
        ):
            return False
        return lane.join(self, open_direct)

    def leave_lane(self) -> None:
        """Go back to the queue: what the channel delivers from now on is queued."""
        if self.in_lane and self._lane is not None:
            self._lane.leave(self)

    def link_stopped(self) -> None:
        """Its link stopped (`session.LinkStop`: the server's or the guard's word): back to
        the queue. Told of a link it left already, nothing happens."""
        if self.in_lane and self._lane is not None:
            self._lane.stopped(self)

    async def next(self) -> str | None:
        """The next text to send the client (a message or a notice); None once ended.

        One reader at a time: a call while another waits raises RuntimeError."""
        while not self._entries:
            if self._ended:
                return None
            if self._waiter is not None:
                raise RuntimeError("Subscription.next() was called while another call waits.")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return self.poll()

    def attach(self, inbox: Reader) -> None:
        """Tell ``inbox`` (an `Inbox`, or any `Reader`) from now on whenever something is
        queued (or the end), instead of waking `next`; if something is queued already, at
        once."""
        self._inbox = inbox
        if self._entries or self._ended:
            inbox.wake(self)

    def poll(self) -> str | None:
        """The next text to send the client, or None when nothing is queued (never waits);
        what it takes is counted as sent. A reader of many subscriptions polls those its
        `Inbox` says are ready."""
        entries = self._entries
        if not entries:
            return None
        entry = entries.pop(0)
        stats = self.stats
        if type(entry) is Publication:
            self._messages -= 1
            if stats is not None:  # a delivery: counted by the countdown (see deliveries)
                stats.lag_countdown -= 1
                if not stats.lag_countdown:
                    stats.lag_countdown = LAG_SAMPLE
                    stats.counted_deliveries += LAG_SAMPLE
                    if entry.published_ns:
                        _measure_lag(stats, entry.published_ns)
            return entry.text
        if type(entry) is _Replayed:
            if stats is not None:
                stats.counted_deliveries += 1
            return entry.publication.text
        if type(entry) is _Event:
            self._events -= 1
            return entry.text
        if isinstance(entry, _Gap):
            return dropped_notice(self.channel, entry.count, Position(entry.offset, entry.epoch))
        assert isinstance(entry, _Notice)
        return entry.text

    def _wake(self) -> None:
        """Wake the `next` call that waits, if any: something is queued, or the end."""
        if self._inbox is not None:
            self._inbox.wake(self)
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _accept(self, publication: Publication, replayed: bool = False) -> None:
        """Queue ``publication`` if it is new, after a gap if some came before it unseen."""
        if self._ended:
            return
        if publication.epoch == self._epoch:
            missed = publication.offset - self._offset - 1
            if missed < 0:
                return  # already queued or accounted for
            if missed:
                self._put(_Gap(missed, publication.offset - 1, publication.epoch))
        else:
            self._put(_Gap(None, publication.offset - 1, publication.epoch))
            self._epoch = publication.epoch
        self._offset = publication.offset
        if replayed:
            self._entries.append(_Replayed(publication))
            self._wake()
            return
        if self._messages >= self.queue_size:
            self._drop_oldest()
        self._messages += 1
        self._entries.append(publication)
        self._wake()

    def _put(self, entry: _Gap | _Notice) -> None:  # a gap joins one just before it
        last = self._entries[-1] if self._entries else None
        if isinstance(entry, _Gap) and isinstance(last, _Gap):
            self._entries[-1] = _joined(last, entry)
        else:
            self._entries.append(entry)
        self._wake()

    def _drop_oldest(self) -> None:
        """Drop the oldest queued message; a gap takes its place (or grows, beside one)."""
        index = next(i for i, entry in enumerate(self._entries) if type(entry) is Publication)
        oldest = self._entries[index]
        assert isinstance(oldest, Publication)
        gap = _Gap(1, oldest.offset, oldest.epoch)
        self._messages -= 1
        self.dropped += 1
        if self.stats is not None:
            self.stats.drops += 1
        after = self._entries[index + 1] if index + 1 < len(self._entries) else None
        if isinstance(after, _Gap):
            gap = _joined(gap, after)
            del self._entries[index + 1]
        before = self._entries[index - 1] if index else None
        if isinstance(before, _Gap):
            self._entries[index - 1] = _joined(before, gap)
            del self._entries[index]
        else:
            self._entries[index] = gap


def _measure_lag(stats: BroadcastStats, published_ns: int, times: int = 1) -> None:
    """Count the lag of ``times`` deliveries sent now, of a message published at
    ``published_ns``."""
    # Clocks of two machines may disagree: a negative lag counts as 0.
    lag = (time.time_ns() - published_ns) / 1e9
    if lag > 0:
        stats.lag_buckets[bisect.bisect_left(LAG_BOUNDS, lag)] += times
        stats.lag_seconds += lag * times
    else:
        stats.lag_buckets[0] += times


def _joined(first: _Gap, second: _Gap) -> _Gap:
    """Two gaps side by side as one: the sizes added (unknown if either is), up to the second."""
    count = None if first.count is None or second.count is None else first.count + second.count
    return _Gap(count, second.offset, second.epoch)


def _recoverable(since: Position, top: Position, history: Sequence[Publication]) -> bool:
    """Whether ``history`` holds every message after ``since`` up to ``top``."""
    if since.epoch != top.epoch or since.offset > top.offset:
        return False
    if since.offset == top.offset:
        return True
    return bool(history) and history[0].offset <= since.offset + 1


class Reader(Protocol):
    """What an attached subscription (`Subscription.attach`) tells as soon as it has something
    queued or has ended (it is then emptied with `Subscription.poll`): an `Inbox`, or the
    relay of a broadcast connection (`run_broadcast`)."""

    def wake(self, subscription: Subscription | None) -> None: ...


class Inbox:
    """The subscriptions of one connection of many channels, read by one task.

    Each `attach`\\ ed subscription tells its inbox when it has something queued (or has
    ended); `ready` waits until one has, and gives every such subscription once, in the
    order they became ready, to be emptied with `Subscription.poll`. The reader's own
    queues (the messages to its user, say) wake it as None.
    """

    __slots__ = ("_ready", "_waiter")

    def __init__(self) -> None:
        self._ready: dict[Subscription | None, None] = {}
        self._waiter: asyncio.Future[None] | None = None

    def wake(self, subscription: Subscription | None) -> None:
        self._ready[subscription] = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def pending(self) -> bool:
        """Whether a subscription (or the reader's own queue) is ready, not yet taken."""
        return bool(self._ready)

    async def ready(self) -> list[Subscription | None]:
        """The subscriptions that have something queued or ended, once it is at least one.

        One reader at a time: a call while another waits raises RuntimeError."""
        while not self._ready:
            if self._waiter is not None:
                raise RuntimeError("Inbox.ready() was called while another call waits.")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        ready = list(self._ready)
        self._ready.clear()
        return ready


class UserListener(Protocol):
    """What receives the messages sent to a user (`Hub.publish_to_user`): a subscription,
    or a connection of many channels that wants each once (`Hub.listen_to_user`)."""

    def notify(self, text: str) -> None: ...


class Lane:
    """The subscriptions of one channel whose channel messages are written straight to
    their connections: one write of one encoded text per subscriber, with no queue, check
    or count per subscriber, so that a room of many costs little more per message than its
    writes.

    A subscription joins (`Subscription.go_direct`) when it has sent all it had queued, its
    connection's server offers `session.WRITE_DIRECT` (through the guard) and it is at the
    lane's position; the lane holds its link's writer (the connection's transport) and
    counter, nothing made for it. It leaves, back to its queue, when its link stops (the
    transport is no longer writable, a close, the guard closing it, the connection lost),
    when it waits or ends, when its reader must send something it could not send at once,
    or when the lane meets a message it cannot write to all (out of order, another epoch:
    every member leaves and the message is queued for each, with the usual duplicate and
    gap checks).
    What one subscription would do per message is done here once per message: the
    position, the guard's counts (each connection's tally, by how many went out), the
    hub's deliveries and their lag samples.
    """

    __slots__ = (
        "carrying",
        "counts",
        "encode",
        "epoch",
        "leaving",
        "offset",
        "stats",
        "writes",
    )

    def __init__(self) -> None:
        self.writes: dict[Subscription, Writer] = {}
        """The members, each with its link's writer (its connection's transport)."""
        self.counts: dict[SendCounter, int] = {}
        """The members' counters (their endpoints' tallies), with how many members each."""
        self.encode: Callable[[str], Any] | None = None
        self.offset = 0
        self.epoch = ""
        """The position of the last message written: every member's."""
        self.stats: BroadcastStats | None = None
        self.carrying = False
        self.leaving: list[tuple[Subscription, bool]] = []
        """Members whose link stopped while a message was being written (each with whether
        its write of it failed), let go once it is written."""

    def join(self, subscription: Subscription, open_direct: OpenDirect) -> bool:
        """Add ``subscription`` (caught up, nothing queued) through a link opened with
        ``open_direct``; False if it is not at the lane's position or no link opens."""
        members = self.writes
        if members and (
            subscription._offset != self.offset
            or subscription._epoch != self.epoch
            or subscription.stats is not self.stats
        ):
            return False
        link = open_direct(subscription)  # its link_stopped is told when the link stops
        if link is None or (members and link.encode is not self.encode):
            return False
        if not members:
            self.offset, self.epoch = subscription._offset, subscription._epoch
            self.encode, self.stats = link.encode, subscription.stats
        members[subscription] = link.writer
        counter = subscription._counter = link.counter
        if counter is not None:
            self.counts[counter] = self.counts.get(counter, 0) + 1
        subscription.in_lane = True
        return True

    def stopped(self, subscription: Subscription) -> None:
        """``subscription``'s link stopped (its server's or its guard's word)."""
        if self.carrying:  # from within a write: let go once the message is written
            self.leaving.append((subscription, False))
        else:
            self.leave(subscription)

    def carry(self, publication: Publication) -> None:
        """Write ``publication`` to every member, or, if it does not follow the lane's
        position, let every member go back to its queue (where the hub then delivers it)."""
        if publication.offset != self.offset + 1 or publication.epoch != self.epoch:
            for subscription in list(self.writes):
                self.leave(subscription)
            return
        self.offset = publication.offset
        text = publication.text
        assert self.encode is not None, "a lane with members has their encode"
        encoded = self.encode(text)
        self.carrying = True
        try:
            for subscription, writer in self.writes.items():
                try:
                    writer.write(encoded)
                except Exception:  # a transport that broke: it is queued for it instead
                    self.leaving.append((subscription, True))
        finally:
            self.carrying = False
        leaving, self.leaving = self.leaving, []
        written = len(self.writes)
        for subscription, failed in leaving:  # not sent: the hub's delivery queues it
            if failed and self.leave(subscription):
                subscription._offset -= 1
                written -= 1
        for counter, members in self.counts.items():
            counter.count_many(text, members)
        for subscription, failed in leaving:  # sent, then its link stopped
            if not failed:
                self.leave(subscription)
        stats = self.stats
        if stats is not None and written:
            countdown = stats.lag_countdown - written  # as `poll` steps it, ``written`` times
            if countdown > 0:
                stats.lag_countdown = countdown
            else:
                rounds = -countdown // LAG_SAMPLE + 1
                stats.lag_countdown = countdown + rounds * LAG_SAMPLE
                stats.counted_deliveries += rounds * LAG_SAMPLE
                if publication.published_ns:
                    _measure_lag(stats, publication.published_ns, rounds)

    def leave(self, subscription: Subscription) -> bool:
        """``subscription`` goes back to its queue, at the lane's position; False if it was
        not in. Its link is dropped: a stop that comes for it later finds it out."""
        if self.writes.pop(subscription, None) is None:
            return False
        counter, subscription._counter = subscription._counter, None
        if counter is not None:
            left = self.counts[counter] - 1
            if left:
                self.counts[counter] = left
            else:
                del self.counts[counter]
        subscription.in_lane = False
        subscription._offset, subscription._epoch = self.offset, self.epoch
        return True


class Fanout:
    """A hub's local subscriptions, by channel: delivers a channel's messages to each one."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self.stats: BroadcastStats | None = None
        """Where the subscriptions made from now on count (see `Hub.count_in`)."""
        self._channels: dict[str, set[Subscription]] = {}
        self._lanes: dict[str, Lane] = {}
        """Each channel's `Lane`, while it has subscriptions."""
        self._users: dict[str, set[UserListener]] = {}
        """Subscriptions by their ``user_key``, for per-user delivery."""

    def add(
        self,
        channel: str,
        since: Position | None = None,
        user: JSONValue = None,
        client_id: str | None = None,
        direct: bool = True,
    ) -> Subscription:
        subscription = Subscription(channel, self.queue_size, since, self.stats, user, client_id)
        subscribers = self._channels.get(channel)
        if subscribers is None:
            subscribers = self._channels[channel] = set()
            self._lanes[channel] = Lane()
        subscribers.add(subscription)
        subscription._lane = self._lanes[channel]
        if direct and subscription.user_key is not None:
            self._users.setdefault(subscription.user_key, set()).add(subscription)
        return subscription

    def listen(self, user: JSONValue, listener: UserListener) -> None:
        """``listener`` is told the messages sent to ``user`` from now on."""
        self._users.setdefault(_compact(user), set()).add(listener)

    def unlisten(self, user: JSONValue, listener: UserListener) -> None:
        key = _compact(user)
        listeners = self._users.get(key)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._users[key]

    def remove(self, subscription: Subscription) -> bool:
        """End ``subscription``; True if its channel has no subscription left."""
        subscription.end()
        subscribers = self._channels.get(subscription.channel)
        if subscribers is None or subscription not in subscribers:
            return False
        subscribers.discard(subscription)
        key = subscription.user_key
        if key is not None and (same_user := self._users.get(key)) is not None:
            same_user.discard(subscription)
            if not same_user:
                del self._users[key]
        if subscribers:
            return False
        del self._channels[subscription.channel]
        del self._lanes[subscription.channel]
        return True

    def channels(self) -> list[str]:
        """The channels that have at least one subscription."""
        return list(self._channels)

    def subscriptions(self, channel: str) -> list[Subscription]:
        return list(self._channels.get(channel, ()))

    def has_subscriptions(self, channel: str) -> bool:
        return channel in self._channels  # remove() drops a channel's empty set

    def count(self, channel: str) -> int:
        """How many subscriptions ``channel`` has here."""
        return len(self._channels.get(channel, ()))

    def deliver(self, channel: str, publication: Publication) -> None:
        subscribers = self._channels.get(channel)
        if subscribers is None:
            return
        lane = self._lanes[channel]
        if lane.writes:
            lane.carry(publication)
        for subscription in subscribers:
            if not subscription.in_lane:
                subscription.deliver(publication)

    def notify(self, channel: str, text: str, but: str = "") -> None:
        """Queue the event ``text`` for every subscription of ``channel`` but the client ``but``."""
        for subscription in self._channels.get(channel, ()):
            if subscription.client_id != but:
                subscription.notify(text)

    def notify_user(self, user_key: str, text: str) -> None:
        """Queue the event ``text`` for every subscription of the user ``user_key``."""
        for subscription in self._users.get(user_key, ()):
            subscription.notify(text)

    def presence(self, channel: str, limit: int) -> Presence:
        """The local subscriptions of ``channel``, as a presence list."""
        subscribers = self._channels.get(channel, ())
        clients = [
            {"client_id": subscription.client_id, "user": subscription.user}
            for subscription in itertools.islice(subscribers, limit)
        ]
        return Presence(len(subscribers), clients, len(clients) < len(subscribers))

    def hold_all(self) -> None:
        """Every subscription waits to be resumed (the hub lost its backend)."""
        for subscribers in self._channels.values():
            for subscription in subscribers:
                subscription.hold()

    def end_all(self) -> None:
        for subscribers in self._channels.values():
            for subscription in subscribers:
                subscription.end()
        self._channels.clear()
        self._lanes.clear()
        self._users.clear()


class Hub(abc.ABC):
    """Carries messages between the connections of each channel, with positions and history.

    Use it as an async context manager (``async with hub:``), which starts and closes it,
    or call `start` and `close`. ``publish`` delivers a message to every subscription of
    the channel, in this process and, for hubs with a backend, in every process on it.
    """

    stats: BroadcastStats | None = None
    """What the hub counts in, if anything (`count_in`)."""
    options_of: Callable[[str], ChannelOptions | None] | None = None
    """The options of a channel, where some channels differ (`use_channel_options`)."""
    defaults: Kept = Kept(DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL, True, True)
    """What the hub keeps of a channel without options (its own settings)."""
    join_leave_limit: int | None = DEFAULT_JOIN_LEAVE_LIMIT
    """Clients a channel has at most for its join and leave events to be sent (None: no
    limit); see `announces`."""

    def announces(self, present: int) -> bool:
        """Whether a client joining or leaving a channel of ``present`` clients (itself
        included) is told to the others. Join and leave events stop past
        ``join_leave_limit`` clients: N clients reconnecting at once (a restart) would
        otherwise send N * (N - 1) / 2 of them per channel (Centrifugo's documented
        pitfall); presence still counts and lists everyone."""
        limit = self.join_leave_limit
        return limit is None or present <= limit

    def use_channel_options(self, options_of: Callable[[str], ChannelOptions | None]) -> None:
        """Keep of each channel what ``options_of(channel)`` says (None: the hub's settings):
        a smaller or larger history, no presence or no join and leave events. Call it
        before `start`, with the same function in every process of the service."""
        self.options_of = options_of

    def kept(self, channel: str) -> Kept:
        """What the hub keeps of ``channel``."""
        defaults = self.defaults
        options = None if self.options_of is None else self.options_of(channel)
        if options is None:
            return defaults
        size, ttl = options.history_size, options.history_ttl
        presence = defaults.presence and options.presence is not False
        return Kept(
            defaults.history_size if size is None else size,
            defaults.history_ttl if ttl is None else ttl,
            presence,
            presence and defaults.join_leave and options.join_leave is not False,
        )

    def count_in(self, stats: BroadcastStats) -> None:
        """Count what the hub does in ``stats`` (for metrics): call it before `start`."""
        self.stats = stats

    def parts(self) -> Sequence[Hub]:
        """The hubs this one is made of, each counted on its own (a sharded hub's shards)."""
        return [self]

    @abc.abstractmethod
    async def start(self) -> None:
        """Get ready to publish and subscribe."""

    @abc.abstractmethod
    async def publish(
        self, channel: str, message: Mapping[str, Any], *, info: Mapping[str, Any] | None = None
    ) -> Position:
        """Send ``message`` to every subscription of ``channel``; return its position.

        Subscribers receive ``{"type": "broadcast", "channel", "offset", "epoch",
        "server_ns", "message"}``, with ``"info"`` before ``"message"`` when given (who
        published it, as the server vouches). Raises `HubUnavailable` when it cannot be
        sent, and TypeError or ValueError for a message that is not JSON. Returns without
        waiting for subscribers: each has its own bounded queue.
        """

    @abc.abstractmethod
    async def subscribe(
        self,
        channel: str,
        since: Position | None = None,
        *,
        user: JSONValue = None,
        client_id: str | None = None,
        direct: bool = True,
    ) -> Subscription:
        """A new subscription to ``channel``, resumed after ``since`` if the history allows.

        It receives its subscribed notice (with its ``client_id``, random unless given),
        then messages, once the hub has its position. It is in the channel's presence list,
        as ``user``, until it is unsubscribed; the channel's other subscriptions are told it
        joined (and left). It also receives the messages sent to ``user`` unless ``direct``
        is False (a connection of many channels listens for them once, `listen_to_user`).
        """

    @abc.abstractmethod
    def listen_to_user(self, user: JSONValue, listener: UserListener) -> None:
        """Tell ``listener`` every message sent to ``user`` (`publish_to_user`), from every
        process of the hub, until `unlisten_to_user`."""

    @abc.abstractmethod
    def unlisten_to_user(self, user: JSONValue, listener: UserListener) -> None:
        """Stop telling ``listener`` (again is harmless)."""

    @abc.abstractmethod
    async def history(
        self, channel: str, since: Position | None = None
    ) -> tuple[Position, list[Publication]]:
        """``channel``'s position and the messages its history holds, oldest first: those
        after ``since`` if it is of the channel's epoch, else all of them.

        Raises `HubUnavailable` when the backend cannot be reached.
        """

    @abc.abstractmethod
    async def presence(self, channel: str) -> Presence:
        """Who is subscribed to ``channel``, on every process of the hub.

        Raises `PresenceOff` when the hub keeps no presence, `HubUnavailable` when its
        backend cannot be reached.
        """

    @abc.abstractmethod
    async def publish_to_user(self, user: JSONValue, message: Mapping[str, Any]) -> None:
        """Send ``message`` to every subscription of ``user``, on every channel and process.

        They receive ``{"type": "direct", "server_ns", "message"}``; other users receive
        nothing, and a user with no subscription is no error. Raises `HubUnavailable` when
        it cannot be sent, TypeError or ValueError for a message that is not JSON.
        """

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


class _Stream:
    """A channel's position and its last messages, in a `MemoryHub`."""

    __slots__ = ("epoch", "history", "history_until", "kept_until", "offset")

    def __init__(self, history_size: int) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.history: deque[Publication] = deque(maxlen=history_size)
        self.history_until = 0.0
        self.kept_until = 0.0


class MemoryHub(Hub):
    """A hub inside one process: reaches the connections of this process only.

    Channels' positions and histories live in the process and are lost with it (a new epoch
    then). Join and leave events stop on channels of more than ``join_leave_limit``
    clients (`Hub.announces`). ``clock`` (seconds, monotonic) is for tests.
    """

    def __init__(
        self,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_ttl: float = DEFAULT_HISTORY_TTL,
        presence: bool = True,
        join_leave: bool = True,
        presence_limit: int = DEFAULT_PRESENCE_LIMIT,
        join_leave_limit: int | None = DEFAULT_JOIN_LEAVE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if history_size < 0 or history_ttl <= 0:
            raise ValueError("history_size must be 0 or more and history_ttl more than 0.")
        if presence_limit < 1:
            raise ValueError("presence_limit must be at least 1.")
        self.join_leave_limit = checked_join_leave_limit(join_leave_limit)
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.presence_enabled = presence
        self.join_leave = presence and join_leave
        self.defaults = Kept(history_size, history_ttl, presence, self.join_leave)
        self.presence_limit = presence_limit
        self._clock = clock
        self._fanout = Fanout(queue_size)
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        """By time kept until, soonest first."""
        self._closed = False

    def count_in(self, stats: BroadcastStats) -> None:
        super().count_in(stats)
        self._fanout.stats = stats

    async def start(self) -> None:
        self._closed = False

    async def publish(
        self, channel: str, message: Mapping[str, Any], *, info: Mapping[str, Any] | None = None
    ) -> Position:
        if self._closed:
            raise HubClosed("The broadcast hub is closed; nothing can be published.")
        head, tail = envelope_parts(channel, message, info)
        now = self._clock()
        kept = self.kept(channel)
        stream = self._stream(channel, now, kept)
        stream.offset += 1
        publication = Publication(
            stream.offset,
            stream.epoch,
            joined(head, stream.offset, stream.epoch, tail),
            now_ns(),
        )
        if self.stats is not None:
            self.stats.published += 1
        if kept.history_size:
            stream.history.append(publication)
        stream.history_until = now + kept.history_ttl
        stream.kept_until = now + max(kept.history_ttl, POSITION_TTL)
        self._streams.move_to_end(channel)
        self._fanout.deliver(channel, publication)
        return Position(publication.offset, publication.epoch)

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
            raise HubClosed("The broadcast hub is closed; nothing can be subscribed.")
        kept = self.kept(channel)
        stream = self._stream(channel, self._clock(), kept)
        subscription = self._fanout.add(channel, since, user, client_id, direct)
        subscription.resume(
            subscription.needed(stream.history), Position(stream.offset, stream.epoch)
        )
        if kept.join_leave and self.announces(self._fanout.count(channel)):
            self._fanout.notify(
                channel, presence_event("join", subscription), subscription.client_id
            )
        return subscription

    def listen_to_user(self, user: JSONValue, listener: UserListener) -> None:
        self._fanout.listen(user, listener)

    def unlisten_to_user(self, user: JSONValue, listener: UserListener) -> None:
        self._fanout.unlisten(user, listener)

    async def history(
        self, channel: str, since: Position | None = None
    ) -> tuple[Position, list[Publication]]:
        if self._closed:
            raise HubClosed("The broadcast hub is closed; no history can be read.")
        stream = self._stream(channel, self._clock(), self.kept(channel))
        history = list(stream.history)
        if since is not None and since.epoch == stream.epoch:
            history = [publication for publication in history if publication.offset > since.offset]
        return Position(stream.offset, stream.epoch), history

    async def unsubscribe(self, subscription: Subscription) -> None:
        leaving = not subscription.ended
        channel = subscription.channel
        if (
            not self._fanout.remove(subscription)
            and leaving
            and self.kept(channel).join_leave
            and self.announces(self._fanout.count(channel) + 1)
        ):
            self._fanout.notify(subscription.channel, presence_event("leave", subscription))

    async def presence(self, channel: str) -> Presence:
        if not self.kept(channel).presence:
            raise PresenceOff(PRESENCE_OFF)
        return self._fanout.presence(channel, self.presence_limit)

    async def publish_to_user(self, user: JSONValue, message: Mapping[str, Any]) -> None:
        if self._closed:
            raise HubClosed("The broadcast hub is closed; nothing can be published.")
        self._fanout.notify_user(_compact(user), direct_message(message))

    async def close(self) -> None:
        self._closed = True
        self._fanout.end_all()
        self._streams.clear()

    def _stream(self, channel: str, now: float, kept: Kept) -> _Stream:
        """``channel``'s stream, new if it had none; forgets streams no longer kept."""
        while self._streams:
            oldest_channel, oldest = next(iter(self._streams.items()))
            if oldest.kept_until > now:
                break
            if self._fanout.has_subscriptions(oldest_channel):  # kept while subscribed
                oldest.kept_until = now + POSITION_TTL
                self._streams.move_to_end(oldest_channel)
            else:
                del self._streams[oldest_channel]
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(kept.history_size)
            stream.kept_until = now + max(kept.history_ttl, POSITION_TTL)
        elif stream.history_until <= now:
            stream.history.clear()
        return stream


def subscribed_notice(
    channel: str, position: Position, recovered: bool | None = None, client_id: str = ""
) -> str:
    notice: dict[str, Any] = {
        "type": "subscribed",
        "channel": channel,
        "offset": position.offset,
        "epoch": position.epoch,
        "client_id": client_id,
    }
    if recovered is not None:
        notice["recovered"] = recovered
    return _compact(notice)


def dropped_notice(channel: str, count: int | None, position: Position) -> str:
    return _compact(
        {
            "type": "dropped",
            "channel": channel,
            "count": count,
            "offset": position.offset,
            "epoch": position.epoch,
        }
    )


PRESENCE_OFF: Final = "presence is off on this service (PRESENCE_ENABLED=no)"


def checked_join_leave_limit(limit: int | None) -> int | None:
    """``limit`` checked: at least 1, or None (no limit)."""
    if limit is not None and limit < 1:
        raise ValueError("join_leave_limit must be at least 1, or None for no limit.")
    return limit


def presence_event(kind: str, subscription: Subscription) -> str:
    """The ``join`` or ``leave`` event of ``subscription`` for the other clients of its channel."""
    return _compact(
        {
            "type": kind,
            "channel": subscription.channel,
            "client": {"client_id": subscription.client_id, "user": subscription.user},
        }
    )


def direct_message(message: Mapping[str, Any]) -> str:
    """What each connection of a user gets for a message sent to that user (`publish_to_user`).

    TypeError or ValueError for a message that is not JSON."""
    return '{"type":"direct","server_ns":' + str(now_ns()) + ',"message":' + _compact(message) + "}"


def envelope_parts(
    channel: str, message: Mapping[str, Any], info: Mapping[str, Any] | None = None
) -> tuple[str, str]:
    """The text every subscriber receives for ``message``, cut where its position goes.

    `joined` puts the two parts and a position together; `RedisHub` does the same inside
    Redis, where the offset is given. ``info`` (who published it) goes before the message.
    TypeError or ValueError for a message (or info) that is not JSON.
    """
    head = '{"type":"broadcast","channel":' + _compact(channel) + ',"offset":'
    published = ',"server_ns":' + str(now_ns())
    if info is not None:
        published += ',"info":' + _compact(info)
    tail = published + ',"message":' + _compact(message) + "}"
    return head, tail


def joined(head: str, offset: int, epoch: str, tail: str) -> str:
    return head + str(offset) + ',"epoch":"' + epoch + '"' + tail


_compact = dumps  # compact, UTF-8 as is, no NaN: what session.send_json sends


class HasScope(Protocol):
    """What carries an ASGI scope: a websocket, a Starlette/FastAPI ``Request``, ..."""

    @property
    def scope(self) -> Mapping[str, Any]: ...


def hub_of(connection: HasScope | Mapping[str, Any]) -> Hub:
    """The hub that the app's lifespan put in the ASGI state (under `HUB_STATE_KEY`).

    ``connection`` is a websocket, an HTTP request (``hub_of(request)`` in a FastAPI route)
    or an ASGI scope.
    """
    scope = connection if isinstance(connection, Mapping) else connection.scope
    state = scope.get("state") or {}
    hub = state.get(HUB_STATE_KEY)
    if not isinstance(hub, Hub):
        raise RuntimeError(
            "No broadcast hub in the ASGI state: run the app with its lifespan "
            "(uvicorn does unless --lifespan off; use TestClient as a context manager)."
        )
    return hub


MAX_LAST_DIGITS: Final = 9


def last_of(query_string: bytes) -> int | None:
    """How many of a channel's last messages a client asks to start with: ``?last=N``, or None.

    Raises ValueError, with a sentence for the client, when it is malformed or comes with
    ``since`` (a client resumes from a position or starts from the last messages, not both).
    """
    if b"last" not in query_string:
        return None
    query = parse_qs(query_string.decode("latin-1"))
    last = query.get("last", [])
    if not last:
        return None
    if "since" in query or "epoch" in query:
        raise ValueError("give either since and epoch (to resume) or last (to start), not both")
    if len(last) != 1:
        raise ValueError("give last once: how many of the channel's last messages to start with")
    count = last[0]
    if not (count.isascii() and count.isdigit() and len(count) <= MAX_LAST_DIGITS):
        raise ValueError(
            "last must be how many of the channel's last messages to start with: "
            "a whole number, 0 or more"
        )
    return int(count)


async def start_of_last(hub: Hub, channel: str, count: int) -> Position:
    """The position before the last ``count`` messages of ``channel`` that its history holds
    (fewer when it holds fewer; the channel's position when it holds none, or count is 0).

    Raises `HubUnavailable` when the history cannot be read."""
    top, history = await hub.history(channel)
    history = [publication for publication in history if publication.epoch == top.epoch]
    if not count or not history:
        return top
    first = history[-min(count, len(history))]
    return Position(first.offset - 1, first.epoch)


class Refused(Exception):
    """A client's message that an ``on_message`` hook refuses; ``str(error)`` is the
    sentence the client gets as ``{"type": "error", "reason": ...}``."""


MessageHook: TypeAlias = Callable[
    [WS, dict[str, Any]], Mapping[str, Any] | Awaitable[Mapping[str, Any]]
]
"""What `run_broadcast` calls with the connection and each JSON object its client sends,
before publishing it: it returns the message to publish (the same, or changed), or raises
`Refused`. It may be a plain function or a coroutine function. The connection's
``scope["user"]`` is what auth.py returned (None: anonymous)."""


def since_of(query_string: bytes) -> Position | None:
    """The position a client asks to resume from: ``?since=OFFSET&epoch=EPOCH``, or None.

    Raises ValueError, with a sentence for the client, when they are malformed.
    """
    if b"since" not in query_string and b"epoch" not in query_string:
        return None
    query = parse_qs(query_string.decode("latin-1"))
    since, epoch = query.get("since", []), query.get("epoch", [])
    if not since and not epoch:
        return None
    if len(since) != 1 or len(epoch) != 1:
        raise ValueError("give since and epoch together, once each, to resume a channel")
    offset, name = since[0], epoch[0]
    if not (offset.isascii() and offset.isdigit() and len(offset) <= 18):
        raise ValueError("since must be the offset of a message: a whole number, 0 or more")
    if not _EPOCH.fullmatch(name):
        raise ValueError(
            f"epoch must be the epoch of a message: up to {MAX_EPOCH_LENGTH} letters, "
            "digits or _.:-"
        )
    return Position(int(offset), name)


async def run_broadcast(
    websocket: WS,
    hub: Hub,
    channel: str | None = None,
    *,
    publish: bool = True,
    on_message: MessageHook[WS] | None = None,
) -> None:
    """Serve one connection of a broadcast endpoint until it ends (see the module's docs).

    ``channel`` defaults to the connection's path, so ``/ws/rooms/{room}`` has one channel
    per room. A query ``?since=OFFSET&epoch=EPOCH`` resumes after that position;
    ``?last=N`` starts with the channel's last N messages that its history holds. With
    ``publish`` False the channel is receive-only: the service publishes (``hub.publish``,
    ``POST /api/publish``), and a message from the client gets an error reply instead.
    ``on_message`` (a `MessageHook`) is called with the connection and each message its
    client sends, and gives the message to publish or raises `Refused`. Accepts and closes
    the socket as `run_websocket` does; the subscription ends with the session.
    """
    channel = channel or str(websocket.scope["path"])
    query_string = websocket.scope.get("query_string", b"")
    try:
        since = since_of(query_string)
        last = last_of(query_string)
    except ValueError as error:
        await run_websocket(websocket, _refusal(str(error)))
        return
    if last is not None:
        try:
            since = await start_of_last(hub, channel, last)
        except HubUnavailable as error:
            await run_websocket(websocket, _refusal(str(error), TRY_AGAIN_LATER))
            return
    user = presence_user(websocket.scope.get("user"))
    subscription = await hub.subscribe(channel, since, user=user)
    try:
        receiving = _shared_receiver(hub, channel, publish, on_message)
    except TypeError:  # a hook that cannot be a key (unhashable): this connection's own
        receiving = _receiver(hub, channel, publish, on_message)
    send_now = server_sender(websocket)
    try:
        if send_now is None:  # a task that sends what the subscription queues, and one reading
            await run_websocket(websocket, _relay(subscription), receiving)
        else:  # one task reading; texts are sent from the hub's delivery (see _Relay)
            relay = _Relay(subscription, send_now, server_direct(websocket), receiving)
            await run_websocket(websocket, relay)
    finally:
        await hub.unsubscribe(subscription)
        if subscription.dropped:
            logger.warning(
                "websocket %s: %d broadcast messages dropped for a slow reader",
                channel,
                subscription.dropped,
            )


def _receiver(
    hub: Hub, channel: str, publish: bool, on_message: MessageHook[Any] | None
) -> TaskFactory[Any]:
    """What reads a broadcast connection's client."""
    return receive_json(
        _publisher(hub, channel, on_message) if publish else _receive_only,
        presence=_presence_answer(hub, channel),
    )


_shared_receiver = functools.lru_cache(maxsize=1024)(_receiver)
"""`_receiver`, one for the connections of a channel (kept for the 1,024 latest), not
closures made for each connection (about 600 bytes each)."""


def _refusal(reason: str, code: int = POLICY_VIOLATION) -> TaskFactory[SessionSocket]:
    async def refusing(websocket: SessionSocket) -> None:
        await send_json(websocket, {"type": "error", "reason": reason})
        await websocket.close(code)

    return refusing


def _relay(subscription: Subscription) -> TaskFactory[SessionSocket]:
    async def relaying(websocket: SessionSocket) -> None:
        while (text := await subscription.next()) is not None:
            await websocket.send_text(text)
        await websocket.close(SERVICE_RESTART)  # the hub closed: the service is stopping

    return relaying


class _Relay:
    """Sends what a subscription queues, on a connection whose server can send a text at once
    (`session.server_sender`): from the hub's delivery itself, the moment it is queued, so that
    a broadcast costs each connection one write of its frame and no task.

    It is the subscription's `Reader`. When a text cannot be sent at once (the connection is
    not writable: a slow reader, a close under way), a task of its own sends it, waiting as a
    send does, and then whatever was queued meanwhile, in order (nothing is sent at once
    while it runs: the bounded queue, its ``dropped`` notices and the guard's send timeout
    apply as on the other path); it ends once the queue is empty. When the subscription ends
    (the hub closed), the connection is closed with 1012. A send that fails ends the session
    with the error, as the relay task of the other path does.

    Where the server offers direct writes too (`session.WRITE_DIRECT`), the subscription
    joins its channel's `Lane` whenever the relay has sent all it had queued: the channel's
    messages are then written by the lane, with nothing queued or woken per subscriber,
    until the lane lets it go (see `Lane`).
    """

    __slots__ = (
        "connected",
        "drainer",
        "error",
        "finished",
        "open_direct",
        "receiving",
        "send_now",
        "session",
        "subscription",
        "websocket",
    )

    def __init__(
        self,
        subscription: Subscription,
        send_now: SendNow,
        open_direct: OpenDirect | None,
        receiving: TaskFactory[Any],
    ) -> None:
        self.subscription = subscription
        self.send_now: SendNow | None = send_now
        """None once the session is over (nothing of the connection is held after it)."""
        self.open_direct = open_direct
        """The server's `WRITE_DIRECT` (through the guard), if any; None once it is over."""
        self.receiving = receiving
        """What reads the client, in the session's own task."""
        self.drainer: asyncio.Task[None] | None = None
        """The task sending what could not be sent at once, while it runs."""
        self.session: asyncio.Task[Any] | None = None
        """The session's task (it reads the client), cancelled when a send fails."""
        self.error: Exception | None = None
        self.finished = False
        self.websocket: SessionSocket | None = None
        self.connected: Enum | None = None
        """The face's state of an accepted connection: what a text is sent at once in."""

    async def __call__(self, websocket: SessionSocket) -> None:
        """The session (a task factory for `run_websocket`): the client read in the
        session's own task, with this relay sending (no closure: one object less each)."""
        task = self.session = asyncio.current_task()
        self.websocket = websocket
        self.connected = websocket.application_state  # accepted: run_websocket did
        self.subscription.attach(self)  # what is queued (the subscribed notice) goes now
        try:
            await self.receiving(websocket)
        except asyncio.CancelledError:
            if self.error is None or task is None or task.uncancel():
                raise  # not (only) the relay's cancellation
            raise self.error from None
        finally:
            self.finished = True
            self.subscription.leave_lane()
            self.session = self.websocket = self.send_now = self.open_direct = None
            if self.drainer is not None:
                await cancel_and_wait([self.drainer])

    def wake(self, subscription: Subscription | None) -> None:
        """Something is queued, or the subscription ended: send it now if it can be."""
        if self.drainer is not None or self.finished:
            return  # the drainer sends it, in order; or the session is over
        send_now, websocket, connected = self.send_now, self.websocket, self.connected
        if send_now is None:
            return
        poll = self.subscription.poll
        while (text := poll()) is not None:
            # What a face does with a text in its accepted state is to pass it on (both
            # faces); in any other state the drainer sends it through the face, as a send.
            if (
                websocket is None
                or websocket.application_state is not connected
                or not send_now(text)
            ):
                self.subscription.leave_lane()  # what follows is queued behind it
                self.drainer = asyncio.get_running_loop().create_task(self.drain(text))
                return
        if self.subscription.ended:
            self.drainer = asyncio.get_running_loop().create_task(self.drain(None))
        else:
            self.go_direct()

    def go_direct(self) -> None:
        """All that was queued is sent: join the lane, where the server offers it."""
        websocket, open_direct = self.websocket, self.open_direct
        if (
            open_direct is not None
            and websocket is not None
            and websocket.application_state is self.connected
        ):
            self.subscription.go_direct(open_direct)

    async def drain(self, text: str | None) -> None:
        websocket = self.websocket
        assert websocket is not None, "a drainer runs only during the session"
        try:
            while text is not None:
                await websocket.send_text(text)
                text = self.subscription.poll()
            if self.subscription.ended:
                await websocket.close(SERVICE_RESTART)  # the hub closed: the service stops
            else:
                self.drainer = None
                self.go_direct()
        except Exception as error:  # the connection failed: the session ends with it
            self.error = error
            if self.session is not None:
                self.session.cancel()
        finally:
            self.drainer = None


def _presence_answer(hub: Hub, channel: str) -> JsonHandler[SessionSocket]:
    async def answer(websocket: SessionSocket, message: dict[str, Any]) -> None:
        try:
            presence = await hub.presence(channel)
        except HubUnavailable as error:
            await send_json(websocket, {"type": "error", "reason": str(error)})
            return
        await send_json(websocket, presence.answer(channel))

    return answer


RECEIVE_ONLY: Final = "this channel is receive-only: only the service publishes on it"


async def _receive_only(websocket: SessionSocket, message: dict[str, Any]) -> None:
    await send_json(websocket, {"type": "error", "reason": RECEIVE_ONLY})


def _publisher(
    hub: Hub, channel: str, on_message: MessageHook[WS] | None = None
) -> JsonHandler[WS]:
    async def publish(websocket: WS, message: dict[str, Any]) -> None:
        outgoing: Mapping[str, Any] = message
        try:
            if on_message is not None:
                hooked = on_message(websocket, message)
                outgoing = await hooked if inspect.isawaitable(hooked) else hooked
            await hub.publish(channel, outgoing)
        except (HubUnavailable, Refused) as error:
            await send_json(websocket, {"type": "error", "reason": str(error)})

    return publish
