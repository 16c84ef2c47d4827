"""The service's websocket policy, applied to every connection by one ASGI middleware.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Framework-free: `WebSocketGuard` wraps any ASGI app (a FastAPI app or the
raw-ASGI `Router`) and passes HTTP and lifespan traffic through untouched. For websocket
connections it applies a `Policy`:

- before accept: the ``Origin`` check (cross-site websocket hijacking), the authentication
  hook, and the connection limit;
- on each message from the client: the size limit and the rate limit;
- for the whole session: the idle timeout, and the send timeout that drops slow readers
  (one `Watchdog` timer per guard and event loop looks at every connection);
- one log line when a connection opens and one when it closes (path, client address, close
  code, duration; never message contents, never the query string, where tokens go);
- and, for an observer (`GuardObserver`, such as ``metrics.py``'s), what happens: refusals,
  opens and closes, and a `Tally` per endpoint of the messages and bytes each way.

Where the server offers to send a text at once (the scope extension `session.SEND_TEXT_NOW`,
`LeanProtocol`'s), the app is offered the guard's own, which sends only while the guard has
not closed the connection and counts what it sends as `send` does. So with the server's
direct writes (`session.WRITE_DIRECT`): the guard's link counts what is written through it
(its writer tells it how many times a text went out) and stops when the guard closes.
Where the server hands text messages over as they are read (`session.RECEIVE_DIRECT`), the
guard's hand-over checks and counts each as ``receive`` does before the app's ``take`` sees
it, and has one that would fail a check queued instead, for ``receive`` to close on.

Close codes the guard sends: 1008 (policy violation: rate limit, idle timeout), 1009
(message too big), 1013 (server full, try again later). A refused handshake gets HTTP 403.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from .asgi_types import ASGIApp, Message, Receive, Scope, Send
from .session import (
    RECEIVE_DIRECT,
    SEND_TEXT_NOW,
    WRITE_DIRECT,
    DirectLink,
    LinkStop,
    Listen,
    OpenDirect,
    SendNow,
    TakeText,
)

logger = logging.getLogger(__name__)

POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
TRY_AGAIN_LATER: Final = 1013
DEFAULT_PORTS: Final = {"http": 80, "ws": 80, "https": 443, "wss": 443}
ERROR_REPLY: Final = '{"type":"error"'
"""How every error reply of the session helpers begins (they send compact JSON)."""
_AFTER_ERROR_REPLY: Final = ERROR_REPLY[:-1] + chr(ord(ERROR_REPLY[-1]) + 1)
"""The texts that begin with `ERROR_REPLY` are those from it up to this one, excluded: two
string comparisons cost less than a ``startswith`` call (the guard tests every send)."""
WATCH_STEPS: Final = 10
"""The watchdog looks at most this many times per send or idle timeout (the shorter)."""
CLOSE_CODE_WAIT: Final = 1.0
"""Seconds the guard waits for the server's disconnect event, to log the client's close
code, once the app has returned after a send that found the client gone (servers have
queued it by then: the wait is a bound, not a delay)."""


@dataclass(frozen=True)
class Policy:
    """The limits of the service's websocket connections (each must be positive)."""

    allowed_origins: frozenset[str] = frozenset()
    """Origins (``https://app.example.com``) that may connect besides the service's own."""
    max_message_bytes: int = 64 * 1024
    messages_per_second: float = 100.0
    message_burst: int = 200
    """How many messages may arrive at once before the rate limit applies."""
    max_connections: int = 10_000
    idle_timeout: float = 60.0
    """Seconds a client may send nothing (keepalives count) before it is closed."""
    send_timeout: float = 10.0
    """Seconds a send may wait for a client that does not read before it is dropped."""

    def __post_init__(self) -> None:
        limits = {
            "max_message_bytes": self.max_message_bytes,
            "messages_per_second": self.messages_per_second,
            "message_burst": self.message_burst,
            "max_connections": self.max_connections,
            "idle_timeout": self.idle_timeout,
            "send_timeout": self.send_timeout,
        }
        for name, value in limits.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Policy.{name} must be a positive number, got {value!r}.")
        object.__setattr__(
            self, "allowed_origins", frozenset(o.lower().rstrip("/") for o in self.allowed_origins)
        )


@dataclass(frozen=True)
class Handshake:
    """What a client sent to open a websocket: what an authenticator decides on."""

    path: str
    headers: Mapping[str, str]
    """Lower-case names, first value of each (decoded as latin-1)."""
    cookies: Mapping[str, str] = field(default_factory=dict)
    client: tuple[str, int] | None = None
    subprotocols: tuple[str, ...] = ()

    @classmethod
    def from_scope(cls, scope: Scope) -> Handshake:
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        client = scope.get("client")
        return cls(
            path=scope.get("path", ""),
            headers=headers,
            cookies=_parse_cookies(headers.get("cookie", "")),
            client=(client[0], client[1]) if client else None,
            subprotocols=tuple(scope.get("subprotocols", ())),
        )


class Refuse(Exception):
    """Raised by an authenticator to refuse a handshake.

    ``status`` 403 (the default) closes before accept, which every server answers with
    HTTP 403. 401 is sent as an HTTP response where the server supports the ASGI websocket
    denial response (uvicorn does; its default websockets-sansio implementation then logs a
    spurious error line, uvicorn PR #3138), and as 403 elsewhere.
    """

    def __init__(self, status: int = 403) -> None:
        if status not in (401, 403):
            raise ValueError(f"Refuse takes 401 or 403, got {status!r}.")
        super().__init__(status)
        self.status = status


Authenticator = Callable[[Handshake], Awaitable[object | None]]
"""Called before accept: return an identity or None (either becomes ``scope["user"]``), or
raise Refuse."""


async def allow_everyone(handshake: Handshake) -> None:
    """The authenticator that lets every client in, with no identity."""


class Tally:
    """What the connections of one endpoint have sent and received, in plain counters.

    The guard adds to them on every message (an attribute increment, the cheapest count
    there is); an observer reads them when it likes (``metrics.py`` when it is scraped).
    Bytes are those of the payloads (a text in UTF-8), not of the frames.
    """

    __slots__ = (
        "bytes_received",
        "endpoint",
        "error_replies",
        "last_text",
        "last_text_bytes",
        "messages_received",
        "repeats",
        "sent_bytes",
        "sent_messages",
    )

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        """The endpoint's path template (``/ws/rooms/{room}``), never a concrete path."""
        self.messages_received = 0
        self.bytes_received = 0
        self.sent_messages = 0
        self.sent_bytes = 0
        """`messages_sent` and `bytes_sent` but the ``repeats``."""
        self.error_replies = 0
        """Messages sent that are error replies (``{"type":"error", ...}``)."""
        self.last_text = ""
        """The last text sent that is not an error reply, and its size in bytes: a broadcast
        sends one text object to every subscriber in turn, measured once."""
        self.last_text_bytes = 0
        self.repeats = 0
        """Sends of ``last_text`` (the same object) since it was measured: one small
        integer stepped per send of a broadcast, not two counts (see `settle`)."""

    @property
    def messages_sent(self) -> int:
        return self.sent_messages + self.repeats

    @property
    def bytes_sent(self) -> int:
        return self.sent_bytes + self.repeats * self.last_text_bytes

    def count_text(self, text: str) -> None:
        """Count one send of ``text``, a text that is not ``last_text``: it becomes the
        last unless it is an error reply."""
        if self.repeats:
            self.settle()
        self.sent_messages += 1
        size = text_size(text)
        self.sent_bytes += size
        if ERROR_REPLY <= text < _AFTER_ERROR_REPLY:
            self.error_replies += 1
        else:
            self.last_text, self.last_text_bytes = text, size

    def count_many(self, text: str, times: int) -> None:
        """Count ``times`` sends of ``text`` (a broadcast's direct writes, `DirectLink`)."""
        while times and text is not self.last_text:  # an error reply never becomes the last
            self.count_text(text)
            times -= 1
        self.repeats += times

    def settle(self) -> None:
        """Add the ``repeats`` to the sent counts (before another text becomes the last)."""
        self.sent_messages += self.repeats
        self.sent_bytes += self.repeats * self.last_text_bytes
        self.repeats = 0


class GuardObserver:
    """What the guard tells an observer; this base class ignores it all (no metrics).

    Methods run in the connection's task, on the event loop: they must be quick and must
    not raise. Reasons of refusal: ``origin``, ``auth``, ``connection_limit``,
    ``unknown_path`` (no route took the handshake) and ``app`` (a handler closed before
    accepting).
    """

    def refused(self, scope: Scope, reason: str) -> None:
        """A handshake was refused before the app accepted it."""

    def opened(self, connection: GuardedConnection) -> Tally | None:
        """A connection was accepted (its route is in ``connection.scope``): the tally of
        its endpoint, which the guard then counts its messages in, or None (no counting)."""
        return None

    def closed(self, connection: GuardedConnection) -> None:
        """An accepted connection has ended: ``close_code`` (None: the server gave none) and
        ``limit`` (the guard's reason, if it closed it) say how."""


class WebSocketGuard:
    """ASGI middleware applying a `Policy` and an `Authenticator` to every websocket."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: Policy,
        authenticate: Authenticator = allow_everyone,
        observer: GuardObserver | None = None,
    ) -> None:
        self.app = app
        self.policy = policy
        self.authenticate = authenticate
        self.observer = observer or GuardObserver()
        self.open_connections = 0
        self.watchdog: Watchdog | None = None  # made on the loop of the first connection

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        # The handshake is judged in a call of its own, so that nothing of it (headers,
        # cookies) stays alive for the length of the connection.
        connection = await self.admit(scope, receive, send)
        if connection is None:
            return
        self.open_connections += 1
        try:
            await self.app(scope, connection.receive, connection.send)
        finally:
            self.open_connections -= 1
            await connection.finish()

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> GuardedConnection | None:
        """Apply the checks made before accept: the connection, or None if refused."""
        handshake = Handshake.from_scope(scope)
        if not origin_allowed(handshake, scope.get("scheme", "ws"), self.policy.allowed_origins):
            _log_refusal(handshake, "origin not allowed")
            self.observer.refused(scope, "origin")
            await _refuse(scope, send, 403)
            return None
        if self.open_connections >= self.policy.max_connections:
            _log_refusal(handshake, "server full", logging.WARNING)
            self.observer.refused(scope, "connection_limit")
            await _accept_and_close(receive, send, TRY_AGAIN_LATER, "server full, try again later")
            return None
        try:
            identity = await self.authenticate(handshake)
        except Refuse as refusal:
            _log_refusal(handshake, "authentication")
            self.observer.refused(scope, "auth")
            await _refuse(scope, send, refusal.status)
            return None
        scope["user"] = identity  # None for an anonymous client (Starlette's websocket.user)
        loop = asyncio.get_running_loop()
        watchdog = self.watchdog
        if watchdog is None or watchdog.loop is not loop:  # tests run apps on several loops
            watchdog = self.watchdog = Watchdog(loop, self.policy)
        connection = GuardedConnection(self.policy, scope, receive, send, self.observer, watchdog)
        extensions = scope.get("extensions")
        if extensions and extensions.get(SEND_TEXT_NOW) is not None:
            connection.server_send_now = extensions[SEND_TEXT_NOW]
            extensions[SEND_TEXT_NOW] = connection.send_text_now
        if extensions and extensions.get(WRITE_DIRECT) is not None:
            connection.server_open_direct = extensions[WRITE_DIRECT]
            extensions[WRITE_DIRECT] = connection.open_direct
        if extensions and extensions.get(RECEIVE_DIRECT) is not None:
            connection.server_listen = extensions[RECEIVE_DIRECT]
            extensions[RECEIVE_DIRECT] = connection.listen
        return connection


class Watchdog:
    """One timer for every connection of a guard on one event loop: idle and slow readers.

    At each look it asks every connection it watches (`GuardedConnection.watch`) what is
    due, and sets its timer for the earliest next deadline of any of them, but at least
    ``min(send_timeout, idle_timeout) / WATCH_STEPS`` after this look (1 s with the default
    policy), so that many connections cost at most one look over all of them per step. A
    deadline is therefore met exactly when nothing else is due near it, and at most one step
    late otherwise. A timer per connection, re-armed every send timeout, cost about 1 KB per
    open connection (bench/memory.py); a look costs well under a microsecond per connection.
    """

    __slots__ = ("connections", "loop", "step", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, policy: Policy) -> None:
        self.loop = loop
        self.step = min(policy.send_timeout, policy.idle_timeout) / WATCH_STEPS
        self.connections: set[GuardedConnection] = set()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, connection: GuardedConnection, now: float) -> None:
        """Watch ``connection`` from ``now`` (its accept) until `discard`."""
        self.connections.add(connection)
        if self.timer is None:  # else it fires within min(send, idle timeout) of now anyway
            self.timer = self.loop.call_at(connection.next_watch(now), self.look)

    def discard(self, connection: GuardedConnection) -> None:
        self.connections.discard(connection)
        if not self.connections and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def look(self) -> None:
        now = self.loop.time()
        due = math.inf
        for connection in list(self.connections):  # a look may end watching it
            when = connection.watch(now)
            if when is None:
                self.connections.discard(connection)
            elif when < due:
                due = when
        self.timer = None
        if self.connections:
            self.timer = self.loop.call_at(max(due, now + self.step), self.look)


class GuardedConnection:
    """One websocket connection between the server and the app, with the policy applied."""

    __slots__ = (  # thousands of idle connections: no __dict__ each
        "app_closed",
        "app_take",
        "close_code",
        "closed_by_guard",
        "closing",
        "direct_stop",
        "dropped_sender",
        "last_heard",
        "limit",
        "loop",
        "observer",
        "opened_at",
        "peer_gone",
        "policy",
        "rate_checked",
        "scope",
        "sender",
        "sends_finished",
        "sends_started",
        "server_listen",
        "server_open_direct",
        "server_receive",
        "server_send",
        "server_send_now",
        "stall_mark",
        "stalled_since",
        "tally",
        "tokens",
        "watchdog",
    )

    def __init__(
        self,
        policy: Policy,
        scope: Scope,
        receive: Receive,
        send: Send,
        observer: GuardObserver | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.policy = policy
        self.observer = observer or GuardObserver()
        self.tally: Tally | None = None  # the observer's, from accept on
        self.scope = scope  # held by the app anyway; the logs read path and client from it
        self.server_receive = receive
        self.server_send = send
        self.server_send_now: SendNow | None = None  # the server's SEND_TEXT_NOW, if any
        self.server_open_direct: OpenDirect | None = None  # the server's WRITE_DIRECT, if any
        self.direct_stop: LinkStop | None = None  # who to tell when the open link stops
        self.server_listen: Listen | None = None  # the server's RECEIVE_DIRECT, if any
        self.app_take: TakeText | None = None  # what the app's texts are handed to, if any
        self.loop = asyncio.get_running_loop()
        self.watchdog = watchdog or Watchdog(self.loop, policy)
        self.opened_at = 0.0
        self.last_heard = 0.0
        self.tokens = float(policy.message_burst)
        self.rate_checked = 0.0
        self.close_code: int | None = None  # the first close, whoever sent it
        self.closed_by_guard = False
        self.limit: str | None = None  # why the guard closed: size, rate, idle, slow_reader
        self.app_closed = False
        self.peer_gone = False  # a send found the connection closed by the client
        self.closing: asyncio.Task[Message] | None = None
        # Sends in flight, counted cheaply; the watchdog finds those that do not finish.
        self.sends_started = 0
        self.sends_finished = 0
        self.stall_mark = 0
        self.stalled_since = 0.0
        self.sender: asyncio.Task[Any] | None = None
        self.dropped_sender: asyncio.Task[Any] | None = None

    async def finish(self) -> None:
        """After the app has returned: stop watching, and log the close."""
        self.watchdog.discard(self)
        if self.server_send_now is not None:  # no cycle left: scope, self
            self.scope["extensions"].pop(SEND_TEXT_NOW, None)
            self.server_send_now = None
        if self.server_open_direct is not None:
            self.scope["extensions"].pop(WRITE_DIRECT, None)
            self.server_open_direct = self.direct_stop = None
        if self.server_listen is not None:
            self.scope["extensions"].pop(RECEIVE_DIRECT, None)
            self.server_listen = self.app_take = None
        if self.closing is not None:
            await self.closing
        if self.opened_at and self.close_code is None and self.peer_gone:
            await self.read_close_code()
        if self.opened_at:
            code = self.close_code if self.close_code is not None else "no close frame"
            duration = self.loop.time() - self.opened_at
            self.log_event(
                logging.INFO,
                f"closed with {code} after {duration:.3f} s",
                event="close",
                code=self.close_code,
                duration_seconds=round(duration, 3),
            )
            self.observer.closed(self)

    async def read_close_code(self) -> None:
        """Learn the client's close code from the server, after a send found the client gone
        before the app read its close: a client that sends a message and closes at once
        makes the app's reply meet its close. The server has queued the disconnect, behind
        any messages the app did not read."""
        try:
            async with asyncio.timeout(CLOSE_CODE_WAIT):
                while (message := await self.server_receive())["type"] != "websocket.disconnect":
                    pass
        except (OSError, RuntimeError, TimeoutError):
            return  # nothing more to learn: logged as before, with no close frame
        self.close_code = message.get("code", 1005)

    async def receive(self) -> Message:
        if self.closed_by_guard:
            return {"type": "websocket.disconnect", "code": self.close_code, "reason": ""}
        message = await self.server_receive()
        kind = message["type"]
        if kind == "websocket.receive":
            now = self.last_heard = self.loop.time()
            limit = self.policy.max_message_bytes
            payload = message.get("text") or message.get("bytes") or ""
            tally = self.tally
            if tally is not None:  # inline, not a call: this runs for every message
                tally.messages_received += 1
                if type(payload) is bytes or payload.isascii():
                    tally.bytes_received += len(payload)
                else:
                    tally.bytes_received += len(payload.encode())
            # At most 4 UTF-8 bytes a character: most messages are clearly small enough.
            if len(payload) * 4 > limit and _size(message) > limit:
                self.limit = "size"
                return await self.close_by_guard(MESSAGE_TOO_BIG, f"message over {limit} bytes")
            self.tokens = self.tokens_at(now)
            self.rate_checked = now
            if self.tokens < 1:
                self.limit = "rate"
                return await self.close_by_guard(POLICY_VIOLATION, "too many messages")
            self.tokens -= 1
        elif kind == "websocket.disconnect" and self.close_code is None:
            self.close_code = message.get("code", 1005)
        return message

    def tokens_at(self, now: float) -> float:
        """The messages the rate limit allows at ``now`` (the bucket refilled since the last
        check, up to the burst), before this one is taken."""
        refill = (now - self.rate_checked) * self.policy.messages_per_second
        return min(self.policy.message_burst, self.tokens + refill)

    def listen(self, take: TakeText) -> Awaitable[None] | None:
        """The server's `RECEIVE_DIRECT`, each text checked and counted by `take_text`."""
        listen = self.server_listen
        if self.closed_by_guard or listen is None:
            return None
        self.app_take = take
        return listen(self.take_text)

    def take_text(self, text: str) -> bool:
        """A text handed over by the server: checked and counted as `receive` does, then
        given to the app's take; False (nothing done, nothing counted) if it fails a check
        or the app's take refuses it, so that it is queued and `receive` sees it."""
        take = self.app_take
        if self.closed_by_guard or take is None:
            return False
        size = text_size(text)
        if size > self.policy.max_message_bytes:
            return False
        now = self.loop.time()
        tokens = self.tokens_at(now)
        if tokens < 1 or not take(text):
            return False
        self.last_heard = self.rate_checked = now
        self.tokens = tokens - 1
        tally = self.tally
        if tally is not None:
            tally.messages_received += 1
            tally.bytes_received += size
        return True

    def send_text_now(self, text: str) -> bool:
        """Send ``text`` at once through the server's `SEND_TEXT_NOW`, counted as `send`
        counts it; False (nothing done, nothing counted) when the guard has closed the
        connection or the server cannot send it now."""
        send_now = self.server_send_now
        if self.closed_by_guard or send_now is None or not send_now(text):
            return False
        tally = self.tally
        if tally is not None:
            if text is tally.last_text:
                tally.repeats += 1
            else:
                tally.count_text(text)
        return True

    def open_direct(self, stop: LinkStop) -> DirectLink | None:
        """The server's `WRITE_DIRECT` link, counted in the endpoint's tally (the writer
        tells how many times each text went out) and stopped when the guard closes."""
        open_server = self.server_open_direct
        if self.closed_by_guard or open_server is None:
            return None
        link = open_server(self)  # the server tells the guard, which tells ``stop``
        if link is None:
            return None
        self.direct_stop = stop
        return DirectLink(link.encode, link.writer, self.tally)

    def link_stopped(self) -> None:
        """The server stopped the direct link (`session.LinkStop`): tell its writer."""
        stop, self.direct_stop = self.direct_stop, None
        if stop is not None:
            stop.link_stopped()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.closed_by_guard:
            if kind == "websocket.close":
                return  # the guard has closed the connection already
            raise OSError("the connection was closed by the websocket guard")
        if kind == "websocket.send":  # the hot path: no timer per send, few counts
            self.sender = asyncio.current_task()
            self.sends_started += 1
            tally = self.tally
            if tally is not None:
                text = message.get("text")
                if text is tally.last_text:  # a broadcast's text, sent to the next subscriber
                    tally.repeats += 1
                elif text is None:
                    if tally.repeats:
                        tally.settle()
                    tally.sent_messages += 1
                    tally.sent_bytes += len(message.get("bytes") or b"")
                else:
                    tally.count_text(text)
            try:
                await self.server_send(message)
            except OSError:  # ASGI's word for a client that has left
                self.peer_gone = True
                raise
            except RuntimeError as error:
                if not self.closed_by_server(error):
                    raise
                raise OSError(f"the server has closed the connection: {error}") from error
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task is not self.dropped_sender:
                    raise
                task.uncancel()  # the watchdog's cancellation, not the app's
                raise OSError("the client does not read: dropped") from None
            finally:
                self.sends_finished += 1
            return
        if kind == "websocket.close":
            if not self.opened_at and not self.app_closed:
                route = "route" in self.scope  # set by the router that took the handshake
                self.observer.refused(self.scope, "app" if route else "unknown_path")
            if self.close_code is None:
                self.close_code = message.get("code", 1000)
            try:
                await self.server_send(message)
            except OSError:
                pass  # the peer is gone: moot
            except RuntimeError as error:
                if not self.closed_by_server(error):
                    raise
            self.app_closed = True
            return
        await self.server_send(message)
        if kind == "websocket.accept":
            self.opened_at = self.last_heard = self.rate_checked = self.loop.time()
            self.log_event(logging.INFO, "open", event="open")
            self.tally = self.observer.opened(self)
            self.watchdog.add(self, self.opened_at)

    def closed_by_server(self, error: RuntimeError) -> bool:
        """Whether a send was refused because the server closed the connection itself.

        uvicorn closes on a protocol error (invalid UTF-8, say) and then answers a send with
        a RuntimeError, where the ASGI spec asks for an OSError: the guard raises that
        OSError instead, which every face takes for a departed peer.
        """
        return not self.app_closed and "after sending 'websocket.close'" in str(error)

    async def close_by_guard(self, code: int, reason: str) -> Message:
        """Close the connection with ``code``; what the app receives instead of the message."""
        self.closed_by_guard = True
        self.link_stopped()  # no direct write once the guard closes
        self.close_code = code
        self.log_event(
            logging.WARNING,
            f"closed with {code}: {reason}",
            event="limit",
            code=code,
            limit=self.limit,
        )
        try:
            async with asyncio.timeout(self.policy.send_timeout):
                await self.server_send({"type": "websocket.close", "code": code, "reason": reason})
        except (OSError, TimeoutError):
            pass  # the client is gone or does not read: nothing more to tell it
        self.release_sender()
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    def release_sender(self) -> None:
        """End a send in flight that the connection's end leaves waiting: it raises OSError."""
        sender = self.sender
        in_flight = self.sends_started > self.sends_finished
        if in_flight and sender is not None and sender is not asyncio.current_task():
            self.dropped_sender = sender
            sender.cancel()

    def log_event(self, level: int, what: str, **fields: object) -> None:
        """Log ``what`` happened, with the path and client; ``fields`` go to structured
        logs as keys of their own (``event``, ``code``, ...)."""
        path, client = self.scope.get("path", ""), _address(self.scope.get("client"))
        extra = {"path": path, "client": client, **fields}
        logger.log(level, "websocket %s from %s %s", path, client, what, extra=extra)

    def next_watch(self, now: float) -> float:
        """When the watchdog must look next: a send timeout after the stalled sends it saw,
        else at the idle deadline or a send timeout after ``now`` (to find sends under way)."""
        if self.stall_mark:
            return self.stalled_since + self.policy.send_timeout
        return min(now + self.policy.send_timeout, self.last_heard + self.policy.idle_timeout)

    def watch(self, now: float) -> float | None:
        """Drop a client whose sends have not finished for a send timeout; close an idle one.

        Called by the `Watchdog` at each look; returns when it must look next, or None once
        there is nothing more to watch. A send still unfinished that was already under way at
        a look a send timeout ago has waited at least a send timeout (at most two, plus a
        watchdog step): its task is cancelled, and its send raises OSError, which the face
        takes for a departed peer. While a send is under way the app reads nothing, so the
        client is judged by the send timeout, not the idle one.
        """
        if self.closed_by_guard or self.close_code is not None:
            return None
        if self.sends_started > self.sends_finished:  # a send under way
            if self.sends_finished >= self.stall_mark:  # none left of those seen before
                self.stall_mark, self.stalled_since = self.sends_started, now
            elif now >= self.stalled_since + self.policy.send_timeout:
                self.closed_by_guard = True
                self.link_stopped()  # no direct write once the guard closes
                self.close_code = POLICY_VIOLATION
                self.limit = "slow_reader"
                self.log_event(
                    logging.WARNING,
                    "dropped: it does not read",
                    event="limit",
                    code=POLICY_VIOLATION,
                    limit="slow_reader",
                )
                self.release_sender()
                return None
            return self.next_watch(now)
        self.stall_mark = 0
        if now >= self.last_heard + self.policy.idle_timeout:
            reason = f"idle for {self.policy.idle_timeout:g} s"
            self.limit = "idle"
            self.closing = self.loop.create_task(self.close_by_guard(POLICY_VIOLATION, reason))
            return None
        return self.next_watch(now)


def origin_allowed(handshake: Handshake, scheme: str, allowed: Iterable[str]) -> bool:
    """True unless the handshake carries an Origin that is neither ours nor allowed.

    Same-origin means the Origin's host and port are the ``Host`` header's; a ``Host``
    without a port matches the default port of the Origin's scheme, so that a service
    behind a TLS-terminating proxy (``Host: example.com``) accepts ``https://example.com``.
    Clients that send no Origin (not browsers) are allowed.
    """
    origin = handshake.headers.get("origin")
    if origin is None:
        return True
    if origin.lower().rstrip("/") in allowed:
        return True
    host = handshake.headers.get("host")
    if host is None:
        return False
    try:
        parts, served = urlsplit(origin), urlsplit(f"{scheme}://{host}")
        origin_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        served_port = served.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a malformed Origin or Host
        return False
    return bool(parts.hostname) and parts.hostname == served.hostname and origin_port == served_port


def _size(message: Message) -> int:
    """The message's length in bytes (a text frame's in UTF-8), computed only when needed."""
    data = message.get("bytes")
    if data is not None:
        return len(data)
    return text_size(message.get("text") or "")


def text_size(text: str) -> int:
    """A text's length in UTF-8 bytes (its length, for the ASCII texts most are)."""
    return len(text) if text.isascii() else len(text.encode())


def _parse_cookies(header: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, _, value = pair.partition("=")
        if name.strip():
            cookies.setdefault(name.strip(), value.strip().strip('"'))
    return cookies


def _log_refusal(handshake: Handshake, why: str, level: int = logging.INFO) -> None:
    path, client = handshake.path, _address(handshake.client)
    extra = {"event": "refused", "path": path, "client": client, "reason": why}
    logger.log(level, "websocket %s from %s refused: %s", path, client, why, extra=extra)


def _address(client: Sequence[object] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


async def _refuse(scope: Scope, send: Send, status: int) -> None:
    """Refuse the handshake: a close before accept (HTTP 403), or a 401 response if asked."""
    if status == 401 and "websocket.http.response" in scope.get("extensions", {}):
        body = b'{"detail":"Unauthorized"}'
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1000, "reason": ""})


async def _accept_and_close(receive: Receive, send: Send, code: int, reason: str) -> None:
    """Accept only to close with a code the client can read (a refusal would be just 403)."""
    message: dict[str, Any] = dict(await receive())
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    await send({"type": "websocket.close", "code": code, "reason": reason})
