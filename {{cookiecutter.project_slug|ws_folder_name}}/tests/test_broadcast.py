{%- set endpoints = cookiecutter.endpoints | ws_endpoints | selectattr("kind", "equalto", "broadcast") | list -%}
{%- set redis = cookiecutter.broadcast_backend == "redis" -%}
"""Broadcast endpoints on a real uvicorn server: each message reaches every client of its
path, a client that reconnects resumes where it was, and ``POST /api/publish`` publishes."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
{%- if cookiecutter.framework == "fastapi" %}
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
{%- endif %}
{%- if endpoints and cookiecutter.framework == "fastapi" %}
from jsonschema import Draft202012Validator
{%- endif %}
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as plain_connect
{{ "" }}
from {{ cookiecutter.package_name }} import endpoints
{%- if cookiecutter.framework == "fastapi" %}
from {{ cookiecutter.package_name }}.websocket.broadcast import Refused, hub_of
{%- else %}
from {{ cookiecutter.package_name }}.websocket.broadcast import Refused
{%- endif %}
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer{% if redis %}, RedisServer{% endif %}

from .conftest import AUTH_HEADERS, TEST_ENVIRONMENT
from .contract import connect

BROADCAST_PATHS = [
{%- for endpoint in endpoints %}
    "{{ endpoint.path }}",
{%- endfor %}
]

API_KEY = TEST_ENVIRONMENT["PUBLISH_API_KEY"]

OpenClient = Callable[..., ClientConnection]


def filled(path: str, value: str) -> str:
    """``path`` with each ``{name}`` parameter filled in as ``name-<value>``."""
    return re.sub(r"\{(\w+)\}", rf"\1-{value}", path)


def unsigned(received: Any) -> Any:
    """``received`` without the ``user`` that ``stamp_sender`` (endpoints.py) puts in a
    broadcast message of a signed-in sender: these tests connect as conftest's
    ``AUTH_HEADERS`` say, anonymous or not."""
    if isinstance(received, dict) and received.get("type") == "broadcast":
        received["message"].pop("user", None)
    return received


def receive(websocket: ClientConnection, signed: bool = False) -> Any:
    """The next message; a broadcast without its ``user`` unless ``signed`` (see `unsigned`)."""
    received = json.loads(websocket.recv(timeout=5))
    return received if signed else unsigned(received)


@pytest.fixture
def clients(live_server: LiveServer) -> Iterator[OpenClient]:
    """Opens subscribed clients on a path; closes them all at the end of the test."""
    with ExitStack() as stack:

        def open_client(path: str, query: str = "", **recovered: bool) -> ClientConnection:
            websocket = stack.enter_context(connect(live_server.ws_url(path + query)))
            notice = receive(websocket)
            assert notice == {
                "type": "subscribed",
                "channel": path,
                "offset": notice["offset"],
                "epoch": notice["epoch"],
                "client_id": notice["client_id"],
                **recovered,
            }
            return websocket

        yield open_client


@pytest.mark.parametrize("path", BROADCAST_PATHS)
def test_a_message_reaches_every_client_of_its_path_and_no_other(
    clients: OpenClient, path: str
) -> None:
    url = filled(path, "1")
    sender, listener = clients(url), clients(url)
    # Another value of a path parameter is another channel (another room, say).
    elsewhere = clients(filled(path, "2")) if "{" in path else None
    sender.send(json.dumps({"text": "hi"}))
    for websocket in (sender, listener):  # the sender gets its own message too
        relayed = receive(websocket)
        assert (relayed["type"], relayed["channel"], relayed["message"]) == (
            "broadcast",
            url,
            {"text": "hi"},
        )
    if elsewhere is not None:
        elsewhere.send(json.dumps({"type": "keepalive"}))
        assert receive(elsewhere)["type"] == "keepalive_ack"  # and not the message


def test_every_client_sees_each_sender_s_messages_in_order_and_in_one_order(
    clients: OpenClient,
) -> None:
    url = filled(BROADCAST_PATHS[0], "1")
    senders = [clients(url) for _ in range(3)]
    listeners = [clients(url) for _ in range(2)]
    count = 30  # each; under the rate limit's burst
    for seq in range(count):
        for number, sender in enumerate(senders):
            sender.send(json.dumps({"sender": number, "seq": seq}))
    seen = [
        [receive(websocket)["message"] for _ in range(count * len(senders))]
        for websocket in listeners + senders
    ]
    assert all(sequence == seen[0] for sequence in seen)  # one order for everyone
    for number in range(len(senders)):
        assert [m["seq"] for m in seen[0] if m["sender"] == number] == list(range(count))


def answer_of(request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
    """Make ``request``: the status and the JSON answer, for an error status too."""
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def publish(
    server: LiveServer,
    body: bytes | dict[str, Any],
    key: str | None = API_KEY,
    method: str = "POST",
) -> tuple[int, dict[str, Any]]:
    """Call ``POST /api/publish`` on ``server``: the status and the JSON answer."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        server.url("/api/publish"), data=data if method == "POST" else None, headers=headers
    )
    request.method = method
    return answer_of(request)


def test_a_client_that_reconnects_with_its_position_gets_what_it_missed_once(
    clients: OpenClient, live_server: LiveServer
) -> None:
    url = filled(BROADCAST_PATHS[0], "resume")
    leaving, staying = clients(url), clients(url)
    staying.send(json.dumps({"n": 1}))
    reached = receive(leaving)
    assert receive(staying) == reached
    leaving.close()  # gone, with the position of the last message it received
    for n in (2, 3):
        staying.send(json.dumps({"n": n}))
        assert receive(staying)["message"] == {"n": n}  # published before the next one
    assert publish(live_server, {"channel": url, "message": {"n": 4}})[0] == 200
    back = clients(url, f"?since={reached['offset']}&epoch={reached['epoch']}", recovered=True)
    missed = [receive(back) for _ in range(3)]
    assert [(m["offset"], m["message"]) for m in missed] == [
        (reached["offset"] + n - 1, {"n": n}) for n in (2, 3, 4)
    ]
    staying.send(json.dumps({"n": 5}))  # then the live ones, no gap
    assert receive(back)["offset"] == reached["offset"] + 4


def test_a_client_whose_position_cannot_be_resumed_is_told_to_reload(
    clients: OpenClient,
) -> None:
    url = filled(BROADCAST_PATHS[0], "reload")
    sender = clients(url)
    sender.send(json.dumps({"n": 1}))
    top = receive(sender)
    back = clients(url, "?since=1&epoch=not-this-channels", recovered=False)
    back.send(json.dumps({"n": 2}))
    assert receive(back)["offset"] == top["offset"] + 1


def test_a_client_opened_with_last_starts_with_the_channel_s_last_messages(
    clients: OpenClient,
) -> None:
    url = filled(BROADCAST_PATHS[0], "last")
    sender = clients(url)
    for n in range(1, 6):
        sender.send(json.dumps({"n": n}))
    sent = [receive(sender) for _ in range(5)]
    late = clients(url, "?last=3", recovered=True)
    assert [(m["offset"], m["message"]) for m in (receive(late) for _ in range(3))] == [
        (sent[n - 1]["offset"], {"n": n}) for n in (3, 4, 5)
    ]
    sender.send(json.dumps({"n": 6}))  # then the live ones
    assert receive(late)["message"] == {"n": 6}


def test_a_client_cannot_sign_a_message_as_someone_else(clients: OpenClient) -> None:
    url = filled(BROADCAST_PATHS[0], "forged")
    sender = clients(url)  # anonymous with the default auth.py: stamp_sender takes "user" out
    sender.send(json.dumps({"text": "hi", "user": "bob"}))
    message = receive(sender, signed=True)["message"]
    assert message.get("user") != "bob"
    assert unsigned({"type": "broadcast", "message": message})["message"] == {"text": "hi"}


README = Path(__file__).parents[1] / "README.md"
HOOK_EXAMPLE = re.compile(r"```python\n(from \.websocket\.broadcast import Refused.*?)```", re.S)


def test_the_readme_s_stamp_sender_example_stamps_validates_and_refuses() -> None:
    example = HOOK_EXAMPLE.search(README.read_text())
    assert example is not None, "README.md has no stamp_sender example"
    namespace = dict(vars(endpoints))  # run as if written in endpoints.py
    exec(example.group(1), namespace)
    stamp_sender = namespace["stamp_sender"]
    alice, anonymous = SimpleNamespace(scope={"user": "alice"}), SimpleNamespace(scope={})
    assert stamp_sender(alice, {"text": "hi", "user": "bob"}) == {"text": "hi", "user": "alice"}
    assert stamp_sender(anonymous, {"text": "hi", "user": "bob"}) == {"text": "hi"}
    for refused in ({"text": 7}, {"text": "x" * 2001}, {}):
        with pytest.raises(Refused, match="a message needs a text of at most 2000 characters"):
            stamp_sender(alice, refused)


@pytest.mark.parametrize(
    "query", ["?since=1", "?since=x&epoch=e", "?since=1&epoch=%22", "?last=x", "?last=1&since=1"]
)
def test_a_malformed_resume_gets_an_error_and_a_close(live_server: LiveServer, query: str) -> None:
    url = live_server.ws_url(filled(BROADCAST_PATHS[0], "bad") + query)
    # A query /asyncapi.json does not allow, on purpose: not contract.connect.
    with plain_connect(url, additional_headers=AUTH_HEADERS) as websocket:
        assert receive(websocket)["type"] == "error"
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


def test_the_publish_api_reaches_every_client_of_the_channel(
    clients: OpenClient, live_server: LiveServer
) -> None:
    url = filled(BROADCAST_PATHS[0], "api")
    listeners = [clients(url), clients(url)]
    status, answer = publish(live_server, {"channel": url, "message": {"text": "from HTTP"}})
    assert status == 200, answer
    assert answer == {"channel": url, "offset": answer["offset"], "epoch": answer["epoch"]}
    for listener in listeners:
        relayed = receive(listener)
        assert (relayed["offset"], relayed["epoch"], relayed["message"]) == (
            answer["offset"],
            answer["epoch"],
            {"text": "from HTTP"},
        )


def test_a_client_that_stops_reading_gets_each_message_in_order_or_a_count_of_those_lost(
    clients: OpenClient, live_server: LiveServer
) -> None:
    # While a client reads nothing, what the server cannot write to it waits in its queue
    # (BROADCAST_QUEUE_SIZE messages), the oldest dropped past that; reading again, it gets
    # the rest in order: each message, or a "dropped" notice that counts those it lost. The
    # client that reads gets every message.
    url = filled(BROADCAST_PATHS[0], "slow")
    reading = clients(url)
    tiny = socket.socket()  # a small receive window: the server's writes soon wait
    tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    tiny.connect(("127.0.0.1", live_server.port))
    with connect(live_server.ws_url(url), sock=tiny, max_queue=1) as slow:
        start = receive(slow)["offset"]
        count, padding = 800, "x" * 8000  # 6.4 MB: more than the sockets' buffers hold
        for number in range(count):
            message = {"n": number, "pad": padding}
            status, answer = publish(live_server, {"channel": url, "message": message})
            assert status == 200, answer
            assert receive(reading)["message"]["n"] == number
        accounted: list[int] = []
        while not accounted or accounted[-1] < start + count:
            received = receive(slow)
            if received["type"] == "dropped":
                lost = received["count"]
                accounted += range(received["offset"] - lost + 1, received["offset"] + 1)
            else:
                assert received["message"]["n"] == received["offset"] - start - 1
                accounted.append(received["offset"])
        assert accounted == list(range(start + 1, start + count + 1))  # in order, each once
{%- if endpoints and "{" in endpoints[0].path %}


@pytest.mark.parametrize(
    ("channel", "mistake"),
    [
        (filled(BROADCAST_PATHS[0], "café") + "?since=1", "leave out the query string"),
        (BROADCAST_PATHS[0], "fill in each {name}"),
        (urllib.parse.quote(filled(BROADCAST_PATHS[0], "café")), "give the path decoded"),
    ],
)
def test_the_publish_api_takes_the_decoded_path_a_client_is_on_and_refuses_near_misses(
    live_server: LiveServer, channel: str, mistake: str
) -> None:
    room = filled(BROADCAST_PATHS[0], "café")
    with connect(live_server.ws_url(urllib.parse.quote(room))) as listener:  # as a browser sends it
        assert receive(listener)["channel"] == room  # the client is on the decoded path
        refused, answer = publish(live_server, {"channel": channel, "message": {"n": 1}})
        assert refused == 422, answer
        assert BROADCAST_PATHS[0] in answer["detail"], answer
        assert mistake in answer["detail"], answer
        published, answer = publish(live_server, {"channel": room, "message": {"n": 2}})
        assert published == 200, answer
        assert receive(listener)["message"] == {"n": 2}  # the refused one never came
{%- endif %}


ANY_CHANNEL = "<a broadcast channel>"


@pytest.mark.parametrize(
    ("body", "key", "method", "status", "detail"),
    [
        (
            {"channel": ANY_CHANNEL, "message": {}},
            None,
            "POST",
            401,
            "Send the key as Authorization: Bearer <PUBLISH_API_KEY>.",
        ),
        (
            {"channel": ANY_CHANNEL, "message": {}},
            "wrong-key-0123456789",
            "POST",
            403,
            "The publish API key is wrong.",
        ),
        (b"{not json", API_KEY, "POST", 400, "The body is not JSON (UTF-8)."),
        (b"\xff", API_KEY, "POST", 400, "The body is not JSON (UTF-8)."),
        ({"message": {}}, API_KEY, "POST", 422, "The body must be"),
        (
            {"channel": "/nowhere", "message": {}},
            API_KEY,
            "POST",
            422,
            'The channel "/nowhere" is the path of no broadcast endpoint{% if "channels" in (cookiecutter.endpoints | ws_endpoints | map(attribute="kind") | list) %} and in no namespace{% else %}; the broadcast endpoints are {{ endpoints | map(attribute="path") | join(", ") }}, each {name} filled in with one path segment.{% endif %}',
        ),
        (
            {"channel": ANY_CHANNEL, "message": [1]},
            API_KEY,
            "POST",
            422,
            "The message must be a JSON object.",
        ),
        (
            {"channel": ANY_CHANNEL, "message": {"x": "y" * 70000}},
            API_KEY,
            "POST",
            413,
            "The message is over MAX_MESSAGE_BYTES (65536 bytes).",
        ),
        (
            {"channel": ANY_CHANNEL, "message": {}},
            API_KEY,
            "GET",
            405,
            "/api/publish takes POST requests only.",
        ),
    ],
)
def test_the_publish_api_refuses_what_it_cannot_publish_and_publishes_nothing(
    clients: OpenClient,
    live_server: LiveServer,
    body: bytes | dict[str, Any],
    key: str | None,
    method: str,
    status: int,
    detail: str,
) -> None:
    url = filled(BROADCAST_PATHS[0], "refused")
    listener = clients(url)
    if isinstance(body, dict) and body.get("channel") == ANY_CHANNEL:
        body = {**body, "channel": url}
    refused, answer = publish(live_server, body, key, method)
    assert refused == status, answer
    assert answer["detail"].startswith(detail), answer
    published, answer = publish(live_server, {"channel": url, "message": {"n": "after"}})
    assert published == 200, answer
    assert receive(listener)["message"] == {"n": "after"}  # the refused one never came


@pytest.fixture
{%- if redis %}
def keyless_server(redis_server: RedisServer) -> Iterator[LiveServer]:
    environment = {**TEST_ENVIRONMENT, "PUBLISH_API_KEY": "", "REDIS_URL": redis_server.url}
{%- else %}
def keyless_server() -> Iterator[LiveServer]:
    environment = {**TEST_ENVIRONMENT, "PUBLISH_API_KEY": ""}
{%- endif %}
    with LiveServer("{{ cookiecutter.package_name }}.app:app", env=environment) as server:
        yield server


def test_without_a_key_the_publish_api_refuses_every_call_and_says_so(
    keyless_server: LiveServer,
) -> None:
    body = {"channel": filled(BROADCAST_PATHS[0], "1"), "message": {}}
    for key in (None, API_KEY, ""):
        assert publish(keyless_server, body, key) == (
            403,
            {"detail": "The publish API is off: set PUBLISH_API_KEY to turn it on."},
        )
    assert keyless_server.log.count("/api/publish refuses every call") == 1, keyless_server.log


SESSIONS = {"SESSION_TOKENS": "alice=token-a,bob=token-b", "JOIN_LEAVE_EVENTS": "yes"}
"""The users of README.md's worked auth.py example, and join and leave events on."""


@pytest.fixture(scope="module")
{%- if redis %}
def users_server(redis_server: RedisServer) -> Iterator[LiveServer]:
    environment = {**TEST_ENVIRONMENT, **SESSIONS, "REDIS_URL": redis_server.url}
{%- else %}
def users_server() -> Iterator[LiveServer]:
    environment = {**TEST_ENVIRONMENT, **SESSIONS}
{%- endif %}
    with LiveServer("tests.readme_auth:app", env=environment) as server:
        yield server


def as_user(
    stack: ExitStack, server: LiveServer, path: str, token: str
) -> tuple[ClientConnection, str]:
    """A client of ``path`` with the session cookie ``token``, once subscribed; its client_id."""
    headers = {"Cookie": f"session={token}"}
    websocket = stack.enter_context(connect(server.ws_url(path), additional_headers=headers))
    notice = receive(websocket)
    assert (notice["type"], notice["channel"]) == ("subscribed", path), notice
    return websocket, notice["client_id"]


def presence_of(server: LiveServer, channel: str) -> tuple[int, dict[str, Any]]:
    """Call ``GET /api/presence?channel=...`` on ``server``: the status and the JSON answer."""
    query = urllib.parse.urlencode({"channel": channel})
    request = urllib.request.Request(
        server.url(f"/api/presence?{query}"), headers={"authorization": f"Bearer {API_KEY}"}
    )
    return answer_of(request)


def by_user(clients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(clients, key=lambda client: str(client["user"]))


def test_presence_shows_each_client_as_the_user_auth_py_returned(
    users_server: LiveServer,
) -> None:
    url = filled(BROADCAST_PATHS[0], "presence")
    with ExitStack() as stack:
        alice, alice_id = as_user(stack, users_server, url, "token-a")
        bob, bob_id = as_user(stack, users_server, url, "token-b")
        bob_client = {"client_id": bob_id, "user": "bob"}
        assert receive(alice) == {"type": "join", "channel": url, "client": bob_client}
        bob.send(json.dumps({"type": "presence"}))
        expected = {
            "type": "presence",
            "channel": url,
            "count": 2,
            "clients": [
                {"client_id": alice_id, "user": "alice"},
                bob_client,
            ],
            "cut": False,
        }
        answer = receive(bob)
        assert {**answer, "clients": by_user(answer["clients"])} == expected
        status, over_http = presence_of(users_server, url)
        assert status == 200, over_http
        assert {**over_http, "clients": by_user(over_http["clients"])} == expected
        bob.close()
        assert receive(alice) == {"type": "leave", "channel": url, "client": bob_client}
        assert presence_of(users_server, url)[1]["count"] == 1


def caught_up(server: LiveServer, channel: str, *websockets: ClientConnection) -> list[Any]:
    """What the ``websockets`` of ``channel`` received before a marker published on it now."""
    marker = {"marker": time.monotonic_ns()}
    assert publish(server, {"channel": channel, "message": marker})[0] == 200
    before = []
    for websocket in websockets:
        while (message := receive(websocket)).get("message") != marker:
            before.append(message)
    return before


def test_each_message_carries_its_sender_s_user_whatever_the_client_wrote(
    users_server: LiveServer,
) -> None:
    room = filled(BROADCAST_PATHS[0], "signed")
    with ExitStack() as stack:
        alice, _ = as_user(stack, users_server, room, "token-a")
        bob, _ = as_user(stack, users_server, room, "token-b")
        caught_up(users_server, room, alice, bob)  # the join events read
        alice.send(json.dumps({"text": "hi, it's bob", "user": "bob"}))
        for websocket in (alice, bob):
            signed = receive(websocket, signed=True)["message"]
            assert signed == {"text": "hi, it's bob", "user": "alice"}


def test_a_message_to_a_user_reaches_each_of_their_connections_and_nobody_else(
    users_server: LiveServer,
) -> None:
    rooms = [filled(BROADCAST_PATHS[0], "direct-1"), filled(BROADCAST_PATHS[-1], "direct-2")]
    with ExitStack() as stack:
        alices = [as_user(stack, users_server, room, "token-a") for room in rooms]
        bob = as_user(stack, users_server, rooms[0], "token-b")
        in_room: dict[str, list[ClientConnection]] = {}
        for (websocket, _), room in zip((*alices, bob), (*rooms, rooms[0]), strict=True):
            in_room.setdefault(room, []).append(websocket)
        for room, websockets in in_room.items():  # one room, if the path has no parameter
            caught_up(users_server, room, *websockets)  # the join events read
        status, answer = publish(users_server, {"user": "alice", "message": {"text": "hi"}})
        assert (status, answer["user"]) == (200, "alice")  # and its personal channels, if any
        for websocket, _ in alices:
            direct = receive(websocket)
            assert (direct["type"], direct["message"]) == ("direct", {"text": "hi"})
        status, answer = publish(users_server, {"user": "nobody", "message": {}})
        assert (status, answer["user"]) == (200, "nobody")
        assert caught_up(users_server, rooms[0], bob[0]) == []  # no direct message came to bob
{%- if cookiecutter.framework == "fastapi" %}


def test_an_http_route_of_the_app_publishes_with_hub_of_request(client: TestClient) -> None:
    # The README's example: application code reaches the hub through the request.
    app = client.app
    assert isinstance(app, FastAPI)
    url = filled(BROADCAST_PATHS[0], "route")

    @app.post("/notify")
    async def notify(request: Request) -> dict[str, int | str]:
        position = await hub_of(request).publish(url, {"text": "shipped"})
        return {"offset": position.offset, "epoch": position.epoch}

    with client.websocket_connect(url) as websocket:
        assert websocket.receive_json()["type"] == "subscribed"
        answer = client.post("/notify").json()
        relayed = websocket.receive_json()
        assert (relayed["offset"], relayed["epoch"], relayed["message"]) == (
            answer["offset"],
            answer["epoch"],
            {"text": "shipped"},
        )
{%- endif %}
{%- if endpoints and cookiecutter.framework == "fastapi" %}


def test_the_http_api_is_in_the_openapi_document_as_it_answers(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    publish_api = document["paths"]["/api/publish"]["post"]
    presence_api = document["paths"]["/api/presence"]["get"]
    assert document["components"]["securitySchemes"]["PublishAPIKey"]["scheme"] == "bearer"
    assert publish_api["security"] == presence_api["security"] == [{"PublishAPIKey": []}]
    assert [p["name"] for p in presence_api["parameters"]] == ["channel"]

    def conforms(schema: dict[str, Any], instance: object) -> None:
        """``instance`` is valid for ``schema``, its $refs read in the document's components."""
        whole = {**schema, "components": document["components"]}
        Draft202012Validator.check_schema(whole)
        Draft202012Validator(whole).validate(instance)

    def answers(operation: dict[str, Any], status: int) -> dict[str, Any]:
        return dict(operation["responses"][str(status)]["content"]["application/json"]["schema"])

    headers = {"authorization": f"Bearer {API_KEY}"}
    url = filled(BROADCAST_PATHS[0], "openapi")
    bodies: list[dict[str, Any]] = [
        {"channel": url, "message": {"n": 1}},
        {"user": "a", "message": {}},
    ]
    for body in bodies:
        conforms(publish_api["requestBody"]["content"]["application/json"]["schema"], body)
        answer = client.post("/api/publish", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        conforms(answers(publish_api, 200), answer.json())
    for body in ({"channel": "/nowhere", "message": {}}, {"message": {"n": 1}}):
        answer = client.post("/api/publish", json=body, headers=headers)
        assert answer.status_code == 422, answer.text
        conforms(answers(publish_api, 422), answer.json())
    answer = client.get("/api/presence", params={"channel": url}, headers=headers)
    conforms(answers(presence_api, answer.status_code), answer.json())
    assert client.post("/api/publish", json={}).status_code == 401  # still its own key check
{%- endif %}
