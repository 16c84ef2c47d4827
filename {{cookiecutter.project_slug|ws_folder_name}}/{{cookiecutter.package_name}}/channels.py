"""The channels of the channels endpoint: its namespaces, and who may do what on them.

A channel's name is ``namespace:rest`` (``chat:lobby``, ``news:sport``); a channel of a
namespace not listed here is unknown (error 102). After a ``#`` come the users a
user-limited channel is for: ``user:#alice`` is alice's alone. Each namespace says who may
subscribe and who may publish from a client (the service itself publishes anywhere, and
``POST /api/publish`` too): ``ANYONE``, ``AUTHENTICATED`` (a user, from auth.py or a
connection token), ``USER_LIMITED`` (the users after the ``#``), ``SUBSCRIBERS`` (for
publishing), ``NOBODY``, or an async function of a `ChannelRequest` that returns True to
allow, for instance::

    async def team_members(request: ChannelRequest) -> bool:
        \"\"\"``team:<name>``: the teams auth.py (or the token's claims) lists for the user.\"\"\"
        teams = request.identity.get("teams", []) if isinstance(request.identity, dict) else []
        return request.channel.partition(":")[2] in teams

    Namespace("team", subscribe=team_members, publish=SUBSCRIBERS, presence=True)

``presence`` lets clients ask who is subscribed, ``join_leave`` tells subscribers who comes
and goes (with presence), ``history`` keeps the last messages for clients that recover
what they missed: ``history_size`` of them (the service's ``HISTORY_SIZE`` unless given)
for ``history_ttl`` seconds (``HISTORY_TTL_SECONDS``). The hub keeps no presence and no
history where a namespace asks for none. The namespaces are read at start-up: change them
here and restart (every process of the service with the same ones).
"""

from __future__ import annotations

from functools import lru_cache

from . import __version__
from .settings import Settings, SettingsError
from .websocket.centrifuge_protocol import ChannelsConfig
from .websocket.namespaces import (
    ANYONE,
    AUTHENTICATED,
    NOBODY,
    SUBSCRIBERS,
    USER_LIMITED,
    Namespace,
    Namespaces,
)
from .websocket.tokens import TokenVerifier

NAMESPACES = Namespaces(
    [
        # Signed-in users talk; each sees who is there and who comes and goes.
        Namespace(
            "chat",
            subscribe=AUTHENTICATED,
            publish=SUBSCRIBERS,
            presence=True,
            join_leave=True,
            history=True,
        ),
        # Anyone reads; only the service publishes (POST /api/publish, hub.publish).
        Namespace("news", subscribe=ANYONE, publish=NOBODY, history=True),
        # One user's own channel, user:#<user>: for what the service tells them alone.
        Namespace("user", subscribe=USER_LIMITED, publish=NOBODY),
    ]
)


@lru_cache(maxsize=1)
def channels_config(settings: Settings) -> ChannelsConfig:
    """What the channels endpoint serves, from the namespaces and the settings (built once
    for the settings of the process; a key that cannot be used is a SettingsError)."""
    try:
        tokens = TokenVerifier(settings.token_hmac_secret_key, settings.token_public_key)
    except ValueError as error:
        raise SettingsError(f"TOKEN_PUBLIC_KEY or TOKEN_HMAC_SECRET_KEY: {error}") from None
    return ChannelsConfig(
        NAMESPACES,
        tokens=tokens,
        anonymous=settings.anonymous_connections,
        max_channels=settings.max_channels_per_connection,
        version=__version__,
        commands_per_second=settings.messages_per_second,  # a frame may carry many commands
        command_burst=settings.message_burst,
    )
