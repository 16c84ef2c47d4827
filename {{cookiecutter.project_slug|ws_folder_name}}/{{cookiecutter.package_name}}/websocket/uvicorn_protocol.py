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
  ``get`` and ``empty``, without its three deques of 760 bytes each), and the writable flag
  a `Flag` (``asyncio.Event`` without its deque);
- the handshake's request and response, and their headers, are let go once the handshake
  is answered (the app's scope keeps its own copy of the request headers, as ASGI says);
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
  ``keepalive_timeout``, ``shutdown``, ``connection_lost``).

It leans on attributes of uvicorn's class (``queue``, ``writable``, ``request``,
``response``, ``conn``, ``transport``, ``handshake_complete``, ``close_sent``,
``initial_response``, ``disconnected``) and on those methods, the same in uvicorn 0.54 and
0.55: a test of the backend checks them, and each change is skipped where one is not what
it expects, leaving uvicorn's own behaviour.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State

from .session import SEND_TEXT_NOW, WRITE_DIRECT, DirectLink, LinkStop

_last_frame: tuple[str | None, bytes] = (None, b"")
"""The last text frame built (the text, the frame's bytes): the next send of the same
``str`` object reuses it. One per process: a broadcast sends one text to every subscriber
before the next."""


def text_frame(text: str) -> bytes:
    """A final, unmasked, uncompressed text frame of ``text``: what a server sends."""
    global _last_frame
    last = _last_frame
    if last[0] is text:
        return last[1]
    frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
    _last_frame = (text, frame)
    return frame


class Inbox:
    """What ``asyncio.Queue`` does for uvicorn's events (``put_nowait``, ``get``,
    ``empty``; unbounded), in a list and the futures of waiting ``get`` calls."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] | None = None

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
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_next()  # woken, then cancelled: pass the item's wakeup on
                raise
        return self._items.pop(0)

    def _wake_next(self) -> None:
        getters = self._getters
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_stop: LinkStop | None = None
        """Who to tell when the open `WRITE_DIRECT` link stops, if one is open."""
        if type(self.queue) is asyncio.Queue and self.queue.empty():
            self.queue = Inbox()  # type: ignore[assignment]
        if type(self.writable) is asyncio.Event:
            writable = Flag()
            if self.writable.is_set():
                writable.set()
            self.writable = writable  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._recheck()
        scope = getattr(self, "scope", None)
        if isinstance(scope, dict) and isinstance(scope.get("extensions"), dict):
            scope["extensions"].pop(SEND_TEXT_NOW, None)  # no cycle left: scope, self
            scope["extensions"].pop(WRITE_DIRECT, None)
        self.direct_stop = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # made when the handshake goes on to the app
        extensions = scope.get("extensions") if isinstance(scope, dict) else None
        if isinstance(extensions, dict):
            extensions[SEND_TEXT_NOW] = self.send_text_now
            extensions[WRITE_DIRECT] = self.open_direct

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
            # the connection's life): its headers are emptied.
            if self.request is not None:
                self.request.headers.clear()
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
