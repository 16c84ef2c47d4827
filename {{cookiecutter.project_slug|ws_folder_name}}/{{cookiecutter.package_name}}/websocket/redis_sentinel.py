"""Where a Redis hub connects: one Redis URL, or the master of a Redis Sentinel group.

Part of the websocket backend vendored by ws-template (version notes in ``__init__.py``);
only projects whose broadcast backend is Redis have it.

``REDIS_URL`` names one Redis, or several comma-separated (shards, see ``redis_hub.py``).
Each is a Redis URL (``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS,
``unix:///path``) or a Sentinel group::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER_NAME[/DB]
                     [?sentinel_password=...&sentinel_username=...]

the addresses of the group's sentinels (port 26379 by default), the name the sentinels
monitor the master under, and its database (0 by default); user and password are the
master's, ``sentinel_*`` those of the sentinels if they have their own. ``rediss+sentinel``
uses TLS to the master and the sentinels. In a list, the commas between sentinels belong to
their URL: a new shard starts at the next ``scheme://``.

A `RedisTarget` makes the connections: for a Sentinel group, each connection asks the
sentinels for the master's address whenever it (re)connects, so a connection lost in a
failover comes back on the new master. redis-py does not follow Sentinel's
``+switch-master`` (redis/redis-py#3867), and a connection that is not lost stays where it
is: `follow_master` asks the sentinels every `MASTER_CHECK_SECONDS` and disconnects the
connections that are on another node, which then reconnect to the master.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
PLAIN_SCHEMES: Final = ("redis", "rediss", "unix")
SENTINEL_PORT: Final = 26379
MASTER_CHECK_SECONDS: Final = 1.0
"""How often the sentinels are asked where the master is, to move connections left behind."""
_SCHEME: Final = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SENTINEL_OPTIONS: Final = frozenset({"sentinel_password", "sentinel_username"})


def split_redis_urls(value: str) -> list[str]:
    """The URLs of ``REDIS_URL``: split at commas, where the next piece starts a URL (the
    commas between a Sentinel URL's hosts stay in it)."""
    urls: list[str] = []
    for piece in value.split(","):
        piece = piece.strip()
        if urls and not _SCHEME.match(piece) and urls[-1].lower().startswith(SENTINEL_SCHEMES):
            urls[-1] += "," + piece
        elif piece:
            urls.append(piece)
    return urls


@dataclass(frozen=True)
class SentinelGroup:
    """A ``redis+sentinel://`` URL, read."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    tls: bool
    username: str | None
    password: str | None
    sentinel_username: str | None
    sentinel_password: str | None

    @classmethod
    def parse(cls, url: str) -> SentinelGroup:
        """Read ``url``; ValueError with one sentence (never the URL: it may hold a
        password) when it is not a Sentinel URL."""
        scheme, rest = url.split("://", 1) if "://" in url else ("", url)
        if scheme.lower() not in SENTINEL_SCHEMES:
            raise ValueError("a Sentinel URL starts with redis+sentinel://")
        where, _, query = rest.partition("?")
        hosts, _, path = where.partition("/")
        credentials, _, hosts = hosts.rpartition("@")
        username, _, password = credentials.partition(":")
        sentinels = tuple(_host_port(host) for host in hosts.split(","))
        names = [part for part in path.split("/") if part]
        if not names or len(names) > 2:
            raise ValueError(
                "a Sentinel URL names the master after the sentinels: "
                "redis+sentinel://HOST:26379,HOST2:26379/MASTER_NAME[/DB]"
            )
        if len(names) == 2 and not names[1].isdigit():
            raise ValueError("the database of a Sentinel URL is a number (/MASTER_NAME/0)")
        options = parse_qs(query, keep_blank_values=True)
        unknown = set(options) - _SENTINEL_OPTIONS
        if unknown:
            raise ValueError(
                f"a Sentinel URL takes only {', '.join(sorted(_SENTINEL_OPTIONS))} "
                f"after '?', not {', '.join(sorted(unknown))}"
            )
        return cls(
            sentinels=sentinels,
            master=unquote(names[0]),
            db=int(names[1]) if len(names) == 2 else 0,
            tls=scheme.lower() == "rediss+sentinel",
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_username=_last(options.get("sentinel_username")),
            sentinel_password=_last(options.get("sentinel_password")),
        )


def _last(values: list[str] | None) -> str | None:
    return values[-1] if values else None


def _host_port(text: str) -> tuple[str, int]:
    host, port = text.strip(), str(SENTINEL_PORT)
    if host.startswith("["):  # [IPv6]:port
        close = host.find("]")
        host, port = host[1:close], host[close + 2 :] or port
    elif ":" in host:
        host, port = host.rsplit(":", 1)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("each sentinel of a Sentinel URL is HOST or HOST:PORT")
    return host, int(port)


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is neither a Redis URL nor a Sentinel URL (one sentence without the URL,
    which may hold a password), or None when it is one."""
    if url.lower().startswith(tuple(scheme + "://" for scheme in SENTINEL_SCHEMES)):
        try:
            SentinelGroup.parse(url)
        except ValueError as error:
            return str(error)
        return None
    parts = urlsplit(url)
    if parts.scheme not in PLAIN_SCHEMES or not (parts.hostname or parts.path):
        return (
            "write redis://HOST:6379/0 (rediss:// for TLS, unix:///path/to/redis.sock for a "
            "socket, redis+sentinel://HOST:26379,HOST2:26379/MASTER_NAME for a Sentinel group)"
        )
    return None


def shown(url: str) -> str:
    """``url`` without user names and passwords, for logs."""
    if url.lower().startswith(tuple(scheme + "://" for scheme in SENTINEL_SCHEMES)):
        scheme, rest = url.split("://", 1)
        where = rest.partition("?")[0]
        hosts, _, path = where.partition("/")
        return f"{scheme}://{hosts.rpartition('@')[2]}/{path}"
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedisTarget:
    """Makes a hub's connections to ``url`` (a Redis URL or a Sentinel URL).

    ``timeout`` bounds each connection attempt and each socket read, in seconds (for a
    Sentinel group, also each question to a sentinel).
    """

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.shown = shown(url)
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
        self._sentinel: Sentinel | None = None
        self._group: SentinelGroup | None = None
        if url.lower().startswith(SENTINEL_SCHEMES):
            group = self._group = SentinelGroup.parse(url)
            sentinel_options = dict(options)
            sentinel_options.pop("decode_responses")
            if group.sentinel_password is not None:
                sentinel_options["password"] = group.sentinel_password
            if group.sentinel_username is not None:
                sentinel_options["username"] = group.sentinel_username
            if group.tls:
                sentinel_options["ssl"] = True
            self._sentinel = Sentinel(group.sentinels, sentinel_kwargs=sentinel_options)
            options |= {"db": group.db, "username": group.username, "password": group.password}
            if group.tls:
                options["ssl"] = True
        self._options = options
        self._pools: list[ConnectionPool] = []

    @property
    def sentinel(self) -> bool:
        """True for a Sentinel group."""
        return self._sentinel is not None

    def _pool(self, retry: Retry) -> ConnectionPool:
        pool: ConnectionPool
        if self._sentinel is not None and self._group is not None:
            pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]  # redis-py types
                self._group.master, self._sentinel, retry=retry, **self._options
            )
            self._pools.append(pool)  # its connections hold it by a weak reference only
        else:
            pool = ConnectionPool.from_url(self.url, retry=retry, **self._options)
        return pool

    def connection(self) -> AbstractConnection:
        """A connection of its own (not pooled), which fails at once when it cannot connect
        or its socket breaks: the caller decides when to try again."""
        connection: AbstractConnection = self._pool(Retry(NoBackoff(), 0)).make_connection()  # type: ignore[no-untyped-call]  # redis-py types
        return connection

    def client(self) -> Redis:
        """A client of one connection (for pub/sub, which holds its connection), without
        retries: its owner reconnects."""
        pool = self._pool(Retry(NoBackoff(), 0, ()))
        pool.max_connections = 1
        return Redis.from_pool(pool)

    async def master(self) -> tuple[str, int] | None:
        """The master's address as the sentinels say now; None for a plain Redis URL."""
        if self._sentinel is None or self._group is None:
            return None
        host, port = await self._sentinel.discover_master(self._group.master)
        return str(host), int(port)

    async def aclose(self) -> None:
        """Close the connections to the sentinels."""
        if self._sentinel is not None:
            await self._sentinel.aclose()


async def follow_master(
    target: RedisTarget,
    connections: Callable[[], Sequence[AbstractConnection | None]],
    move: Callable[[AbstractConnection], Awaitable[None]],
) -> None:
    """Every `MASTER_CHECK_SECONDS`, ask the sentinels where ``target``'s master is, and
    ``move`` each of ``connections()`` connected elsewhere (its owner reconnects it, to the
    master). Runs until cancelled; does nothing for a plain Redis URL."""
    if not target.sentinel:
        return
    while True:
        await asyncio.sleep(MASTER_CHECK_SECONDS)
        try:
            address = await target.master()
        except (RedisError, OSError, TimeoutError) as error:
            logger.debug("asking the sentinels of %s failed: %r", target.shown, error)
            continue
        for connection in connections():
            if connection is None or not connection.is_connected:
                continue
            where = (getattr(connection, "host", None), getattr(connection, "port", None))
            if address is not None and where != address:
                logger.warning(
                    "the Redis master of %s moved to %s:%s; reconnecting there",
                    target.shown,
                    *address,
                )
                await move(connection)
