"""Token refresh and RPC of the vendored channels endpoint, driven by centrifuge-python.

The vendored backend's `run_channels` is served on a real uvicorn in this process (the
vendored tests' ``channels_server``), with short-lived tokens: the SDK we did not write must
renew its connection token and a subscription token through its ``get_token`` callbacks,
staying connected and subscribed, and call RPC methods, getting their results and refusals;
and, where its token could not be renewed in time, be closed with 3005, reconnect with a new
token and recover what its channel was sent meanwhile.
(The generated project's own wiring, a token route and its methods, is tested by the
project's tests and the browser tests.)
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from centrifuge import (  # type: ignore[import-untyped]  # it ships no types
    Client,
    ClientEventHandler,
    ConnectedContext,
    ConnectingContext,
    DisconnectedContext,
    PublicationContext,
    ReplyError,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)
from websocket.asgi import WebSocket  # the vendored backend
from websocket.broadcast import MemoryHub
from websocket.centrifuge_protocol import ChannelsConfig
from websocket.namespaces import TOKEN, Namespace, Namespaces
from websocket.rpc import RpcError, RpcMethods, RpcRequest
from websocket.tests.channels_server import serve_channels
from websocket.tokens import TokenSigner, TokenVerifier

SECRET = "ws-template-test-hmac-secret-0123456789"
SIGNER = TokenSigner(SECRET)
TTL = 2.0  # seconds a token lives: each is renewed about every TTL seconds
GRACE = 1.0  # past a token's exp, what was not renewed ends
WAIT = 10.0

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

RPC = RpcMethods()


@RPC.method("whoami", result={"type": "object", "required": ["user"]})
async def whoami(request: RpcRequest) -> dict[str, str]:
    return {"user": request.user}


@RPC.method("room", params={"type": "object", "required": ["name"]})
async def room(request: RpcRequest) -> None:
    raise RpcError(404, f"no room {request.data['name']}")


class Events(ClientEventHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.connected: list[str] = []
        self.connecting: list[int] = []
        self.disconnected: list[int] = []

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected.append(ctx.client)

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.connecting.append(ctx.code)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnected.append(ctx.code)


class SubscriptionEvents(SubscriptionEventHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.subscribed = 0
        self.recovered: list[bool] = []
        self.unsubscribed: list[int] = []
        self.publications: asyncio.Queue[Any] = asyncio.Queue()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed += 1
        self.recovered.append(ctx.recovered)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx.code)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.publications.put_nowait(ctx.pub.data)


async def scenario() -> None:
    namespaces = Namespaces([Namespace("private", subscribe=TOKEN)])
    config = ChannelsConfig(
        namespaces, tokens=TokenVerifier(SECRET), rpc=RPC, expired_close_delay=GRACE
    )
    asked: list[str] = []

    async def connection_token() -> str:
        asked.append("connection")
        return SIGNER.connection_token("alice", TTL)

    async def subscription_token(channel: str) -> str:
        asked.append(channel)
        return SIGNER.subscription_token("alice", channel, TTL)

    async with MemoryHub() as hub, serve_channels(WebSocket, hub, config) as url:
        events, sub_events = Events(), SubscriptionEvents()
        client = Client(url, events=events, get_token=connection_token, timeout=5.0)
        subscription = client.new_subscription(
            "private:plans", events=sub_events, get_token=subscription_token
        )
        await client.connect()
        await asyncio.wait_for(client.ready(), WAIT)
        await subscription.subscribe()
        await asyncio.wait_for(subscription.ready(), WAIT)
        await asyncio.sleep(3 * TTL + GRACE)  # three lifetimes: renewed, or ended
        assert asked.count("connection") >= 3, asked
        assert asked.count("private:plans") >= 3, asked
        assert len(events.connected) == 1, events.connected  # never reconnected
        assert events.disconnected == []
        assert (sub_events.subscribed, sub_events.unsubscribed) == (1, [])
        await hub.publish("private:plans", {"n": 1})
        assert await asyncio.wait_for(sub_events.publications.get(), WAIT) == {"n": 1}

        assert (await client.rpc("whoami", {})).data == {"user": "alice"}
        with pytest.raises(ReplyError) as refused:
            await client.rpc("room", {"name": "kitchen"})
        assert (refused.value.code, refused.value.message) == (404, "no room kitchen")
        with pytest.raises(ReplyError) as refused:
            await client.rpc("room", {"label": "kitchen"})
        assert refused.value.code == 107
        with pytest.raises(ReplyError) as refused:
            await client.rpc("nowhere", None)
        assert refused.value.code == 104
        assert (await client.rpc("whoami", None)).data == {"user": "alice"}  # still on
        await client.disconnect()


def test_the_python_sdk_renews_its_tokens_with_get_token_and_calls_rpc_methods() -> None:
    try:
        asyncio.run(scenario())
    finally:
        gc.collect()


async def until(condition: Any, what: str) -> None:
    for _ in range(int(WAIT / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} in {WAIT} s")


async def expiry_scenario() -> None:
    namespaces = Namespaces([Namespace("private", subscribe=TOKEN, history=True)])
    config = ChannelsConfig(namespaces, tokens=TokenVerifier(SECRET), expired_close_delay=GRACE)
    tokens_up = True  # the application's token service, which goes down for a while

    async def connection_token() -> str:
        if not tokens_up:
            raise ConnectionError("the token service is down")
        return SIGNER.connection_token("alice", TTL)

    async def subscription_token(channel: str) -> str:
        return SIGNER.subscription_token("alice", channel, 60)

    async with MemoryHub() as hub, serve_channels(WebSocket, hub, config) as url:
        events, sub_events = Events(), SubscriptionEvents()
        client = Client(url, events=events, get_token=connection_token, timeout=5.0)
        subscription = client.new_subscription(
            "private:plans", events=sub_events, get_token=subscription_token, recoverable=True
        )
        await client.connect()
        await asyncio.wait_for(client.ready(), WAIT)
        await subscription.subscribe()
        await asyncio.wait_for(subscription.ready(), WAIT)
        await hub.publish("private:plans", {"n": 1})
        assert await asyncio.wait_for(sub_events.publications.get(), WAIT) == {"n": 1}
        tokens_up = False  # no refresh: the connection outlives its token
        await until(lambda: 3005 in events.connecting, "close with 3005 (connection expired)")
        for number in (2, 3, 4):  # while alice cannot come back without a token
            await hub.publish("private:plans", {"n": number})
        tokens_up = True
        for number in (2, 3, 4):
            assert await asyncio.wait_for(sub_events.publications.get(), WAIT) == {"n": number}
        assert len(events.connected) == 2, events.connected  # back, with a new token
        assert sub_events.recovered == [False, True], sub_events.recovered
        assert sub_events.publications.empty()  # each once
        await client.disconnect()


def test_the_python_sdk_closed_past_its_token_s_exp_reconnects_with_a_new_one_and_recovers() -> (
    None
):
    try:
        asyncio.run(expiry_scenario())
    finally:
        gc.collect()
