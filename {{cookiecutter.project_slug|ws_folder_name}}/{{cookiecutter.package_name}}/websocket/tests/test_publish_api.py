"""`PublishAPI` called as an ASGI app, on a `MemoryHub`: what it publishes, sends to a user,
lists as presence, and refuses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest

from ..asgi_types import Message
from ..broadcast import MemoryHub
from ..publish_api import PublishAPI
from .hub_contract import received

KEY = "k" * 24


@pytest.fixture
async def hub() -> AsyncIterator[MemoryHub]:
    async with MemoryHub() as hub:
        yield hub


def api_on(hub: MemoryHub, key: str = KEY) -> PublishAPI:
    return PublishAPI(
        ["/ws/rooms/{room}", "/ws/news"], api_key=key, max_message_bytes=100, hub=lambda _: hub
    )


async def call(
    api: PublishAPI,
    body: bytes,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "POST",
    chunk: int = 0,
    path: str = "/api/publish",
    query: bytes = b"",
) -> tuple[int, dict[bytes, bytes], Any]:
    """One request to ``api``: its status, headers and JSON body (``chunk``: body in parts)."""
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    events: list[Message] = [
        {"type": "http.request", "body": part, "more_body": n < len(parts) - 1}
        for n, part in enumerate(parts)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return events.pop(0) if events else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [(b"authorization", b"Bearer " + KEY.encode())] if headers is None else headers,
        "state": {},
    }
    await api(scope, receive, send)
    start, content = sent
    return start["status"], dict(start["headers"]), json.loads(content["body"])


def test_channels_match_the_broadcast_paths_one_segment_per_parameter() -> None:
    api = PublishAPI(["/ws/rooms/{room}", "/ws/news"], api_key=KEY, max_message_bytes=100)
    assert api.matches("/ws/rooms/lobby")
    assert api.matches("/ws/news")
    for channel in ("/ws/rooms/", "/ws/rooms/a/b", "/ws/rooms", "/ws/newsx", "ws/news", ""):
        assert not api.matches(channel), channel


def test_a_channel_is_a_decoded_path_a_client_can_be_on() -> None:
    # A client of /ws/rooms/caf%C3%A9 is on /ws/rooms/café, the path as the server decoded it.
    api = PublishAPI(["/ws/rooms/{room}", "/ws/news"], api_key=KEY, max_message_bytes=100)
    for channel in ("/ws/rooms/café", "/ws/rooms/a b", "/ws/rooms/100%", "/ws/rooms/a:b"):
        assert api.matches(channel), channel
    for channel in (
        "/ws/rooms/general?since=1",
        "/ws/news?since=1",
        "/ws/rooms/{room}",
        "/ws/rooms/caf%C3%A9",
        "/ws/rooms/a%20b",
        "/ws/rooms/a#b",
    ):
        assert not api.matches(channel), channel


@pytest.mark.parametrize(
    ("channel", "mistake"),
    [
        ("/ws/rooms/general?since=1", ': leave out the query string ("/ws/rooms/general").'),
        ("/ws/news?since=1", ': leave out the query string ("/ws/news").'),
        (
            "/ws/rooms/{room}",
            ": fill in each {name} with the room, user, ... a client connects to.",
        ),
        (
            "/ws/rooms/caf%C3%A9",
            ': give the path decoded, as clients are on it ("/ws/rooms/café").',
        ),
        ("/ws/rooms/caf%FF", "."),  # no client path: %FF is no UTF-8
        ("/nowhere", "."),
    ],
)
async def test_a_channel_no_client_can_be_on_is_refused_naming_the_paths_and_the_mistake(
    hub: MemoryHub, channel: str, mistake: str
) -> None:
    status, _, answer = await call(
        api_on(hub), json.dumps({"channel": channel, "message": {}}).encode()
    )
    assert status == 422
    assert answer["detail"] == (
        f"The channel {json.dumps(channel, ensure_ascii=False)} is the path of no broadcast "
        "endpoint; the broadcast endpoints are /ws/rooms/{room}, /ws/news, each {name} filled in "
        f"with one path segment{mistake}"
    )
    presence, _, answer = await call(
        api_on(hub),
        b"",
        method="GET",
        path="/api/presence",
        query=f"channel={quote(channel)}".encode(),
    )
    assert presence == 422, answer
    assert answer["detail"].endswith(mistake), answer
    assert (await hub.publish(channel, {})).offset == 1  # nothing was published before


class Prefixes:
    """Namespaces as `PublishAPI` asks them (`namespaces.Namespaces` in a service with a
    channels endpoint): a channel ``name:rest`` is in the namespace ``name``, if declared."""

    def __init__(self, *names: str) -> None:
        self._names = names

    def find(self, channel: str) -> str | None:
        name, colon, rest = channel.partition(":")
        return name if colon and rest and name in self._names else None

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def personal_channels(self, user: str) -> list[str]:
        return []


def test_with_namespaces_channels_of_declared_namespaces_match_besides_broadcast_paths() -> None:
    api = PublishAPI(
        ["/ws/news"], api_key=KEY, max_message_bytes=100, namespaces=Prefixes("chat", "news")
    )
    for channel in ("/ws/news", "chat:lobby", "news:sport"):
        assert api.matches(channel), channel
    for channel in ("sport:x", "chat:", "chat", "/ws/rooms/a", ""):
        assert not api.matches(channel), channel


async def test_a_message_published_to_a_namespace_s_channel_reaches_its_subscribers(
    hub: MemoryHub,
) -> None:
    api = PublishAPI(
        [], api_key=KEY, max_message_bytes=100, namespaces=Prefixes("news"), hub=lambda _: hub
    )
    subscription = await hub.subscribe("news:sport")
    await received(subscription)
    body = json.dumps({"channel": "news:sport", "message": {"score": "2-1"}}).encode()
    status, _, answer = await call(api, body)
    assert (status, answer["channel"], answer["offset"]) == (200, "news:sport", 1)
    assert (await received(subscription))["message"] == {"score": "2-1"}
    refused, _, answer = await call(api, body.replace(b"news:", b"sport:"))
    assert refused == 422
    assert answer["detail"] == (
        'The channel "sport:sport" is the path of no broadcast endpoint and in no namespace '
        "of the channels endpoints (channels.py: news)."
    )


async def test_a_published_message_reaches_subscribers_and_its_position_is_answered(
    hub: MemoryHub,
) -> None:
    api = api_on(hub)
    subscription = await hub.subscribe("/ws/rooms/lobby")
    await received(subscription)
    body = json.dumps({"channel": "/ws/rooms/lobby", "message": {"text": "hé"}}).encode()
    status, headers, answer = await call(api, body, chunk=7)
    assert status == 200
    assert headers[b"content-type"] == b"application/json"
    delivery = await received(subscription)
    assert answer == {"channel": "/ws/rooms/lobby", "offset": 1, "epoch": delivery["epoch"]}
    assert (delivery["offset"], delivery["message"]) == (1, {"text": "hé"})


@pytest.mark.parametrize(
    ("key", "headers", "status", "challenge"),
    [
        ("", None, 403, False),
        (KEY, [], 401, True),
        (KEY, [(b"authorization", b"Basic " + KEY.encode())], 401, True),
        (KEY, [(b"authorization", b"Bearer " + KEY.encode()[:-1])], 403, False),
        (KEY, [(b"authorization", b"Bearer " + KEY.encode() + b"x")], 403, False),
    ],
)
async def test_without_the_right_key_nothing_is_published(
    hub: MemoryHub,
    key: str,
    headers: list[tuple[bytes, bytes]] | None,
    status: int,
    challenge: bool,
) -> None:
    body = json.dumps({"channel": "/ws/news", "message": {}}).encode()
    refused, answered_headers, answer = await call(api_on(hub, key), body, headers=headers)
    assert refused == status
    assert (b"www-authenticate" in answered_headers) == challenge
    assert KEY not in json.dumps(answer)
    assert (await hub.publish("/ws/news", {})).offset == 1  # the refused one took no offset


async def test_a_body_over_the_limit_is_refused_before_it_is_all_read(hub: MemoryHub) -> None:
    status, _, answer = await call(api_on(hub), b"x" * 10_000, chunk=1000)
    assert (status, answer) == (
        413,
        {"detail": "The message is over MAX_MESSAGE_BYTES (100 bytes)."},
    )


async def test_a_message_to_a_user_reaches_each_of_their_connections_only() -> None:
    async with MemoryHub(join_leave=False) as hub:  # messages only
        await a_message_to_a_user_reaches_each_of_their_connections_only(hub)


async def a_message_to_a_user_reaches_each_of_their_connections_only(hub: MemoryHub) -> None:
    alice = [await hub.subscribe(path, user="alice") for path in ("/ws/news", "/ws/rooms/a")]
    bob = await hub.subscribe("/ws/news", user="bob")
    for subscription in (*alice, bob):
        await received(subscription)
    body = json.dumps({"user": "alice", "message": {"text": "hi"}}).encode()
    status, _, answer = await call(api_on(hub), body)
    assert (status, answer) == (200, {"user": "alice", "channels": []})
    for subscription in alice:
        direct = await received(subscription)
        assert (direct["type"], direct["message"]) == ("direct", {"text": "hi"})
    nobody = json.dumps({"user": "carol", "message": {}}).encode()
    assert (await call(api_on(hub), nobody))[:3:2] == (200, {"user": "carol", "channels": []})
    await hub.publish("/ws/news", {"n": 1})
    assert (await received(bob))["type"] == "broadcast"  # and no direct message before it


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"user": None, "message": {}}, 422, "The user must be who auth.py returned"),
        ({"user": "a", "message": "text"}, 422, "The message must be a JSON object."),
        ({"user": "a", "channel": "/ws/news", "message": {}}, 422, "The body must be"),
        ({"user": "a", "message": {"x": "y" * 200}}, 413, "The message is over"),
    ],
)
async def test_a_malformed_message_to_a_user_gets_one_sentence(
    hub: MemoryHub, body: dict[str, Any], status: int, detail: str
) -> None:
    refused, _, answer = await call(api_on(hub), json.dumps(body).encode())
    assert refused == status
    assert answer["detail"].startswith(detail), answer


async def test_the_presence_api_answers_what_a_client_gets(hub: MemoryHub) -> None:
    alice = await hub.subscribe("/ws/rooms/a", user={"name": "alice"})
    status, headers, answer = await call(
        api_on(hub), b"", method="GET", path="/api/presence", query=b"channel=%2Fws%2Frooms%2Fa"
    )
    assert status == 200
    assert headers[b"cache-control"] == b"no-store"
    assert answer == {
        "type": "presence",
        "channel": "/ws/rooms/a",
        "count": 1,
        "clients": [{"client_id": alice.client_id, "user": {"name": "alice"}}],
        "cut": False,
    }


@pytest.mark.parametrize(
    ("key", "query", "method", "status", "detail"),
    [
        ("", b"channel=/ws/news", "GET", 403, "The presence API is off: set PUBLISH_API_KEY"),
        ("x" * 24, b"channel=/ws/news", "GET", 403, "The presence API key is wrong."),
        (KEY, b"", "GET", 422, "Give the channel once"),
        (KEY, b"channel=/ws/news&channel=/ws/news", "GET", 422, "Give the channel once"),
        (KEY, b"channel=/nowhere", "GET", 422, 'The channel "/nowhere" is the path of no'),
        (KEY, b"channel=/ws/news", "POST", 405, "/api/presence takes GET requests only."),
    ],
)
async def test_the_presence_api_refuses_with_one_sentence(
    hub: MemoryHub, key: str, query: bytes, method: str, status: int, detail: str
) -> None:
    headers = [(b"authorization", b"Bearer " + KEY.encode())]
    refused, answered_headers, answer = await call(
        api_on(hub, key), b"", headers=headers, method=method, path="/api/presence", query=query
    )
    assert refused == status
    assert answer["detail"].startswith(detail), answer
    if status == 405:
        assert answered_headers[b"allow"] == b"GET"


async def test_the_presence_api_says_when_presence_is_off() -> None:
    async with MemoryHub(presence=False) as hub:
        status, _, answer = await call(
            api_on(hub), b"", method="GET", path="/api/presence", query=b"channel=/ws/news"
        )
    assert (status, answer) == (
        404,
        {"detail": "Presence is off on this service (PRESENCE_ENABLED=no)."},
    )
