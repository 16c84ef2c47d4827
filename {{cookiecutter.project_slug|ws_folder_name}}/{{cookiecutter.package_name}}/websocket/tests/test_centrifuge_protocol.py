"""The Centrifuge client protocol of ``channels`` endpoints, spoken as raw JSON on each face.

The SDKs themselves (centrifuge-js, centrifuge-python) are the template's own tests' clients;
here each rule of the protocol is held on its own, on a `MemoryHub` (the protocol never knows
which hub runs), with a scripted client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import jwt
import pytest

from ..asgi_types import Message
from ..broadcast import MemoryHub
from ..centrifuge_protocol import ChannelsConfig, ChannelsSocket, run_channels
from ..namespaces import (
    ANYONE,
    AUTHENTICATED,
    NOBODY,
    SUBSCRIBERS,
    USER_LIMITED,
    ChannelRequest,
    Namespace,
    Namespaces,
)
from ..testing import ScriptedClient
from ..tokens import TokenVerifier
from .conftest import SocketFactory

SECRET = "s" * 32


async def refuse_everyone_but_carol(request: ChannelRequest) -> bool:
    return request.user == "carol"


async def broken_rule(request: ChannelRequest) -> bool:
    raise LookupError("the rule's database is down")


NAMESPACES = Namespaces(
    [
        Namespace(
            "chat", subscribe=AUTHENTICATED, publish=SUBSCRIBERS, presence=True, join_leave=True
        ),
        Namespace("news", subscribe=ANYONE, publish=NOBODY),
        Namespace("user", subscribe=USER_LIMITED, publish=NOBODY),
        Namespace("vip", subscribe=refuse_everyone_but_carol),
        Namespace("broken", subscribe=broken_rule),
        Namespace("nohistory", subscribe=ANYONE, history=False),
    ]
)


def config(**options: Any) -> ChannelsConfig:
    return ChannelsConfig(NAMESPACES, tokens=TokenVerifier(SECRET), version="1.2.3", **options)


class Session:
    """One scripted connection served by `run_channels`, with helpers to speak JSON."""

    def __init__(self, client: ScriptedClient, task: asyncio.Task[None]) -> None:
        self.client = client
        self.task = task
        self.next_id = 0
        self.backlog: list[Any] = []

    def send(self, *commands: dict[str, Any]) -> list[int]:
        """Send ``commands`` in one frame, each given the next id unless it has one."""
        ids = []
        lines = []
        for command in commands:
            if "id" not in command and command:
                self.next_id += 1
                command = {"id": self.next_id, **command}
            ids.append(command.get("id", 0))
            lines.append(json.dumps(command))
        self.client.send_text("\n".join(lines))
        return ids

    async def frame(self) -> list[Any]:
        """The next frame the server sent, as its JSON values (one per line)."""
        message = await self.client.next_sent()
        while message["type"] == "websocket.accept":
            message = await self.client.next_sent()
        assert message["type"] == "websocket.send", message
        return [json.loads(line) for line in message["text"].split("\n")]

    async def one(self) -> Any:
        if self.backlog:
            return self.backlog.pop(0)
        (value,) = await self.frame()
        return value

    async def call(self, method: str, body: dict[str, Any]) -> Any:
        """The reply to one command; pushes that come first wait for `one`."""
        (id_,) = self.send({method: body})
        while True:
            for value in await self.frame():
                if value.get("id") == id_:
                    return value
                self.backlog.append(value)

    async def closed(self) -> Message:
        """The close the server sent (after whatever else it sent first, returned too)."""
        while True:
            message = await self.client.next_sent()
            if message["type"] == "websocket.close":
                await asyncio.wait_for(self.task, 5)
                return message

    async def connect(self, **body: Any) -> Any:
        reply = await self.call("connect", body)
        assert "connect" in reply, reply
        return reply["connect"]

    async def subscribe(self, channel: str, **body: Any) -> Any:
        return await self.call("subscribe", {"channel": channel, **body})


@pytest.fixture
async def hub() -> AsyncIterator[MemoryHub]:
    async with MemoryHub(4, history_size=10) as hub:
        yield hub


@pytest.fixture
async def open_session(
    make_socket: SocketFactory, hub: MemoryHub, delivery_path: str
) -> AsyncIterator[Any]:
    # Each scripted session runs on every delivery path (conftest.DELIVERY_PATHS): a push
    # queued for the writer's task, or sent at once from the hub's delivery.
    sessions: list[Session] = []

    async def open_(
        user: object = "alice", channels: ChannelsConfig | None = None, queue: int = 0
    ) -> Session:
        client = ScriptedClient("/connection/websocket")
        client.scope["user"] = user
        websocket = cast(ChannelsSocket, make_socket(client))
        task = asyncio.create_task(run_channels(websocket, hub, channels or config()))
        session = Session(client, task)
        sessions.append(session)
        return session

    yield open_
    for session in sessions:
        if not session.task.done():
            session.client.disconnect()
            await asyncio.wait_for(session.task, 5)


# Connecting


async def test_connect_answers_the_client_id_version_and_ping_interval(open_session: Any) -> None:
    session = await open_session()
    result = await session.connect()
    assert result["version"] == "1.2.3"
    assert (result["ping"], result["pong"]) == (25, True)
    assert len(result["client"]) == 36, result


async def test_a_connection_without_user_is_refused_unless_anonymous_ones_are_allowed(
    open_session: Any,
) -> None:
    refused = await open_session(user=None)
    reply = await refused.call("connect", {})
    assert reply["error"] == {"code": 101, "message": "unauthorized"}, reply
    welcome = await open_session(user=None, channels=config(anonymous=True))
    assert "client" in await welcome.connect()
    assert (await welcome.subscribe("news:today"))["subscribe"]["offset"] == 0
    reply = await welcome.subscribe("chat:lobby")
    assert reply["error"]["code"] == 103, reply


async def test_a_token_names_the_user_an_expired_one_asks_for_another(open_session: Any) -> None:
    session = await open_session(user=None)
    expired = jwt.encode({"sub": "bob", "exp": int(time.time()) - 10}, SECRET, "HS256")
    reply = await session.call("connect", {"token": expired})
    assert reply["error"] == {"code": 109, "message": "token expired"}, reply
    token = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, SECRET, "HS256")
    await session.connect(token=token)
    assert "subscribe" in await session.subscribe("user:#bob")
    assert (await session.subscribe("user:#alice"))["error"]["code"] == 103


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode({"sub": "bob"}, "another key of thirty-two bytes!!", "HS256"),
        jwt.encode({"sub": "bob"}, "", "none"),
        "not.a.token",
        jwt.encode({"sub": 42}, SECRET, "HS256"),
    ],
    ids=["another-key", "alg-none", "garbage", "sub-not-a-string"],
)
async def test_a_token_that_cannot_be_trusted_closes_with_3500(
    open_session: Any, token: str
) -> None:
    session = await open_session(user=None)
    session.send({"connect": {"token": token}})
    close = await session.closed()
    assert (close["code"], close["reason"]) == (3500, "invalid token"), close


async def test_tokens_are_refused_while_the_service_has_no_key(open_session: Any) -> None:
    session = await open_session(channels=ChannelsConfig(NAMESPACES))
    session.send({"connect": {"token": jwt.encode({"sub": "bob"}, SECRET, "HS256")}})
    assert (await session.closed())["code"] == 3500


# Breaking the protocol: each a close with 3501, the service unharmed


@pytest.mark.parametrize(
    "frame",
    [
        '{"id":1,"subscribe":{"channel":"news:x"}}',
        "{not json",
        '{"id":1,"connect":',
        "[1,2]",
        '{"id":"1","connect":{}}',
        '{"id":1.5,"connect":{}}',
        '{"id":-1,"connect":{}}',
        '{"id":1,"connect":[]}',
        '{"id":1,"connect":{"token":5}}',
        '{"id":1}',
        '{"connect":{}}',
        "\n\n\n",
        "{}",
    ],
    ids=[
        "subscribe-before-connect",
        "garbage",
        "truncated",
        "an-array",
        "string-id",
        "float-id",
        "negative-id",
        "body-not-an-object",
        "token-not-a-string",
        "no-method",
        "no-id",
        "only-newlines",
        "pong-without-ping",
    ],
)
async def test_a_broken_command_closes_with_3501(open_session: Any, frame: str) -> None:
    session = await open_session()
    session.client.send_text(frame)
    close = await session.closed()
    assert (close["code"], close["reason"]) == (3501, "bad request"), close


async def test_after_connect_wrong_types_connect_twice_and_binary_close_with_3501(
    open_session: Any,
) -> None:
    for breaking in (
        '{"id":9,"connect":{}}',
        '{"id":9,"subscribe":{"channel":7}}',
        '{"id":9,"subscribe":{"channel":"news:a","recover":"yes"}}',
        '{"id":9,"history":{"channel":"news:a","limit":"10"}}',
        None,
    ):
        session = await open_session()
        await session.connect()
        if breaking is None:
            session.client.send_bytes(b"\x00")
        else:
            session.client.send_text(breaking)
        assert (await session.closed())["code"] == 3501, breaking


async def test_ten_thousand_commands_in_one_frame_close_with_3501(open_session: Any) -> None:
    session = await open_session()
    await session.connect()
    frame = "\n".join(
        json.dumps({"id": n, "presence": {"channel": "chat:x"}}) for n in range(2, 10_002)
    )
    session.client.send_text(frame)
    assert (await session.closed())["code"] == 3501


# Subscriptions


async def test_commands_of_one_frame_are_answered_in_order_in_one_frame(
    open_session: Any, hub: MemoryHub
) -> None:
    await hub.publish("news:a", {"n": 1})
    session = await open_session()
    ids = session.send(
        {"connect": {}},
        {"subscribe": {"channel": "news:a"}},
        {"subscribe": {"channel": "news:b"}},
    )
    replies = await session.frame()
    assert [reply["id"] for reply in replies] == ids
    assert replies[1]["subscribe"]["offset"] == 1
    assert replies[1]["subscribe"]["recoverable"] is True
    assert replies[2]["subscribe"]["offset"] == 0


async def test_messages_published_reach_every_subscriber_as_pub_pushes(
    open_session: Any, hub: MemoryHub
) -> None:
    sessions = [await open_session() for _ in range(3)]
    for session in sessions:
        await session.connect()
        await session.subscribe("news:a")
        await session.subscribe("news:b")
    await hub.publish("news:a", {"n": 1})
    await hub.publish("news:b", {"n": 2})
    for session in sessions:
        assert await session.one() == {
            "push": {"channel": "news:a", "pub": {"data": {"n": 1}, "offset": 1}}
        }
        assert await session.one() == {
            "push": {"channel": "news:b", "pub": {"data": {"n": 2}, "offset": 1}}
        }


async def test_subscribe_refusals_carry_their_codes_and_the_connection_goes_on(
    open_session: Any, caplog: pytest.LogCaptureFixture
) -> None:
    session = await open_session(channels=config(max_channels=3))
    await session.connect()
    assert (await session.subscribe("nowhere:x"))["error"]["code"] == 102
    assert (await session.subscribe("no-namespace"))["error"]["code"] == 102
    assert (await session.subscribe("/ws/rooms/a"))["error"]["code"] == 102
    assert (await session.subscribe("user:#bob"))["error"]["code"] == 103
    assert (await session.subscribe("vip:lounge"))["error"]["code"] == 103
    assert (await session.subscribe("news:" + "x" * 251))["error"]["code"] == 106
    with caplog.at_level(logging.ERROR):
        reply = await session.subscribe("broken:x")
    assert reply["error"] == {"code": 100, "message": "internal server error", "temporary": True}
    assert "LookupError" in caplog.text
    assert "subscribe" in await session.subscribe("news:1")
    assert (await session.subscribe("news:1"))["error"]["code"] == 105
    assert "subscribe" in await session.subscribe("news:2")
    assert "subscribe" in await session.subscribe("user:#alice")
    assert (await session.subscribe("news:4"))["error"] == {
        "code": 106,
        "message": "limit exceeded",
    }
    assert "unsubscribe" in await session.call("unsubscribe", {"channel": "news:1"})
    assert "subscribe" in await session.subscribe("news:4")


async def test_a_publish_is_answered_before_its_publication_reaches_the_publisher(
    open_session: Any,
) -> None:
    # On every delivery path: a publication that comes while its command is being answered
    # waits for the reply (a raw client reads the reply first, as the quick start does).
    alice = await open_session("alice")
    await alice.connect()
    await alice.subscribe("chat:lobby")
    for number in range(3):
        (id_,) = alice.send({"publish": {"channel": "chat:lobby", "data": {"n": number}}})
        assert await alice.frame() == [{"id": id_, "publish": {}}]
        (push,) = await alice.frame()
        assert push["push"]["pub"]["data"] == {"n": number}, push


async def test_a_client_publishes_where_allowed_and_the_server_says_who(
    open_session: Any,
) -> None:
    alice, bob = await open_session("alice"), await open_session("bob")
    alice_id = (await alice.connect())["client"]
    await bob.connect()
    reply = await alice.call("publish", {"channel": "chat:lobby", "data": {"text": "hi"}})
    assert reply["error"]["code"] == 103, reply  # not subscribed yet
    await alice.subscribe("chat:lobby")
    await bob.subscribe("chat:lobby")
    join = await alice.one()
    assert join["push"]["join"]["info"]["user"] == "bob", join
    forged = {"text": "hi", "info": {"user": "mallory"}}
    assert (await alice.call("publish", {"channel": "chat:lobby", "data": forged}))["publish"] == {}
    for session in (alice, bob):
        pub = (await session.one())["push"]["pub"]
        assert pub == {"data": forged, "info": {"user": "alice", "client": alice_id}, "offset": 1}
    reply = await alice.call("publish", {"channel": "news:a", "data": {"text": "hi"}})
    assert reply["error"]["code"] == 103, reply
    reply = await alice.call("publish", {"channel": "chat:lobby", "data": "text"})
    assert reply["error"]["code"] == 107, reply


async def test_a_resubscription_recovers_what_it_missed_in_its_reply(
    open_session: Any, hub: MemoryHub
) -> None:
    session = await open_session()
    await session.connect()
    first = (await session.subscribe("news:a"))["subscribe"]
    await hub.publish("news:a", {"n": 1})
    assert (await session.one())["push"]["pub"]["offset"] == 1
    await session.call("unsubscribe", {"channel": "news:a"})
    for number in (2, 3, 4):
        await hub.publish("news:a", {"n": number})
    reply = await session.subscribe("news:a", recover=True, offset=1, epoch=first["epoch"])
    result = reply["subscribe"]
    assert (result["recovered"], result["was_recovering"], result["offset"]) == (True, True, 4)
    assert [pub["data"]["n"] for pub in result["publications"]] == [2, 3, 4]
    assert [pub["offset"] for pub in result["publications"]] == [2, 3, 4]
    await hub.publish("news:a", {"n": 5})
    assert (await session.one())["push"]["pub"]["offset"] == 5
    await session.call("unsubscribe", {"channel": "news:a"})
    reply = await session.subscribe("news:a", recover=True, offset=1, epoch="another")
    result = reply["subscribe"]
    assert (result["recovered"], result["offset"]) == (False, 5), result
    assert "publications" not in result


class LateHub(MemoryHub):
    """A hub whose channel gets a message while a subscription waits for its position (as a
    Redis hub's may: its position comes a round trip later)."""

    async def subscribe(self, channel: str, *args: Any, **kwargs: Any) -> Any:
        subscription = await super().subscribe(channel, *args, **kwargs)
        await self.publish(channel, {"late": True})
        return subscription


async def test_an_unrecovered_subscription_gets_no_publication_in_its_reply(
    make_socket: SocketFactory,
) -> None:
    async with LateHub(history_size=10) as hub:
        for number in range(1, 4):
            await hub.publish("news:a", {"n": number})
        client = ScriptedClient("/connection/websocket")
        client.scope["user"] = "alice"
        websocket = cast(ChannelsSocket, make_socket(client))
        session = Session(client, asyncio.create_task(run_channels(websocket, hub, config())))
        await session.connect()
        reply = await session.subscribe("news:a", recover=True, offset=2, epoch="lost")
        result = reply["subscribe"]
        assert (result["recovered"], result["offset"]) == (False, 3), result
        assert "publications" not in result  # a client reloads its state at offset 3
        late = await session.one()
        assert late["push"]["pub"] == {"data": {"late": True}, "offset": 4}
        reply = await session.subscribe("news:b", recover=True, offset=0, epoch="")
        assert reply["subscribe"]["recovered"] is False, reply
        session.client.disconnect()
        await asyncio.wait_for(session.task, 5)


async def test_a_subscriber_that_missed_messages_is_told_to_subscribe_again(
    open_session: Any, hub: MemoryHub
) -> None:
    session = await open_session()
    await session.connect()
    epoch = (await session.subscribe("news:a"))["subscribe"]["epoch"]
    await hub.publish("news:a", {"n": 1})
    assert (await session.one())["push"]["pub"]["offset"] == 1
    session.client.stop_reading()
    for number in range(2, 12):  # a queue of 4: the oldest are dropped
        await hub.publish("news:a", {"n": number})
    session.client.resume_reading()
    seen = 1  # what came before the gap (taken, not yet sent, when the client stopped)
    while "pub" in (push := (await session.one())["push"]):
        assert push["pub"]["offset"] == seen + 1
        seen += 1
    assert push == {
        "channel": "news:a",
        "unsubscribe": {"code": 2500, "reason": "insufficient state"},
    }
    reply = await session.subscribe("news:a", recover=True, offset=seen, epoch=epoch)
    assert reply["subscribe"]["recovered"] is True, reply
    assert [pub["offset"] for pub in reply["subscribe"]["publications"]] == list(
        range(seen + 1, 12)
    )
    sent_at_once = session.client.sent_at_once
    await hub.publish("news:a", {"n": 12})
    assert (await session.one())["push"]["pub"]["offset"] == 12
    if ScriptedClient.sends_now_by_default:  # caught up: sent at once again, no task woken
        assert session.client.sent_at_once == sent_at_once + 1


async def test_history_reads_with_limit_since_and_reverse(
    open_session: Any, hub: MemoryHub
) -> None:
    for number in range(1, 8):
        await hub.publish("news:a", {"n": number})
    session = await open_session()
    await session.connect()
    assert (await session.call("history", {"channel": "news:a"}))["error"]["code"] == 103
    epoch = (await session.subscribe("news:a"))["subscribe"]["epoch"]

    async def offsets(**request: Any) -> list[int]:
        result = (await session.call("history", {"channel": "news:a", **request}))["history"]
        assert (result["offset"], result["epoch"]) == (7, epoch), result
        return [pub["offset"] for pub in result["publications"]]

    assert await offsets() == []
    assert await offsets(limit=-1) == [1, 2, 3, 4, 5, 6, 7]
    assert await offsets(limit=3) == [1, 2, 3]
    assert await offsets(limit=3, reverse=True) == [7, 6, 5]
    assert await offsets(limit=2, since={"offset": 4, "epoch": epoch}) == [5, 6]
    assert await offsets(limit=2, since={"offset": 4, "epoch": epoch}, reverse=True) == [3, 2]
    reply = await session.call(
        "history", {"channel": "news:a", "since": {"offset": 4, "epoch": "x"}}
    )
    assert reply["error"]["code"] == 112
    await session.subscribe("nohistory:a")
    assert (await session.call("history", {"channel": "nohistory:a"}))["error"]["code"] == 108


async def test_presence_and_its_stats_list_each_connection_once(open_session: Any) -> None:
    alice, bob, bob_again = (
        await open_session("alice"),
        await open_session("bob"),
        await open_session("bob"),
    )
    ids = [(await session.connect())["client"] for session in (alice, bob, bob_again)]
    for session in (alice, bob, bob_again):
        await session.subscribe("chat:lobby")
        await session.subscribe("news:a")
    alice.send({"presence": {"channel": "chat:lobby"}})
    presence = None
    while presence is None:  # after the join events of bob's connections
        for value in await alice.frame():
            if "presence" in value:
                presence = value["presence"]["presence"]
    assert presence == {
        ids[0]: {"client": ids[0], "user": "alice"},
        ids[1]: {"client": ids[1], "user": "bob"},
        ids[2]: {"client": ids[2], "user": "bob"},
    }
    bob.send({"presence_stats": {"channel": "chat:lobby"}})
    stats = None
    while stats is None:
        for value in await bob.frame():
            if "presence_stats" in value:
                stats = value["presence_stats"]
    assert stats == {"num_clients": 3, "num_users": 2}
    assert (await bob.call("presence", {"channel": "news:a"}))["error"]["code"] == 108


async def test_a_message_to_the_user_arrives_once_however_many_channels(
    open_session: Any, hub: MemoryHub
) -> None:
    session, bare = await open_session("alice"), await open_session("alice")
    await session.connect()
    await bare.connect()  # subscribed to nothing
    for channel in ("news:a", "news:b", "news:c"):
        await session.subscribe(channel)
    await hub.publish_to_user("alice", {"text": "hello"})
    await hub.publish("news:c", {"n": 1})
    assert await session.one() == {"push": {"message": {"data": {"text": "hello"}}}}
    assert (await session.one())["push"]["channel"] == "news:c"
    assert await bare.one() == {"push": {"message": {"data": {"text": "hello"}}}}
    bare.client.disconnect()
    await asyncio.wait_for(bare.task, 5)
    await hub.publish_to_user("alice", {"text": "again"})
    assert await session.one() == {"push": {"message": {"data": {"text": "again"}}}}


# Liveness


async def test_pings_are_sent_and_a_missing_pong_closes_with_3012(open_session: Any) -> None:
    session = await open_session(channels=config(ping_interval=0.2, pong_timeout=0.1))
    await session.connect()
    assert await session.one() == {}
    session.client.send_text("{}")  # the pong
    assert await session.one() == {}
    close = await session.closed()
    assert (close["code"], close["reason"]) == (3012, "no pong")


async def test_a_connection_that_never_connects_is_closed_as_stale_others_go_on(
    open_session: Any,
) -> None:
    options = {"ping_interval": 0.2, "pong_timeout": 0.1}
    silent = await open_session(channels=config(**options))
    refused = await open_session(user=None, channels=config(**options))
    assert (await refused.call("connect", {}))["error"]["code"] == 101
    await asyncio.sleep(0.25)  # the silent ones' first ping is due: they are closed
    speaking = await open_session(channels=config(**options))
    assert "client" in await speaking.connect()
    for session in (silent, refused):
        close = await session.closed()
        assert (close["code"], close["reason"]) == (3502, "stale"), close


async def test_closing_the_hub_disconnects_subscribers_with_3001(
    open_session: Any, hub: MemoryHub
) -> None:
    session = await open_session()
    await session.connect()
    await session.subscribe("news:a")
    await hub.close()
    close = await session.closed()
    assert (close["code"], close["reason"]) == (3001, "shutdown")


async def test_what_the_endpoint_did_is_counted_by_method_code_and_namespace(
    open_session: Any,
) -> None:
    channels = config()
    session = await open_session(channels=channels)
    await session.connect()
    await session.subscribe("news:a")
    await session.subscribe("news:b")
    await session.subscribe("chat:lobby")
    await session.subscribe("nowhere:x")
    await session.call("publish", {"channel": "chat:lobby", "data": {"n": 1}})
    await session.call("publish", {"channel": "news:a", "data": {"n": 1}})
    session.client.send_text("{not json")
    await session.closed()
    stats = channels.stats
    assert stats.replies == {
        ("connect", "ok"): 1,
        ("subscribe", "ok"): 3,
        ("subscribe", "102"): 1,
        ("publish", "ok"): 1,
        ("publish", "103"): 1,
    }
    assert stats.subscribed == {"news": 2, "chat": 1}
    assert stats.published == {"chat": 1}
    assert stats.disconnects == {"3501": 1}


async def test_commands_over_the_rate_limit_get_111_and_later_ones_pass(
    open_session: Any,
) -> None:
    session = await open_session(channels=config(commands_per_second=10, command_burst=3))
    await session.connect()  # the first of 3
    ids = session.send(*({"presence_stats": {"channel": "news:a"}} for _ in range(3)))
    replies = await session.frame()
    assert [reply["id"] for reply in replies] == ids
    assert replies[0]["error"]["code"] == 108  # news keeps no presence
    assert replies[1]["error"]["code"] == 108
    assert replies[2]["error"] == {"code": 111, "message": "too many requests", "temporary": True}
    await asyncio.sleep(0.15)  # a token and a half back
    reply = await session.subscribe("news:a")
    assert "subscribe" in reply, reply


async def test_a_personal_channel_that_missed_messages_closes_with_3010_to_recover_them(
    open_session: Any, hub: MemoryHub
) -> None:
    personal = Namespaces([Namespace("user", subscribe=USER_LIMITED, personal=True)])
    session = await open_session(channels=ChannelsConfig(personal))
    result = await session.connect()
    assert result["subs"]["user:#alice"]["offset"] == 0, result
    session.client.stop_reading()
    for number in range(1, 12):  # a queue of 4: the oldest are dropped
        await hub.publish("user:#alice", {"n": number})
    session.client.resume_reading()
    close = await session.closed()  # the SDK reconnects, recovering through connect.subs
    assert (close["code"], close["reason"]) == (3010, "insufficient state"), close


async def slow_rule(request: ChannelRequest) -> bool:
    await asyncio.sleep(0.6)  # a database, say, or a hub busy with a reconnect storm
    return True


async def test_a_pong_waiting_behind_a_frame_still_being_answered_is_not_late(
    open_session: Any,
) -> None:
    slow = Namespaces([Namespace("slow", subscribe=slow_rule)])
    session = await open_session(channels=ChannelsConfig(slow, ping_interval=0.2, pong_timeout=0.1))
    await session.connect()
    (id_,) = session.send({"subscribe": {"channel": "slow:a"}})
    assert await session.one() == {}  # a ping while the subscribe is answered
    session.client.send_text("{}")  # its pong waits behind the subscribe
    reply = await session.one()
    assert (reply["id"], "subscribe" in reply) == (id_, True), reply
    assert await session.one() == {}  # the next ping: the connection lives on
