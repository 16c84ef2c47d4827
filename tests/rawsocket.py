"""A websocket client at the frame level, for fault tests: it sends what real clients won't.

Frames are written by hand (RFC 6455): any opcode, fragmentation, invalid UTF-8, oversized
payloads; the handshake can carry any header, and the socket's receive buffer can be made
small to play a client that reads slowly.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from dataclasses import dataclass

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 1, 2, 8, 9, 10, 0


class HandshakeRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


def upgrade_request(port: int, path: str, headers: dict[str, str]) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(response_head: bytes) -> int:
    return int(response_head.split(b" ", 2)[1])


def encode(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame: masked, as RFC 6455 requires of clients."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWebSocket:
    """A blocking websocket connection driven frame by frame."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    def connect(
        cls,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
        timeout: float = 5.0,
    ) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connect, so that the window stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        connection = cls(sock)
        sock.sendall(upgrade_request(port, path, headers or {}))
        head = connection._read_until(b"\r\n\r\n")
        if status_of(head) != 101:
            sock.close()
            raise HandshakeRefused(status_of(head))
        return connection

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection during the handshake")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        self.sock.sendall(encode(opcode, payload, fin))

    def receive(self) -> Frame | None:
        """The next frame from the server, or None when it closed the TCP connection."""
        head = self._read_exactly(2)
        if head is None:
            return None
        length = head[1] & 0x7F
        if length == 126:
            extended = self._read_exactly(2)
            length = struct.unpack("!H", extended)[0] if extended else 0
        elif length == 127:
            extended = self._read_exactly(8)
            length = struct.unpack("!Q", extended)[0] if extended else 0
        payload = self._read_exactly(length)
        if payload is None:
            return None
        return Frame(bool(head[0] & 0x80), head[0] & 0x0F, payload)

    def receive_until_close(self, limit: int = 1000) -> tuple[list[Frame], Frame | None]:
        """Frames until the server's close frame (returned apart) or the end of the TCP stream."""
        frames: list[Frame] = []
        for _ in range(limit):
            frame = self.receive()
            if frame is None or frame.opcode == CLOSE:
                return frames, frame
            frames.append(frame)
        raise AssertionError(f"no close after {limit} frames")

    def receive_until_quiet(
        self, quiet: float = 0.1, within: float = 0.5
    ) -> tuple[list[Frame], Frame | None, bool]:
        """Frames until ``quiet`` seconds pass with none, ``within`` seconds at most (a ticker
        never goes quiet): (frames, the close frame if any, whether the TCP stream ended)."""
        timeout = self.sock.gettimeout()
        self.sock.settimeout(quiet)
        deadline = time.monotonic() + within
        frames: list[Frame] = []
        try:
            while time.monotonic() < deadline and (frame := self.receive()) is not None:
                if frame.opcode == CLOSE:
                    return frames, frame, False
                frames.append(frame)
            return frames, None, frame is None
        except TimeoutError:
            return frames, None, False
        finally:
            self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()


async def open_and_leave(port: int, path: str, how: str) -> None:
    """Open a websocket and leave it: with a close frame, a TCP reset, or a half-close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(port, path, {}))
        head = await reader.readuntil(b"\r\n\r\n")
        assert status_of(head) == 101, head
        if how == "close frame":
            writer.write(encode(CLOSE, struct.pack("!H", 1000)))
            while await reader.read(65536) != b"":  # the server answers, then closes
                pass
        elif how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        else:  # half-close: no more data from us; the server sees the end of the stream
            writer.write_eof()
            while await reader.read(65536) != b"":
                pass
    finally:
        writer.close()
