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
each of its callers, and the next batch goes on a new connection. A failure says whether the
command was written: `NotSent` if it was not (no connection could be made, or the caller
stopped waiting first: ``timeout`` seconds after its call, or its task cancelled), and then
it never runs; `Unanswered` if it was written and no reply came, and then Redis may have
run it (or may still run it: a Redis that was frozen). A written batch is never sent again,
since sending it twice could publish a message twice. The connection is checked before each batch (a
look at what it has received, no round trip), so one that Redis closed meanwhile (a restart,
a stop) is replaced without failing anybody, and a batch is not written to it (its callers
would be told that it may have run).

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

Command = tuple[str | int, ...]


class Entry:
    """A command, its caller's future, whether it is durable, and whether it was written."""

    __slots__ = ("command", "durable", "future", "written")

    def __init__(self, command: Command, future: asyncio.Future[Any], durable: bool) -> None:
        self.command = command
        self.future = future
        self.durable = durable
        self.written = False


class NotReplicated(RedisError):
    """Redis ran a durable command, but fewer replicas than asked confirmed it in time."""


class NotSent(RedisConnectionError):
    """The command was not written to Redis (no connection, or its caller stopped waiting
    first), and never will be: it did not run."""


class Unanswered(RedisConnectionError):
    """The command was written to Redis but its reply never came (the connection broke, or
    no answer in time): Redis may have run it."""


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
    ``timeout`` bounds, in seconds, each caller's wait (from its call) and each batch (from
    its start to its last reply; keep ``wait_ms`` below it). ``wait_replicas``: the
    replicas a batch with durable commands waits for, at most ``wait_ms`` milliseconds (0:
    durable is like any command).
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
        self._closed = False
        self._moving = False

    async def call(self, *command: str | int, durable: bool = False) -> Any:
        """Send ``command`` in the next batch and answer its reply (a `ResponseError` for an
        error reply; `NotSent` or `Unanswered` if its batch fails); if ``durable``, once
        replicas have it (`NotReplicated` if too few do). It waits ``timeout`` seconds at
        most: then `NotSent` if the command was not written yet (it never will be), else
        `Unanswered`. A caller cancelled before its command was written leaves it unsent."""
        if self._closed:
            raise NotSent("the batcher is closed")
        entry = Entry(
            command,
            asyncio.get_running_loop().create_future(),
            durable and self.wait_replicas > 0,
        )
        self._pending.append(entry)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write(), name="RedisHub batches")
        try:
            async with asyncio.timeout(self.timeout):
                return await entry.future
        except TimeoutError as error:
            if entry.written:
                raise Unanswered(f"no reply within {self.timeout:g} s") from error
            raise NotSent(f"not written within {self.timeout:g} s") from error

    async def run_script(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[str | int],
        *,
        durable: bool = False,
    ) -> Any:
        """Run ``script`` (one of those the batcher was given) on ``keys`` and ``args``, as
        `call` does."""
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
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._send(batch)
        finally:
            self._writer = None

    async def _send(self, batch: list[Entry]) -> None:
        """Send the entries of ``batch`` whose callers still wait, and settle their futures."""
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self._connect()
                # No await from here to the write: a caller that stops waiting after this
                # has its command written (`Unanswered`), one that stopped before does not.
                batch = [entry for entry in batch if not entry.future.done()]
                if not batch:
                    return
                self.batches += 1
                for entry in batch:
                    entry.written = True
                replies, confirmed = await self._exchange_waiting(deadline, batch)
                unknown = [i for i, reply in enumerate(replies) if _is_noscript(reply)]
                self._settle(batch, replies, confirmed)
                if unknown:
                    await self._load_and_resend(deadline, [batch[i] for i in unknown])
        except BaseException as error:  # lost, timed out or cancelled: the rest unanswered
            await self.connection.disconnect(nowait=True)
            reason = repr(error) if isinstance(error, Exception) else "the Redis hub is closing"
            for entry in batch:
                if not entry.future.done():
                    failure = (Unanswered if entry.written else NotSent)(reason)
                    failure.__cause__ = error
                    entry.future.set_exception(failure)
            if not isinstance(error, Exception):
                raise

    def _settle(self, batch: Sequence[Entry], replies: Sequence[Any], confirmed: float) -> None:
        """Answer each caller of ``batch`` its reply, but those answered NOSCRIPT (sent
        again) and those that stopped waiting."""
        for entry, reply in zip(batch, replies, strict=True):
            if entry.future.done() or _is_noscript(reply):
                continue
            if isinstance(reply, Exception):
                entry.future.set_exception(reply)
            elif entry.durable and confirmed < self.wait_replicas:
                entry.future.set_exception(
                    NotReplicated(
                        f"{confirmed} of {self.wait_replicas} replicas confirmed the write in time"
                    )
                )
            else:
                entry.future.set_result(reply)

    async def _exchange_waiting(
        self, deadline: asyncio.Timeout, batch: Sequence[Entry], before: Sequence[Command] = ()
    ) -> tuple[list[Any], float]:
        """Send ``before`` and ``batch``'s commands in one write, then ``WAIT`` if one is
        durable; the replies of ``batch`` (``before``'s errors raised), and how many
        replicas confirmed (infinity without ``WAIT``)."""
        commands = [*before, *(entry.command for entry in batch)]
        waits = any(entry.durable for entry in batch)
        replies = await self._exchange(deadline, [*commands, self._wait] if waits else commands)
        confirmed = replies.pop() if waits else math.inf
        for problem in replies[: len(before)]:
            if isinstance(problem, Exception):
                raise problem
        return replies[len(before) :], confirmed if isinstance(confirmed, (int, float)) else 0

    async def _load_and_resend(self, deadline: asyncio.Timeout, unknown: list[Entry]) -> None:
        """Load the scripts Redis did not know, then send again the commands that asked for
        them (they did not run), in their order, in the same write (with ``WAIT`` if one is
        durable), and answer them."""
        shas = dict.fromkeys(str(entry.command[1]) for entry in unknown)
        loads: list[Command] = [("SCRIPT", "LOAD", self._scripts[sha].body) for sha in shas]
        replies, confirmed = await self._exchange_waiting(deadline, unknown, loads)
        self._settle(unknown, replies, confirmed)

    async def _connect(self) -> None:
        """Make the connection ready for the next batch: moved, checked, connected."""
        connection = self.connection
        if self._moving:
            self._moving = False
            await connection.disconnect()
        else:
            await self._check(connection)
        await connection.connect()  # type: ignore[no-untyped-call]  # redis-py types

    async def _exchange(self, deadline: asyncio.Timeout, commands: Sequence[Command]) -> list[Any]:
        """Write ``commands`` in one write and read their replies (error replies as
        `ResponseError` values), within the batch's ``deadline``."""
        connection = self.connection
        await connection.send_packed_command(connection.pack_commands(commands), False)
        if deadline.expired():
            # The batch's time ran out during the write, and the cancellation that says so
            # was lost: on Python 3.11, redis-py's write (under asyncio.wait_for) returns
            # when it completes in the same turn of the event loop (python/cpython#86296).
            # The replies are read with no timeout of their own: without this, a batch
            # written to a frozen Redis would wait for them for good.
            raise TimeoutError(f"no reply within {self.timeout:g} s")
        replies: list[Any] = []
        for _ in commands:
            try:  # no timeout per reply: the batch has one
                replies.append(await connection.read_response(timeout=math.inf))
            except ResponseError as error:
                replies.append(error)
        return replies

    @staticmethod
    async def _check(connection: AbstractConnection) -> None:
        """Drop ``connection`` if Redis closed it (or it holds stray data): then the next
        write goes on a new one. It looks at what the connection has received: no round
        trip, no wait."""
        if not connection.is_connected:
            return
        try:
            if await connection.can_read():
                await connection.disconnect()
        except (RedisConnectionError, OSError):
            await connection.disconnect()


def _is_noscript(reply: Any) -> bool:
    return isinstance(reply, NoScriptError)
