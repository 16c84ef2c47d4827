"""Namespaces: which channels a `channels` endpoint serves, and who may do what on them.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Standard library only, and no protocol in it: the project's
``channels.py`` declares its `Namespaces`, and the protocol (``centrifuge_protocol.py``)
asks them.

A channel's name is ``namespace:rest`` (``chat:lobby``, ``news:today``); a name without
``:`` belongs to the namespace named ``""``, if one is declared. The part after a ``#``
lists the users a *user-limited* channel is for, separated by commas: ``user:#alice`` is
alice's alone, ``dialog:#alice,bob`` theirs (as in Centrifugo).

A `Rule` says who may subscribe to, or publish from a client on, a namespace's channels:

- `ANYONE`: every connection, anonymous ones included;
- `AUTHENTICATED`: connections with a user (from auth.py or a connection token);
- `USER_LIMITED`: the users named after the channel's ``#``;
- `SUBSCRIBERS`: connections subscribed to the channel (for publishing);
- `NOBODY`: no client (the server publishes: ``hub.publish``, ``POST /api/publish``);
- an async function of a `ChannelRequest` that returns True to allow.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

MAX_CHANNEL_LENGTH: Final = 255
"""Characters in a channel's name at most (printable ASCII), as in Centrifugo."""
NAMESPACE_SEPARATOR: Final = ":"
USERS_SEPARATOR: Final = "#"


class Allow(enum.Enum):
    """The rules that need no code (see the module's docs)."""

    ANYONE = "anyone"
    AUTHENTICATED = "authenticated"
    USER_LIMITED = "user_limited"
    SUBSCRIBERS = "subscribers"
    NOBODY = "nobody"


ANYONE: Final = Allow.ANYONE
AUTHENTICATED: Final = Allow.AUTHENTICATED
USER_LIMITED: Final = Allow.USER_LIMITED
SUBSCRIBERS: Final = Allow.SUBSCRIBERS
NOBODY: Final = Allow.NOBODY


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """What a rule function is asked about: may this connection do this on this channel?"""

    channel: str
    namespace: Namespace
    user: str
    """The connection's user ("" when anonymous)."""
    identity: object
    """What auth.py returned for the connection, or the claims of its connection token."""
    subscribed: bool
    """Whether the connection is subscribed to the channel."""


Decide: TypeAlias = Callable[[ChannelRequest], Awaitable[bool]]
Rule: TypeAlias = Allow | Decide


@dataclass(frozen=True, slots=True)
class Namespace:
    """The channels named ``name:...``, and what may be done on them.

    ``presence``: clients may ask who is subscribed (``presence``, ``presence_stats``);
    ``join_leave``: subscribers are told who comes and goes; ``history``: clients may read
    the channel's history and recover what they missed on a reconnect (its size and
    lifetime are the service's: ``HISTORY_SIZE``, ``HISTORY_TTL_SECONDS``).
    """

    name: str
    subscribe: Rule = AUTHENTICATED
    publish: Rule = NOBODY
    presence: bool = False
    join_leave: bool = False
    history: bool = True

    def __post_init__(self) -> None:
        if NAMESPACE_SEPARATOR in self.name or USERS_SEPARATOR in self.name:
            raise ValueError(
                f"The namespace name {self.name!r} may not contain "
                f"{NAMESPACE_SEPARATOR!r} or {USERS_SEPARATOR!r}."
            )
        if self.subscribe is SUBSCRIBERS:
            raise ValueError(
                f"The namespace {self.name!r} lets SUBSCRIBERS subscribe, which nobody can "
                "be first: choose ANYONE, AUTHENTICATED, USER_LIMITED, NOBODY or a function."
            )


class Namespaces:
    """The namespaces a `channels` endpoint serves; a channel of any other is unknown."""

    def __init__(self, namespaces: Iterable[Namespace]) -> None:
        self._by_name: dict[str, Namespace] = {}
        for namespace in namespaces:
            if namespace.name in self._by_name:
                raise ValueError(f"The namespace {namespace.name!r} is declared twice.")
            self._by_name[namespace.name] = namespace

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def find(self, channel: str) -> Namespace | None:
        """The namespace of ``channel``, or None if it has none or is not a valid name."""
        if not valid_channel(channel):
            return None
        name, separator, _ = channel.partition(NAMESPACE_SEPARATOR)
        return self._by_name.get(name if separator else "")


def valid_channel(channel: str) -> bool:
    """Whether ``channel`` can name a channel: 1 to 255 printable ASCII characters, not
    starting with ``/`` (the paths of broadcast endpoints are their channels)."""
    return (
        0 < len(channel) <= MAX_CHANNEL_LENGTH
        and channel.isascii()
        and channel.isprintable()
        and not channel.startswith("/")
    )


def channel_users(channel: str) -> list[str]:
    """The users a user-limited channel is for (after its ``#``); none if it has no ``#``."""
    _, separator, users = channel.partition(USERS_SEPARATOR)
    return [user for user in users.split(",") if user] if separator else []


async def allows(rule: Rule, request: ChannelRequest) -> bool:
    """Whether ``rule`` lets ``request`` through (a function's exception propagates)."""
    if rule is ANYONE:
        return True
    if rule is AUTHENTICATED:
        return bool(request.user)
    if rule is USER_LIMITED:
        return bool(request.user) and request.user in channel_users(request.channel)
    if rule is SUBSCRIBERS:
        return request.subscribed
    if rule is NOBODY:
        return False
    assert not isinstance(rule, Allow)
    return bool(await rule(request))
