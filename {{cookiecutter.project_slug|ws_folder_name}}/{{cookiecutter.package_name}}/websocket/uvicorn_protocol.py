"""`LeanProtocol`: uvicorn's websockets-sansio protocol, holding less per connection.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). The runner (``python -m <package>``) serves with it; by hand, ``uvicorn
<package>.app:app --ws <package>.websocket.uvicorn_protocol:LeanProtocol``. Other servers
and ``--ws`` choices do without it: nothing else in the backend depends on it.

It is uvicorn's ``WebSocketsSansIOProtocol`` (every byte on the wire, every ASGI event and
every close is uvicorn's) with what a connection keeps for its whole life made smaller, for
services that hold many idle connections, and one thing a broadcast does ten thousand times
done once:

- the queue of ASGI events for the app is an `Inbox` (``asyncio.Queue``'s ``put_nowait``,
  ``get`` and ``empty``, without its three deques of 760 bytes each), which ``receive``
  waits on itself (no coroutine of the queue's), and the writable flag a `Flag`
  (``asyncio.Event`` without its deque);
- the handshake's request and response, and their headers, are let go once the handshake
  is answered (the app's scope keeps its own copy of the request headers, as ASGI says);
- uvicorn's attributes live in slots: past 30 attributes an object's dictionary is no
  longer shared with its class's others, and cost 1.6 KiB each;
- the keepalive pings of every connection on an event loop wait on one timer (`PingClock`),
  not one ``TimerHandle`` each (0.6 KiB), at the times uvicorn sets;
- what connections have alike is held once: the extensions offered (a permessage-deflate
  factory), the server's address, and the scope's header pairs that clients send alike
  (`shared_headers`: ``host``, ``upgrade``, ``user-agent``..., never a key, a cookie or a
  credential);
- a text frame (no compression negotiated) is built once for the many connections that
  are sent the same ``str`` object in a row, as a broadcast does (`Subscription` hands every
  subscriber the same text): the frame's bytes are written to each transport.
- it offers the ASGI scope extension `session.SEND_TEXT_NOW`: a text sent at once, with no
  coroutine, where uvicorn's ``send`` would write the same bytes without waiting (and
  nothing done otherwise), so that a broadcast writes each subscriber's frame straight from
  the publisher's loop instead of waking each subscriber's task;
- and `session.WRITE_DIRECT`: a link through which one writer (a broadcast channel's
  `Lane`) puts frames on the transport with no check per frame, stopped (its stop told)
  as soon as ``send_text_now`` would refuse: after each of uvicorn's methods that
  can change what it checks (``pause_writing``, ``data_received``, ``send``,
  ``keepalive_timeout``, ``shutdown``, ``connection_lost``);
- and `session.RECEIVE_DIRECT`: a text message handed to the app's ``take`` in the read
  callback, where uvicorn would queue it with nothing queued before it, until ``take``
  refuses one or anything else is queued; what ``take`` deals with is neither queued nor
  pauses reading (uvicorn pauses reading while a message is queued), so a keepalive is
  answered with no task woken and no wait for the loop's next turn.

It leans on attributes of uvicorn's class (``queue``, ``writable``, ``request``,
``response``, ``conn``, ``transport``, ``handshake_complete``, ``close_sent``,
``initial_response``, ``disconnected``, ``scope``, ``ping_timer``, ``loop``, ``server``,
``frames``, ``curr_msg_data_type``; the slots name every attribute it sets), on those
methods and ``send_receive_event_to_app``, and on websockets'
``conn.available_extensions``, the same in uvicorn 0.54 and 0.55: a test of the backend
checks them, and each change is skipped where one is not what it expects, leaving
uvicorn's own behaviour (an attribute a later uvicorn adds goes to the object's
dictionary, as before).
"""

from __future__ import annotations

import asyncio
import heapq
import struct
from typing import Any, Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.protocol import State

from .session import (
    RECEIVE_DIRECT,
    SEND_TEXT_NOW,
    WRITE_DIRECT,
    DirectLink,
    LinkStop,
    TakeText,
)

_last_frame: tuple[str | None, bytes] = (None, b"")
"""The last text frame built (the text, the frame's bytes): the next send of the same
``str`` object reuses it. One per process: a broadcast sends one text to every subscriber
before the next."""


_MEDIUM_HEADER: Final = struct.Struct("!BBH")
_LONG_HEADER: Final = struct.Struct("!BBQ")
_FINAL_TEXT: Final = 0x81
"""FIN and the text opcode: the first byte of a final text frame (RFC 6455, 5.2)."""


def text_frame(text: str) -> bytes:
    """A final, unmasked, uncompressed text frame of ``text``: what a server sends, the
    bytes websockets' ``Frame(Opcode.TEXT, ...).serialize(mask=False)`` makes (tested),
    without its frame object and checks: a keepalive's answer is framed this way each."""
    global _last_frame
    last = _last_frame
    if last[0] is text:
        return last[1]
    data = text.encode()
    size = len(data)
    if size < 126:
        frame = bytes((_FINAL_TEXT, size)) + data
    elif size < 65536:
        frame = _MEDIUM_HEADER.pack(_FINAL_TEXT, 126, size) + data
    else:
        frame = _LONG_HEADER.pack(_FINAL_TEXT, 127, size) + data
    _last_frame = (text, frame)
    return frame


SHARED_HEADER_NAMES: Final = frozenset(
    {
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"connection",
        b"host",
        b"origin",
        b"pragma",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-version",
        b"upgrade",
        b"user-agent",
    }
)
"""The request headers whose (name, value) pair `shared_headers` holds once for every
connection that sends it: values clients send alike. Never a key, a cookie, a credential
or an address (they would outlive the connection in the process's table)."""
MAX_SHARED_HEADERS: Final = 1024
"""The most pairs held (with values of at most `MAX_SHARED_VALUE` bytes): past it, a new
pair is each connection's own, as before, so that clients cannot grow the table."""
MAX_SHARED_VALUE: Final = 256

_shared_pairs: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}


def shared_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` (a scope's: name, value), equal, with the pairs of `SHARED_HEADER_NAMES`
    replaced by the same pair already held for another connection: the scope holds the
    same bytes and tuples (immutable), once for all connections rather than each its own
    (about 0.6 KiB each)."""
    pairs = _shared_pairs
    shared: list[tuple[bytes, bytes]] = []
    for pair in headers:
        held = pairs.get(pair)
        if (
            held is None
            and len(pairs) < MAX_SHARED_HEADERS
            and len(pair[1]) <= MAX_SHARED_VALUE
            and pair[0].lower() in SHARED_HEADER_NAMES
        ):
            held = pairs[pair] = pair
        shared.append(pair if held is None else held)
    return shared


NO_HEADERS: Final = Headers()
"""What a connection's handshake request holds once answered (every connection the same:
never written to)."""

_extensions: tuple[object, list[Any]] | None = None
"""The websocket extensions uvicorn offers (a permessage-deflate factory, stateless) on
the connections of a server's config, made alike for each: held once."""

_server_address: tuple[str, int | None] | None = None
"""The last server address seen (``scope["server"]``), the same for every connection of a
listening socket: held once."""


class Ping:
    """A keepalive ping a `PingClock` sends at ``when``: what uvicorn's ``ping_timer`` holds
    (it calls `cancel`)."""

    __slots__ = ("protocol", "when")

    def __init__(self, when: float, protocol: WebSocketsSansIOProtocol) -> None:
        self.when = when
        self.protocol: WebSocketsSansIOProtocol | None = protocol

    def __lt__(self, other: Ping) -> bool:
        return self.when < other.when

    def cancel(self) -> None:
        self.protocol = None


class PingClock:
    """One timer for the keepalive pings of every `LeanProtocol` on an event loop.

    uvicorn sets a ``TimerHandle`` per connection for its next ping (0.6 KiB each, with
    its callback and context); the clock keeps each connection's next ping in a heap, sets
    its one timer for the earliest, and at it calls the protocol's
    ``send_keepalive_ping``, as uvicorn's timer would, at the time uvicorn set. A cancelled
    ping stays in the heap, without its protocol, until its time or until the heap has
    doubled since it was last swept of them (connections that come and go quickly leave
    at most about as many as there are live ones)."""

    __slots__ = ("due", "loop", "sweep_at", "timer", "timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: list[Ping] = []
        self.sweep_at = PING_CLOCK_SWEEP
        """The heap's length at which its cancelled pings are let go."""
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def at(self, when: float, protocol: WebSocketsSansIOProtocol) -> Ping:
        """Send ``protocol``'s keepalive ping at ``when`` (the loop's time) unless cancelled."""
        due = self.due
        if len(due) >= self.sweep_at:  # each ping is swept at most once per doubling
            due[:] = [ping for ping in due if ping.protocol is not None]
            heapq.heapify(due)
            self.sweep_at = max(PING_CLOCK_SWEEP, 2 * len(due))
        ping = Ping(when, protocol)
        heapq.heappush(due, ping)
        if self.timer is None or when < self.timer_at:
            self._arm(when)
        return ping

    def _arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.timer_at = self.loop.call_at(when, self._fire), when

    def _fire(self) -> None:
        self.timer = None
        due = self.due
        # The loop's clock may read a hair under a timer's own time when it fires
        # (uvloop counts in milliseconds): what is due within that is due now.
        now = self.loop.time() + PING_CLOCK_SLACK
        while due and due[0].when <= now:
            protocol = heapq.heappop(due).protocol
            if protocol is not None:
                protocol.send_keepalive_ping()
        if due:
            self._arm(due[0].when)


PING_CLOCK_SWEEP: Final = 1024
"""A `PingClock`'s heap is swept of cancelled pings when it reaches this length, or twice
its length after the last sweep."""
PING_CLOCK_SLACK: Final = 0.001
"""Seconds: a ping due this soon is sent at a `PingClock`'s tick (an event loop's timers
are as exact as a millisecond: uvloop's)."""

_ping_clock: PingClock | None = None
"""The clock of the event loop of the last ping scheduled (one per loop; a process serves
on one)."""


def ping_clock(loop: asyncio.AbstractEventLoop) -> PingClock:
    """The `PingClock` of ``loop``."""
    global _ping_clock
    clock = _ping_clock
    if clock is None or clock.loop is not loop:
        clock = _ping_clock = PingClock(loop)
    return clock


class Inbox:
    """What ``asyncio.Queue`` does for uvicorn's events (``put_nowait``, ``get``,
    ``empty``; unbounded), in a list and the futures of waiting ``get`` calls."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: asyncio.Future[None] | list[asyncio.Future[None]] | None = None
        """The waiting getters' futures, oldest first: the future itself while there is one
        (a connection's reader, waiting for as long as the connection idles: no list)."""

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_next()

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> Any:
        while not self._items:  # LeanProtocol.receive has this loop inline
            getter = self.arrival()
            try:
                await getter
            except BaseException:
                self.forget(getter)
                raise
        return self._items.pop(0)

    def arrival(self) -> asyncio.Future[None]:
        """A future set once an item may be there: what a getter waits on, then looks."""
        getter = asyncio.get_running_loop().create_future()
        getters = self._getters
        if getters is None:
            self._getters = getter
        elif isinstance(getters, list):
            getters.append(getter)
        else:
            self._getters = [getters, getter]
        return getter

    def forget(self, getter: asyncio.Future[None]) -> None:
        """Stop waiting on ``getter`` (its waiter was cancelled, say)."""
        getter.cancel()
        getters = self._getters
        if getters is getter:
            self._getters = None
        elif isinstance(getters, list) and getter in getters:
            getters.remove(getter)
        if self._items and not getter.cancelled():
            self._wake_next()  # woken, then cancelled: pass the item's wakeup on

    def _wake_next(self) -> None:
        getters = self._getters
        if getters is None:
            return
        if not isinstance(getters, list):  # the lone getter
            self._getters = None
            if not getters.done():
                getters.set_result(None)
            return
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


class Flag:
    """What ``asyncio.Event`` does for uvicorn's writable flag (``set``, ``clear``,
    ``is_set``, ``wait``), with its waiters' list made only when someone waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            return await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class LeanProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with less kept per connection (see the module)."""

    __slots__ = (  # every attribute uvicorn 0.55 sets, and its own: no dictionary each
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "direct_stop",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "initial_response",
        "last_ping_rtt",
        "listener",
        "listening",
        "logger",
        "loop",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_stop: LinkStop | None = None
        """Who to tell when the open `WRITE_DIRECT` link stops, if one is open."""
        self.listener: TakeText | None = None
        """The app's `RECEIVE_DIRECT` take, while texts are handed to it."""
        self.listening: asyncio.Future[None] | None = None
        """What the app waits on while texts are handed to it: done once one is queued."""
        if type(self.queue) is asyncio.Queue and self.queue.empty():
            self.queue = Inbox()  # type: ignore[assignment]
        if type(self.writable) is asyncio.Event:
            writable = Flag()
            if self.writable.is_set():
                writable.set()
            self.writable = writable  # type: ignore[assignment]
        global _extensions
        extensions = getattr(self.conn, "available_extensions", None)
        if _extensions is not None and _extensions[0] is self.config:
            self.conn.available_extensions = _extensions[1]  # the same factories, made alike
        elif type(extensions) is list:
            _extensions = (self.config, extensions)

    def schedule_ping(self) -> None:
        super().schedule_ping()
        timer = self.ping_timer  # uvicorn's TimerHandle (asyncio's or uvloop's) of its ping
        if timer is not None and not isinstance(timer, Ping) and hasattr(timer, "when"):
            timer.cancel()
            self.ping_timer = ping_clock(self.loop).at(timer.when(), self)  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        global _server_address
        if self.server is not None and self.server == _server_address:
            self.server = _server_address
        else:
            _server_address = self.server

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._recheck()
        scope = getattr(self, "scope", None)
        if isinstance(scope, dict) and isinstance(scope.get("extensions"), dict):
            scope["extensions"].pop(SEND_TEXT_NOW, None)  # no cycle left: scope, self
            scope["extensions"].pop(WRITE_DIRECT, None)
            scope["extensions"].pop(RECEIVE_DIRECT, None)
        self.direct_stop = self.listener = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # made when the handshake goes on to the app
        extensions = scope.get("extensions") if isinstance(scope, dict) else None
        if isinstance(extensions, dict):
            extensions[SEND_TEXT_NOW] = self.send_text_now
            extensions[WRITE_DIRECT] = self.open_direct
            if isinstance(self.queue, Inbox):
                extensions[RECEIVE_DIRECT] = self.listen
        if isinstance(scope, dict) and type(scope.get("headers")) is list:
            scope["headers"] = shared_headers(scope["headers"])

    async def receive(self) -> Any:
        """uvicorn's ``receive``, with `Inbox.get` inline: one coroutine less held by each
        connection that waits for a message (an idle one always does)."""
        inbox: object = self.queue
        if not isinstance(inbox, Inbox):
            return await super().receive()
        if self.listening is not None:  # the app reads: texts are no longer handed over
            inbox.forget(self.listening)
            self.listener = self.listening = None
        while inbox.empty():
            getter = inbox.arrival()
            try:
                await getter
            except BaseException:
                inbox.forget(getter)
                raise
        message = inbox.get_nowait()
        if self.read_paused and inbox.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message

    def listen(self, take: TakeText) -> asyncio.Future[None] | None:
        """`RECEIVE_DIRECT`: hand each text message to ``take`` as it is read, until one is
        queued; None (nothing done) while a message waits to be received, or once the
        connection is closing."""
        inbox = self.queue
        if not isinstance(inbox, Inbox) or not inbox.empty() or self.close_sent:
            return None
        if self.listening is not None:  # a hand-over the app gave up (cancelled its wait)
            inbox.forget(self.listening)
        self.listener = take
        self.listening = arrival = inbox.arrival()
        return arrival

    def send_receive_event_to_app(self) -> None:
        """uvicorn's, but a whole text message goes to the app's `RECEIVE_DIRECT` take
        first, while one listens and nothing is queued: queued only if ``take`` refuses it."""
        take = self.listener
        if take is not None:
            self.listener = None  # back below if ``take`` deals with this text
            arrival = self.listening
            if (
                arrival is not None
                and not arrival.done()
                and self.curr_msg_data_type == "text"
                and len(self.frames) == 1
                and not self.close_sent
                and self.queue.empty()
            ):
                try:
                    text = self.frames[0].decode()
                except UnicodeDecodeError:
                    text = None  # uvicorn's own path fails the connection, as it should
                if text is not None and take(text):
                    self.frames = []
                    self.listener = take
                    return
        super().send_receive_event_to_app()

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "websocket.send" and self._sent_as_text_frame(message):
            return
        try:
            await super().send(message)
        finally:
            self._recheck()
        if kind == "websocket.accept" and self.handshake_complete:
            # The handshake is answered: its request and response are not read again. The
            # request stays referenced by websockets' parser (a local of its generator, for
            # the connection's life): its headers are let go for one empty set, shared.
            if self.request is not None:
                self.request.headers = NO_HEADERS
            self.request = self.response = None  # type: ignore[assignment]

    def _sent_as_text_frame(self, message: Any) -> bool:
        """Write ``message``'s text as a prebuilt frame where uvicorn would write the same
        bytes at once; False (nothing done) in any other case, which uvicorn handles."""
        text = message.get("text")
        return type(text) is str and message.get("bytes") is None and self.send_text_now(text)

    def send_text_now(self, text: str) -> bool:
        """Write ``text`` as a prebuilt frame where uvicorn's ``send`` would write the same
        bytes without waiting; False (nothing done) in any other case (`SEND_TEXT_NOW`)."""
        if not self._writes_now():
            return False
        last = _last_frame  # text_frame(text), inline: this runs once per subscriber
        self.transport.write(last[1] if last[0] is text else text_frame(text))
        return True

    def _writes_now(self) -> bool:
        """Whether uvicorn's ``send`` would write a text frame's bytes at once, unchanged:
        the connection open, its transport writable, nothing else being written."""
        conn = self.conn
        return not (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or conn.state is not State.OPEN
            or conn.extensions
            or conn.expect_continuation_frame
            or conn.writes
            or conn.debug
        )

    def open_direct(self, stop: LinkStop) -> DirectLink | None:
        """`WRITE_DIRECT`: frames written straight to the transport until something
        `_writes_now` looks at changes (each place uvicorn changes it calls `_recheck`)."""
        if not self._writes_now():
            return None
        self.direct_stop = stop
        return DirectLink(text_frame, self.transport, None)

    def _recheck(self) -> None:
        """Stop the direct link, if any, once a text could not be written at once."""
        if self.direct_stop is not None and not self._writes_now():
            stop, self.direct_stop = self.direct_stop, None
            stop.link_stopped()

    # Every place where uvicorn changes what `_writes_now` reads, for a connection that is
    # open: the transport's flow control, what the client sends (a close, a bad frame), what
    # the app sends (a close), the keepalive's timeout, the server's shutdown, the loss.

    def pause_writing(self) -> None:
        super().pause_writing()
        self._recheck()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._recheck()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._recheck()

    def shutdown(self) -> None:
        super().shutdown()
        self._recheck()
