"""`Client`: a Python client of the service that reconnects, and resumes broadcast channels.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``), on the ``websockets`` library's asyncio client::

    async with Client("ws://127.0.0.1:8000/ws/rooms/lobby") as client:
        await client.send({"text": "hello"})
        async for message in client:          # every JSON object the service sends
            print(message)

- **Keepalives.** It sends ``{"type": "keepalive", "client_ns": ...}`` every
  ``keepalive_seconds`` and takes the ``keepalive_ack`` of those itself: `round_trip` is the
  last round trip, in seconds. A keepalive you send yourself gets its ack like any message.
- **Reconnecting.** When the connection is lost (a network error, an abnormal close 1006,
  1011 internal error, 1012 service restart, 1013 try again later, 1001 going away) or cannot
  be made, it reconnects after a pause that doubles from ``first_retry_seconds`` up to
  ``last_retry_seconds``, with jitter (a random half to all of it), and starts again from the
  first pause after a connection that lasted ``stable_seconds``. It gives up, raising
  `Refused`, on what a retry cannot mend: the handshake refused with an HTTP status (401,
  403, 404, ...), a close for a policy violation (1008), a message too big (1009), a protocol
  or data error (1002, 1003, 1007), or a normal close by the server (1000). ``max_attempts``
  bounds the attempts in a row (None: no bound).
- **Resuming.** On a broadcast endpoint it follows the channel's position (the ``offset``
  and ``epoch`` of every ``subscribed``, ``broadcast`` and ``dropped`` message) and
  reconnects with ``?since=OFFSET&epoch=EPOCH``, so it misses nothing the channel's
  history still holds. With ``last=N`` its first connection starts with the channel's last
  N messages (``?last=N``; a ``last`` in the URL goes the same way). The ``subscribed`` notice after a reconnect is passed on like any
  message; `recovered` says whether the last resume recovered everything (False: reload
  your state).
- **Typed.** `Subscribed`, `Broadcast`, `Dropped`, `Presence` (its `PresentClient` list),
  `Join`, `Leave`, `Direct`, `Tick` and `Error` are the service's own messages as types
  (the schemas of ``asyncapi.py``, which ``GET /asyncapi.json`` serves); `service_message`
  narrows a received object to one of them, or None (an echo, or a message of your own
  handlers).
- `send` waits for a connection; a message sent while the connection fails is sent again
  on the next one only if `send` has not returned (``send`` returns once the message is
  written).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self, TypedDict, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

logger = logging.getLogger(__name__)

RETRIED_CLOSE_CODES: Final = frozenset({1001, 1006, 1011, 1012, 1013})
"""Close codes after which the client reconnects; any other close ends it (`Refused`)."""

CLOSE_HINTS: Final = {
    1008: "a policy violation: a request the service refused (its error message says "
    "why), too many messages, or none for its IDLE_TIMEOUT_SECONDS (send keepalives)",
    1009: "a message over the service's MAX_MESSAGE_BYTES: send smaller ones, or raise "
    "MAX_MESSAGE_BYTES where the service runs",
}
"""What a close code that ends the client means, and what to do (in `Refused`'s message).
1008's hint is given only when the close has no reason of its own."""

STATUS_HINTS: Final = {
    401: "the service wants credentials: send what its auth.py reads (headers=, or "
    "--header/--cookie on the command line)",
    403: "the service's auth.py or origin check refused it, or no endpoint has this path: "
    "send what auth.py reads (headers=, or --header/--cookie on the command line)",
    404: "no websocket endpoint has this path",
}
"""What an HTTP status refusing the handshake means, and what to do."""
POSITION_TYPES: Final = frozenset({"subscribed", "broadcast", "dropped"})


class _Position(TypedDict):
    type: Literal["subscribed"]
    channel: str
    offset: int
    epoch: str
    client_id: str


class Subscribed(_Position, total=False):  # NotRequired is not seen under string annotations
    """The first message on a broadcast endpoint: the channel's position and this connection's
    ``client_id`` in presence lists (`recovered` after a resume)."""

    recovered: bool


class PresentClient(TypedDict):
    """A connection in a presence list: its ``client_id`` and its user (None: anonymous)."""

    client_id: str
    user: Any


class Presence(TypedDict):
    """Who is on a broadcast channel, on every process (``cut``: ``clients`` lists only some
    of the ``count``): the answer to ``{"type": "presence"}``."""

    type: Literal["presence"]
    channel: str
    count: int
    clients: list[PresentClient]
    cut: bool


class Join(TypedDict):
    """Another connection subscribed to the channel."""

    type: Literal["join"]
    channel: str
    client: PresentClient


class Leave(TypedDict):
    """Another connection left the channel."""

    type: Literal["leave"]
    channel: str
    client: PresentClient


class Direct(TypedDict):
    """A message sent to this connection's user (``POST /api/publish`` with a ``user``)."""

    type: Literal["direct"]
    server_ns: int
    message: dict[str, Any]


class Broadcast(TypedDict):
    """A message of a broadcast channel, with its position."""

    type: Literal["broadcast"]
    channel: str
    offset: int
    epoch: str
    server_ns: int
    message: dict[str, Any]


class Dropped(TypedDict):
    """Messages lost just before this position (``count`` None: unknown)."""

    type: Literal["dropped"]
    channel: str
    count: int | None
    offset: int
    epoch: str


class Tick(TypedDict):
    """A ticker endpoint's tick."""

    type: Literal["tick"]
    seq: int
    server_ns: int


class Error(TypedDict):
    """The answer to a message the service could not take; the connection goes on."""

    type: Literal["error"]
    reason: str


ServiceMessage = Subscribed | Broadcast | Dropped | Presence | Join | Leave | Direct | Tick | Error
SERVICE_MESSAGES: Final[Mapping[str, type[Any]]] = {
    "subscribed": Subscribed,
    "broadcast": Broadcast,
    "dropped": Dropped,
    "presence": Presence,
    "join": Join,
    "leave": Leave,
    "direct": Direct,
    "tick": Tick,
    "error": Error,
}


def service_message(message: Mapping[str, Any]) -> ServiceMessage | None:
    """``message`` as the service message its ``type`` names, if it has that message's
    fields; else None. Narrow further on ``["type"]``::

        typed = service_message(message)
        if typed is not None and typed["type"] == "broadcast":
            show(typed["offset"], typed["message"])
    """
    kind = SERVICE_MESSAGES.get(str(message.get("type")))
    if kind is None or not kind.__required_keys__ <= message.keys():
        return None
    return cast(ServiceMessage, message)


class Refused(Exception):
    """The service refused the client in a way a retry cannot mend (see the module's docs)."""


class Client:
    """A connection to one endpoint of the service, kept up (see the module's docs).

    ``headers`` go with every handshake: what the service's ``auth.py`` reads, such as
    ``{"Cookie": "session=..."}`` or ``{"Authorization": "Bearer ..."}``
    (``python -m <package>.client`` takes them as ``--cookie`` and ``--header``);
    ``open_timeout`` bounds one connection attempt, in seconds. ``last`` (a broadcast
    endpoint) has the first connection start with the channel's last ``last`` messages.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        keepalive_seconds: float = 20.0,
        first_retry_seconds: float = 0.1,
        last_retry_seconds: float = 10.0,
        stable_seconds: float = 10.0,
        max_attempts: int | None = None,
        open_timeout: float = 10.0,
        last: int | None = None,
    ) -> None:
        if last is not None and last < 0:
            raise ValueError(f"last must be 0 or more, got {last!r}.")
        self.url = url
        self.last = last
        self.headers = dict(headers or {})
        self.keepalive_seconds = keepalive_seconds
        self.first_retry_seconds = first_retry_seconds
        self.last_retry_seconds = last_retry_seconds
        self.stable_seconds = stable_seconds
        self.max_attempts = max_attempts
        self.open_timeout = open_timeout
        self.round_trip: float | None = None
        """Seconds of the last keepalive round trip, once one came back."""
        self.recovered: bool | None = None
        """After a resume: whether every message missed meanwhile came."""
        self.connections = 0
        """How many connections were made (1 + reconnections)."""
        self._position: tuple[int, str] | None = None
        self._keepalives: set[int] = set()  # the client_ns of its own unanswered keepalives
        self._incoming: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._connection: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def position(self) -> tuple[int, str] | None:
        """The (offset, epoch) of the last broadcast position seen, if any."""
        return self._position

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._keep_connected(), name=f"Client {self.url}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (1000) and stop reconnecting (again is harmless)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Refused):  # receive() raised it
                await task
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send a JSON object, waiting for a connection (`Refused` once the client gave up)."""
        while True:
            self._raise_if_over()
            await self._connected.wait()
            connection = self._connection
            if connection is None:
                continue
            try:
                await connection.send(json.dumps(message, separators=(",", ":")))
                return
            except ConnectionClosed:
                await asyncio.sleep(0)  # the connection task sees it and reconnects

    async def receive(self) -> dict[str, Any]:
        """The next JSON object the service sent (the acks of its own keepalives aside)."""
        item = await self._incoming.get()
        if isinstance(item, BaseException):
            self._incoming.put_nowait(item)  # every later call raises it too
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.receive()

    def resume_url(self) -> str:
        """The URL of the next connection: with ``since``/``epoch`` once a position is known
        (and no ``last`` any more), with ``last`` before."""
        if self._position is None and self.last is None:
            return self.url
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("since", "epoch", "last")]
        if self._position is None:
            query += [("last", str(self.last))]
        else:
            offset, epoch = self._position
            query += [("since", str(offset)), ("epoch", epoch)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _raise_if_over(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            raise error if error is not None else Refused("the client is closed")
        if self._closed:
            raise Refused("the client is closed")

    async def _keep_connected(self) -> None:
        attempts = 0
        try:
            while True:
                attempts += 1
                started = time.monotonic()
                try:
                    await self._serve_one_connection()
                except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as error:
                    if isinstance(error, InvalidStatus):
                        raise Refused(_refused_because(error.response.status_code)) from error
                    if isinstance(error, ConnectionClosed) and not _retried(error):
                        raise Refused(_closed_because(error)) from error
                    logger.info("connection to %s lost or refused (%r); retrying", self.url, error)
                if time.monotonic() - started >= self.stable_seconds:
                    attempts = 1
                if self.max_attempts is not None and attempts >= self.max_attempts:
                    raise Refused(f"gave up after {attempts} attempts in a row")
                await asyncio.sleep(self._pause(attempts))
        except Refused as error:
            self._incoming.put_nowait(error)
            self._connected.set()  # wake senders: they raise it
            raise

    def _pause(self, attempts: int) -> float:
        ceiling = min(self.last_retry_seconds, self.first_retry_seconds * 2.0 ** (attempts - 1))
        return ceiling * random.uniform(0.5, 1.0)

    async def _serve_one_connection(self) -> None:
        async with connect(
            self.resume_url(),
            additional_headers=self.headers,
            open_timeout=self.open_timeout,
            ping_interval=None,  # the service pings; keepalives measure the round trip
        ) as connection:
            self.connections += 1
            self._connection = connection
            self._connected.set()
            keepalives = asyncio.create_task(self._send_keepalives(connection))
            try:
                async for frame in connection:
                    self._take(frame)
                # A close frame came: websockets ends the loop on 1000/1001 without raising.
                await connection.wait_closed()
                raise connection.protocol.close_exc
            finally:
                keepalives.cancel()
                self._connected.clear()
                self._connection = None

    def _take(self, frame: str | bytes) -> None:
        try:
            message = json.loads(frame)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            logger.warning("ignored a frame that is not a JSON object from %s", self.url)
            return
        kind = message.get("type")
        if kind == "keepalive_ack" and message.get("client_ns") in self._keepalives:
            self._keepalives.discard(message["client_ns"])
            self.round_trip = (time.time_ns() - message["client_ns"]) / 1e9
            return
        if kind in POSITION_TYPES and isinstance(message.get("offset"), int):
            self._position = (message["offset"], str(message["epoch"]))
            if kind == "subscribed" and "recovered" in message:
                self.recovered = bool(message["recovered"])
        self._incoming.put_nowait(message)

    async def _send_keepalives(self, connection: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.keepalive_seconds)
                sent = time.time_ns()
                if len(self._keepalives) > 16:  # acks lost with a connection
                    self._keepalives.clear()
                self._keepalives.add(sent)
                await connection.send(json.dumps({"type": "keepalive", "client_ns": sent}))


def _retried(error: ConnectionClosed) -> bool:
    code = error.rcvd.code if error.rcvd is not None else 1006
    return code in RETRIED_CLOSE_CODES


def _closed_because(error: ConnectionClosed) -> str:
    """`Refused`'s sentence for a close that ends the client: the code, reason and a hint."""
    if error.rcvd is None:
        return "the service closed the connection with no close frame"
    said = f"the service closed the connection with {error.rcvd.code}"
    if error.rcvd.reason:
        said += f" ({error.rcvd.reason})"
    hint = CLOSE_HINTS.get(error.rcvd.code)
    if hint is None or (error.rcvd.code == 1008 and error.rcvd.reason):
        return said
    return f"{said}: {hint}"


def _refused_because(status: int) -> str:
    """`Refused`'s sentence for a refused handshake: the status and a hint."""
    said = f"the handshake was refused with HTTP {status}"
    hint = STATUS_HINTS.get(status)
    return f"{said}: {hint}" if hint else said


async def _console(
    url: str,
    linger: float = 1.0,
    headers: Mapping[str, str] | None = None,
    last: int | None = None,
) -> None:
    """Print what arrives on ``url``, send each line typed (a JSON object); end ``linger``
    seconds after the end of the input (the replies to its last lines arrive meanwhile), or
    when the service refuses the client."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_input() -> None:  # a daemon thread: a blocked read never holds up the exit
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_input, daemon=True).start()
    async with Client(url, headers=headers, last=last) as client:

        async def printing() -> None:
            async for message in client:
                print(json.dumps(message, ensure_ascii=False), flush=True)

        async def typing() -> None:
            while (line := await lines.get()) is not None:
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError:
                    print("(not JSON: type a JSON object)", flush=True)
                    continue
                await client.send(value)

        shown, typed = asyncio.create_task(printing()), asyncio.create_task(typing())
        done, pending = await asyncio.wait([shown, typed], return_when=asyncio.FIRST_COMPLETED)
        if done == {typed} and typed.exception() is None:
            done, pending = await asyncio.wait([shown], timeout=linger)
            done.add(typed)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        # Both tasks may have ended with the same Refused: read every one, raise one.
        errors = [task.exception() for task in done if not task.cancelled()]
        for error in errors:
            if error is not None:
                raise error


def _header(text: str) -> tuple[str, str]:
    """``NAME:VALUE`` (``--header``) as a pair; argparse reports a ValueError in one line."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(text)
    return name.strip(), value.strip()


def _cookie(text: str) -> str:
    """``NAME=VALUE`` (``--cookie``), checked."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise ValueError(text)
    return f"{name.strip()}={value.strip()}"


_header.__name__ = "NAME:VALUE header"  # what argparse names in its error
_cookie.__name__ = "NAME=VALUE cookie"


def _count(text: str) -> int:
    """``N`` (``--last``): a whole number, 0 or more; argparse reports a ValueError."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


_count.__name__ = "whole number"  # what argparse names in its error


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m <package>.client URL``: a terminal client that reconnects and resumes."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("url", help="ws://host:port/path of an endpoint")
    parser.add_argument(
        "--linger",
        type=float,
        default=1.0,
        help="seconds to go on printing after the end of the input (default 1)",
    )
    parser.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a header to send with the handshake, e.g. 'Authorization: Bearer ...' "
        "(repeat for more)",
    )
    parser.add_argument(
        "--cookie",
        type=_cookie,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a cookie to send with the handshake, e.g. session=... (repeat for more)",
    )
    parser.add_argument(
        "--last",
        type=_count,
        metavar="N",
        help="on a broadcast endpoint, start with the channel's last N messages",
    )
    args = parser.parse_args(argv)
    headers = dict(args.header)
    if args.cookie:
        headers["Cookie"] = "; ".join([*filter(None, [headers.get("Cookie")]), *args.cookie])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        asyncio.run(_console(args.url, args.linger, headers, args.last))
    except Refused as error:
        print(f"refused: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
