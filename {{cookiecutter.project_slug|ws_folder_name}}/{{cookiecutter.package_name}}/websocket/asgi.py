"""A WebSocket over the raw ASGI (scope, receive, send) triple, for apps with no framework.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Handlers receive a `WebSocket` instead of the raw triple: typed accept,
close, send and receive methods, and ``path_params``, ``headers``, ``query_string``.

Both sides' states are tracked explicitly (the names are Starlette's, so the session
helpers in ``session.py`` serve this class and Starlette's alike); every misuse, such as
a receive before accept or a send after close, raises `RuntimeError` with one sentence
saying what was wrong. ``receive()`` and ``send()`` are the state-checked raw channel;
everything else is built on them.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from .asgi_types import Message, Receive, Scope, Send

__all__ = [
    "Message",
    "Receive",
    "Scope",
    "Send",
    "WebSocket",
    "WebSocketDisconnect",
    "WebSocketState",
]

ABNORMAL_CLOSURE = 1006


class WebSocketState(enum.Enum):
    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2
    RESPONSE = 3


class WebSocketDisconnect(Exception):
    """Raised when a WebSocket client disconnects.

    ``code`` carries the close code of the ASGI ``websocket.disconnect`` message (1000,
    normal closure, by default); 1006 means the connection was lost without a close frame.
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class WebSocket:
    """Wraps the raw ASGI (scope, receive, send) triple for WebSocket connections."""

    __slots__ = ("_receive", "_send", "application_state", "client_state", "scope")
    # One per open connection: no __dict__ (about 200 bytes each).

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket":
            raise ValueError(f"WebSocket needs a 'websocket' scope, got {scope.get('type')!r}.")
        self.scope = scope
        self._receive = receive
        self._send = send
        self.client_state = WebSocketState.CONNECTING
        self.application_state = WebSocketState.CONNECTING

    @property
    def path_params(self) -> dict[str, Any]:
        """The values of the route's ``{name}`` parameters (set by the router)."""
        params: dict[str, Any] = self.scope.get("path_params", {})
        return params

    @property
    def headers(self) -> dict[str, str]:
        """Parse ASGI headers into a case-preserving dict (first value wins).

        Names and values are decoded as latin-1, as HTTP allows any byte in them. ASGI
        servers send names in lower case: look them up that way (``headers["origin"]``).
        """
        headers: dict[str, str] = {}
        for name, value in self.scope.get("headers", []):
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        return headers

    @property
    def query_string(self) -> str:
        """The raw query string (without '?'), decoded as latin-1; empty when there is none."""
        query: bytes = self.scope.get("query_string", b"")
        return query.decode("latin-1")

    async def accept(self, subprotocol: str | None = None) -> None:
        """Complete the handshake, optionally choosing one of the client's subprotocols."""
        if self.application_state is not WebSocketState.CONNECTING:
            done = "accepted" if self.application_state is WebSocketState.CONNECTED else "closed"
            raise RuntimeError(f"accept() was called on a websocket that is already {done}.")
        offered = self.scope.get("subprotocols", [])
        if subprotocol is not None and subprotocol not in offered:
            raise ValueError(
                f"Subprotocol {subprotocol!r} was not offered by the client ({offered})."
            )
        if self.client_state is WebSocketState.CONNECTING:
            await self.receive()  # the websocket.connect message
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": []})

    async def close(self, code: int = 1000) -> None:
        """Close the connection (before accept, this refuses the handshake: HTTP 403)."""
        await self.send({"type": "websocket.close", "code": code, "reason": ""})

    async def send_json(self, data: Any) -> None:
        """Send ``data`` as compact JSON in a text frame."""
        await self.send_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    async def send_bytes(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"send_bytes() takes bytes, got {type(data).__name__}; use send_text()."
            )
        await self.send({"type": "websocket.send", "bytes": bytes(data)})

    async def send_text(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes str, got {type(text).__name__}; use send_bytes().")
        await self.send({"type": "websocket.send", "text": text})

    async def _receive_data(self) -> dict[str, Any]:
        """Receive a data message, raising WebSocketDisconnect on disconnect."""
        if self.application_state is WebSocketState.CONNECTING:
            raise RuntimeError(
                "A receive method was called before accept(); accept the websocket first."
            )
        if self.application_state is not WebSocketState.CONNECTED:
            raise RuntimeError("A receive method was called after the websocket was closed.")
        message = await self.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason") or "")
        return dict(message)

    async def receive_json(self) -> Any:
        """The next text frame, parsed as JSON (`json.JSONDecodeError` if it is not JSON)."""
        return json.loads(await self.receive_text())

    async def receive_bytes(self) -> bytes:
        message = await self._receive_data()
        if message.get("bytes") is None:
            raise TypeError(
                "receive_bytes() got a text frame; use receive_text() or receive_raw()."
            )
        data: bytes = message["bytes"]
        return data

    async def receive_text(self) -> str:
        message = await self._receive_data()
        if message.get("text") is None:
            raise TypeError(
                "receive_text() got a binary frame; use receive_bytes() or receive_raw()."
            )
        text: str = message["text"]
        return text

    async def receive_raw(self) -> dict[str, Any]:
        """Return the raw ASGI message dict from the WebSocket connection.

        The dict has ``type`` (``websocket.receive``) and either ``text`` or ``bytes``: use
        it to tell binary from text frames without committing to one receive method. A
        disconnect raises `WebSocketDisconnect`.
        """
        return await self._receive_data()

    async def receive(self) -> Message:
        """The next ASGI message from the client, checked against the connection's state.

        Returns ``websocket.disconnect`` messages too (then the client is disconnected);
        receiving again after that is an error.
        """
        if self.client_state is WebSocketState.DISCONNECTED:
            raise RuntimeError("receive() was called after the client disconnected.")
        message = await self._receive()
        kind = message.get("type")
        if self.client_state is WebSocketState.CONNECTING:
            if kind != "websocket.connect":
                raise RuntimeError(f"Expected the ASGI message 'websocket.connect', got {kind!r}.")
            self.client_state = WebSocketState.CONNECTED
        elif kind == "websocket.disconnect":
            self.client_state = WebSocketState.DISCONNECTED
        elif kind == "websocket.receive":
            if (message.get("text") is None) == (message.get("bytes") is None):
                raise RuntimeError(
                    "An ASGI 'websocket.receive' message must hold exactly one of text and bytes."
                )
        else:
            raise RuntimeError(
                f"Expected 'websocket.receive' or 'websocket.disconnect', got {kind!r}."
            )
        return message

    async def send(self, message: Message) -> None:
        """Send one ASGI message, checked against the connection's state.

        A send that fails because the peer is gone (the server raises an `OSError`) marks
        the connection closed and raises ``WebSocketDisconnect(1006)``.
        """
        kind = message.get("type")
        state = self.application_state
        if state is WebSocketState.CONNECTING:
            if kind not in ("websocket.accept", "websocket.close"):
                raise RuntimeError(
                    f"{kind!r} was sent before accept(); accept the websocket first."
                )
        elif state is WebSocketState.CONNECTED:
            if kind not in ("websocket.send", "websocket.close"):
                raise RuntimeError(f"{kind!r} was sent on a websocket that is already accepted.")
        else:
            raise RuntimeError(f"{kind!r} was sent after the websocket was closed.")
        if kind == "websocket.close":
            self.application_state = WebSocketState.DISCONNECTED
        try:
            await self._send(message)
        except OSError as error:
            self.application_state = WebSocketState.DISCONNECTED
            if state is WebSocketState.CONNECTING:
                raise  # nothing was established: the handshake itself failed
            raise WebSocketDisconnect(ABNORMAL_CLOSURE) from error
        if kind == "websocket.accept":
            self.application_state = WebSocketState.CONNECTED
