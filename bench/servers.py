"""The servers under test: the rendered template (each flavour) and the three baselines.

Every server runs as its own process on 127.0.0.1 and a port the OS picks, pinned to one
CPU, with its log in a file (uvicorn logs each connection at its default level, so the
log must not be a pipe that nobody reads).
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
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cookiecutter.main import cookiecutter

BENCH = Path(__file__).resolve().parent
TEMPLATE = BENCH.parent
BASELINES = BENCH / "baselines"

SERVER_KEYS = ("generated-fastapi", "generated-asgi", "docs-fastapi", "raw-asgi-echo", "websockets")
"""The keys of the servers that `server_specs` gives, in its order."""

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


def uvicorn(app: str) -> tuple[str, ...]:
    """uvicorn with its defaults (``--ws auto``, which is websockets-sansio), on 127.0.0.1."""
    return ("-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "0")


def render_projects(output: Path) -> dict[str, Path]:
    """Render the default project once per flavour into ``output``; flavour -> project folder."""
    output.mkdir(parents=True, exist_ok=True)
    config = output / "cookiecutter-config.yaml"
    config.write_text(
        f'cookiecutters_dir: "{output / "cookiecutters"}"\nreplay_dir: "{output / "replay"}"\n'
    )
    projects = {}
    for flavour in ("fastapi", "asgi"):
        folder = output / flavour
        folder.mkdir(parents=True, exist_ok=True)
        project = cookiecutter(
            str(TEMPLATE),
            no_input=True,
            output_dir=str(folder),
            config_file=str(config),
            extra_context={"framework": flavour},
        )
        projects[flavour] = Path(project)
    return projects


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
            uvicorn("ws_service.app:app"),
            projects["fastapi"],
            "/ws/keepalive",
            "/ws/clock",
            ticker_env,
        ),
        ServerSpec(
            "generated-asgi",
            "generated service, asgi flavour",
            uvicorn("ws_service.app:app"),
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
            "websockets",
            "(3) websockets' own server",
            ("websockets_server.py",),
            BASELINES,
            "/ws/keepalive",
        ),
    ]


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """``command`` run on CPU ``cpu`` alone (through taskset), or as it is for None."""
    return ["taskset", "-c", str(cpu), *command] if cpu is not None else list(command)


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
