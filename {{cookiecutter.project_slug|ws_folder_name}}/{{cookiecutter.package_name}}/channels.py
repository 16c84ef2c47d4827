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

``TOKEN`` lets in a connection that sends a subscription token for the channel and its
user: the service mints them at ``POST /api/tokens/subscription`` (``token_api.py``) for
the channels `grants_token` gives the user. A ``personal`` namespace subscribes every
connection with a user to the user's own channel at connect (``user:#alice``), whatever the
client asks. `RPC` holds the methods clients call with ``rpc`` (README, "Channels in a
browser").
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from . import __version__
from .settings import Settings, SettingsError
from .websocket.centrifuge_protocol import ChannelsConfig
from .websocket.namespaces import (
    ANYONE,
    AUTHENTICATED,
    NOBODY,
    SUBSCRIBERS,
    TOKEN,
    USER_LIMITED,
    ChannelRequest,
    Namespace,
    Namespaces,
    allows,
    channel_users,
)
from .websocket.rpc import RpcError, RpcMethods, RpcRequest
from .websocket.session import loads
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
        # Who may read is the application's call, made when it mints a subscription
        # token (grants_token, below); only the service publishes.
        Namespace("private", subscribe=TOKEN, publish=NOBODY, history=True),
        # One user's own channel, user:#<user>, every connection of the user is on from
        # the start: what the service tells them alone (POST /api/publish with "user").
        Namespace("user", subscribe=USER_LIMITED, publish=NOBODY, personal=True),
    ]
)


async def grants_token(request: ChannelRequest) -> bool:
    """Whether ``request.user`` may have a subscription token for ``request.channel`` (of a
    ``TOKEN`` namespace), asked by ``POST /api/tokens/subscription``.

    As generated, only the users the channel names after its ``#``: ``private:notes#alice``
    is alice's, ``private:plans#alice,bob`` theirs, and no channel without a ``#`` is
    anyone's. Put your application's check here (team membership, a subscription in your
    database...); ``request.identity`` is what auth.py returned for the request.
    """
    return request.user in channel_users(request.channel)


WHOAMI_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {"user": {"type": "string", "description": "The connection's user."}},
    "required": ["user"],
}
HISTORY_PAGE_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "channel": {"type": "string", "description": "A channel the user may subscribe to."},
        "before": {
            "type": "integer",
            "minimum": 1,
            "description": "The cursor: publications before this offset (none: the newest).",
        },
        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    },
    "required": ["channel"],
    "additionalProperties": False,
}
HISTORY_PAGE_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "publications": {
            "type": "array",
            "description": "Newest first.",
            "items": {
                "type": "object",
                "properties": {"offset": {"type": "integer"}, "data": {}},
                "required": ["offset", "data"],
            },
        },
        "epoch": {"type": "string"},
        "next": {
            "type": ["integer", "null"],
            "description": "The ``before`` of the next (older) page; null: this is the last.",
        },
    },
    "required": ["publications", "epoch", "next"],
}


RPC = RpcMethods()
"""The methods clients call with ``rpc`` (centrifuge-js ``centrifuge.rpc(method, data)``):
an async function of an `RpcRequest` each, whose ``params`` schema (JSON Schema) the data
must match (or the client gets error 107) and whose answer is the reply's data. Raise
``RpcError(code, message)`` (codes from 400 up) to refuse a call."""


@RPC.method("whoami", params={"type": "object"}, result=WHOAMI_RESULT)
async def whoami(request: RpcRequest) -> dict[str, str]:
    """Who the connection is: ``{"user": "alice"}``."""
    return {"user": request.user}


@RPC.method("history_page", params=HISTORY_PAGE_PARAMS, result=HISTORY_PAGE_RESULT)
async def history_page(request: RpcRequest) -> dict[str, Any]:
    """A page of a channel's history, newest first: ``limit`` publications before the
    offset ``before``, and ``next``, the cursor of the page after (older). Only for a user
    who may subscribe to the channel (error 403), of a namespace with history (404)."""
    channel: str = request.data["channel"]
    namespace = NAMESPACES.find(channel)
    if namespace is None or not namespace.history:
        raise RpcError(404, "no such channel with history")
    asked = ChannelRequest(channel, namespace, request.user, request.identity, False)
    rule = grants_token if namespace.subscribe is TOKEN else namespace.subscribe
    if not await allows(rule, asked):
        raise RpcError(403, "permission denied")
    before = request.data.get("before")
    top, history = await request.hub.history(channel)
    older = [p for p in history if before is None or p.offset < before]
    page = older[-request.data.get("limit", 20) :][::-1]
    publications = [{"offset": p.offset, "data": loads(p.text)["message"]} for p in page]
    more = bool(page) and older[0].offset < page[-1].offset
    return {
        "publications": publications,
        "epoch": top.epoch,
        "next": page[-1].offset if more else None,
    }


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
        rpc=RPC,
    )
