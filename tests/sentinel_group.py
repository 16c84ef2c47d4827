"""A Redis Sentinel group on 127.0.0.1 for tests: a master, a replica, three sentinels.

`SentinelGroup` starts ``redis-server`` twice and ``redis-sentinel`` three times, each on a
free port in a temporary folder, waits until the sentinels know the replica and each other,
and stops them all on exit. Every process is started under ``timeout --signal=KILL``, so
none outlives ``lifetime`` seconds even if the test process dies first.

The replica follows the master through a `Relay` the test can `cut`: the master's writes
then stop reaching the replica while both stay connected, so a failover promotes a replica
that lacks the last writes (as when asynchronous replication lags). Sentinel would set such
a replica straight after ``failover_timeout_ms`` (``+fix-slave-config``): the lossy group
uses a long one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import redis

MASTER_NAME = "main"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sentinel_unavailable() -> str | None:
    """Why no Sentinel group can run here, or None."""
    for program in ("redis-server", "redis-sentinel", "timeout"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install redis-server redis-sentinel)"
    return None


class Relay:
    """A TCP relay on 127.0.0.1 to ``port``, in a thread of its own. `cut` stops what the
    target sends from going through (connections stay open; a close still goes through)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.cut_at: float | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def start(self) -> int:
        self._thread.start()
        self._ready.wait(10)
        return self.port

    def cut(self) -> None:
        self.cut_at = time.monotonic()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in self._writers:
                writer.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()
        for task in asyncio.all_tasks(self._loop):  # the relays, ended by their closed sockets
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, cuttable: bool
        ) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if not (cuttable and self.cut_at is not None):
                        sink.write(data)
                        await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))


class Node:
    """One redis-server or redis-sentinel process."""

    def __init__(self, folder: Path, name: str, arguments: list[str], lifetime: float) -> None:
        self.folder = folder / name
        self.folder.mkdir()
        self.name = name
        self.port = free_port()
        self.arguments = arguments
        self.lifetime = lifetime
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, extra: list[str] | None = None, config: str | None = None) -> None:
        command = ["timeout", "--signal=KILL", str(int(self.lifetime))]
        if config is not None:
            path = self.folder / "sentinel.conf"
            path.write_text(config)
            command += ["redis-sentinel", str(path)]
        else:
            command += ["redis-server", *self.arguments, *("--port", str(self.port))]
            command += ["--dir", str(self.folder), *(extra or [])]
        log = (self.folder / "log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    client.ping()
                return
            except redis.RedisError:
                assert self.process.poll() is None, f"{self.name} exited: {self.log()}"
                assert time.monotonic() < deadline, f"{self.name} does not answer: {self.log()}"
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the process (and ``timeout``, whose process group it is in)."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2)

    def log(self) -> str:
        path = self.folder / "log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


class SentinelGroup:
    """A master, a replica (through a `Relay`), three sentinels; see the module's docstring.

    ``down_after_ms``: how long the master must be silent before a sentinel says it is
    down; ``failover_timeout_ms``: Sentinel's failover timeout (see the module docstring).
    """

    def __init__(
        self,
        *,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 3000,
        lifetime: float = 240.0,
    ) -> None:
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self._folder = tempfile.TemporaryDirectory(prefix="sentinel-group-")
        folder = Path(self._folder.name)
        server = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.master = Node(folder, "master", server, lifetime)
        self.replica = Node(folder, "replica", server, lifetime)
        self.sentinels = [Node(folder, f"sentinel-{n}", [], lifetime) for n in range(3)]
        self.relay = Relay(self.master.port)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def __enter__(self) -> SentinelGroup:
        try:
            self.master.start()
            relay_port = self.relay.start()
            self.replica.start(["--replicaof", "127.0.0.1", str(relay_port)])
            for sentinel in self.sentinels:
                sentinel.start(config=self._sentinel_config(sentinel.port))
            self.wait_until_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for node in (*self.sentinels, self.master, self.replica):
            node.kill()
        self.relay.close()
        self._folder.cleanup()

    def _sentinel_config(self, port: int) -> str:
        return (
            f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )

    def master_address(self) -> tuple[str, int]:
        """The master as the first sentinel that answers says."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError), sentinel.client() as client:
                host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return str(host), int(port)
        raise AssertionError("no sentinel answers")

    def wait_until_ready(self, within: float = 20.0) -> None:
        """Until every sentinel knows the replica (in sync) and the two other sentinels."""
        deadline = time.monotonic() + within
        while True:
            states = []
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    states.append(client.sentinel_master(MASTER_NAME))
            with self.master.client() as client:
                info = client.info("replication")
            synced = "online" in str(info.get("slave0", ""))
            if synced and all(
                s["num-slaves"] == 1 and s["num-other-sentinels"] == 2 for s in states
            ):
                return
            assert time.monotonic() < deadline, f"the group is not ready: {states} {info}"
            time.sleep(0.1)

    def wait_for_new_master(self) -> float:
        """Until every sentinel names the replica as the master; the seconds it took."""
        within = 30.0 + self.down_after_ms / 1000
        start = time.monotonic()
        wanted = ("127.0.0.1", self.replica.port)
        while True:
            named = set()
            for sentinel in self.sentinels:
                with contextlib.suppress(redis.RedisError), sentinel.client() as client:
                    host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    named.add((str(host), int(port)))
            if named == {wanted}:
                with self.replica.client() as client:
                    if client.info("replication")["role"] == "master":
                        return time.monotonic() - start
            assert time.monotonic() - start < within, (
                f"no failover after {within} s: {named}; {self.sentinels[0].log()}"
            )
            time.sleep(0.05)

    def restart_old_master(self, within: float = 30.0) -> None:
        """Start the old master again (empty, on its port), and wait until the sentinels
        have made it a replica of the new master."""
        self.master.start()
        self.wait_until_replica(self.master, within)

    @staticmethod
    def wait_until_replica(node: Node, within: float = 30.0) -> None:
        """Until ``node`` is a replica, in sync with its master."""
        deadline = time.monotonic() + within
        while True:
            with node.client() as client:
                info = client.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") == "up":
                return
            assert time.monotonic() < deadline, f"{node.name} is not a replica: {info}"
            time.sleep(0.05)
