"""Test helpers: an ASGI app on a real uvicorn server, and a scripted websocket client.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Standard library only. `RedisServer` runs a real ``redis-server`` for the
broadcast hub's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from .asgi_types import Message
from .session import RECEIVE_DIRECT, SEND_TEXT_NOW, WRITE_DIRECT, DirectLink, LinkStop, TakeText

_STARTED = re.compile(r"running on http://127\.0\.0\.1:(\d+)", re.IGNORECASE)

SERVERS = {
    "uvicorn": [
        "-m",
        "uvicorn",
        "{app}",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--ws={ws}",
        "--ws-per-message-deflate=false",
    ],
    "hypercorn": ["-m", "hypercorn", "{app}", "--bind", "127.0.0.1:{port}"],
    "runner": ["-m", "{package}", "--host", "127.0.0.1", "--port", "{port}"],
}
"""How to start each server on 127.0.0.1 and a port (0: the OS picks one; it logs the port);
"runner" is the project's own ``python -m <package>``. uvicorn's ``--ws`` is `LEAN_PROTOCOL`,
as the runner serves, where the app's package has it (``auto`` where it does not), and
permessage-deflate is off, as the runner's default (a client that offers it, as browsers
and ``websockets`` do, gets frames sent as they are); a later ``--ws`` or
``--ws-per-message-deflate`` in ``args`` or ``LIVE_SERVER_ARGS`` replaces it."""

LEAN_PROTOCOL = "{package}.websocket.uvicorn_protocol:LeanProtocol"
"""The uvicorn protocol of the runner (``uvicorn_protocol.py``), for the app's ``package``."""


def project_root() -> Path:
    """The folder that holds this project's top-level package (where imports start)."""
    return Path(__file__).resolve().parents[__name__.count(".")]


class LiveServer:
    """An ASGI server process serving ``app`` (an import path like ``pkg.app:app``) on 127.0.0.1.

    Use it as a context manager. The OS picks a free port, read back from the server's log;
    ``env`` is added to this process's environment, ``args`` to the server's command line.
    ``server`` names one of `SERVERS`. Left out, it is uvicorn, unless the environment
    variables ``LIVE_SERVER`` and ``LIVE_SERVER_ARGS`` (split as a shell would) choose the
    server and its options for a whole test run: ``LIVE_SERVER_ARGS="--ws wsproto" pytest``.
    """

    def __init__(
        self,
        app: str,
        *,
        server: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        cwd: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        extra = list(args)
        if server is None:
            server = os.environ.get("LIVE_SERVER") or "uvicorn"
            extra[:0] = shlex.split(os.environ.get("LIVE_SERVER_ARGS", ""))
        if server not in SERVERS:
            raise ValueError(f"Unknown server {server!r}; known: {', '.join(SERVERS)}.")
        self._app, self._server, self._extra = app, server, extra
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd or project_root()
        self.command = self._command(0)
        self._start_timeout = start_timeout
        self._lines: list[str] = []
        self._started = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.port = 0

    def _command(self, port: int) -> list[str]:
        package = self._app.partition(".")[0].partition(":")[0]
        has_lean = (self._cwd / package / "websocket" / "uvicorn_protocol.py").is_file()
        ws = LEAN_PROTOCOL.format(package=package) if has_lean else "auto"
        parts = (
            part.format(app=self._app, package=package, port=port, ws=ws)
            for part in SERVERS[self._server]
        )
        return [sys.executable, *parts, *self._extra]

    def restart(self) -> None:
        """Stop the server (as `stop` does) and start it again on the same port."""
        port = self.port
        self.stop()
        self._lines.append(f"--- restarted on port {port} ---\n")
        self._started.clear()
        self.command = self._command(port)
        self.__enter__()

    def __enter__(self) -> LiveServer:
        self._process = subprocess.Popen(
            self.command,
            cwd=self._cwd,
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: `kill` and `stop` reach workers
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._started.wait(self._start_timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"The server did not start: {self.command}\n{self.log}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _read_log(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.append(line)
            started = _STARTED.search(line)
            if started:
                self.port = int(started.group(1))
                self._started.set()
        self._started.set()  # the process ended: stop waiting

    @property
    def pid(self) -> int:
        """The server process's id (to read its /proc figures, or signal it)."""
        assert self._process is not None, "the server is not started"
        return self._process.pid

    @property
    def log(self) -> str:
        """Everything the server has printed so far."""
        return "".join(self._lines)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def wait(self, timeout: float) -> int:
        """Wait for the server to exit by itself (after a signal, say); its exit status."""
        assert self._process is not None, "the server is not started"
        return self._process.wait(timeout)

    def kill(self) -> int:
        """SIGKILL the server and every process it started, as a crash of its machine would:
        nothing is cleaned up. (A server's workers outlive a SIGKILL of their parent alone:
        hypercorn's and gunicorn's do.) Its exit status."""
        assert self._process is not None, "the server is not started"
        self._kill_group()
        return self._process.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the server as a process manager would (SIGTERM, to the server: it stops its
        workers); return its exit code. Whatever of its process group is left, such as
        workers of a server that was killed alone, is then killed."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._kill_group()
        if self._reader is not None:
            self._reader.join(timeout)  # it ends at the end of the log
        if process.stdout is not None and not (self._reader and self._reader.is_alive()):
            process.stdout.close()  # (closing it under the reader would wait for the reader)
        return process.returncode

    def _kill_group(self) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left in it
            os.killpg(self._process.pid, signal.SIGKILL)


class ScriptedClient:
    """The client side of one ASGI websocket connection, scripted by a test.

    Give `scope`, `receive` and `send` to a WebSocket (Starlette's or the raw-ASGI face's),
    queue what the client does with `send_text`, `send_bytes` and `disconnect`, and read
    what the app sent with `next_sent`. Set `send_error` to make the app's sends fail the
    way a server's do once the peer is gone; `stop_reading` makes them wait forever, as a
    server's do for a client that reads nothing.

    With ``sends_now`` (default: the class's `sends_now_by_default`), it offers the app the
    scope extension `session.SEND_TEXT_NOW`, as `LeanProtocol` does: `send_text_now` takes a
    text at once unless the app's sends would wait or fail. With ``writes_direct`` (default:
    `writes_direct_by_default`), `session.WRITE_DIRECT` too: a link whose writes it takes
    as sent texts (its encoding leaves a text as it is), stopped when its sends would wait
    or fail, when the app closes or the client disconnects. With ``hands_over`` (default:
    `hands_over_by_default`), `session.RECEIVE_DIRECT`: each text the client sends while the
    app listens and nothing is queued is handed to the app's take, and queued only if the
    take refuses it.
    """

    sends_now_by_default: ClassVar[bool] = False
    """Whether clients made without ``sends_now`` offer `SEND_TEXT_NOW` (a test fixture
    sets it to run the same tests on each way a broadcast delivers)."""
    writes_direct_by_default: ClassVar[bool] = False
    """Whether clients made without ``writes_direct`` offer `WRITE_DIRECT`."""
    hands_over_by_default: ClassVar[bool] = False
    """Whether clients made without ``hands_over`` offer `RECEIVE_DIRECT`."""

    def __init__(
        self,
        path: str = "/ws",
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        reply_timeout: float = 2.0,
        sends_now: bool | None = None,
        writes_direct: bool | None = None,
        hands_over: bool | None = None,
    ) -> None:
        self.scope: Message = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": list(headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "subprotocols": [],
            "state": {},
        }
        extensions: dict[str, object] = {}
        if self.sends_now_by_default if sends_now is None else sends_now:
            extensions[SEND_TEXT_NOW] = self.send_text_now
        if self.writes_direct_by_default if writes_direct is None else writes_direct:
            extensions[WRITE_DIRECT] = self.open_direct
        if self.hands_over_by_default if hands_over is None else hands_over:
            extensions[RECEIVE_DIRECT] = self.listen
        if extensions:
            self.scope["extensions"] = extensions
        self._send_error: BaseException | None = None
        self.closed = False
        """Whether the app has sent its close."""
        self.sent_at_once = 0
        """How many texts `send_text_now` took."""
        self.written_direct = 0
        """How many texts were written through a `WRITE_DIRECT` link."""
        self._direct_stop: LinkStop | None = None
        self.handed_over = 0
        """How many texts the app's `RECEIVE_DIRECT` take dealt with."""
        self._take: TakeText | None = None
        self._listening: asyncio.Future[None] | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self.reply_timeout = reply_timeout
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self.send_message({"type": "websocket.connect"})

    async def receive(self) -> Message:
        self._take = None  # the app reads: texts are no longer handed over
        return await self._to_app.get()

    def listen(self, take: TakeText) -> asyncio.Future[None] | None:
        """`RECEIVE_DIRECT`: hand texts to ``take`` until one is queued (None while a
        message waits to be received)."""
        if not self._to_app.empty():
            return None
        self._take = take
        self._listening = asyncio.get_running_loop().create_future()
        return self._listening

    async def send(self, message: Message) -> None:
        await self._reading.wait()
        if self.send_error is not None:
            raise self.send_error
        self._from_app.put_nowait(message)
        if message["type"] == "websocket.close":  # as servers do once the connection closes
            self.closed = True
            self._stop_direct()
            code, reason = message.get("code", 1000), message.get("reason", "")
            self.send_message({"type": "websocket.disconnect", "code": code, "reason": reason})

    @property
    def send_error(self) -> BaseException | None:
        """What the app's sends raise from now on (None: they go through)."""
        return self._send_error

    @send_error.setter
    def send_error(self, error: BaseException | None) -> None:
        self._send_error = error
        self._stop_direct()

    def send_text_now(self, text: str) -> bool:
        """Take the app's text at once (`SEND_TEXT_NOW`): False, having done nothing, while
        its sends would wait (`stop_reading`) or fail (``send_error``), or once it closed."""
        if not self._takes_now():
            return False
        self._from_app.put_nowait({"type": "websocket.send", "text": text})
        self.sent_at_once += 1
        return True

    def open_direct(self, stop: LinkStop) -> DirectLink | None:
        """`WRITE_DIRECT`: a link while the app's sends would go through at once."""
        if not self._takes_now():
            return None
        self._direct_stop = stop
        return DirectLink(_as_is, _LinkWriter(self), None)

    def _takes_now(self) -> bool:
        return self._reading.is_set() and self._send_error is None and not self.closed

    def _write_direct(self, text: str) -> None:
        self._from_app.put_nowait({"type": "websocket.send", "text": text})
        self.written_direct += 1

    def _stop_direct(self) -> None:
        stop, self._direct_stop = self._direct_stop, None
        if stop is not None:
            stop.link_stopped()

    def stop_reading(self) -> None:
        """From now on the app's sends wait, as they do when a client stops reading."""
        self._reading.clear()
        self._stop_direct()

    def resume_reading(self) -> None:
        """The app's sends go through again, those that waited first."""
        self._reading.set()

    def send_message(self, message: Message) -> None:
        """Queue any ASGI message for the app, as a server would deliver it (a text is
        handed to the app's take instead, while it listens and nothing is queued)."""
        take, self._take = self._take, None
        listening = self._listening
        if take is not None and listening is not None and not listening.done():
            text = message.get("text") if message["type"] == "websocket.receive" else None
            if type(text) is str and self._to_app.empty() and take(text):
                self._take = take
                self.handed_over += 1
                return
        self._to_app.put_nowait(message)
        if listening is not None and not listening.done():
            listening.set_result(None)

    def send_text(self, text: str) -> None:
        self.send_message({"type": "websocket.receive", "text": text})

    def send_bytes(self, data: bytes) -> None:
        self.send_message({"type": "websocket.receive", "bytes": data})

    def disconnect(self, code: int = 1000, reason: str = "") -> None:
        self._stop_direct()  # as a server's link stops when the client's close comes
        self.send_message({"type": "websocket.disconnect", "code": code, "reason": reason})

    async def next_sent(self) -> Message:
        """The next message the app sent, waiting up to ``reply_timeout`` seconds."""
        return await asyncio.wait_for(self._from_app.get(), self.reply_timeout)

    def sent_so_far(self) -> list[Message]:
        """Every message the app has sent and no `next_sent` has taken yet."""
        messages = []
        while not self._from_app.empty():
            messages.append(self._from_app.get_nowait())
        return messages


def _as_is(text: str) -> str:
    """A `ScriptedClient` link's encoding: none (one function for every client)."""
    return text


class _LinkWriter:
    """A `ScriptedClient` link's writer: each text it writes is one the app sent."""

    __slots__ = ("client",)

    def __init__(self, client: ScriptedClient) -> None:
        self.client = client

    def write(self, text: str) -> None:
        self.client._write_direct(text)


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1 and a free port, in a temporary folder.

    Use it as a context manager; `stop` and `start` again (a restart) keep the port, so
    clients can reconnect; `pause` and `resume` freeze and thaw it. A restart loses the
    data, unless ``keep_data`` (an append-only file written at every command).
    `unavailable` says why it cannot run here; a test run with ``REQUIRE_REDIS=1``
    (`required`) should fail rather than skip then.
    """

    def __init__(self, start_timeout: float = 10.0, *, keep_data: bool = False) -> None:
        self.port = 0
        self.keep_data = keep_data
        self._start_timeout = start_timeout
        self._folder = tempfile.TemporaryDirectory(prefix="redis-server-")
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def unavailable() -> str | None:
        """Why no redis-server can run here, or None when it can."""
        if shutil.which("redis-server") is None:
            return (
                "redis-server is not installed (apt-get install redis-server); "
                "REQUIRE_REDIS=1 makes this a failure instead of a skip"
            )
        return None

    @staticmethod
    def required() -> bool:
        """True when Redis tests must run (``REQUIRE_REDIS=1``), as in the template's CI."""
        return os.environ.get("REQUIRE_REDIS", "") == "1"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id (to pin it to a CPU or read its CPU time, say)."""
        assert self._process is not None, "the server is not started"
        return self._process.pid

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        self._folder.cleanup()

    def start(self) -> None:
        """Start the server (on its earlier port after a `stop`) and wait until it answers."""
        for _ in range(5):  # a free port can be taken before the server binds it
            port = self.port or _free_port()
            self._process = subprocess.Popen(
                [
                    "redis-server",
                    *("--bind", "127.0.0.1", "--port", str(port), "--dir", self._folder.name),
                    *("--save", "", "--loglevel", "warning"),
                    *(
                        ("--appendonly", "yes", "--appendfsync", "always")
                        if self.keep_data
                        else ("--appendonly", "no")
                    ),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_until_answering(port):
                self.port = port
                return
            self.stop()
            if self.port:
                break
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port or 'a free port'}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server as a process manager would (SIGTERM, SIGKILL after ``timeout``)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers, as when
        the network between a client and Redis fails silently. `resume` thaws it."""
        assert self._process is not None, "the server is not started"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None, "the server is not started"
        self._process.send_signal(signal.SIGCONT)

    def _wait_until_answering(self, port: int) -> bool:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline and self.running:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
