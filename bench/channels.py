"""What a ``channels`` connection costs beside a ``broadcast`` one (issue 26), in one run.

    .venv/bin/python bench/channels.py                  1,000 connections, 3 repetitions
    .venv/bin/python bench/channels.py --smoke          200 connections, one repetition
    .venv/bin/python bench/channels.py --storm-only     the storm alone (2,000 clients; on a
                                                        memory hub, 20,200 open files in a process)
    .venv/bin/python bench/channels.py --storm-only --backend redis
                                                        the storm on Redis, over 2 processes
    .venv/bin/python bench/channels.py --storm-only --storm-kinds channels
                                                        the channels storm alone, no ratios

Serves ``bench/baselines/channels_app.py`` (both kinds on one memory hub, the raw-ASGI face,
LeanProtocol) with uvicorn on 127.0.0.1, the server pinned to one CPU where there are two,
and drives it with ``websockets`` clients speaking each kind's protocol, from this process
(the storm's from client processes of their own, to several servers on Redis: below):

- **delivery**: N connections on one channel (a room of the broadcast kind; ``news:room``
  subscribed over the Centrifuge protocol), M messages published one at a time over HTTP,
  each after the last reached everyone: the server's CPU time per delivery, each kind in
  turn in the same server process, the order swapped every repetition;
- **memory**: a fresh server per kind: its resident memory per idle connection, N
  broadcast connections against N channels connections with 10 subscriptions each;
- **storm**: ``--storm-clients`` clients (2,000) on the same 10 rooms, with join and leave
  events on (presence kept, the hubs' default join/leave limit of 100), once as channels
  connections (10 subscriptions each), once as broadcast ones (one socket per room: 10 per
  client), each on a fresh server: one message on each room, then the service restarts, one
  more message is published on each room while the clients are away, and every client
  reconnects at once (all its sockets together), recovering its rooms: the time until every
  one is resubscribed, the server's CPU meanwhile, the join and leave events the clients
  were sent (and in the second after) and, with ``--backend redis`` (a redis-server of its
  own, which keeps the rooms' history across the restart), the commands the service sent
  Redis (script calls, SUBSCRIBE, UNSUBSCRIBE...) and its socket reads (the round trips);
  the ratios channels/broadcast. A memory hub's restart loses the history (a new epoch): its
  clients resubscribe unrecovered. ``--storm-only`` runs this phase alone, ``--storm-kinds
  channels`` its channels storm alone.
  A broadcast storm holds 10 sockets a client on each side: 2,000 clients are 20,000, the
  most open files a process may have here. So on Redis the storm is split over
  ``--storm-processes`` (default: one per 10,000 sockets, 2 at 2,000 clients): as many server
  processes on the one Redis (each on a port of its own, all on the one CPU, stopped and
  started together by the restart, messages published through the first) and as many client
  processes (multiprocessing, ordered over a pipe), an equal share of the clients on each
  server, the same for both kinds; the server CPU is their sum. A memory hub's rooms are in its one
  process: there the storm stays one server and one client process.

Prints the figures and the ratios channels/broadcast, and writes ``channels-<backend>.json`` to
``--output`` (default ``bench/results/<date>/``). Every wait is bounded; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from statistics import median
from typing import Any

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import ClientConnection, connect

from bench.loadgen import io_syscalls, sample
from bench.run import raise_open_file_limit

ROOT = Path(__file__).resolve().parent.parent
VENDORED = ROOT / "{{cookiecutter.project_slug|ws_folder_name}}" / "{{cookiecutter.package_name}}"
TIMEOUT = 120.0
STORM_TIMEOUT = 600.0
"""A storm of 10,000 broadcast sockets at once to a server overflows its accept backlog: the
kernel drops SYNs, and clients retry after 1, 3, 7... seconds."""
CHANNELS_EACH = 10
STORM_SOCKETS_PER_PROCESS = 10_000
"""The most sockets a storm puts in one process, the service's or the clients': half the
20,000 open files a process may have on the machine this was written on (``ulimit -Hn``,
which only root raises). A broadcast storm of 2,000 clients holds 20,000 sockets on each
side, so on Redis it runs as two server processes on the one Redis (half the clients each,
the shape a deployment scales out in) driven by two client processes; the channels storm
of the same run is split the same way, so its ratios compare like with like."""
DEFAULT_JOIN_LEAVE_LIMIT = 100
"""The hubs' default (``websocket/broadcast.py``), which the storm's server keeps."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """``channels_app`` on uvicorn, on 127.0.0.1 and a free port (CPU 0 if there are two)."""

    def __init__(self, redis_url: str = "", *, join_leave: bool = False) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(ROOT / "bench" / "baselines"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--ws",
            "websocket.uvicorn_protocol:LeanProtocol",
            "--ws-per-message-deflate",
            "false",
            "channels_app:app",
        ]
        if (os.cpu_count() or 1) >= 2:
            command = ["taskset", "-c", "0", *command]
        env = {
            **os.environ,
            "PYTHONPATH": str(VENDORED),
            "REDIS_URL": redis_url,
            "JOIN_LEAVE": "yes" if join_leave else "no",
        }
        self.process = subprocess.Popen(command, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.05)

    def url(self, path: str) -> str:
        return ws_url(self.port, path)

    def publish(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """Publish ``message`` on ``channel``; its position (offset, epoch)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/publish?channel={channel}",
            data=json.dumps(message).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            position: dict[str, Any] = json.loads(answer.read())
            return position

    def stop(self) -> None:
        stop_all([self])


def ws_url(port: int, path: str) -> str:
    return f"ws://127.0.0.1:{port}{path}"


def stop_all(servers: list[Server]) -> None:
    """Stop ``servers`` together: SIGTERM to each, then SIGKILL to any still running 10 s
    later."""
    for server in servers:
        server.process.terminate()
    deadline = time.monotonic() + 10
    for server in servers:
        try:
            server.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


async def open_broadcast(server: Server, count: int) -> list[ClientConnection]:
    async def one() -> ClientConnection:
        client = await connect(server.url("/ws/rooms/room"), ping_interval=None, max_size=None)
        notice = json.loads(await client.recv())
        assert notice["type"] == "subscribed", notice
        return client

    return await _in_batches(one, count)


async def open_channels(server: Server, count: int, channels: list[str]) -> list[ClientConnection]:
    async def one() -> ClientConnection:
        client = await connect(
            server.url("/connection/websocket"), ping_interval=None, max_size=None
        )
        commands = [{"id": 1, "connect": {}}]
        for number, channel in enumerate(channels, 2):
            commands.append({"id": number, "subscribe": {"channel": channel}})
        await client.send("\n".join(json.dumps(command) for command in commands))
        replies = 0
        while replies < len(commands):
            for line in str(await client.recv()).split("\n"):
                reply = json.loads(line)
                assert "error" not in reply, reply
                replies += "id" in reply
        return client

    return await _in_batches(one, count)


async def _in_batches(open_one: Any, count: int, batch: int = 100) -> list[ClientConnection]:
    clients: list[ClientConnection] = []
    for start in range(0, count, batch):
        clients += await asyncio.wait_for(
            asyncio.gather(*(open_one() for _ in range(min(batch, count - start)))), TIMEOUT
        )
    return clients


async def deliveries(server: Server, clients: list[ClientConnection], messages: int) -> float:
    """Publish ``messages`` one at a time, each after every client got the last; the
    server's CPU seconds per delivery."""
    loop = asyncio.get_running_loop()

    async def receive_one(client: ClientConnection, number: int) -> None:
        while True:
            text = str(await client.recv())
            if f'"n":{number}' in text.replace(" ", ""):
                return

    before = sample(server.process.pid)
    for number in range(messages):
        waiting = asyncio.gather(*(receive_one(client, number) for client in clients))
        await loop.run_in_executor(None, _publish_both, server, number)
        await asyncio.wait_for(waiting, TIMEOUT)
    after = sample(server.process.pid)
    return (after.cpu_seconds - before.cpu_seconds) / (messages * len(clients))


def _publish_both(server: Server, number: int) -> None:
    # One message to each kind's room: only one kind has clients at a time, so the other
    # publish reaches nobody, and both kinds' runs pay for the same two publishes.
    server.publish("/ws/rooms/room", {"n": number})
    server.publish("news:room", {"n": number})


async def close_all(clients: list[ClientConnection]) -> None:
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def delivery_round(
    connections: int, messages: int, order: list[str], redis_url: str = ""
) -> dict[str, float]:
    server = Server(redis_url)
    try:
        result = {}
        for kind in order:
            if kind == "broadcast":
                clients = await open_broadcast(server, connections)
            else:
                clients = await open_channels(server, connections, ["news:room"])
            await deliveries(server, clients, 2)  # warm up
            result[kind] = await deliveries(server, clients, messages)
            await close_all(clients)
        return result
    finally:
        server.stop()


async def memory_of(kind: str, connections: int, redis_url: str = "") -> float:
    """Resident bytes per idle connection of ``kind`` on a fresh server."""
    server = Server(redis_url)
    try:
        warm = await (
            open_broadcast(server, 10)
            if kind == "broadcast"
            else open_channels(server, 10, _channels(0))
        )
        await asyncio.sleep(0.5)
        before = sample(server.process.pid).rss_bytes
        if kind == "broadcast":
            clients = await open_broadcast(server, connections)
        else:
            clients = await open_channels(server, connections, _channels(0))
        await asyncio.sleep(1.0)
        after = sample(server.process.pid).rss_bytes
        await close_all(clients + warm)
        return (after - before) / connections
    finally:
        server.stop()


def _channels(group: int) -> list[str]:
    return [f"news:g{group}-c{index}" for index in range(CHANNELS_EACH)]


STORM_ROOMS = [f"c{index}" for index in range(CHANNELS_EACH)]
"""The channels every storm client is on (``room:c0``... for channels clients,
``/ws/rooms/c0``... for broadcast ones): rooms of all the clients, where join and leave
events would grow as N squared."""


class StormCounts:
    """What the storm's clients read, counted as they read it."""

    def __init__(self) -> None:
        self.events = 0
        """Join and leave events (pushes of channels clients, messages of broadcast ones)."""
        self.pubs = 0
        self.recovered = 0
        self.not_recovered = 0
        self.gaps = 0
        """Subscriptions told they missed messages (a slow reader's full queue)."""


def _storm_channel(kind: str, room: str) -> str:
    return f"room:{room}" if kind == "channels" else f"/ws/rooms/{room}"


async def _storm_socket(
    port: int,
    kind: str,
    positions: dict[str, tuple[int, str]] | None,
    counts: StormCounts,
    room: str = "",
) -> tuple[ClientConnection, asyncio.Task[None]]:
    """One storm client's socket to the server on ``port``, once it is subscribed (and has
    recovered, with ``positions``), and the task that reads what follows, counting it."""
    if kind == "channels":
        commands: list[dict[str, Any]] = [{"id": 1, "connect": {}}]
        for number, each in enumerate(STORM_ROOMS, 2):
            body: dict[str, Any] = {"channel": _storm_channel(kind, each)}
            if positions is not None:
                offset, epoch = positions[body["channel"]]
                body.update(recover=True, offset=offset, epoch=epoch)
            commands.append({"id": number, "subscribe": body})
        url, replies = ws_url(port, "/connection/websocket"), len(commands)
    else:
        url, replies = ws_url(port, _storm_channel(kind, room)), 1
        if positions is not None:
            offset, epoch = positions[_storm_channel(kind, room)]
            url += f"?since={offset}&epoch={epoch}"
    client = await connect(url, ping_interval=None, max_size=None, open_timeout=STORM_TIMEOUT)
    if kind == "channels":
        await client.send("\n".join(json.dumps(command) for command in commands))
    while replies:
        text = str(await client.recv())
        await _count(client, text, counts)
        for line in text.split("\n"):
            if '"id":' in line or '"type":"subscribed"' in line:
                replies -= 1
    return client, asyncio.create_task(_read_counting(client, counts))


async def _count(client: ClientConnection, text: str, counts: StormCounts) -> None:
    """Count what ``text`` brings; answer a channels ping (``{}``) as the SDKs do."""
    if text == "{}":
        await client.send("{}")
        return
    counts.events += text.count('"join":{') + text.count('"leave":{')
    counts.events += text.count('"type":"join"') + text.count('"type":"leave"')
    counts.pubs += text.count('"pub":{') + text.count('"type":"broadcast"')
    counts.recovered += text.count('"recovered":true')
    counts.not_recovered += text.count('"recovered":false')
    counts.gaps += text.count('"unsubscribe":{') + text.count('"type":"dropped"')


async def _read_counting(client: ClientConnection, counts: StormCounts) -> None:
    with contextlib.suppress(Exception):  # the server went away: the storm's restart
        async for text in client:
            await _count(client, str(text), counts)


async def _storm_clients(
    port: int,
    kind: str,
    clients: int,
    positions: dict[str, tuple[int, str]] | None,
    counts: StormCounts,
    batch: int | None,
) -> list[tuple[ClientConnection, asyncio.Task[None]]]:
    """``clients`` storm clients (10 sockets each on broadcast) of the server on ``port``,
    opened ``batch`` at a time (None: all at once)."""
    rooms = [""] if kind == "channels" else STORM_ROOMS
    opening = [(kind, room) for _ in range(clients) for room in rooms]
    opened: list[tuple[ClientConnection, asyncio.Task[None]]] = []
    step = batch or len(opening)
    for start in range(0, len(opening), step):
        opened += await asyncio.wait_for(
            asyncio.gather(
                *(
                    _storm_socket(port, each, positions, counts, room)
                    for each, room in opening[start : start + step]
                )
            ),
            STORM_TIMEOUT,
        )
    return opened


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + STORM_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the storm timed out waiting for {what}")
        await asyncio.sleep(0.05)


class StormClients:
    """A storm client process's clients, all on one server process (the storm's shard),
    doing what the benchmark's process orders: each order is a method, called with the
    shard's server port (it changes at the restart) and answered when it is done."""

    def __init__(self, kind: str, clients: int) -> None:
        self.kind, self.clients, self.port = kind, clients, 0
        self.counts = StormCounts()
        self.opened: list[tuple[ClientConnection, asyncio.Task[None]]] = []

    async def serve(self, pipe: Connection) -> None:
        """Carry out orders (``(method, port, args)``) until ``None``, then close every socket;
        answer each ``("done", its result)``, or ``("failed", why)`` and stop at the first
        that fails."""
        loop = asyncio.get_running_loop()
        try:
            while (order := await loop.run_in_executor(None, pipe.recv)) is not None:
                name, self.port, args = order
                try:
                    pipe.send(("done", await getattr(self, name)(*args)))
                except Exception as error:  # told to the benchmark's process
                    pipe.send(("failed", f"{type(error).__name__}: {error}"))
                    return
        finally:
            await close_all([client for client, _ in self.opened])

    async def open(self) -> None:
        self.opened = await _storm_clients(
            self.port, self.kind, self.clients, None, self.counts, batch=100
        )

    async def first_messages(self) -> None:
        """Wait until every client has the first message of each of its rooms."""
        await _until(
            lambda: self.counts.pubs + self.counts.gaps >= self.clients * CHANNELS_EACH,
            "the first messages",
        )

    async def closed(self) -> None:
        """Wait until the restart has closed every socket."""
        await asyncio.wait_for(asyncio.gather(*(task for _, task in self.opened)), TIMEOUT)

    async def reconnect(self, positions: dict[str, tuple[int, str]]) -> None:
        """Every client reconnects at once, recovering its rooms from ``positions``; counted
        afresh."""
        self.counts = StormCounts()
        self.opened = await _storm_clients(
            self.port, self.kind, self.clients, positions, self.counts, batch=None
        )

    async def counted(self) -> dict[str, int]:
        return vars(self.counts)


def _storm_client_process(pipe: Connection, kind: str, clients: int) -> None:
    asyncio.run(StormClients(kind, clients).serve(pipe))


class StormShards:
    """A storm's service and clients over ``processes`` shards: a server process each
    (``channels_app`` on a port of its own, all on the one hub: Redis, or a memory hub in
    the one process) and a client process driving its share of the clients against it."""

    def __init__(self, kind: str, clients: int, processes: int, redis_url: str) -> None:
        self.redis_url = redis_url
        self.servers: list[Server] = []
        self.pipes: list[Connection] = []
        self.clients: list[multiprocessing.process.BaseProcess] = []
        spawn = multiprocessing.get_context("spawn")
        try:
            for shard in range(processes):
                share = clients // processes + (shard < clients % processes)
                ours, theirs = spawn.Pipe()
                client = spawn.Process(target=_storm_client_process, args=(theirs, kind, share))
                client.start()
                theirs.close()
                self.pipes.append(ours)
                self.clients.append(client)
                self.servers.append(Server(redis_url, join_leave=True))
        except BaseException:
            self.close()
            raise

    def ask(self, order: str, *args: Any) -> list[Any]:
        """Give every client process ``order`` (a `StormClients` method and its ``args``) at
        once; their answers, once all have answered."""
        for pipe, server in zip(self.pipes, self.servers, strict=True):
            pipe.send((order, server.port, args))
        answers = []
        for pipe in self.pipes:  # each of their waits is bounded
            try:
                outcome, answer = pipe.recv()
            except EOFError:
                raise RuntimeError(f"a storm client process exited during {order!r}") from None
            if outcome == "failed":
                raise RuntimeError(f"a storm client process failed during {order!r}: {answer}")
            answers.append(answer)
        return answers

    def publish(self, channel: str, number: int) -> tuple[int, str]:
        """Publish message ``number`` on ``channel`` (through the first server: the hub
        carries it to the others); its position."""
        answer = self.servers[0].publish(channel, {"n": number})
        return answer["offset"], answer["epoch"]

    def restart(self) -> None:
        """Stop every server process, wait until every client has lost its sockets, and
        start the servers again (on new ports)."""
        stop_all(self.servers)
        self.ask("closed")
        self.servers = [Server(self.redis_url, join_leave=True) for _ in self.servers]

    def server_cpu_seconds(self) -> float:
        return sum(sample(server.process.pid).cpu_seconds for server in self.servers)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):  # a client process that already exited
                pipe.send(None)
        for client in self.clients:
            client.join(TIMEOUT)
            if client.is_alive():
                client.kill()
                client.join()
        stop_all(self.servers)


def storm(
    kind: str, clients: int, processes: int, redis_url: str = "", redis_pid: int = 0
) -> dict[str, float]:
    """``clients`` clients on the 10 rooms (one channels connection each, or 10 broadcast
    ones), a message on each room; the service restarts, a message is published on each
    room while they are away, and every client reconnects at once, recovering its rooms:
    the time until every one has, the server processes' CPU, the commands sent Redis and
    its socket reads (the round trips: a pipelined batch is one), and the join and leave
    events the clients were sent meanwhile (and in the second after). The clients and the
    service are split over ``processes`` (see `STORM_SOCKETS_PER_PROCESS`)."""
    shards = StormShards(kind, clients, processes, redis_url)
    try:
        shards.ask("open")
        positions = {}
        for room in STORM_ROOMS:
            channel = _storm_channel(kind, room)
            positions[channel] = shards.publish(channel, 1)
        shards.ask("first_messages")
        shards.restart()  # every client loses its connection
        for room in STORM_ROOMS:  # published while the clients are away
            shards.publish(_storm_channel(kind, room), 2)
        commands_before = redis_commands(redis_url)
        reads_before = io_syscalls(redis_pid)[0] if redis_pid else 0
        cpu_before = shards.server_cpu_seconds()
        started = time.monotonic()
        shards.ask("reconnect", positions)
        seconds = time.monotonic() - started
        cpu = shards.server_cpu_seconds() - cpu_before
        commands = redis_commands(redis_url) - commands_before
        reads = io_syscalls(redis_pid)[0] - reads_before if redis_pid else 0
        time.sleep(1.0)  # events still on their way
        counted = shards.ask("counted")
    finally:
        shards.close()
    total = {field: sum(each[field] for each in counted) for field in counted[0]}
    figures = {
        "sockets": clients * (1 if kind == "channels" else CHANNELS_EACH),
        "seconds": seconds,
        "server_cpu_seconds": cpu,
        "join_leave_events": total["events"],
        "recovered": total["recovered"],
        "not_recovered": total["not_recovered"],
        "gaps": total["gaps"],
    }
    if redis_url:
        figures["redis_commands"] = commands
        figures["redis_round_trips"] = reads
    return figures


CLIENT_COMMANDS = ("evalsha", "eval", "subscribe", "unsubscribe", "ping", "script")
"""The commands a hub sends Redis itself (a script's own calls are counted apart)."""


def redis_commands(url: str) -> int:
    """Commands that clients sent the Redis at ``url`` so far (0 without one), each counted
    even where a pipeline sent many in one round trip. INFO's own calls are left out."""
    if not url:
        return 0
    from redis import Redis

    with Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in CLIENT_COMMANDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--storm-clients", type=int, default=2000)
    parser.add_argument("--storm-only", action="store_true", help="only the storm phase")
    parser.add_argument(
        "--storm-kinds",
        nargs="+",
        choices=("channels", "broadcast"),
        default=["channels", "broadcast"],
        help="the storms to run (the ratios need both)",
    )
    parser.add_argument(
        "--storm-processes",
        type=int,
        help="server processes (on the one Redis) and client processes the storm is split "
        f"over (default: enough for {STORM_SOCKETS_PER_PROCESS:,} sockets each on Redis, "
        "one on a memory hub)",
    )
    parser.add_argument("--backend", choices=("memory", "redis"), default="memory")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.smoke:
        args.connections, args.messages, args.repetitions = 200, 10, 1
        args.storm_clients = 100
    # Broadcast clients hold 10 sockets each, channels clients one.
    each = CHANNELS_EACH if "broadcast" in args.storm_kinds or not args.storm_only else 1
    if args.storm_processes is None:
        redis = args.backend == "redis"
        sockets = args.storm_clients * each
        args.storm_processes = math.ceil(sockets / STORM_SOCKETS_PER_PROCESS) if redis else 1
    if args.storm_processes < 1:
        parser.error("--storm-processes must be 1 or more")
    if args.storm_processes > 1 and args.backend == "memory":
        parser.error(
            "a memory hub's rooms are in its one process: splitting the storm over "
            "--storm-processes needs --backend redis"
        )
    # The sockets of a shard's share of the clients, in its client process and in its server
    # process (each inherits this limit), and some 200 files of their own.
    files = math.ceil(args.storm_clients / args.storm_processes) * each + 200
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if args.backend == "memory" and hard != resource.RLIM_INFINITY and files > hard:
        parser.error(
            f"a storm of {args.storm_clients:,} clients on a memory hub holds {files:,} open "
            f"files in one process, over this machine's hard limit of {hard:,} (ulimit -Hn): "
            "run it on Redis (--backend redis), which splits it over processes, or ask for "
            "fewer --storm-clients"
        )
    raise_open_file_limit(files)
    output = args.output or ROOT / "bench" / "results" / datetime.now(UTC).strftime("%Y-%m-%d")
    with contextlib.ExitStack() as stack:
        redis_url, redis_pid = "", 0
        if args.backend == "redis":
            sys.path.insert(0, str(VENDORED))
            from websocket.testing import RedisServer

            redis_server = stack.enter_context(RedisServer())
            redis_url, redis_pid = redis_server.url, redis_server.pid
        report = measure(args, redis_url, redis_pid)
    output.mkdir(parents=True, exist_ok=True)
    name = "channels-storm" if args.storm_only else "channels"
    (output / f"{name}-{args.backend}.json").write_text(json.dumps(report, indent=2) + "\n")


def measure(args: argparse.Namespace, redis_url: str, redis_pid: int = 0) -> dict[str, Any]:
    """Every phase, each printed once measured; the report."""
    report: dict[str, Any] = {"backend": args.backend}
    if not args.storm_only:
        report.update(measure_delivery_and_memory(args, redis_url))
    stormed = {
        kind: storm(kind, args.storm_clients, args.storm_processes, redis_url, redis_pid)
        for kind in ("channels", "broadcast")
        if kind in args.storm_kinds
    }
    report["storm"] = {
        "clients": args.storm_clients,
        "processes": args.storm_processes,
        "channels_each": CHANNELS_EACH,
        "join_leave_limit": DEFAULT_JOIN_LEAVE_LIMIT,
        **stormed,
        "ratios": {
            figure: stormed["channels"][figure] / stormed["broadcast"][figure]
            for figure in stormed.get("channels", {})
            if stormed.get("broadcast", {}).get(figure)
        },
    }
    print(
        f"reconnect storm after a restart, {args.storm_clients} clients x {CHANNELS_EACH} "
        f"rooms of all of them (join/leave limit {DEFAULT_JOIN_LEAVE_LIMIT}), "
        f"{args.storm_processes} server and {args.storm_processes} client process(es):",
        flush=True,
    )
    for kind, figures in stormed.items():
        redis = (
            f", {figures['redis_commands']:.0f} commands to Redis in "
            f"{figures['redis_round_trips']:.0f} round trips"
            if redis_url
            else ""
        )
        print(
            f"  {kind}: {figures['sockets']:.0f} sockets, all resubscribed in "
            f"{figures['seconds']:.2f} s, server CPU {figures['server_cpu_seconds']:.2f} s"
            f"{redis}, {figures['join_leave_events']:.0f} join/leave events, "
            f"recovered {figures['recovered']:.0f}, not recovered {figures['not_recovered']:.0f}"
            f", gaps {figures['gaps']:.0f}",
            flush=True,
        )
    ratios = report["storm"]["ratios"]
    if not ratios:  # one kind only
        return report
    print(
        "  channels/broadcast: "
        + ", ".join(f"{figure} {ratio:.2f}x" for figure, ratio in ratios.items()),
        flush=True,
    )
    return report


def measure_delivery_and_memory(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    """The delivery rounds and the memory per connection, printed; their report."""
    rounds = []
    for repetition in range(args.repetitions):
        order = ["broadcast", "channels"] if repetition % 2 == 0 else ["channels", "broadcast"]
        round_ = asyncio.run(delivery_round(args.connections, args.messages, order, redis_url))
        rounds.append(round_)
        print(
            f"delivery round {repetition + 1}: "
            + ", ".join(f"{kind} {seconds * 1e6:.1f} us" for kind, seconds in round_.items()),
            flush=True,
        )
    memory = {
        kind: asyncio.run(memory_of(kind, args.connections, redis_url))
        for kind in ("broadcast", "channels")
    }
    ratios = [round_["channels"] / round_["broadcast"] for round_ in rounds]
    print(
        f"server CPU per delivery, channels/broadcast: {median(ratios):.2f}x "
        f"(rounds {', '.join(f'{ratio:.2f}' for ratio in ratios)})\n"
        f"memory per idle connection: broadcast {memory['broadcast'] / 1024:.1f} KiB (1 channel), "
        f"channels {memory['channels'] / 1024:.1f} KiB ({CHANNELS_EACH} channels): "
        f"{memory['channels'] / memory['broadcast']:.2f}x",
        flush=True,
    )
    return {
        "connections": args.connections,
        "messages": args.messages,
        "rounds": rounds,
        "cpu_per_delivery_ratio_median": median(ratios),
        "cpu_per_delivery_ratios": ratios,
        "memory_per_connection_bytes": memory,
        "memory_ratio": memory["channels"] / memory["broadcast"],
    }


if __name__ == "__main__":
    main()
