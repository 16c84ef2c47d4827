"""The servers under test: the rendered template (each flavour) and the four baselines.

Every server runs as its own process on 127.0.0.1 and a port the OS picks, pinned to one
CPU, with its log in a file (uvicorn logs each connection at its default level, so the
log must not be a pipe that nobody reads). The broadcast workload has servers of its own:
the fastapi flavour rendered with a broadcast room for each backend, the Redis one beside
a redis-server started for the run (the vendored backend's `RedisServer`), each started
with the channel history on (the default ``HISTORY_SIZE``) and off (``HISTORY_SIZE=0``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from cookiecutter.main import cookiecutter
from websocket.testing import RedisServer as RedisServer  # the vendored backend's, re-exported

BENCH = Path(__file__).resolve().parent
TEMPLATE = BENCH.parent
BASELINES = BENCH / "baselines"

SERVER_KEYS = (
    "generated-fastapi",
    "generated-asgi",
    "docs-fastapi",
    "raw-asgi-echo",
    "raw-asgi-json",
    "websockets",
)
"""The keys of the servers that `server_specs` gives, in its order."""
BROADCAST_BACKENDS = ("memory", "redis")
"""The template's broadcast backends (its ``broadcast_backend`` answer), in run order."""
BROADCAST_ENDPOINTS = "/ws/keepalive, /ws/rooms/{room}:broadcast"
"""The ``endpoints`` answer of the broadcast workload's projects."""
BROADCAST_ROOM = "/ws/rooms/bench"
"""The one room (channel) that every subscriber of the broadcast workload joins."""
HISTORY_SIZE = 100
"""The history each channel keeps when history is on: the service's default ``HISTORY_SIZE``."""
BROADCAST_HISTORY = ("on", "off")
"""History on (``HISTORY_SIZE`` messages per channel) and off (``HISTORY_SIZE=0``): the
broadcast workload runs each backend both ways, side by side, to measure what history costs."""

_STARTED = re.compile(r"running on http://127\.0\.0\.1:(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server, and where its endpoints are."""

    key: str
    """A short name used in the results: ``generated-fastapi``, ``docs-fastapi``, ..."""
    label: str
    """What the server is, for people."""
    command: tuple[str, ...]
    """The command after the Python interpreter."""
    cwd: Path
    keepalive_path: str
    ticker_path: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    broadcast_path: str | None = None
    backend: str | None = None
    """The broadcast backend (``memory``, ``redis``) of a broadcast workload's server."""
    history_size: int | None = None
    """The ``HISTORY_SIZE`` of a broadcast workload's server (0: history off)."""
    transport: str = "ws"
    """How the load generator talks to it: ``ws`` (websockets), ``socketio`` (Socket.IO)."""


def uvicorn(app: str) -> tuple[str, ...]:
    """uvicorn with its defaults (``--ws auto``, which is websockets-sansio), on 127.0.0.1."""
    return ("-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "0")


LEAN_PROTOCOL = "ws_service.websocket.uvicorn_protocol:LeanProtocol"
"""The uvicorn protocol the generated runner serves with (``--ws``), where a project has it."""


def generated(project: Path) -> tuple[str, ...]:
    """The generated service in ``project`` on uvicorn as its runner serves it: with the
    backend's `LEAN_PROTOCOL` where the project has one (a project rendered from a commit
    before it, for ``--compare``, runs on uvicorn's default)."""
    command = uvicorn("ws_service.app:app")
    if (project / "ws_service" / "websocket" / "uvicorn_protocol.py").is_file():
        command += ("--ws", LEAN_PROTOCOL)
    return command


def render_projects(output: Path, template: Path = TEMPLATE) -> dict[str, Path]:
    """Render the default project once per flavour into ``output``; flavour -> project folder."""
    return {
        flavour: _render(output, flavour, {"framework": flavour}, template)
        for flavour in ("fastapi", "asgi")
    }


BEFORE = "-before"
"""The suffix of the key of a generated server rendered from an earlier commit (`--compare`)."""


def template_at(commit: str, output: Path) -> Path:
    """The template as it was at ``commit`` (git archive), unpacked into ``output``."""
    output.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(TEMPLATE), "archive", "--format=tar", commit],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(output)], input=archive.stdout, check=True)
    return output


def before_spec(spec: ServerSpec, project: Path, commit: str) -> ServerSpec:
    """The generated server ``spec`` again, on ``project`` rendered at ``commit``: the
    "before" of a change measured side by side with its "after" (the working tree)."""
    return replace(
        spec,
        key=spec.key + BEFORE,
        label=f"{spec.label}, at {commit} (before)",
        command=generated(project),
        cwd=project,
    )


def before_specs(
    specs: Sequence[ServerSpec], projects: Mapping[str, Path], commit: str
) -> list[ServerSpec]:
    """`before_spec` of each generated server of ``specs``, on ``projects`` by flavour."""
    return [
        before_spec(spec, projects[spec.key.removeprefix("generated-")], commit)
        for spec in specs
        if spec.key.startswith("generated-")
    ]


def render_broadcast_projects(
    output: Path, backends: Sequence[str], template: Path = TEMPLATE
) -> dict[str, Path]:
    """Render the default flavour (fastapi) with a broadcast room, once per backend in
    ``backends``, into ``output``; backend -> project folder."""
    return {
        backend: _render(
            output,
            f"broadcast-{backend}",
            {"endpoints": BROADCAST_ENDPOINTS, "broadcast_backend": backend},
            template,
        )
        for backend in backends
    }


def _render(output: Path, name: str, answers: Mapping[str, str], template: Path = TEMPLATE) -> Path:
    """Render the template with ``answers`` (the rest by default) into ``output/name``."""
    output.mkdir(parents=True, exist_ok=True)
    config = output / "cookiecutter-config.yaml"
    config.write_text(
        f'cookiecutters_dir: "{output / "cookiecutters"}"\nreplay_dir: "{output / "replay"}"\n'
    )
    folder = output / name
    folder.mkdir(parents=True, exist_ok=True)
    project = cookiecutter(
        str(template),
        no_input=True,
        output_dir=str(folder),
        config_file=str(config),
        extra_context=dict(answers),
    )
    return Path(project)


LOAD_TEST_LIMITS = {
    "MESSAGES_PER_SECOND": "1000000",
    "MESSAGE_BURST": "1000000",
    "MAX_CONNECTIONS": "100000",
    "IDLE_TIMEOUT_SECONDS": "3600",
}
"""The generated service's per-connection limits, set out of a load test's way.

Its defaults (100 messages/s per connection, 10,000 connections, 60 s idle) would close the
benchmark's connections; with these its checks still run on every message and connection,
they just never trigger. A service without these settings ignores the variables.
"""


def server_specs(projects: Mapping[str, Path], tick_seconds: float) -> list[ServerSpec]:
    """The servers of one run, in the order they are interleaved."""
    ticker_env = {**LOAD_TEST_LIMITS, "TICK_SECONDS": str(tick_seconds)}
    return [
        ServerSpec(
            "generated-fastapi",
            "generated service, fastapi flavour",
            generated(projects["fastapi"]),
            projects["fastapi"],
            "/ws/keepalive",
            "/ws/clock",
            ticker_env,
        ),
        ServerSpec(
            "generated-asgi",
            "generated service, asgi flavour",
            generated(projects["asgi"]),
            projects["asgi"],
            "/ws/keepalive",
            "/ws/clock",
            ticker_env,
        ),
        ServerSpec(
            "docs-fastapi",
            "(1) FastAPI as its docs teach",
            uvicorn("docs_fastapi:app"),
            BASELINES,
            "/ws/keepalive",
        ),
        ServerSpec(
            "raw-asgi-echo",
            "(2) raw-ASGI echo, no JSON",
            uvicorn("raw_asgi_echo:app"),
            BASELINES,
            "/ws/keepalive",
        ),
        ServerSpec(
            "raw-asgi-json",
            "(4) raw-ASGI keepalive, orjson, nothing else (the same-work ceiling)",
            uvicorn("raw_asgi_json:app"),
            BASELINES,
            "/ws/keepalive",
        ),
        ServerSpec(
            "websockets",
            "(3) websockets' own server",
            ("websockets_server.py",),
            BASELINES,
            "/ws/keepalive",
        ),
    ]


def broadcast_key(backend: str, history: bool = True) -> str:
    """The key of the broadcast workload's server on ``backend``, with history on or off."""
    return f"broadcast-{backend}" + ("" if history else "-nohistory")


def broadcast_label(backend: str, history: bool = True) -> str:
    """What the broadcast workload's server on ``backend`` is, for people."""
    where = "in memory (one process)" if backend == "memory" else "through Redis pub/sub"
    kept = f"history {HISTORY_SIZE}" if history else "history off"
    return f"generated service, fastapi flavour, broadcast {where}, {kept}"


def broadcast_spec(
    backend: str, project: Path, redis_url: str | None = None, history: bool = True
) -> ServerSpec:
    """The server of the broadcast workload on ``backend``: the generated service (fastapi
    flavour) with a broadcast room, on the Redis at ``redis_url`` for the Redis backend,
    keeping each channel's last `HISTORY_SIZE` messages (``history``) or none.

    Its broadcast queue keeps its default size (100 messages per connection). Presence is
    on (the default), its join and leave events off: with them, N subscribers joining one
    room would get N*(N-1)/2 events (bench/presence.py measures what they cost).
    """
    size = HISTORY_SIZE if history else 0
    env = dict(LOAD_TEST_LIMITS) | {"HISTORY_SIZE": str(size), "JOIN_LEAVE_EVENTS": "no"}
    if backend == "redis":
        assert redis_url is not None, "the Redis backend needs a Redis URL"
        env["REDIS_URL"] = redis_url
    return ServerSpec(
        broadcast_key(backend, history),
        broadcast_label(backend, history),
        generated(project),
        project,
        "/ws/keepalive",
        env=env,
        broadcast_path=BROADCAST_ROOM,
        backend=backend,
        history_size=size,
    )


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """``command`` run on CPU ``cpu`` alone (through taskset), or as it is for None."""
    return ["taskset", "-c", str(cpu), *command] if cpu is not None else list(command)


def pin(pid: int, cpu: int | None) -> None:
    """Move the running process ``pid`` to CPU ``cpu`` alone (nothing for None)."""
    if cpu is not None:
        subprocess.run(["taskset", "-p", "-c", str(cpu), str(pid)], check=True, capture_output=True)


def pinning_cpus() -> tuple[int | None, int | None, str]:
    """The CPUs for the server and the load generator, and a note saying how they are pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None:
        return None, None, "not pinned: taskset (util-linux) is not installed"
    if len(cpus) < 2:
        return None, None, f"not pinned: only CPU {cpus[0]} is available"
    return cpus[0], cpus[1], f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}"


class RunningServer:
    """One server process, started by entering the context and stopped (SIGTERM) on exit.

    ``wrapper`` goes before the Python interpreter on the command line (valgrind, say).
    """

    def __init__(
        self,
        spec: ServerSpec,
        cpu: int | None,
        log: Path,
        wrapper: Sequence[str] = (),
        start_timeout: float = 120,
    ):
        self.spec = spec
        self.cpu = cpu
        self.port = 0
        self.log = log
        self._wrapper = list(wrapper)
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server is not started"
        return self._process.pid

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for error messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> RunningServer:
        command = pinned([*self._wrapper, sys.executable, *self.spec.command], self.cpu)
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.spec.cwd,
                env={**os.environ, **self.spec.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.port = self._wait_for_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_port(self) -> int:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            started = _STARTED.search(self.log.read_text(errors="replace"))
            if started:
                return int(started.group(1))
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.spec.label} did not start (exit code {self._process.poll()}); "
            f"the end of its log:\n{self.log_tail()}"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, timeout: float = 30) -> None:
        """Stop the server as a process manager would (SIGTERM), SIGKILL after ``timeout``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


FANOUT_KEYS = (
    "fanout-fastapi",
    "fanout-asgi",
    "fanout-websockets",
    "fanout-socketio",
    "fanout-floor",
)
"""The servers of the fan-out workload (issue 30), in the order they are interleaved."""
GC_THRESHOLD = "100000"
"""The generated service's garbage-collector threshold (its ``GC_THRESHOLD`` default): the
fan-out workload gives it to every server, the peers included."""


def render_fanout_projects(output: Path, template: Path = TEMPLATE) -> dict[str, Path]:
    """Render each flavour with a broadcast room (the memory hub) into ``output``;
    flavour -> project folder."""
    return {
        flavour: _render(
            output,
            f"fanout-{flavour}",
            {"framework": flavour, "endpoints": BROADCAST_ENDPOINTS, "broadcast_backend": "memory"},
            template,
        )
        for flavour in ("fastapi", "asgi")
    }


def fanout_specs(projects: Mapping[str, Path]) -> list[ServerSpec]:
    """The fan-out workload's servers: the generated service in each flavour (memory hub,
    history on, its defaults but the load-test limits, join and leave events off as in the
    broadcast workload), two peers a team would pick instead: the ``websockets`` server
    with ``websockets.broadcast()`` and python-socketio on uvicorn, and the floor, not a
    peer: the same ``websockets`` server writing one frame, built once per message, to every
    connection's transport (``--floor``), which no server that checks anything goes below.
    Every one of them runs with the generated service's garbage-collector threshold."""
    env = {"GC_THRESHOLD": GC_THRESHOLD}
    generated_env = {**LOAD_TEST_LIMITS, **env, "JOIN_LEAVE_EVENTS": "no"}
    flavours = [
        ServerSpec(
            f"fanout-{flavour}",
            f"generated service, {flavour} flavour, broadcast in memory",
            generated(project),
            project,
            "/ws/keepalive",
            env=generated_env,
            broadcast_path=BROADCAST_ROOM,
            backend="memory",
            history_size=HISTORY_SIZE,
        )
        for flavour, project in projects.items()
    ]
    return [
        *flavours,
        ServerSpec(
            "fanout-websockets",
            "(3) websockets' own server, websockets.broadcast()",
            ("websockets_server.py",),
            BASELINES,
            "/ws/keepalive",
            env=env,
            broadcast_path=BROADCAST_ROOM,
        ),
        ServerSpec(
            "fanout-socketio",
            "(5) python-socketio on uvicorn, emit(..., room=...)",
            uvicorn("socketio_app:app"),
            BASELINES,
            "/ws/keepalive",
            env=env,
            broadcast_path=BROADCAST_ROOM,
            transport="socketio",
        ),
        ServerSpec(
            "fanout-floor",
            "(6) the floor: websockets' server, one frame written to every transport",
            ("websockets_server.py", "--floor"),
            BASELINES,
            "/ws/keepalive",
            env=env,
            broadcast_path=BROADCAST_ROOM,
        ),
    ]
