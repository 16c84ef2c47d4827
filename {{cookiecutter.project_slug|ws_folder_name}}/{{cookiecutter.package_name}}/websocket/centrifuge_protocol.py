"""The Centrifuge client protocol (version 2, JSON) on a hub: many channels, one connection.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). `run_channels` serves one connection of a ``channels`` endpoint so that
the maintained Centrifuge SDKs (``centrifuge`` on npm, ``centrifuge-python``, and the Go,
Dart, Swift and Java ones) work against it unchanged. It is written against the `Hub`
interface and `SessionSocket`, so it serves every hub and both faces, and the hub learns
nothing of Centrifuge: a publication's text is turned into a ``pub`` push once per process
(not once per subscriber), and join, leave and per-user messages likewise. Where the server
can send a text at once (`session.SEND_TEXT_NOW`, `LeanProtocol`'s), a ``pub`` push and a
message to the user are sent from the hub's delivery itself, no task woken; the connection's
writer task sends the rest (and everything after a push that could not go at once, in
order, until it has caught up).

What is served (centrifugal.dev, "Client protocol"): JSON commands ``{"id": N,
"<method>": {...}}`` answered by one reply with the same id, several to a frame separated
by newlines; ``connect`` (a connection token, or the identity auth.py gave the handshake),
``subscribe`` with recovery, ``unsubscribe``, ``publish``, ``presence``,
``presence_stats``, ``history``; pushes ``pub``, ``join``, ``leave``, ``unsubscribe``
and ``message``; pings ``{}`` answered by pongs ``{}``. Errors carry the protocol's codes;
a client that breaks the protocol is disconnected with its close codes.

Server-side subscriptions: a connection with a user is subscribed at connect to its
user's channel of each *personal* namespace (``user:#alice``, `Namespace.personal`); the
connect reply's ``subs`` gives each one's subscribe result (position, and the
publications recovered from where the client's ``connect.subs`` says it was), and its
publications come as ``pub`` pushes of that channel (the SDKs emit them on the client, not
on a subscription). Such a connection gets what is sent to its user there, recoverable,
and no ``message`` pushes; the client cannot unsubscribe from it (103), and one that
missed messages it cannot be sent closes the connection with 3010 so that the SDK
reconnects and recovers them.

Tokens (``tokens.py``), as Centrifugo answers them: a connection token with ``exp`` makes
the connect reply say ``expires`` and ``ttl``; the client renews it with ``refresh``, and a
connection not renewed by ``exp`` (and ``expired_close_delay`` seconds of grace) is closed
with 3005, so the SDK reconnects with a new token. A ``subscribe`` may carry a
subscription token (required by namespaces whose rule is ``TOKEN``): expired, error 109
(the SDK asks for another); signed with no key of the service, 103; for another channel,
user or connection, a close with 3500. One with ``exp`` is renewed by ``sub_refresh``
(an expired one: error 110), and a subscription not renewed in time ends with an
``unsubscribe`` push (2501, the SDK subscribes again with a new token).
``rpc`` commands go to the methods of ``ChannelsConfig.rpc`` (``rpc.py``): unknown, 104;
data that does not match the method's schema, 107; the method's `RpcError`, its code and
message; any other exception, 100 and a log line, the connection goes on. ``send`` goes to
its handler there, with no reply. Not served: unidirectional transports, the protobuf
encoding, delta compression, server-side subscriptions other than personal channels, and
the server-side refresh of tokens.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from .broadcast import (
    Hub,
    HubUnavailable,
    Inbox,
    Position,
    PresenceOff,
    Publication,
    Subscription,
)
from .namespaces import (
    MAX_CHANNEL_LENGTH,
    ChannelRequest,
    Namespace,
    Namespaces,
    Rule,
    allows,
)
from .rpc import BadParams, MethodNotFound, RpcError, RpcMethods, RpcRequest
from .session import SendNow, SessionSocket, dumps, loads, run_websocket, server_sender
from .tokens import TokenExpired, TokenInvalid, TokenMismatch, TokenVerifier

logger = logging.getLogger(__name__)

DEFAULT_MAX_CHANNELS: Final = 128
DEFAULT_PING_INTERVAL: Final = 25.0
DEFAULT_PONG_TIMEOUT: Final = 8.0
DEFAULT_EXPIRED_CLOSE_DELAY: Final = 25.0
"""Seconds past a token's ``exp`` before its connection is closed, or its subscription
ended (Centrifuge's default): the SDKs renew a token when its ``ttl`` is up, not before."""
MAX_COMMANDS_PER_FRAME: Final = 512
"""Commands in one frame at most (the SDKs send ``connect`` and every subscription
together); a frame of more is a broken client, disconnected."""
CATCH_UP: Final = 1.0
"""Seconds the reader has, once it has answered a frame, to read what waited behind it
before a pong (or a connect) is judged late: a client is not late for the server's own
delay (a frame of subscriptions answered slowly in a reconnect storm)."""
SUBSCRIBE_TIMEOUT: Final = 4.0
"""Seconds a subscription may take to get its position from the hub (Redis away): then
the client is told to try again (a temporary error), before the SDKs' own timeout (5 s)
would make them reconnect."""
MAX_RECOVERED: Final = 300
"""Publications a subscribe reply carries at most (Centrifugo's cap); the rest of a
recovery follow the reply as pushes, in order: a recovery is never partial."""
MAX_QUEUED_MESSAGES: Final = 100
"""Messages to the connection's user waiting to be sent at most (then the oldest go)."""
CACHED_PUSHES: Final = 4096
"""Hub texts whose pushes the process remembers (the newest): a text reaches every local
subscriber of its channel within moments of the first."""


class Error(NamedTuple):
    """An error reply's ``code``, ``message`` and ``temporary`` (the client may retry)."""

    code: int
    message: str
    temporary: bool = False


INTERNAL: Final = Error(100, "internal server error", True)
UNAUTHORIZED: Final = Error(101, "unauthorized")
UNKNOWN_CHANNEL: Final = Error(102, "unknown channel")
PERMISSION_DENIED: Final = Error(103, "permission denied")
METHOD_NOT_FOUND: Final = Error(104, "method not found")
ALREADY_SUBSCRIBED: Final = Error(105, "already subscribed")
LIMIT_EXCEEDED: Final = Error(106, "limit exceeded")
BAD_REQUEST: Final = Error(107, "bad request")
NOT_AVAILABLE: Final = Error(108, "not available")
TOKEN_EXPIRED: Final = Error(109, "token expired")
EXPIRED: Final = Error(110, "expired")
TOO_MANY_REQUESTS: Final = Error(111, "too many requests", True)
UNRECOVERABLE_POSITION: Final = Error(112, "unrecoverable position")


class Disconnect(NamedTuple):
    """How the server ends a connection: a websocket close code and reason. Codes 3000-3499
    let the SDKs reconnect; 3500-3999 do not."""

    code: int
    reason: str


SHUTDOWN: Final = Disconnect(3001, "shutdown")
CONNECTION_EXPIRED: Final = Disconnect(3005, "connection expired")
NO_PONG: Final = Disconnect(3012, "no pong")
INVALID_TOKEN: Final = Disconnect(3500, "invalid token")
PROTOCOL_VIOLATION: Final = Disconnect(3501, "bad request")
STALE: Final = Disconnect(3502, "stale")
INSUFFICIENT_STATE_CLOSE: Final = Disconnect(3010, "insufficient state")
SEND_NOT_AVAILABLE: Final = Disconnect(3508, "not available")
"""A ``send`` with no send handler (a send has no reply to carry error 108; Centrifuge's
server closes so, else the client would never know)."""
"""How a server-side subscription (a personal channel) that missed messages it cannot be
sent ends: the connection closes, and the SDK reconnects and recovers them (connect.subs)."""

INSUFFICIENT_STATE: Final = 2500
"""The unsubscribe push's code for a subscription that missed messages it cannot be sent
(a slow reader, or the hub lost them): the SDK subscribes again and recovers."""
SUBSCRIPTION_EXPIRED: Final = 2501
"""The unsubscribe push's code for a subscription whose token expired without a
``sub_refresh``: the SDK asks for a new token and subscribes again."""

METHODS: Final = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "rpc",
    "send",
    "refresh",
    "sub_refresh",
)
"""The command methods of the protocol, each a field of the command."""
MAX_ID: Final = 2**32 - 1


class ChannelsStats:
    """What the channels endpoints of a process have done, in plain counters that an
    observer reads (``metrics.py``); labels are bounded: methods, codes, namespaces."""

    __slots__ = ("disconnects", "published", "replies", "subscribed")

    def __init__(self) -> None:
        self.replies: dict[tuple[str, str], int] = {}
        """Commands answered, by method and outcome ("ok" or the error's code)."""
        self.subscribed: dict[str, int] = {}
        """Subscriptions made, by namespace."""
        self.published: dict[str, int] = {}
        """Messages clients published, by namespace."""
        self.disconnects: dict[str, int] = {}
        """Connections the protocol closed, by code (3501 bad request, 3012 no pong...)."""


@dataclass(frozen=True)
class ChannelsConfig:
    """What a ``channels`` endpoint serves: its namespaces, how connections prove who they
    are (``tokens``; ``anonymous`` lets those with no user in), its RPC methods (``rpc``),
    and its limits (``expired_close_delay``: the grace past a token's ``exp``)."""

    namespaces: Namespaces
    tokens: TokenVerifier | None = None
    anonymous: bool = False
    max_channels: int = DEFAULT_MAX_CHANNELS
    ping_interval: float = DEFAULT_PING_INTERVAL
    pong_timeout: float = DEFAULT_PONG_TIMEOUT
    version: str = ""
    commands_per_second: float = 100.0
    command_burst: int = 200
    """A client's commands are limited like its messages (``MESSAGES_PER_SECOND``,
    ``MESSAGE_BURST``: a frame may carry many): one over gets error 111, to try later."""
    rpc: RpcMethods | None = None
    expired_close_delay: float = DEFAULT_EXPIRED_CLOSE_DELAY
    stats: ChannelsStats = field(default_factory=ChannelsStats, compare=False)

    def __post_init__(self) -> None:
        if self.max_channels < 1:
            raise ValueError("max_channels must be at least 1.")
        if not (self.commands_per_second > 0 and self.command_burst >= 1):
            raise ValueError("commands_per_second and command_burst must be more than 0.")
        if not 0 < self.pong_timeout < self.ping_interval:
            raise ValueError("pong_timeout must be more than 0 and less than ping_interval.")
        if not self.expired_close_delay >= 0:
            raise ValueError("expired_close_delay must be 0 seconds or more.")


class ChannelsSocket(SessionSocket, Protocol):
    """A `SessionSocket` that also sends raw ASGI messages (a close with its reason)."""

    async def send(self, message: dict[str, Any]) -> None: ...


CS = TypeVar("CS", bound=ChannelsSocket)


class BadRequest(Exception):
    """A command that breaks the protocol: the connection is closed with 3501."""


class Refused(Exception):
    """A command answered with an error reply."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.error = error


class Disconnected(Exception):
    """The connection must end with ``disconnect``."""

    def __init__(self, disconnect: Disconnect) -> None:
        super().__init__(disconnect.reason)
        self.disconnect = disconnect


def user_of(identity: object) -> str:
    """The Centrifuge user of what auth.py returned: a string or number itself, a mapping's
    ``sub``, ``user``, ``id`` or ``name`` (the first present), anything else its ``str``;
    None or "" is anonymous."""
    if identity is None or isinstance(identity, bool):
        return ""
    if isinstance(identity, str | int):
        return str(identity)
    if isinstance(identity, Mapping):
        for key in ("sub", "user", "id", "name"):
            value = identity.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
        return ""
    return str(identity)


async def run_channels(websocket: CS, hub: Hub, config: ChannelsConfig) -> None:
    """Serve one connection of a ``channels`` endpoint until it ends (see the module's docs).

    Accepts and closes the socket as `run_websocket` does; every subscription ends with
    the session (leaving presence).
    """
    connection = _Connection(hub, config, websocket.scope)
    try:
        await run_websocket(websocket, connection.read, connection.write, connection.ping)
    finally:
        await connection.unsubscribe_all()


class _Pushes:
    """The pushes made of hub texts, shared by every connection of the process: one text
    is handed to every subscriber of a channel, and is turned into its push once."""

    def __init__(self, size: int = CACHED_PUSHES) -> None:
        self.size = size
        self._made: dict[str, _Made] = {}
        self.pubs: dict[str, str] = {}
        """The pub pushes alone, by text: the writer's one look-up per delivery."""

    def of(self, text: str) -> _Made:
        made = self._made.get(text)
        if made is None:
            made = _made_of(text)
            if len(self._made) >= self.size:
                oldest = next(iter(self._made))
                del self._made[oldest]
                self.pubs.pop(oldest, None)
            self._made[text] = made
            if made.kind == "pub":
                self.pubs[text] = made.push
        return made


class _Made(NamedTuple):
    """What a hub text is in the protocol: its ``kind`` (pub, join, leave, message, gap,
    or other: not sent), its push, and for a pub the publication and its offset."""

    kind: str
    push: str
    publication: str = ""
    offset: int = 0


def _made_of(text: str) -> _Made:
    try:
        value = loads(text)
    except ValueError:
        return _Made("other", "")
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "broadcast":
        publication: dict[str, Any] = {"data": value.get("message")}
        info = value.get("info")
        if isinstance(info, dict):
            publication["info"] = info
        publication["offset"] = value["offset"]
        pub = dumps(publication)
        channel = dumps(value["channel"])
        return _Made(
            "pub", '{"push":{"channel":' + channel + ',"pub":' + pub + "}}", pub, value["offset"]
        )
    if kind in ("join", "leave"):
        client = value.get("client") or {}
        user = client.get("user")
        info = {"user": user_of(user), "client": str(client.get("client_id", ""))}
        push = {"push": {"channel": value["channel"], kind: {"info": info}}}
        return _Made(kind, dumps(push))
    if kind == "direct":
        return _Made("message", dumps({"push": {"message": {"data": value.get("message")}}}))
    if kind == "dropped":
        return _Made("gap", "")
    return _Made("other", "")


_PUSHES: Final = _Pushes()


class _Connection:
    """One client's state: who it is, and its subscriptions by channel."""

    def __init__(self, hub: Hub, config: ChannelsConfig, scope: Mapping[str, Any]) -> None:
        self.hub = hub
        self.config = config
        self.scope = scope
        self.client_id = str(uuid.uuid4())
        self.connected = False
        self.user = ""
        self.identity: object = None
        self.subscriptions: dict[str, Subscription] = {}
        self.namespace_of: dict[str, Namespace] = {}
        self.inbox = Inbox()
        self.pong_seen = True
        self.messages: deque[str] = deque(maxlen=MAX_QUEUED_MESSAGES)
        """Messages to the connection's user (`notify`), waiting for the writer."""
        self.path = str(scope.get("path", "?"))
        self.tokens = float(config.command_burst)
        """Commands the client may send now (a token bucket, as the guard's for messages)."""
        self.tokens_checked = asyncio.get_running_loop().time()
        self.leaving: set[asyncio.Task[None]] = set()
        """Unsubscriptions under way, of subscriptions that missed messages."""
        self.server_side: set[str] = set()
        """The channels the server subscribed the connection to (its personal channels)."""
        self.by_token = False
        """Whether the connection's identity is the claims of its connection token."""
        self.expires_at: float | None = None
        """When (the loop's clock) the connection ends unless its token is renewed."""
        self.sub_deadlines: dict[str, float] = {}
        """When each subscription made with an expiring token ends unless renewed."""
        self.alarm: asyncio.Future[None] | None = None
        """What the ping task sleeps on: woken early when a deadline comes nearer."""
        self.answering = False
        """Whether the reader is answering a frame (what the client sent next waits)."""
        self.answered_at = 0.0
        """When the reader last finished answering a frame (the loop's clock)."""
        self.send_now: SendNow | None = None
        """The server's `SEND_TEXT_NOW` (through the guard) while the writer runs, if any:
        a publication's push is then sent from the hub's delivery itself (`wake`)."""
        self.websocket: ChannelsSocket | None = None
        self.accepted: object = None
        """The face's state of the accepted connection: what a push is sent at once in."""
        self.queued = False
        """Whether pushes go through the writer's task for now (one could not be sent at
        once): until it has sent everything, nothing is sent at once, so none overtakes."""
        self.unsent: list[tuple[Subscription, str]] = []  # not a deque: 0.6 KiB each
        """Texts taken from their subscriptions that could not be sent at once, in order:
        the writer sends them first."""

    # The tasks of the session: reading commands, writing pushes, pinging.

    async def read(self, websocket: ChannelsSocket) -> None:
        receive = websocket.receive
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text")
            try:
                if frame is None:
                    raise BadRequest("binary frames are not JSON commands")
                self.answering = True
                try:
                    replies, later = await self._answer(frame)
                finally:
                    self.answering = False
                    self.answered_at = asyncio.get_running_loop().time()
                if replies:
                    await websocket.send_text("\n".join(replies))
                for subscription, pushes in later:
                    for text in pushes:
                        if (push := self._push_of(subscription, text)) is not None:
                            await websocket.send_text(push)
                    if self.subscriptions.get(subscription.channel) is subscription:
                        subscription.attach(self)
            except BadRequest as error:
                logger.info("channels %s: disconnected: %s", self.path, error)
                await self._close(websocket, PROTOCOL_VIOLATION)
                return
            except Disconnected as error:
                await self._close(websocket, error.disconnect)
                return

    async def write(self, websocket: ChannelsSocket) -> None:
        # The hot loop of every delivery that cannot be sent at once (see `wake`): a
        # publication's push is one dict look-up.
        send_text = websocket.send_text
        subscriptions = self.subscriptions
        pubs = _PUSHES.pubs
        inbox = self.inbox
        self.websocket, self.accepted = websocket, websocket.application_state
        self.send_now = server_sender(websocket)
        try:
            while True:
                if self.queued and not inbox.pending() and not self.unsent:
                    self.queued = False  # all sent: pushes go at once again
                for subscription in await inbox.ready():
                    if subscription is None:  # what could not go at once; to the user
                        while self.unsent:
                            taken, unsent = self.unsent.pop(0)
                            if subscriptions.get(taken.channel) is not taken:
                                continue
                            if (push := self._push_of(taken, unsent)) is not None:
                                await send_text(push)
                        while self.messages:
                            await send_text(_PUSHES.of(self.messages.popleft()).push)
                        continue
                    channel = subscription.channel
                    if subscriptions.get(channel) is not subscription:
                        continue  # unsubscribed meanwhile: what it had queued is not sent
                    poll = subscription.poll
                    while (text := poll()) is not None:
                        push = pubs.get(text)
                        if push is None and (push := self._push_of(subscription, text)) is None:
                            continue
                        await send_text(push)
                        if subscriptions.get(channel) is not subscription:
                            break
                    else:
                        if subscription.ended:  # the hub closed: the service is stopping
                            await self._close(websocket, SHUTDOWN)
                            return
        except Disconnected as error:  # a personal channel missed messages
            await self._close(websocket, error.disconnect)
        finally:
            self.send_now = self.websocket = None

    def wake(self, subscription: Subscription | None) -> None:
        """Something is queued for ``subscription`` (every subscription's `Reader`): its
        publications' pushes are sent at once where the server can (`session.SEND_TEXT_NOW`)
        and nothing waits before them; anything else (a join, a gap, the end, a send that
        cannot go at once) goes to the writer's task, and what follows with it, in order.
        So does what comes while the reader answers a command: its reply goes first (a
        client's publication on a channel it is on comes after the publish's reply)."""
        send_now = self._at_once()
        if (
            send_now is None
            or subscription is None
            or self.subscriptions.get(subscription.channel) is not subscription
        ):
            self.inbox.wake(subscription)
            return
        pubs, poll = _PUSHES.pubs, subscription.poll
        while (text := poll()) is not None:
            push = pubs.get(text)
            if push is None:  # the first subscriber of this text makes its push
                made = _PUSHES.of(text)
                push = made.push if made.kind == "pub" else None
            if push is None or not send_now(push):
                self.queued = True
                self.unsent.append((subscription, text))
                self.inbox.wake(None)
                self.inbox.wake(subscription)
                return
        if subscription.ended:
            self.inbox.wake(subscription)

    def _at_once(self) -> SendNow | None:
        """The server's `SEND_TEXT_NOW` while a push may go at once: the writer runs and has
        sent all it had, no command is being answered (its reply goes first: what comes
        meanwhile waits for the writer), and the face is in its accepted state, where what
        it does with a text is to pass it on."""
        if self.answering:
            self.queued = True
        websocket = self.websocket
        if self.queued or websocket is None or websocket.application_state is not self.accepted:
            return None
        return self.send_now

    async def ping(self, websocket: ChannelsSocket) -> None:
        """Ping, and end what expires (tokens not renewed in time) meanwhile."""
        try:
            await self._ping(websocket)
        except Disconnected as error:
            await self._close(websocket, error.disconnect)

    async def _ping(self, websocket: ChannelsSocket) -> None:
        interval = self.config.ping_interval
        # The first ping at a random point of the second half of an interval, so that the
        # clients of a restarted service are not all pinged in the same instant.
        await self._sleep(websocket, interval / 2 + random.random() * interval / 2)
        await self._caught_up(lambda: self.connected)
        if not self.connected:  # no connect by now: a client that will not speak
            logger.info("channels %s: disconnected: no connect", self.path)
            await self._close(websocket, STALE)
            return
        while True:
            self.pong_seen = False
            await websocket.send_text("{}")
            await self._sleep(websocket, self.config.pong_timeout)
            await self._caught_up(lambda: self.pong_seen)
            if not self.pong_seen:
                logger.info("channels %s: disconnected: no pong", self.path)
                await self._close(websocket, NO_PONG)
                return
            await self._sleep(websocket, interval - self.config.pong_timeout)

    async def _caught_up(self, done: Callable[[], bool]) -> None:
        """Wait, unless ``done()``, until the reader has had `CATCH_UP` seconds since it
        last answered a frame to read what the client sent after it."""
        loop = asyncio.get_running_loop()
        while not done():
            wait = CATCH_UP if self.answering else self.answered_at + CATCH_UP - loop.time()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def notify(self, text: str) -> None:
        """A message to the connection's user (the hub calls it): sent once, whatever the
        channels the connection is on; at once where a publication would be (`wake`)."""
        send_now = self._at_once()
        if send_now is not None and (push := _PUSHES.of(text).push) and send_now(push):
            return
        self.queued = True  # what follows waits behind it
        self.messages.append(text)
        self.inbox.wake(None)

    async def unsubscribe_all(self) -> None:
        if self.connected and self.user:
            self.hub.unlisten_to_user(self.user, self)
        subscriptions = list(self.subscriptions.values())
        self.subscriptions.clear()
        for subscription in subscriptions:
            await self.hub.unsubscribe(subscription)

    # Commands.

    async def _answer(self, frame: str) -> tuple[list[str], list[tuple[Subscription, list[str]]]]:
        """The replies to the commands of ``frame``, and the subscriptions made, each with
        the texts to push after the replies before it goes live."""
        if frame.count("\n") >= MAX_COMMANDS_PER_FRAME:
            raise BadRequest(f"more than {MAX_COMMANDS_PER_FRAME} commands in one frame")
        replies: list[str] = []
        later: list[tuple[Subscription, list[str]]] = []
        commands = 0
        for line in frame.split("\n"):
            if not line.strip():
                continue
            commands += 1
            command = _command(line)
            reply = await self._reply(command, later)
            if reply is not None:
                replies.append(reply)
            if not self.connected:
                # A refused connect: its error is sent, not the 3501 the commands after it
                # would get (centrifuge-js sends its subscribes in the connect's frame, and
                # must read a 109 to ask getToken for a new token and reconnect).
                break
        if not commands:
            raise BadRequest("a frame without a command")
        return replies, later

    async def _reply(
        self, command: dict[str, Any], later: list[tuple[Subscription, list[str]]]
    ) -> str | None:
        id_ = command.get("id", 0)
        if type(id_) is not int or not 0 <= id_ <= MAX_ID:
            raise BadRequest("a command id that is not an integer from 0 to 2**32-1")
        method = next((name for name in METHODS if name in command), None)
        if method is None:
            if id_:
                raise BadRequest("a command with no method")
            if self.pong_seen:
                raise BadRequest("a pong with no ping to answer")
            self.pong_seen = True  # {}: a pong
            return None
        body = command[method]
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadRequest(f"{method} is not a JSON object")
        if method == "send":
            if not self.connected:
                raise BadRequest("send before connect")
            await self._send(body)
            return None  # a send gets no reply
        if not id_:
            raise BadRequest(f"{method} without an id")
        if method == "connect":
            if self.connected:
                raise BadRequest("connect on a connection already connected")
        elif not self.connected:
            raise BadRequest(f"{method} before connect")
        replies = self.config.stats.replies
        try:
            self._take_token()
            reply = await self._method(method, id_, body, later)
        except Refused as refusal:
            key = (method, str(refusal.error.code))
            replies[key] = replies.get(key, 0) + 1
            return _error(id_, refusal.error)
        key = (method, "ok")
        replies[key] = replies.get(key, 0) + 1
        return reply

    async def _method(
        self,
        method: str,
        id_: int,
        body: dict[str, Any],
        later: list[tuple[Subscription, list[str]]],
    ) -> str:
        if method == "connect":
            return await self._connect(id_, body, later)
        if method == "subscribe":
            return await self._subscribe(id_, body, later)
        if method == "unsubscribe":
            return await self._unsubscribe(id_, body)
        if method == "publish":
            return await self._publish(id_, body)
        if method == "history":
            return await self._history(id_, body)
        if method in ("presence", "presence_stats"):
            return await self._presence(id_, body, stats=method == "presence_stats")
        if method == "rpc":
            return await self._rpc(id_, body)
        if method == "refresh":
            return await self._refresh(id_, body)
        if method == "sub_refresh":
            return await self._sub_refresh(id_, body)
        raise Refused(METHOD_NOT_FOUND)

    async def _connect(
        self, id_: int, body: dict[str, Any], later: list[tuple[Subscription, list[str]]]
    ) -> str:
        token = _field(body, "token", str, "")
        lifetime: dict[str, Any] = {}
        if token:
            tokens = self.config.tokens
            try:
                if tokens is None:
                    raise TokenInvalid("this endpoint takes no tokens")
                claims = tokens.verify(token)
            except TokenExpired:
                raise Refused(TOKEN_EXPIRED) from None
            except TokenInvalid as error:
                logger.info("channels %s: connection token refused: %s", self.path, error)
                raise Disconnected(INVALID_TOKEN) from None
            self.identity, self.user = claims, str(claims.get("sub") or "")
            self.by_token = True
            self.expires_at, lifetime = self._lifetime(claims)
        else:
            self.identity = self.scope.get("user")
            self.user = user_of(self.identity)
        if not self.user and not self.config.anonymous:
            raise Refused(UNAUTHORIZED)
        subs = await self._server_side(_field(body, "subs", dict, {}), later)
        self.connected = True
        if self.user and not subs:  # with a personal channel, what is sent to it goes there
            self.hub.listen_to_user(self.user, self)
        result = {
            "client": self.client_id,
            "version": self.config.version,
            "ping": round(self.config.ping_interval),
            "pong": True,
            **lifetime,
        }
        return _with_subs(_reply(id_, "connect", result), subs)

    async def _server_side(
        self, asked: dict[str, Any], later: list[tuple[Subscription, list[str]]]
    ) -> dict[str, str]:
        """Subscribe the connection to its user's personal channels (server-side
        subscriptions), each recovered from where ``connect.subs`` says the client was
        (``{channel: {recover, offset, epoch}}``; other channels there are ignored); their
        results as JSON, by channel. A channel that cannot be subscribed refuses the
        connect, and undoes the others."""
        results: dict[str, str] = {}
        first = len(later)
        try:
            for channel in self.config.namespaces.personal_channels(self.user):
                position = _field(asked, channel, dict, {})
                recover = _field(position, "recover", bool, False)
                since = Position(
                    _field(position, "offset", int, 0), _field(position, "epoch", str, "")
                )
                namespace = self._namespace(channel)
                results[channel] = _result_json(
                    *await self._start(channel, namespace, recover, since, later)
                )
                self.server_side.add(channel)
        except (Refused, BadRequest):
            for subscription, _ in later[first:]:
                await self._forget(subscription)
            del later[first:]
            self.server_side.clear()
            raise
        return results

    async def _subscribe(
        self, id_: int, body: dict[str, Any], later: list[tuple[Subscription, list[str]]]
    ) -> str:
        channel = _channel(body)
        recover = _field(body, "recover", bool, False)
        asked = Position(_field(body, "offset", int, 0), _field(body, "epoch", str, ""))
        if channel in self.subscriptions:
            raise Refused(ALREADY_SUBSCRIBED)
        if len(self.subscriptions) >= self.config.max_channels:
            raise Refused(LIMIT_EXCEEDED)
        namespace = self._namespace(channel)
        claims = self._subscription_claims(_field(body, "token", str, ""), channel)
        await self._check(namespace.subscribe, "subscribe", channel, namespace, claims)
        result, recovered = await self._start(channel, namespace, recover, asked, later, claims)
        return '{"id":' + str(id_) + ',"subscribe":' + _result_json(result, recovered) + "}"

    async def _start(
        self,
        channel: str,
        namespace: Namespace,
        recover: bool,
        asked: Position,
        later: list[tuple[Subscription, list[str]]],
        claims: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """Subscribe to ``channel`` (recovering after ``asked`` if ``recover``): the
        subscribe result and the recovered publications (JSON) it carries; the subscription
        joins ``later``, with what to push after the reply before it goes live; ``claims``, of
        its subscription token, say when it ends unless renewed."""
        since = asked if recover and namespace.history and asked.offset >= 0 else None
        try:
            subscription = await self.hub.subscribe(
                channel, since, user=self.user or None, client_id=self.client_id, direct=False
            )
        except HubUnavailable:
            raise Refused(INTERNAL) from None
        self.subscriptions[channel] = subscription
        self.namespace_of[channel] = namespace
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                notice = await subscription.next()
        except TimeoutError:
            notice = None
        if notice is None:
            await self._forget(subscription)
            raise Refused(INTERNAL)
        subscribed = loads(notice)
        result: dict[str, Any] = {}
        if namespace.history:
            result["recoverable"] = True
            result["positioned"] = True
        result["epoch"] = subscribed["epoch"]
        offset = subscribed["offset"]
        was_recovered = since is not None and subscribed.get("recovered") is True
        recovered: list[str] = []
        pushes: list[str] = []
        while (text := subscription.poll()) is not None:
            made = _PUSHES.of(text)
            if (
                was_recovered  # not recovered: the reply carries no publication (reload)
                and not pushes
                and made.kind == "pub"
                and made.offset == offset + 1
                and len(recovered) < MAX_RECOVERED
            ):
                recovered.append(made.publication)
                offset = made.offset
            else:
                pushes.append(text)
        if recover:
            result["was_recovering"] = True
            result["recovered"] = was_recovered
        result["offset"] = offset
        result.update(self._track_expiry(channel, claims))
        later.append((subscription, pushes))
        counts = self.config.stats.subscribed
        counts[namespace.name] = counts.get(namespace.name, 0) + 1
        return result, recovered

    async def _unsubscribe(self, id_: int, body: dict[str, Any]) -> str:
        channel = _channel(body)
        if channel in self.server_side:  # the server's to end: the user's own channel
            raise Refused(PERMISSION_DENIED)
        subscription = self.subscriptions.get(channel)
        if subscription is not None:
            await self._forget(subscription)
        return _reply(id_, "unsubscribe", {})

    async def _publish(self, id_: int, body: dict[str, Any]) -> str:
        channel = _channel(body)
        namespace = self._namespace(channel)
        await self._check(namespace.publish, "publish", channel, namespace)
        data = body.get("data")
        if not isinstance(data, dict):
            raise Refused(Error(BAD_REQUEST.code, "data must be a JSON object"))
        info = {"user": self.user, "client": self.client_id}
        try:
            await self.hub.publish(channel, data, info=info)
        except HubUnavailable:
            raise Refused(INTERNAL) from None
        counts = self.config.stats.published
        counts[namespace.name] = counts.get(namespace.name, 0) + 1
        return _reply(id_, "publish", {})

    async def _history(self, id_: int, body: dict[str, Any]) -> str:
        channel = _channel(body)
        limit = _field(body, "limit", int, 0)
        reverse = _field(body, "reverse", bool, False)
        since_field = _field(body, "since", dict, None)
        since = None
        if since_field is not None:
            offset = _field(since_field, "offset", int, 0)
            since = Position(offset, _field(since_field, "epoch", str, ""))
        namespace = self._namespace(channel)
        if not namespace.history:
            raise Refused(NOT_AVAILABLE)
        if channel not in self.subscriptions:
            raise Refused(PERMISSION_DENIED)
        try:
            top, history = await self.hub.history(channel)
        except HubUnavailable:
            raise Refused(INTERNAL) from None
        if since is not None:
            if since.epoch != top.epoch or since.offset > top.offset:
                raise Refused(UNRECOVERABLE_POSITION)
            if reverse:
                history = [p for p in history if p.offset < since.offset]
            else:
                if since.offset < top.offset and (
                    not history or history[0].offset > since.offset + 1
                ):
                    raise Refused(UNRECOVERABLE_POSITION)
                history = [p for p in history if p.offset > since.offset]
        if reverse:
            history.reverse()
        if limit >= 0:
            history = history[:limit]
        publications = ",".join(_publication_json(publication) for publication in history)
        result = dumps({"epoch": top.epoch, "offset": top.offset})
        head = '{"id":' + str(id_) + ',"history":{"publications":['
        return head + publications + "]," + result[1:] + "}"

    async def _presence(self, id_: int, body: dict[str, Any], stats: bool) -> str:
        channel = _channel(body)
        namespace = self._namespace(channel)
        if not namespace.presence:
            raise Refused(NOT_AVAILABLE)
        if channel not in self.subscriptions:
            raise Refused(PERMISSION_DENIED)
        try:
            presence = await self.hub.presence(channel)
        except PresenceOff:
            raise Refused(NOT_AVAILABLE) from None
        except HubUnavailable:
            raise Refused(INTERNAL) from None
        clients = {}
        for client in presence.clients:
            client_id = str(client.get("client_id", ""))
            clients[client_id] = {"client": client_id, "user": user_of(client.get("user"))}
        if stats:
            users = {info["user"] for info in clients.values()}
            result = {"num_clients": presence.count, "num_users": len(users)}
            return _reply(id_, "presence_stats", result)
        return _reply(id_, "presence", {"presence": clients})

    # Token lifetimes (refresh, sub_refresh, expiry) and RPC.

    async def _refresh(self, id_: int, body: dict[str, Any]) -> str:
        token = _field(body, "token", str, "")
        if not token:
            raise BadRequest("refresh without a token")
        tokens = self.config.tokens
        if tokens is None:
            raise Refused(NOT_AVAILABLE)
        try:
            claims = tokens.verify(token)
        except TokenExpired:
            raise Disconnected(CONNECTION_EXPIRED) from None
        except TokenInvalid as error:
            logger.info("channels %s: refresh token refused: %s", self.path, error)
            raise Disconnected(INVALID_TOKEN) from None
        if str(claims.get("sub") or "") != self.user:
            logger.info("channels %s: refresh token refused: for another user", self.path)
            raise Disconnected(INVALID_TOKEN)
        if self.by_token:
            self.identity = claims
        self.expires_at, lifetime = self._lifetime(claims)
        return _reply(id_, "refresh", lifetime)

    async def _sub_refresh(self, id_: int, body: dict[str, Any]) -> str:
        channel = _channel(body)
        token = _field(body, "token", str, "")
        if channel not in self.subscriptions:
            raise Refused(PERMISSION_DENIED)
        if self.config.tokens is None:
            raise Refused(NOT_AVAILABLE)
        if not token:
            raise Refused(BAD_REQUEST)
        try:
            claims = self.config.tokens.verify_subscription(
                token, channel, self.user, self.client_id
            )
        except TokenExpired:
            raise Refused(EXPIRED) from None
        except TokenInvalid as error:
            logger.info("channels %s: subscription refresh token refused: %s", self.path, error)
            raise Disconnected(INVALID_TOKEN) from None
        return _reply(id_, "sub_refresh", self._track_expiry(channel, claims))

    def _subscription_claims(self, token: str, channel: str) -> dict[str, Any] | None:
        """The claims of the subscription token of a subscribe to ``channel`` (None: none
        sent); `Refused` or `Disconnected` if it is no good, with Centrifugo's codes."""
        if not token:
            return None
        try:
            if self.config.tokens is None:
                raise TokenInvalid("this endpoint takes no tokens")
            return self.config.tokens.verify_subscription(token, channel, self.user, self.client_id)
        except TokenExpired:
            raise Refused(TOKEN_EXPIRED) from None
        except TokenMismatch as error:
            logger.info("channels %s: subscription token refused: %s", self.path, error)
            raise Disconnected(INVALID_TOKEN) from None
        except TokenInvalid as error:
            logger.info("channels %s: subscription token refused: %s", self.path, error)
            raise Refused(PERMISSION_DENIED) from None

    def _lifetime(self, claims: Mapping[str, Any]) -> tuple[float | None, dict[str, Any]]:
        """When a token with these claims stops being honoured (the loop's clock, with the
        grace delay; None: never), and what a reply says of it (``expires`` and ``ttl``)."""
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return None, {}
        left = exp - time.time()
        deadline = asyncio.get_running_loop().time() + left + self.config.expired_close_delay
        self._deadlines_changed()
        return deadline, {"expires": True, "ttl": max(1, math.floor(left))}

    def _track_expiry(self, channel: str, claims: Mapping[str, Any] | None) -> dict[str, Any]:
        """Note when the subscription to ``channel`` ends unless renewed (its token's
        ``exp``; none without one), and return what its reply says of it."""
        deadline, lifetime = self._lifetime(claims) if claims else (None, {})
        if deadline is None:
            self.sub_deadlines.pop(channel, None)
        else:
            self.sub_deadlines[channel] = deadline
        return lifetime

    def _deadlines_changed(self) -> None:
        if self.alarm is not None and not self.alarm.done():
            self.alarm.set_result(None)

    async def _sleep(self, websocket: ChannelsSocket, seconds: float) -> None:
        """Sleep ``seconds``, ending what expires meanwhile: a subscription gets an
        unsubscribe push (2501); the connection itself, `Disconnected` (3005)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while True:
            now = loop.time()
            if self.expires_at is not None and now >= self.expires_at:
                logger.info("channels %s: disconnected: the token was not refreshed", self.path)
                raise Disconnected(CONNECTION_EXPIRED)
            for channel in list(self.sub_deadlines):
                deadline = self.sub_deadlines.get(channel)  # renewed or gone meanwhile?
                if deadline is not None and loop.time() >= deadline:
                    await self._expire_subscription(websocket, channel)
            if now >= end:
                return
            deadlines = [end, *self.sub_deadlines.values()]
            if self.expires_at is not None:
                deadlines.append(self.expires_at)
            self.alarm = wake = loop.create_future()
            timer = loop.call_at(min(deadlines), _wake, wake)
            try:
                await wake
            finally:
                timer.cancel()
                self.alarm = None

    async def _expire_subscription(self, websocket: ChannelsSocket, channel: str) -> None:
        self.sub_deadlines.pop(channel, None)
        subscription = self.subscriptions.get(channel)
        if subscription is None:  # unsubscribed meanwhile
            return
        await self._forget(subscription)
        unsubscribe = {"code": SUBSCRIPTION_EXPIRED, "reason": "subscription expired"}
        await websocket.send_text(dumps({"push": {"channel": channel, "unsubscribe": unsubscribe}}))

    async def _rpc(self, id_: int, body: dict[str, Any]) -> str:
        method = _field(body, "method", str, "")
        if self.config.rpc is None:
            raise Refused(METHOD_NOT_FOUND)
        request = RpcRequest(
            method, body.get("data"), self.user, self.identity, self.client_id, self.hub
        )
        try:
            result = await self.config.rpc.call(request)
            data = None if result is None else dumps(result)
        except MethodNotFound:
            raise Refused(METHOD_NOT_FOUND) from None
        except BadParams as error:
            raise Refused(Error(BAD_REQUEST.code, str(error))) from None
        except RpcError as error:
            raise Refused(Error(error.code, error.message, error.temporary)) from None
        except Exception:
            logger.exception("channels %s: the rpc method %r failed", self.path, method)
            raise Refused(INTERNAL) from None
        if data is None:
            return '{"id":' + str(id_) + ',"rpc":{}}'
        return '{"id":' + str(id_) + ',"rpc":{"data":' + data + "}}"

    async def _send(self, body: dict[str, Any]) -> None:
        """Give a ``send``'s data to the send handler (none: `SEND_NOT_AVAILABLE`); what goes
        wrong in it is logged, the client is told nothing (a send has no reply)."""
        if self.config.rpc is None or not self.config.rpc.handles_send:
            raise Disconnected(SEND_NOT_AVAILABLE)
        try:
            self._take_token()
        except Refused:
            logger.info("channels %s: a send over the rate limit was dropped", self.path)
            return
        request = RpcRequest(
            "", body.get("data"), self.user, self.identity, self.client_id, self.hub
        )
        try:
            await self.config.rpc.send(request)
        except RpcError as error:
            logger.info("channels %s: the send handler refused: %d", self.path, error.code)
        except Exception:
            logger.exception("channels %s: the send handler failed", self.path)

    # Helpers.

    def _take_token(self) -> None:
        """Count a command against the rate limit; `Refused` (111) when over it."""
        config = self.config
        now = asyncio.get_running_loop().time()
        refill = (now - self.tokens_checked) * config.commands_per_second
        self.tokens = min(float(config.command_burst), self.tokens + refill)
        self.tokens_checked = now
        if self.tokens < 1:
            raise Refused(TOO_MANY_REQUESTS)
        self.tokens -= 1

    async def _close(self, websocket: ChannelsSocket, disconnect: Disconnect) -> None:
        disconnects = self.config.stats.disconnects
        code = str(disconnect.code)
        disconnects[code] = disconnects.get(code, 0) + 1
        await _close(websocket, disconnect)

    def _namespace(self, channel: str) -> Namespace:
        namespace = self.config.namespaces.find(channel)
        if namespace is None:
            raise Refused(UNKNOWN_CHANNEL)
        return namespace

    async def _check(
        self,
        rule: Rule,
        action: str,
        channel: str,
        namespace: Namespace,
        token: Mapping[str, Any] | None = None,
    ) -> None:
        request = ChannelRequest(
            channel, namespace, self.user, self.identity, channel in self.subscriptions, token
        )
        try:
            allowed = await allows(rule, request)
        except Exception:
            logger.exception(
                "channels %s: the %s rule of the namespace %r failed",
                self.path,
                action,
                namespace.name,
            )
            raise Refused(INTERNAL) from None
        if not allowed:
            raise Refused(PERMISSION_DENIED)

    async def _forget(self, subscription: Subscription) -> None:
        if self.subscriptions.get(subscription.channel) is subscription:
            del self.subscriptions[subscription.channel]
            self.namespace_of.pop(subscription.channel, None)
        await self.hub.unsubscribe(subscription)

    def _push_of(self, subscription: Subscription, text: str) -> str | None:
        """The push to send for a text of ``subscription``'s queue, or None."""
        made = _PUSHES.of(text)
        kind = made.kind
        if kind == "pub":
            return made.push
        if kind in ("join", "leave"):
            namespace = self.namespace_of.get(subscription.channel)
            return made.push if namespace is not None and namespace.join_leave else None
        if kind == "gap":
            # Missed messages it cannot be sent: the SDK subscribes again and recovers (or,
            # for a server-side subscription, reconnects and recovers it).
            channel = subscription.channel
            if channel in self.server_side:
                raise Disconnected(INSUFFICIENT_STATE_CLOSE)
            if self.subscriptions.get(channel) is subscription:
                del self.subscriptions[channel]
                self.namespace_of.pop(channel, None)
                leaving = asyncio.get_running_loop().create_task(self.hub.unsubscribe(subscription))
                self.leaving.add(leaving)
                leaving.add_done_callback(self.leaving.discard)
            unsubscribe = {"code": INSUFFICIENT_STATE, "reason": "insufficient state"}
            return dumps({"push": {"channel": channel, "unsubscribe": unsubscribe}})
        return None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _command(line: str) -> dict[str, Any]:
    try:
        command = loads(line)
    except (ValueError, RecursionError):
        raise BadRequest("a command that is not JSON") from None
    if not isinstance(command, dict):
        raise BadRequest("a command that is not a JSON object")
    return command


def _field(body: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    """``body[name]`` if it is of ``kind`` (absent or null: ``default``); else BadRequest."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"{name} is not of the right type")
    return value


def _channel(body: Mapping[str, Any]) -> str:
    channel = _field(body, "channel", str, "")
    if not channel:
        raise BadRequest("a command without a channel")
    if len(channel) > MAX_CHANNEL_LENGTH:
        raise Refused(LIMIT_EXCEEDED)
    return str(channel)


def _publication_json(publication: Publication) -> str:
    return _PUSHES.of(publication.text).publication


def _reply(id_: int, method: str, result: Mapping[str, Any]) -> str:
    return dumps({"id": id_, method: result})


def _result_json(result: Mapping[str, Any], publications: list[str]) -> str:
    """A subscribe result as JSON, with its recovered ``publications`` (JSON) if any."""
    text = dumps(result)
    if not publications:
        return text
    return text[:-1] + ',"publications":[' + ",".join(publications) + "]}"


def _with_subs(connect_reply: str, subs: Mapping[str, str]) -> str:
    """The connect reply (JSON) with the results of its server-side subscriptions."""
    if not subs:
        return connect_reply
    results = ",".join(dumps(channel) + ":" + result for channel, result in subs.items())
    return connect_reply[:-2] + ',"subs":{' + results + "}}}"


def _error(id_: int, error: Error) -> str:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.temporary:
        body["temporary"] = True
    return dumps({"id": id_, "error": body})


async def _close(websocket: ChannelsSocket, disconnect: Disconnect) -> None:
    """Close with ``disconnect``'s code and reason (the client may be gone already)."""
    try:
        await websocket.send(
            {"type": "websocket.close", "code": disconnect.code, "reason": disconnect.reason}
        )
    except Exception:  # the client is gone already
        logger.debug("channels: closing with %d failed", disconnect.code, exc_info=True)
