"""Token lifetimes on a channels endpoint, in raw protocol on a real uvicorn: connection tokens
that expire and are refreshed, subscription tokens (the ``TOKEN`` rule), ``sub_refresh``, and
every refusal with the code Centrifugo answers it with."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest

from ..asgi_types import Receive, Scope, Send
from ..broadcast import MemoryHub
from ..centrifuge_protocol import ChannelsConfig
from ..namespaces import AUTHENTICATED, TOKEN, USER_LIMITED, ChannelRequest, Namespace, Namespaces
from ..session import SessionSocket
from ..tokens import TokenSigner, TokenVerifier
from .channels_server import RawClient, raw_client, serve_channels

SECRET = "s" * 32
SIGNER = TokenSigner(SECRET)
GRACE = 0.3  # expired_close_delay: seconds past exp before the server ends what expired


async def gold_members(request: ChannelRequest) -> bool:
    """A rule that reads the subscription token's claims."""
    return request.token is not None and request.token.get("level") == "gold"


NAMESPACES = Namespaces(
    [
        Namespace("private", subscribe=TOKEN),
        Namespace("chat", subscribe=AUTHENTICATED),
        Namespace("user", subscribe=USER_LIMITED),
        Namespace("vip", subscribe=gold_members),
    ]
)


def expired(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode({**claims, "exp": int(time.time()) - 10}, key, "HS256")


@pytest.fixture
async def url(
    web_socket_class: Callable[[Scope, Receive, Send], SessionSocket],
) -> AsyncIterator[str]:
    config = ChannelsConfig(NAMESPACES, tokens=TokenVerifier(SECRET), expired_close_delay=GRACE)
    async with (
        MemoryHub(history_size=10) as hub,
        serve_channels(web_socket_class, hub, config) as served,
    ):
        yield served


async def connected(
    url: str, stack: contextlib.AsyncExitStack, user: str = "alice", ttl: float = 600
) -> RawClient:
    client = await stack.enter_async_context(raw_client(url))
    await client.connect(token=SIGNER.connection_token(user, ttl))
    return client


# Connection tokens


async def test_a_token_with_exp_gives_expires_and_ttl_and_refresh_renews_it(url: str) -> None:
    async with raw_client(url) as client:
        result = await client.connect(token=SIGNER.connection_token("alice", 60))
        assert result["expires"] is True
        assert 58 <= result["ttl"] <= 60, result
        reply = await client.call("refresh", {"token": SIGNER.connection_token("alice", 3600)})
        assert reply["refresh"]["expires"] is True
        assert 3598 <= reply["refresh"]["ttl"] <= 3600, reply
        forever = jwt.encode({"sub": "alice"}, SECRET, "HS256")
        assert (await client.call("refresh", {"token": forever}))["refresh"] == {}
    async with raw_client(url) as client:
        assert "expires" not in await client.connect(token=forever)


async def test_a_connection_not_refreshed_in_time_is_closed_with_3005(url: str) -> None:
    async with raw_client(url) as lapsing, raw_client(url) as renewing:
        await lapsing.connect(token=SIGNER.connection_token("alice", 1))
        result = await renewing.connect(token=SIGNER.connection_token("bob", 1))
        assert result["ttl"] in (1, 2), result
        reply = await renewing.call("refresh", {"token": SIGNER.connection_token("bob", 60)})
        assert reply["refresh"]["ttl"] >= 59, reply
        started = time.monotonic()
        assert await lapsing.closed() == (3005, "connection expired")
        assert time.monotonic() - started >= GRACE  # not before exp and the grace
        assert await renewing.alive()


@pytest.mark.parametrize(
    ("token", "close"),
    [
        (lambda: expired({"sub": "alice"}), (3005, "connection expired")),
        (lambda: SIGNER.connection_token("bob", 60), (3500, "invalid token")),
        (lambda: TokenSigner("k" * 32).connection_token("alice", 60), (3500, "invalid token")),
        (lambda: "", (3501, "bad request")),
    ],
    ids=["expired", "another-user", "another-key", "no-token"],
)
async def test_a_refresh_with_a_bad_token_closes_the_connection(
    url: str, token: Callable[[], str], close: tuple[int, str]
) -> None:
    async with raw_client(url) as client:
        await client.connect(token=SIGNER.connection_token("alice", 60))
        await client.send("refresh", {"token": token()})
        assert await client.closed() == close


async def test_refresh_is_not_available_on_an_endpoint_without_tokens(
    web_socket_class: Callable[[Scope, Receive, Send], SessionSocket],
) -> None:
    config = ChannelsConfig(NAMESPACES, anonymous=True)
    async with (
        MemoryHub() as hub,
        serve_channels(web_socket_class, hub, config) as served,
        raw_client(served) as client,
    ):
        await client.connect()
        reply = await client.call("refresh", {"token": SIGNER.connection_token("", 60)})
        assert reply["error"] == {"code": 108, "message": "not available"}, reply


# Subscription tokens


async def test_a_token_namespace_takes_a_subscription_token_for_the_channel_and_user(
    url: str,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        alice = await connected(url, stack)
        reply = await alice.call("subscribe", {"channel": "private:plans"})
        assert reply["error"] == {"code": 103, "message": "permission denied"}, reply
        token = SIGNER.subscription_token("alice", "private:plans", 60)
        reply = await alice.call("subscribe", {"channel": "private:plans", "token": token})
        result = reply["subscribe"]
        assert result["expires"] is True
        assert 58 <= result["ttl"] <= 60, result
        bob = await connected(url, stack, "bob")
        await bob.send("subscribe", {"channel": "private:plans", "token": token})
        assert await bob.closed() == (3500, "invalid token")


@pytest.mark.parametrize(
    ("token", "answer"),
    [
        (lambda: SIGNER.subscription_token("alice", "private:other", 60), (3500, "invalid token")),
        (lambda: SIGNER.subscription_token("bob", "private:plans", 60), (3500, "invalid token")),
        (
            lambda: SIGNER.subscription_token(
                "alice", "private:plans", 60, client="another-connection"
            ),
            (3500, "invalid token"),
        ),
        (lambda: SIGNER.connection_token("alice", 60), (3500, "invalid token")),
        (
            lambda: TokenSigner("k" * 32).subscription_token("alice", "private:plans", 60),
            {"code": 103, "message": "permission denied"},
        ),
        (
            lambda: jwt.encode({"sub": "alice", "channel": "private:plans"}, "", "none"),
            {"code": 103, "message": "permission denied"},
        ),
        (
            lambda: expired({"sub": "alice", "channel": "private:plans"}),
            {"code": 109, "message": "token expired"},
        ),
    ],
    ids=[
        "another-channel",
        "another-user",
        "another-connection",
        "a-connection-token",
        "another-key",
        "unsigned",
        "expired",
    ],
)
async def test_a_bad_subscription_token_is_refused_with_centrifugo_s_code(
    url: str, token: Callable[[], str], answer: tuple[int, str] | dict[str, Any]
) -> None:
    """(The tokens are made as the test runs: they expire.)"""
    async with raw_client(url) as client:
        await client.connect(token=SIGNER.connection_token("alice", 60))
        if isinstance(answer, tuple):  # a close: the SDK does not reconnect
            await client.send("subscribe", {"channel": "private:plans", "token": token()})
            assert await client.closed() == answer
            return
        reply = await client.call("subscribe", {"channel": "private:plans", "token": token()})
        assert reply["error"] == answer, reply
        assert await client.alive()


async def test_a_token_for_another_namespace_is_checked_but_does_not_replace_its_rule(
    url: str,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        alice = await connected(url, stack)
        bad = TokenSigner("k" * 32).subscription_token("alice", "chat:a", 60)
        reply = await alice.call("subscribe", {"channel": "chat:a", "token": bad})
        assert reply["error"]["code"] == 103, reply
        good = SIGNER.subscription_token("alice", "user:#bob", 60)
        reply = await alice.call("subscribe", {"channel": "user:#bob", "token": good})
        assert reply["error"]["code"] == 103, reply  # USER_LIMITED still decides
        good = SIGNER.subscription_token("alice", "chat:a", 60)
        reply = await alice.call("subscribe", {"channel": "chat:a", "token": good})
        assert reply["subscribe"]["expires"] is True, reply
        silver = SIGNER.subscription_token("alice", "vip:x", 60, level="silver")
        reply = await alice.call("subscribe", {"channel": "vip:x", "token": silver})
        assert reply["error"]["code"] == 103, reply
        gold = SIGNER.subscription_token("alice", "vip:x", 60, level="gold")
        assert "subscribe" in await alice.call("subscribe", {"channel": "vip:x", "token": gold})


async def test_sub_refresh_renews_a_subscription_token_and_refuses_bad_ones(url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        alice = await connected(url, stack)
        token = SIGNER.subscription_token("alice", "private:plans", 60)
        await alice.call("subscribe", {"channel": "private:plans", "token": token})
        renewed = SIGNER.subscription_token("alice", "private:plans", 600)
        reply = await alice.call("sub_refresh", {"channel": "private:plans", "token": renewed})
        assert reply["sub_refresh"]["expires"] is True
        assert 598 <= reply["sub_refresh"]["ttl"] <= 600, reply
        late = expired({"sub": "alice", "channel": "private:plans"})
        reply = await alice.call("sub_refresh", {"channel": "private:plans", "token": late})
        assert reply["error"] == {"code": 110, "message": "expired"}, reply
        reply = await alice.call("sub_refresh", {"channel": "private:plans", "token": ""})
        assert reply["error"]["code"] == 107, reply
        other = SIGNER.subscription_token("alice", "private:other", 60)
        reply = await alice.call("sub_refresh", {"channel": "private:other", "token": other})
        assert reply["error"] == {"code": 103, "message": "permission denied"}, reply
        await alice.send("sub_refresh", {"channel": "private:plans", "token": other})
        assert await alice.closed() == (3500, "invalid token")


async def test_a_subscription_never_refreshed_gets_the_2501_push_the_others_go_on(
    url: str,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        alice = await connected(url, stack)
        for channel in ("private:lapsing", "private:renewed"):
            token = SIGNER.subscription_token("alice", channel, 1)
            reply = await alice.call("subscribe", {"channel": channel, "token": token})
            assert reply["subscribe"]["ttl"] in (1, 2), reply
        renewed = SIGNER.subscription_token("alice", "private:renewed", 60)
        reply = await alice.call("sub_refresh", {"channel": "private:renewed", "token": renewed})
        assert "sub_refresh" in reply, reply
        started = time.monotonic()
        assert await alice.next() == {
            "push": {
                "channel": "private:lapsing",
                "unsubscribe": {"code": 2501, "reason": "subscription expired"},
            }
        }
        assert time.monotonic() - started >= GRACE
        await asyncio.sleep(2 * GRACE)
        reply = await alice.call("history", {"channel": "private:lapsing"})
        assert reply["error"]["code"] == 103, reply  # no longer subscribed
        assert "history" in await alice.call("history", {"channel": "private:renewed"})
        again = SIGNER.subscription_token("alice", "private:lapsing", 60)
        reply = await alice.call("subscribe", {"channel": "private:lapsing", "token": again})
        assert "subscribe" in reply, reply
