"""`CommandBatcher`: the commands a `RedisHub` sends one Redis, pipelined in batches.

Part of the websocket backend vendored by ws-template (version notes in ``__init__.py``);
only projects whose broadcast backend is Redis have it.

redis-py's asyncio client sends each command on a connection of its own and waits for the
reply, so a hub publishing a hundred messages at once paid a hundred round trips, and Redis
a read and a write for each. A batcher holds one connection and keeps at most one batch on
it: a command issued while no batch is out is written at once (a lone publish waits for
nothing), and the commands issued while a batch is out are written together, in the order
they were issued, as soon as its replies are in (up to `MAX_BATCH` a write). Redis runs a
batch's commands one after the other, each script atomically, and answers them in one
write; each caller gets its own reply.

A batch that fails (the connection breaks, or no answer within ``timeout`` seconds) fails
each of its callers with the same error, and the next batch goes on a new connection. It is
never sent again: Redis may have run some of its commands, and sending them twice could
publish a message twice. A caller that stopped waiting before its command was written
(its own timeout, a cancelled task) is left out of the batch. A connection that sat idle
is checked before it is used, so one that Redis closed meanwhile (a restart) is replaced
without failing anybody.

Scripts go by their SHA1 (``EVALSHA``); a Redis that does not know one (``NOSCRIPT``: it
restarted, or ran ``SCRIPT FLUSH``) gets it loaded and the commands that asked for it sent
again, in their order, right after: those commands did not run.

With ``wait_replicas``, a batch holding a ``durable`` command ends with ``WAIT
wait_replicas wait_ms``: Redis answers it once that many replicas have every write of the
batch (or the time is up), and the durable commands are answered then, each failing with
`NotReplicated` if fewer replicas confirmed (Redis ran it: it may have been delivered).
One ``WAIT`` covers the whole batch, whatever its number of durable commands.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

MAX_BATCH: Final = 512
"""Commands written to Redis in one batch at most; more wait for the next."""
IDLE_CHECK_SECONDS: Final = 1.0
"""A connection idle for longer is checked for a close by Redis before it is used."""

Command = tuple[str | int, ...]
Entry = tuple[Command, "asyncio.Future[Any]", bool]
"""A command, its caller's future, and whether it is durable."""


class NotReplicated(RedisError):
    """Redis ran a durable command, but fewer replicas than asked confirmed it in time."""


class Script:
    """A Lua script sent by its SHA1."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()

    def command(self, keys: Sequence[str], args: Sequence[str | int]) -> Command:
        """The ``EVALSHA`` command that runs the script on ``keys`` and ``args``."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


class CommandBatcher:
    """Sends the commands of its callers on ``connection``, pipelined in batches.

    ``scripts`` are the scripts its callers run (`run_script`), to be loaded on NOSCRIPT.
    ``timeout`` bounds a batch, from its write to its last reply, in seconds (keep
    ``wait_ms`` below it). ``wait_replicas``: the replicas a batch with durable commands
    waits for, at most ``wait_ms`` milliseconds (0: durable is like any command).
    """

    def __init__(
        self,
        connection: AbstractConnection,
        scripts: Sequence[Script],
        timeout: float,
        *,
        wait_replicas: int = 0,
        wait_ms: int = 1000,
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        self.wait_replicas = wait_replicas
        self._wait: Command = ("WAIT", wait_replicas, wait_ms)
        self.batches = 0
        """Batches written so far (each a write of one or more commands)."""
        self._scripts = {script.sha: script for script in scripts}
        self._pending: list[Entry] = []
        self._writer: asyncio.Task[None] | None = None
        self._used_at = -math.inf
        self._closed = False
        self._moving = False

    async def call(self, *command: str | int, durable: bool = False) -> Any:
        """Send ``command`` in the next batch and answer its reply (a `ResponseError` for an
        error reply, the batch's error if it fails); if ``durable``, once replicas have it
        (`NotReplicated` if too few do)."""
        if self._closed:
            raise RedisConnectionError("the batcher is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future, durable and self.wait_replicas > 0))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="RedisHub batches")
        return await future

    async def run_script(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[str | int],
        *,
        durable: bool = False,
    ) -> Any:
        """Run ``script`` (one of those the batcher was given) on ``keys`` and ``args``."""
        return await self.call(*script.command(keys, args), durable=durable)

    async def move(self) -> None:
        """Leave the node the connection is on: at once if no batch is out, else before the
        next batch (the batch out is not disturbed). The next batch connects again."""
        if self._writer is None:
            await self.connection.disconnect()
        else:
            self._moving = True

    async def aclose(self) -> None:
        """Let the batches already asked for finish, then close the connection."""
        self._closed = True
        if self._writer is not None:
            await asyncio.wait([self._writer])
        await self.connection.disconnect()

    async def _write(self) -> None:
        try:
            while self._pending:
                batch = [entry for entry in self._pending[:MAX_BATCH] if not entry[1].done()]
                del self._pending[:MAX_BATCH]
                if batch:
                    await self._send(batch)
        finally:
            self._writer = None

    async def _send(self, batch: list[Entry]) -> None:
        """Send ``batch`` and settle each of its callers' futures."""
        self.batches += 1
        try:
            async with asyncio.timeout(self.timeout):
                replies, confirmed = await self._exchange_waiting(batch)
                unknown = [i for i, reply in enumerate(replies) if _is_noscript(reply)]
                if unknown:
                    replies, again = await self._load_and_resend(batch, replies, unknown)
                    confirmed = min(confirmed, again)
        except BaseException as error:  # lost, timed out or cancelled: none is answered
            await self.connection.disconnect(nowait=True)
            failure = error
            if not isinstance(error, Exception):
                failure = RedisConnectionError("the Redis hub is closing")
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(failure)
            if failure is not error:
                raise
            return
        finally:
            self._used_at = asyncio.get_running_loop().time()
        for (_, future, durable), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            elif durable and confirmed < self.wait_replicas:
                future.set_exception(
                    NotReplicated(
                        f"{confirmed} of {self.wait_replicas} replicas confirmed the write in time"
                    )
                )
            else:
                future.set_result(reply)

    async def _exchange_waiting(
        self, batch: Sequence[Entry], before: Sequence[Command] = ()
    ) -> tuple[list[Any], float]:
        """Send ``before`` and ``batch``'s commands in one write, then ``WAIT`` if one is
        durable; the replies of ``batch`` (``before``'s errors raised), and how many
        replicas confirmed (infinity without ``WAIT``)."""
        commands = [*before, *(command for command, _, _ in batch)]
        waits = any(durable for _, _, durable in batch)
        replies = await self._exchange([*commands, self._wait] if waits else commands)
        confirmed = replies.pop() if waits else math.inf
        for problem in replies[: len(before)]:
            if isinstance(problem, Exception):
                raise problem
        return replies[len(before) :], confirmed if isinstance(confirmed, (int, float)) else 0

    async def _load_and_resend(
        self, batch: list[Entry], replies: list[Any], unknown: list[int]
    ) -> tuple[list[Any], float]:
        """Load the scripts Redis did not know, then send again the commands that asked for
        them (they did not run), in their order, in the same write (with ``WAIT`` if one is
        durable); the replies, and how many replicas confirmed the resent ones."""
        shas = dict.fromkeys(str(batch[i][0][1]) for i in unknown)
        loads: list[Command] = [("SCRIPT", "LOAD", self._scripts[sha].body) for sha in shas]
        again, confirmed = await self._exchange_waiting([batch[i] for i in unknown], loads)
        for i, reply in zip(unknown, again, strict=True):
            replies[i] = reply
        return replies, confirmed

    async def _exchange(self, commands: Sequence[Command]) -> list[Any]:
        """Write ``commands`` in one write and read their replies (error replies as
        `ResponseError` values)."""
        connection = self.connection
        if self._moving:
            self._moving = False
            await connection.disconnect()
        elif asyncio.get_running_loop().time() - self._used_at > IDLE_CHECK_SECONDS:
            await self._check(connection)
        await connection.connect()  # type: ignore[no-untyped-call]  # redis-py types
        await connection.send_packed_command(connection.pack_commands(commands), False)
        replies: list[Any] = []
        for _ in commands:
            try:  # no timeout per reply: the batch has one
                replies.append(await connection.read_response(timeout=math.inf))
            except ResponseError as error:
                replies.append(error)
        return replies

    @staticmethod
    async def _check(connection: AbstractConnection) -> None:
        """Drop ``connection`` if Redis closed it while it was idle (or it holds stray
        data): then the next write goes on a new one."""
        if not connection.is_connected:
            return
        try:
            if await connection.can_read():
                await connection.disconnect()
        except (RedisConnectionError, OSError):
            await connection.disconnect()


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)
