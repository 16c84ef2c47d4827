"""Namespaces: which channels a `channels` endpoint serves, and who may do what on them.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Standard library only, and no protocol in it: the project's
``channels.py`` declares its `Namespaces`, the protocol (``centrifuge_protocol.py``) asks
them who may do what, and the hub what it keeps of each channel (`Namespaces.options_of`,
given to ``Hub.use_channel_options`` at start-up).

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
- `TOKEN` (subscribing only): connections that send a subscription token for the channel
  and their user (``tokens.py``; minted by the application, Centrifugo's claims). A token
  sent to a namespace with another rule is checked too (a bad one is refused) but grants
  nothing that rule does not;
- an async function of a `ChannelRequest` that returns True to allow.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from .broadcast import ChannelOptions

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
    TOKEN = "token"


ANYONE: Final = Allow.ANYONE
AUTHENTICATED: Final = Allow.AUTHENTICATED
USER_LIMITED: Final = Allow.USER_LIMITED
SUBSCRIBERS: Final = Allow.SUBSCRIBERS
NOBODY: Final = Allow.NOBODY
TOKEN: Final = Allow.TOKEN


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
    token: Mapping[str, Any] | None = None
    """The claims of the subscription token the client sent for the channel, verified
    (None: it sent none)."""


Decide: TypeAlias = Callable[[ChannelRequest], Awaitable[bool]]
Rule: TypeAlias = Allow | Decide


@dataclass(frozen=True, slots=True)
class Namespace:
    """The channels named ``name:...``, and what may be done on them.

    ``presence``: the hub keeps who is subscribed, and clients may ask (``presence``,
    ``presence_stats``); ``join_leave``: subscribers are told who comes and goes;
    ``history``: the hub keeps the channel's last messages, for clients to read and to
    recover what they missed on a reconnect: ``history_size`` of them (None: the service's
    ``HISTORY_SIZE``) for ``history_ttl`` seconds after the last publish (None: its
    ``HISTORY_TTL_SECONDS``). The service's settings can turn presence and join and leave
    events off everywhere (``PRESENCE_ENABLED``, ``JOIN_LEAVE_EVENTS``).

    ``personal``: every connection with a user is subscribed by the server, at connect, to
    its user's channel of this namespace, ``name:#<user>`` (a server-side subscription,
    recovered on reconnect like the others); what is sent to the user goes there
    (`Namespaces.personal_channels`). Only that user may subscribe to it: the subscribe
    rule is `USER_LIMITED` or `NOBODY`.
    """

    name: str
    subscribe: Rule = AUTHENTICATED
    publish: Rule = NOBODY
    presence: bool = False
    join_leave: bool = False
    history: bool = True
    history_size: int | None = None
    history_ttl: float | None = None
    personal: bool = False

    def __post_init__(self) -> None:
        if NAMESPACE_SEPARATOR in self.name or USERS_SEPARATOR in self.name:
            raise ValueError(
                f"The namespace name {self.name!r} may not contain "
                f"{NAMESPACE_SEPARATOR!r} or {USERS_SEPARATOR!r}."
            )
        if self.history_size is not None and self.history_size < 1:
            raise ValueError(
                f"The namespace {self.name!r} keeps a history of {self.history_size}: "
                "give at least 1, or history=False for none."
            )
        if self.history_ttl is not None and not self.history_ttl > 0:
            raise ValueError(f"The namespace {self.name!r} needs a history_ttl over 0 seconds.")
        if self.join_leave and not self.presence:
            raise ValueError(
                f"The namespace {self.name!r} has join_leave without presence: join and "
                "leave events come with presence; set presence=True too."
            )
        if self.subscribe is SUBSCRIBERS:
            raise ValueError(
                f"The namespace {self.name!r} lets SUBSCRIBERS subscribe, which nobody can "
                "be first: choose ANYONE, AUTHENTICATED, USER_LIMITED, TOKEN, NOBODY or a "
                "function."
            )
        if self.publish is TOKEN:
            raise ValueError(
                f"The namespace {self.name!r} lets TOKEN publish: subscription tokens grant "
                "subscribing; choose SUBSCRIBERS (those the token let in), or another rule."
            )
        if self.personal and self.subscribe not in (USER_LIMITED, NOBODY):
            raise ValueError(
                f"The namespace {self.name!r} is personal, but lets others than the user "
                "subscribe to a user's channel: give subscribe=USER_LIMITED (or NOBODY)."
            )

    @property
    def options(self) -> ChannelOptions:
        """What the hub keeps of this namespace's channels."""
        return ChannelOptions(
            self.history_size if self.history else 0,
            self.history_ttl,
            self.presence,
            self.join_leave,
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

    def options_of(self, channel: str) -> ChannelOptions | None:
        """What the hub keeps of ``channel`` (None: a channel of no namespace, such as a
        broadcast endpoint's path, keeps the hub's settings)."""
        namespace = self.find(channel)
        if namespace is None:
            return None
        return namespace.options

    def personal_channels(self, user: str) -> list[str]:
        """``user``'s channels of the personal namespaces (``user:#alice``): where what is
        sent to the user goes. None for an anonymous user, or a name no channel can hold
        (a ``,``, or not printable ASCII)."""
        if not user or "," in user:
            return []
        channels = [
            f"{name}{NAMESPACE_SEPARATOR}{USERS_SEPARATOR}{user}"
            if name
            else USERS_SEPARATOR + user
            for name, namespace in self._by_name.items()
            if namespace.personal
        ]
        return [channel for channel in channels if valid_channel(channel)]

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
    if rule is TOKEN:
        return request.token is not None
    assert not isinstance(rule, Allow)
    return bool(await rule(request))
