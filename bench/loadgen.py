"""The load generator's side of the benchmark: node's ``ws`` client and ``/proc`` samples.

``client.mjs`` (installed with ``npm ci --prefix bench``) opens the connections and measures
what the clients see; it prints an event line at each moment worth a sample, and this
module reads the server's and the client's CPU time and memory from ``/proc`` right then.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bench.servers import BENCH, pinned

CLIENT = BENCH / "client.mjs"
MIN_NODE = 18

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Sample:
    """A process's CPU time (user + system, seconds; and system alone) and resident memory
    at one moment, and the user + system time of the whole machine (every process, every CPU)."""

    at: float
    """``time.monotonic()`` when read."""
    cpu_seconds: float
    rss_bytes: int
    machine_cpu_seconds: float
    cpu_ticks: int
    """``cpu_seconds`` in clock ticks, as the kernel counts it."""
    system_ticks: int
    """The process's system (kernel) time alone, in clock ticks: part of ``cpu_ticks``."""


def sample(pid: int) -> Sample:
    """Read the CPU time and the resident memory of process ``pid`` from ``/proc``."""
    at = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields 3 onwards
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    machine = Path("/proc/stat").read_text().split("\n", 1)[0].split()  # "cpu user nice system"
    machine_ticks = int(machine[1]) + int(machine[2]) + int(machine[3])
    return Sample(
        at,
        (utime + stime) / _CLOCK_TICKS,
        resident_pages * _PAGE_SIZE,
        machine_ticks / _CLOCK_TICKS,
        utime + stime,
        stime,
    )


def io_syscalls(pid: int) -> tuple[int, int]:
    """The read and the write system calls process ``pid`` made so far (``syscr`` and
    ``syscw`` of ``/proc/<pid>/io``): for a redis-server, its socket reads (one per batch of
    commands a client sent at once: a round trip) and writes."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(io["syscr"]), int(io["syscw"])


def cpu_seconds_between(before: Sample, after: Sample) -> tuple[float, float]:
    """A process's CPU time between two samples (user + system, seconds) and the system
    (kernel) part of it; counted in whole ticks first, so the part never exceeds the whole."""
    return (
        (after.cpu_ticks - before.cpu_ticks) / _CLOCK_TICKS,
        (after.system_ticks - before.system_ticks) / _CLOCK_TICKS,
    )


def cpu_share(before: Sample, after: Sample) -> float:
    """The share of one CPU that a process used between two samples (1.0: a whole core)."""
    return (after.cpu_seconds - before.cpu_seconds) / max(after.at - before.at, 1e-9)


def others_share(server: tuple[Sample, Sample], client: tuple[Sample, Sample]) -> float:
    """The CPUs (1.0: a whole core) that every process but the server and the client used
    between two pairs of samples: other work on a shared machine, which skews timings."""
    (server_before, server_after), (client_before, client_after) = server, client
    machine = server_after.machine_cpu_seconds - server_before.machine_cpu_seconds
    ours = (server_after.cpu_seconds - server_before.cpu_seconds) + (
        client_after.cpu_seconds - client_before.cpu_seconds
    )
    return max(0.0, machine - ours) / max(server_after.at - server_before.at, 1e-9)


def cpu_probe(cpu: int | None, loops: int = 300_000) -> float:
    """Milliseconds of CPU time a fixed pure-Python loop takes on ``cpu``, right now.

    The same work should take the same CPU time; on a shared machine it does not (another
    tenant on the same physical core slows it), and neither do the figures measured next.
    """
    thread_cpus = os.sched_getaffinity(0)  # 0: this thread
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        started = time.thread_time()
        total = 0
        for number in range(loops):
            total += number
        return (time.thread_time() - started) * 1000
    finally:
        os.sched_setaffinity(0, thread_cpus)


def ensure_client() -> str:
    """Check node and install the client's packages (``npm ci``) if needed; node's version."""
    node = shutil.which("node")
    if node is None:
        raise BenchError(
            f"The load generator needs Node.js {MIN_NODE} or newer and npm: install them "
            "(e.g. apt-get install nodejs npm) and run the benchmark again."
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = re.match(r"v(\d+)", version.stdout.strip())
    if major is None or int(major.group(1)) < MIN_NODE:
        raise BenchError(f"Node.js {version.stdout.strip()} is too old: {MIN_NODE}+ is needed.")
    if any(installed_version(name) != locked_version(name) for name in CLIENT_PACKAGES):
        npm = shutil.which("npm")
        if npm is None:
            raise BenchError("npm is not installed: install it to set up bench/node_modules.")
        subprocess.run(  # npm's output to stderr: stdout carries the report
            [npm, "ci", "--prefix", str(BENCH), "--no-audit", "--no-fund"],
            check=True,
            stdout=sys.stderr,
        )
    return version.stdout.strip()


CLIENT_PACKAGES = ("ws", "socket.io-client")
"""The npm packages of the load generator (bench/package.json's dependencies)."""


def locked_version(package: str) -> str:
    """The version of ``package`` that bench/package-lock.json pins."""
    lock = json.loads((BENCH / "package-lock.json").read_text())
    return str(lock["packages"][f"node_modules/{package}"]["version"])


def installed_version(package: str) -> str | None:
    """The version of ``package`` in bench/node_modules, or None when it is not installed."""
    found = BENCH / "node_modules" / package / "package.json"
    return str(json.loads(found.read_text())["version"]) if found.exists() else None


Event = Mapping[str, Any]
EventHandler = Callable[[Event, "Client"], None]


class Client:
    """One run of ``client.mjs``: ``run`` calls ``on_event`` for each event and returns the result.

    ``on_event`` may sample processes and answer the client on its stdin (`tell`). The run
    fails with `BenchError` if the client fails, says nothing for ``timeout`` seconds, or
    does not end.
    """

    def __init__(
        self,
        mode: str,
        url: str,
        options: Mapping[str, float],
        cpu: int | None,
        transport: str = "ws",
    ) -> None:
        arguments = [f"--{name}={value:g}" for name, value in options.items()]
        if transport != "ws":  # socketio: Socket.IO (broadcast mode)
            arguments.append(f"--transport={transport}")
        self.command = pinned(["node", str(CLIENT), mode, f"--url={url}", *arguments], cpu)
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    @property
    def pid(self) -> int:
        assert self._process is not None, "the client is not started"
        return self._process.pid

    def tell(self, word: str) -> None:
        """Send one line to the client's stdin."""
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(word + "\n")
        self._process.stdin.flush()

    def run(self, on_event: EventHandler, timeout: float) -> Event:
        """Start the client, hand each event to ``on_event``; return its result event."""
        errors: list[str] = []
        with subprocess.Popen(
            self.command,
            cwd=BENCH,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as self._process:
            assert self._process.stdout is not None
            assert self._process.stderr is not None
            readers = [
                threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True),
                threading.Thread(target=_collect, args=(self._process.stderr, errors), daemon=True),
            ]
            for reader in readers:
                reader.start()
            try:
                result = self._events(on_event, timeout)
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                raise BenchError(f"The load generator did not end within {timeout:g} s.") from None
            finally:
                if self._process.poll() is None:
                    self._process.kill()
                for reader in readers:
                    reader.join(5)
        if self._process.returncode != 0 or result is None:
            message = "".join(errors).strip() or f"exit code {self._process.returncode}"
            raise BenchError(f"The load generator failed: {message}")
        return result

    def _events(self, on_event: EventHandler, timeout: float) -> Event | None:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise BenchError(f"The load generator said nothing for {timeout:g} s.") from None
            if line is None:  # its stdout closed: it ended
                return None
            event: Event = json.loads(line)
            if event["event"] == "result":
                return event
            on_event(event, self)

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("{"):
                self._lines.put(line)
        self._lines.put(None)


def _collect(stream: IO[str], into: list[str]) -> None:
    for line in stream:
        into.append(line)
