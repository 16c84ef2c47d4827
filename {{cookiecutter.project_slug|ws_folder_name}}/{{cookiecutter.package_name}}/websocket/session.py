"""Session helpers: one websocket session run as a block of composable tasks.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Framework-free: everything here is written against `SessionSocket`, the
few methods that Starlette's (FastAPI's) ``WebSocket`` and the raw-ASGI ``WebSocket`` in
``asgi.py`` both provide, so each face reuses these helpers instead of copying them.

The client protocol every helper speaks is JSON objects in text frames:

- ``{"type": "keepalive", ...}`` is answered with ``{"type": "keepalive_ack",
  "server_ns": <int>, ...}``, echoing the client's other fields (its own timestamp, say);
- a frame that is not a JSON object gets ``{"type": "error", "reason": "..."}`` and the
  session goes on.
"""

from __future__ import annotations

import asyncio
import json
import json.encoder
import json.scanner
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import Enum
from typing import Any, Final, NamedTuple, Protocol, TypeAlias, TypeVar

logger = logging.getLogger(__name__)

NORMAL_CLOSURE: Final = 1000
GOING_AWAY: Final = 1001
INTERNAL_ERROR: Final = 1011


class SessionSocket(Protocol):
    """The part of a WebSocket that the session helpers use.

    ``client_state`` and ``application_state`` are enums with Starlette's member names
    (``CONNECTING``, ``CONNECTED``, ``DISCONNECTED``, ``RESPONSE``): the helpers compare
    names, so Starlette's enum and the raw-ASGI face's enum both fit.
    """

    @property
    def scope(self) -> Mapping[str, Any]: ...

    @property
    def client_state(self) -> Enum: ...

    @property
    def application_state(self) -> Enum: ...

    async def accept(self) -> None: ...

    async def receive(self) -> Mapping[str, Any]: ...

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = NORMAL_CLOSURE) -> None: ...


WS = TypeVar("WS", bound=SessionSocket)

TaskFactory: TypeAlias = Callable[[WS], Awaitable[None]]
"""Something to run for the length of a session, given its socket."""

JsonHandler: TypeAlias = Callable[[WS, dict[str, Any]], Awaitable[None]]
"""What `receive_json` calls with each JSON object a client sends."""

SEND_TEXT_NOW: Final = "send_text_now"
"""The ASGI scope extension (``scope["extensions"][SEND_TEXT_NOW]``) of a server that can
send a text frame at once, without a coroutine: a function of the text that returns True
once it has written the frame, and False, having done nothing, when it cannot now (the
connection is not open, its transport is not writable, something else is being written):
the text then goes the usual way, ``await websocket.send_text(text)``. `LeanProtocol`
offers it; the guard offers its own, which counts what it sends and then calls the
server's. A broadcast delivers through it straight from the publisher's loop to the
subscribers that wait for nothing (`server_sender`)."""

SendNow: TypeAlias = Callable[[str], bool]
"""Sends a text frame at once: True if sent, False (nothing done) if it cannot now."""

WRITE_DIRECT: Final = "write_direct"
"""The ASGI scope extension of a server that lets one writer put texts straight on the
connection's transport, with no check per text, for as long as nothing changes: a
function of a `LinkStop` that returns a `DirectLink`, or None when the connection cannot
take a text at once now (as `SEND_TEXT_NOW` would refuse it). Once the connection could
not take a text at once (its transport stopped being writable, a close was sent or
received, the connection was lost, the guard closed it), the server tells the stop
(``link_stopped()``) and the link is over: its writer must not be used again. One link per
connection: opening another replaces the first, whose stop is no longer told. A writer that
stops using a link just drops it. A broadcast room's fan-out writes each message once per
subscriber through it (`broadcast.Lane`). `LeanProtocol` offers it; the guard offers its
own, which counts what is written and stops the link when it closes the connection. Nothing
is made per link but its tuple: the writer is the transport itself, the stop an object the
writer has already (a subscription), so a room of many holds little for it."""


RECEIVE_DIRECT: Final = "receive_direct"
"""The ASGI scope extension of a server that can hand the app each text message the moment
it is read, with no coroutine: a function of a `TakeText` that returns an awaitable, or
None when the server cannot now (a message is waiting to be received: receive it first).
From then on each text message is given to ``take`` instead of being queued for
``receive``, for as long as ``take`` returns True (it has dealt with the text: answered it,
say). A text ``take`` refuses (False, nothing done) is queued, and so is every other message
(binary, a disconnect) as usual; the first thing queued ends the hand-over and completes the
awaitable, after which ``receive`` returns it. The app stops the hand-over by calling
``receive`` or by cancelling the awaitable; a hand-over while a message is queued never
starts, so ``take`` and ``receive`` see the messages in the order they came. ``take`` runs
in the server's read callback: it must not raise, and must only do what cannot wait (send
with `SEND_TEXT_NOW`). `LeanProtocol` offers it; the guard offers its own, which applies its
per-message checks and counts first and has a message that would fail them queued for its
``receive`` (which closes as it does today). A keepalive's answer takes this way
(`receive_json`): no task wakes for it."""

TakeText: TypeAlias = Callable[[str], bool]
"""Deals with a text message at once: True if it did, False (nothing done) to have it
queued for ``receive`` (`RECEIVE_DIRECT`)."""

Listen: TypeAlias = Callable[[TakeText], Awaitable[None] | None]
"""A server's `RECEIVE_DIRECT`: hands text messages to ``take`` until something is queued
(the awaitable it returns completes then), or None when it cannot now."""


class SendCounter(Protocol):
    """What counts the texts a connection sends (the guard's `Tally` of its endpoint)."""

    def count_many(self, text: str, times: int) -> None: ...


class Writer(Protocol):
    """What puts bytes on a connection at once (an asyncio transport)."""

    def write(self, data: Any, /) -> object: ...


class LinkStop(Protocol):
    """What is told that a `DirectLink` stopped (a subscription, the guard)."""

    def link_stopped(self) -> None: ...


class DirectLink(NamedTuple):
    """What a server's `WRITE_DIRECT` gives its writer, until its stop is told."""

    encode: Callable[[str], Any]
    """Turns a text into what ``writer.write`` takes (a frame): one function for every
    connection of the server, so a text sent to many is encoded once."""
    writer: Writer
    """Puts an encoded text on the connection's transport at once (``writer.write``)."""
    counter: SendCounter | None
    """Counts the texts written (shared by many connections: the guard's tally), or None."""


OpenDirect: TypeAlias = Callable[[LinkStop], DirectLink | None]
"""A server's `WRITE_DIRECT`: opens a `DirectLink`, given who to tell when it stops."""


def now_ns() -> int:
    """Wall-clock time in nanoseconds since the epoch, as sent in ``server_ns`` fields."""
    return time.time_ns()


def server_sender(websocket: SessionSocket) -> SendNow | None:
    """The `SEND_TEXT_NOW` that ``websocket``'s server offers (through the guard), or None
    (send with ``send_text``). Send with it only while the face's ``application_state`` is
    the accepted one (``CONNECTED``): what a face does with a text in that state is to pass
    it on (Starlette's ``WebSocket`` and the raw-ASGI one both); in any other state, send
    through the face, which raises what it should."""
    extensions = websocket.scope.get("extensions") or {}
    send_now: SendNow | None = extensions.get(SEND_TEXT_NOW)
    return send_now


def server_direct(websocket: SessionSocket) -> OpenDirect | None:
    """The `WRITE_DIRECT` that ``websocket``'s server offers (through the guard), or None.
    Open a link only while the face's ``application_state`` is the accepted one (see
    `server_sender`); a close the app sends goes through the server, which stops it."""
    extensions = websocket.scope.get("extensions") or {}
    open_direct: OpenDirect | None = extensions.get(WRITE_DIRECT)
    return open_direct


def server_listener(websocket: SessionSocket) -> Listen | None:
    """The `RECEIVE_DIRECT` that ``websocket``'s server offers (through the guard), or None.
    Listen only while the face's ``application_state`` is the accepted one: what a face does
    with a text message in that state is to pass it on (see `server_sender`)."""
    extensions = websocket.scope.get("extensions") or {}
    listen: Listen | None = extensions.get(RECEIVE_DIRECT)
    return listen


async def run_websocket(websocket: WS, *task_factories: TaskFactory[WS]) -> None:
    """Run one websocket session with composable async tasks.

    Accepts the connection, starts one task per factory (a single factory runs in the
    caller's own task) and waits. The session ends when the client disconnects, when every
    task has returned, or when a task raises. On the way out every task still running is
    cancelled and awaited (none outlives this call)
    and the socket, if still open, is closed: 1000 normally, 1011 after an unexpected
    error, which is logged once with its traceback and the endpoint path. A disconnect
    never escapes from here; cancellation of this call does, after the cleanup.

    Keep one task reading (`receive_json`, `drain_text`, `keepalive_loop`): a session
    that only sends notices a departed client only when a send fails.
    """
    try:
        await websocket.accept()
    except OSError:  # the client left during the handshake
        logger.debug("client left %s before the handshake completed", _path(websocket))
        return
    if len(task_factories) == 1:  # nothing to run beside it: run it here, no child task
        factory = task_factories[0]
        if factory is keepalive_loop:  # what it runs once accepted, without its frame
            factory = _answer_keepalives
        close_code = NORMAL_CLOSURE
        try:
            await factory(websocket)
        except asyncio.CancelledError:
            close_code = GOING_AWAY
            raise
        except Exception as error:
            close_code = _close_code_after(websocket, error)
        finally:
            await _close_if_open(websocket, close_code)
        return
    tasks = [
        asyncio.create_task(_run_task(factory, websocket), name=f"{_path(websocket)} {factory!r}")
        for factory in task_factories
    ]
    close_code = NORMAL_CLOSURE
    try:
        close_code = await _until_session_ends(websocket, tasks)
    except asyncio.CancelledError:
        close_code = GOING_AWAY
        raise
    finally:
        await cancel_and_wait(tasks)
        await _close_if_open(websocket, close_code)


async def _run_task(factory: TaskFactory[WS], websocket: WS) -> None:
    await factory(websocket)


async def _until_session_ends(websocket: SessionSocket, tasks: list[asyncio.Task[None]]) -> int:
    """Wait until the session is over; return the close code it deserves."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                return _close_code_after(websocket, error)
        if _is_closed(websocket):
            return NORMAL_CLOSURE
    return NORMAL_CLOSURE


def _close_code_after(websocket: SessionSocket, error: BaseException) -> int:
    """The close code a session deserves after a task raised ``error`` (logged if a bug)."""
    if _is_closed(websocket):
        # How a departed peer reaches a task that was sending or reading.
        logger.debug("session on %s ended by %r after close", _path(websocket), error)
        return NORMAL_CLOSURE
    logger.error("websocket session on %s failed", _path(websocket), exc_info=error)
    return INTERNAL_ERROR


async def cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel every task and wait for all of them, even if we are cancelled meanwhile.

    A cancellation that arrives meanwhile is re-raised once the tasks are done, as the
    same exception, so that whoever cancelled us (an AnyIO cancel scope, say) knows it.
    """
    for task in tasks:
        task.cancel()
    cancellation: asyncio.CancelledError | None = None
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError as error:
            cancellation = error
    for task in tasks:  # retrieve every outcome, so asyncio reports none as lost
        if not task.cancelled():
            task.exception()
    if cancellation is not None:
        raise cancellation


async def _close_if_open(websocket: SessionSocket, code: int) -> None:
    if _is_closed(websocket):
        return
    try:
        await websocket.close(code)
    except Exception:
        if not _is_closed(websocket):  # a close that failed for another reason than the peer
            logger.exception("closing the websocket on %s failed", _path(websocket))


def every(seconds: float, tick: TaskFactory[WS]) -> TaskFactory[WS]:
    """Return a task factory that runs tick periodically every seconds.

    The first tick runs at once, later ones on a fixed schedule counted from the first
    (no drift). A tick that overruns skips the beats it missed rather than bursting to
    catch up. ``seconds`` must be a positive, finite number (`ValueError` otherwise).
    """
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"every() needs a positive, finite number of seconds, got {seconds!r}")

    async def ticking(websocket: WS) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        beat = 0
        while True:
            await tick(websocket)
            beat = next_beat(beat, loop.time() - start, seconds)
            await asyncio.sleep(start + beat * seconds - loop.time())

    return ticking


def next_beat(beat: int, elapsed: float, seconds: float) -> int:
    """The beat to run after ``beat``, ``elapsed`` seconds after beat 0: the first not yet due.

    Never ``beat`` again (a timer that fires a hair early must not tick twice), and never
    a beat whose time has passed (missed beats are skipped).
    """
    return max(beat + 1, math.floor(elapsed / seconds) + 1)


async def drain_text(websocket: SessionSocket) -> None:
    """Consume and discard incoming text frames until disconnect.

    Binary frames are discarded too. Returns quietly when the client disconnects.
    """
    while _payload(await websocket.receive()) is not None:
        pass


def receive_json(
    handle: JsonHandler[WS], *, presence: JsonHandler[WS] | None = None
) -> TaskFactory[WS]:
    """Return a task factory that reads JSON objects and forwards them to handle.

    Only JSON objects reach ``handle``. Keepalives (``{"type": "keepalive", ...}``) are
    answered here with a ``keepalive_ack``, so every endpoint built on this speaks the
    same client protocol. ``{"type": "presence"}`` goes to ``presence`` (broadcast
    endpoints); without one it gets an error saying presence is for broadcast endpoints.
    Anything else (invalid JSON, a JSON value that is not an object, a binary frame) gets
    ``{"type": "error", "reason": ...}`` and reading goes on. The task returns when the
    client disconnects.
    """

    async def receiving(websocket: WS) -> None:
        # The hot loop of every endpoint: no coroutine in it but the socket's own, and for
        # a keepalive's answer none at all where the server sends it at once (see
        # `server_sender`: only while the face is in the state it was accepted in); where
        # it hands texts over as they are read too (`RECEIVE_DIRECT`), a keepalive wakes no
        # task. The socket's methods are called where they are looked up (no bound method
        # made, none held while the connection idles; ``send_now`` is the scope's own).
        connected = websocket.application_state
        send_now = server_sender(websocket) if connected.name == "CONNECTED" else None
        listen = server_listener(websocket) if send_now is not None else None
        keepalives = None
        if listen is not None and send_now is not None:
            keepalives = _Keepalives(websocket, send_now, connected)
        while True:
            if (
                listen is not None
                and keepalives is not None
                and websocket.application_state is connected
            ):
                # Keepalives are answered as they are read; anything else wakes this task.
                arrival = listen(keepalives)
                if arrival is not None:
                    await arrival
            if (frame := _payload(await websocket.receive())) is None:
                break
            message = _json_object(frame)
            if isinstance(message, str):
                await websocket.send_text(dumps({"type": "error", "reason": message}))
            elif (kind := message.get("type")) == "keepalive":
                ack = dumps_parsed(keepalive_ack(message))
                if (
                    send_now is None
                    or websocket.application_state is not connected
                    or not send_now(ack)
                ):
                    await websocket.send_text(ack)
            elif kind == "presence":
                if presence is None:
                    await websocket.send_text(dumps({"type": "error", "reason": NO_PRESENCE}))
                else:
                    await presence(websocket, message)
            else:
                await handle(websocket, message)
            del frame, message  # not held while the connection idles

    return receiving


class _Keepalives:
    """`receive_json`'s `TakeText`: answers a keepalive the moment it is read, where the
    answer can be sent at once; refuses anything else, which the session loop then reads."""

    __slots__ = ("connected", "send_now", "websocket")  # one per connection, kept idle

    def __init__(self, websocket: SessionSocket, send_now: SendNow, connected: Enum) -> None:
        self.websocket = websocket
        self.send_now = send_now
        self.connected = connected

    def __call__(self, text: str) -> bool:
        if "keepalive" not in text:  # a quick no to the messages the task reads anyway
            return False
        message = _flat_object(text)
        return (
            message is not None
            and message.get("type") == "keepalive"
            and self.websocket.application_state is self.connected
            and self.send_now(dumps_parsed(keepalive_ack(message)))
        )


async def keepalive_loop(websocket: SessionSocket) -> None:
    """Default keepalive protocol: keepalive -> keepalive_ack.

    Other JSON objects get an error reply. Works as a task inside `run_websocket` and, on
    a socket not yet accepted, as a whole handler (it then runs the session itself).
    """
    if websocket.application_state.name == "CONNECTING":
        await run_websocket(websocket, keepalive_loop)
        return
    await _answer_keepalives(websocket)


NO_PRESENCE: Final = "presence is kept on broadcast endpoints only; this endpoint has none"


async def _answer_only_keepalives(websocket: SessionSocket, message: dict[str, Any]) -> None:
    reason = "this endpoint answers only keepalive messages"
    await send_json(websocket, {"type": "error", "reason": reason})


_answer_keepalives = receive_json(_answer_only_keepalives)  # one for all: no closure each


def keepalive_ack(message: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to a keepalive: its fields, retyped, with the server's clock added."""
    return {**message, "type": "keepalive_ack", "server_ns": time.time_ns()}  # now_ns()


async def send_json(websocket: SessionSocket, value: Any) -> None:
    """Send ``value`` as compact JSON text (the bytes Starlette's ``send_json`` sends)."""
    await websocket.send_text(dumps(value))


def _payload(message: Mapping[str, Any]) -> str | bytes | None:
    """A received message's payload, or None when it says the client has disconnected."""
    if message["type"] == "websocket.disconnect":
        return None
    text: str | None = message.get("text")
    if text is not None:
        return text
    data: bytes | None = message.get("bytes")
    if data is not None:
        return data
    raise RuntimeError(f"ASGI message {message['type']!r} carries neither text nor bytes.")


def _json_object(frame: str | bytes) -> dict[str, Any] | str:
    """The JSON object in ``frame``, or the reason it holds none."""
    if isinstance(frame, bytes):
        return "binary frames are not accepted: send JSON objects as text"
    flat = _flat_object(frame)
    if flat is not None:
        return flat
    try:
        value = loads(frame)
    except json.JSONDecodeError as error:
        return f"invalid JSON: {error.msg} at position {error.pos}"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    except ValueError as error:  # NaN/Infinity, or an integer too long to convert
        return f"invalid JSON: {error}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {_json_type(value)}"
    return value


def _flat_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``, read by orjson (about three times quicker), where that
    gives what `loads` gives: an object whose values are strings, integers of 64 bits,
    booleans or None (a keepalive). None for anything else, which `loads` reads: orjson
    reads an integer out of 64 bits as a float, refuses what json reads in places, and its
    errors are worded otherwise."""
    if orjson is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not dict:
        return None
    for item in value.values():
        if type(item) not in _ORJSON_WRITES_AS_JSON:
            return None
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# JSON on the hot path. json.loads and json.dumps add Python-level work around their C
# parts (a decoder or encoder built per call, regular expressions for white space, a list
# of chunks): about a fifth of the server's instructions per keepalive round trip. These
# call the C parts directly, with the same options, so the results are json's own.
_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# typeshed types the scanner's argument as a scanner (a TODO there); like json.decoder, we
# give it the decoder whose options it copies.
_SCAN = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
try:
    from _json import make_encoder

    # No markers dict (check_circular=False): one shared dict would keep the marks an
    # error left behind and be shared between threads; a new one per call costs a third.
    # A circular value raises RecursionError instead of ValueError.
    _C_ENCODE: make_encoder | None = make_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
except ImportError:  # a Python without json's C accelerator
    _C_ENCODE = None


try:
    import orjson
except ImportError:  # a project without orjson: json writes every reply
    orjson = None  # type: ignore[assignment]

_ORJSON_WRITES_AS_JSON: Final = frozenset({str, int, bool, type(None)})
"""The types whose values orjson reads and writes as json does (an int: within 64 bits: past
them orjson reads a float and refuses to write it); not floats (``1e-05``: orjson writes
``0.00001``) nor containers (their items would need the same look)."""


def loads(text: str) -> Any:
    """``json.loads(text)``, rejecting NaN and Infinity, the way that is quickest for a message.

    A document without surrounding white space is read by the C scanner at once; anything
    else (white space, extra data, an error) takes json's full path, errors included.
    """
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return _DECODER.decode(text)
    return value if end == len(text) else _DECODER.decode(text)


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``: ``json.dumps`` with separators ``(",", ":")``,
    ``ensure_ascii=False``, ``allow_nan=False`` and ``check_circular=False``."""
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def dumps_parsed(value: dict[str, Any]) -> str:
    """`dumps` of a JSON object made of what `loads` gives: the same text, by orjson (about
    five times quicker) where it writes what json writes: when each of the object's values
    is a string, an integer of 64 bits, a boolean or None (a keepalive and its answer)."""
    if orjson is not None:
        for item in value.values():
            if type(item) not in _ORJSON_WRITES_AS_JSON:
                return dumps(value)
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # an integer out of 64 bits
            pass
    return dumps(value)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _is_closed(websocket: SessionSocket) -> bool:
    """True once either side has closed: nothing more can be sent or received."""
    return "DISCONNECTED" in (websocket.client_state.name, websocket.application_state.name)


def _path(websocket: SessionSocket) -> str:
    return str(websocket.scope.get("path", "?"))
