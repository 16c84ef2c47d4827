{%- set paths = cookiecutter.endpoints | ws_endpoints | selectattr("kind", "equalto", "channels") | map(attribute="path") | list -%}{#- none: removed after generation -#}
{%- set redis = cookiecutter.broadcast_backend == "redis" -%}
"""The channels endpoint on a real uvicorn server, spoken to in raw Centrifuge commands (JSON):
who may connect, subscribe and publish (channels.py), the personal channel, the RPC methods,
the token routes (token_api.py), ``POST /api/publish`` reaching subscribers, and a browser
app's files (``BROWSER_DIR``). The Centrifuge SDKs speak the same protocol."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jwt
import pytest
{%- if cookiecutter.framework == "fastapi" %}
from jsonschema import Draft202012Validator
{%- endif %}
{%- if cookiecutter.metrics | ws_yes %}
from prometheus_client.parser import text_string_to_metric_families
{%- endif %}
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.websocket.asgi_types import ASGIApp, Receive, Scope, Send
from {{ cookiecutter.package_name }}.websocket.guard import Handshake
from {{ cookiecutter.package_name }}.websocket.testing import LiveServer{% if redis %}, RedisServer{% endif %}

from .conftest import TEST_ENVIRONMENT
from .contract import Channel, Contract

PATH = "{{ (paths + [""]) | first }}"
SECRET = "test-secret-for-hs256-tokens-0123456789"
API_KEY = TEST_ENVIRONMENT["PUBLISH_API_KEY"]


async def user_from_cookie(handshake: Handshake) -> object | None:
    """A stand-in for auth.py: the ``user`` cookie names the user (none: no identity)."""
    user = handshake.cookies.get("user")
    return {"sub": user} if user else None


async def app_with_users(scope: Scope, receive: Receive, send: Send) -> None:
    """``tests.test_channels:app_with_users``, which the server imports: the app with
    `user_from_cookie` as its auth.py, made on its first call in the server (not when pytest
    collects this module). A plain function, which every server finds: hypercorn looks the
    name up in the module's variables, where a module ``__getattr__`` is not consulted."""
    await _app_with_users()(scope, receive, send)


@cache
def _app_with_users() -> ASGIApp:
    return create_app(user_from_cookie)


PAGE = "<!doctype html><title>app</title>"


@pytest.fixture(scope="module")
def browser_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A browser app's folder, as the README's "Channels in a browser" makes one, with a
    secret beside it that must not be served."""
    folder = tmp_path_factory.mktemp("project") / "browser"
    (folder / "node_modules" / "centrifuge" / "build").mkdir(parents=True)
    (folder / "index.html").write_text(PAGE)
    (folder / "app.js").write_text('import { Centrifuge } from "centrifuge";\n')
    (folder / "node_modules" / "centrifuge" / "build" / "index.mjs").write_text("export {};\n")
    (folder.parent / "secret.txt").write_text("not for browsers\n")
    return folder


@pytest.fixture(scope="module")
{%- if redis %}
def server(redis_server: RedisServer, browser_app: Path) -> Iterator[LiveServer]:
    environment = {
        **TEST_ENVIRONMENT,
        "TOKEN_HMAC_SECRET_KEY": SECRET,
        "REDIS_URL": redis_server.url,
        "BROWSER_DIR": str(browser_app),
    }
{%- else %}
def server(browser_app: Path) -> Iterator[LiveServer]:
    environment = {
        **TEST_ENVIRONMENT,
        "TOKEN_HMAC_SECRET_KEY": SECRET,
        "BROWSER_DIR": str(browser_app),
    }
{%- endif %}
    with LiveServer("tests.test_channels:app_with_users", env=environment) as server:
        yield server
    assert "Traceback" not in server.log, server.log


class Centrifuge:
    """One connection in raw Centrifuge commands; every command, reply and push is checked
    against the endpoint's messages in ``GET /asyncapi.json``."""

    def __init__(self, websocket: ClientConnection, channel: Channel) -> None:
        self.websocket = websocket
        self.channel = channel
        self.pending: list[dict[str, Any]] = []
        self.ids = iter(range(1, 1000))

    def command(
        self, method: str, body: dict[str, Any], *, declared: bool = True
    ) -> dict[str, Any]:
        """Send a command; its reply (pushes that come first wait in `pending`). Unless
        ``declared`` is False (a command made to be refused), the command must be one of
        the endpoint's messages."""
        command = {"id": next(self.ids), method: body}
        if declared:
            self.channel.check("client", command)
        self.websocket.send(json.dumps(command))
        while True:
            message = self.receive()
            if message.get("id") == command["id"]:
                return message
            self.pending.append(message)

    def receive(self) -> dict[str, Any]:
        """The next reply or push: a frame may carry several, one a line."""
        while not self.pending:
            frame = self.websocket.recv(timeout=5)
            assert isinstance(frame, str), frame
            for line in frame.splitlines():
                message = json.loads(line)
                self.channel.check("server", message)
                self.pending.append(message)
        return self.pending.pop(0)


OpenConnection = Callable[..., Centrifuge]


@pytest.fixture
def open_connection(server: LiveServer) -> Iterator[OpenConnection]:
    """Opens connections (as ``user``, by auth.py's cookie), closed at the test's end."""
    channel = Contract.served_by(server.url("").rstrip("/")).channel(PATH)
    with ExitStack() as stack:

        def open_one(user: str = "") -> Centrifuge:
            cookie = {"cookie": f"user={user}"} if user else {}
            websocket = connect(server.ws_url(PATH), additional_headers=cookie)
            return Centrifuge(stack.enter_context(websocket), channel)

        yield open_one


def publish(server: LiveServer, body: dict[str, Any]) -> Any:
    """``POST /api/publish`` with ``body``; its answer."""
    request = urllib.request.Request(
        server.url("/api/publish"),
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {API_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_an_anonymous_connect_is_refused_while_anonymous_connections_are_off(
    open_connection: OpenConnection,
) -> None:
    anonymous = open_connection()
    reply = anonymous.command("connect", {"name": "test"})
    assert reply["error"]["code"] == 101, reply


def test_a_client_auth_py_let_in_connects_as_its_user(
    open_connection: OpenConnection,
) -> None:
    alice = open_connection("alice")
    connected = alice.command("connect", {"name": "test"})["connect"]
    assert connected["client"]
    assert connected["pong"] is True
    assert list(connected["subs"]) == ["user:#alice"]  # her personal channel
    refused = alice.command("subscribe", {"channel": "user:#bob"})  # bob's alone
    assert refused["error"]["code"] == 103, refused


def test_a_connection_token_names_the_user(
    open_connection: OpenConnection,
) -> None:
    token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 60}, SECRET, "HS256")
    carol = open_connection()
    connected = carol.command("connect", {"token": token})["connect"]
    assert list(connected["subs"]) == ["user:#carol"]


def test_a_channel_of_no_namespace_is_unknown(
    open_connection: OpenConnection,
) -> None:
    alice = open_connection("alice")
    alice.command("connect", {})
    refused = alice.command("subscribe", {"channel": "sport:results"})
    assert refused["error"]["code"] == 102, refused


def test_a_message_published_over_http_reaches_subscribers_as_the_publication_s_data(
    server: LiveServer, open_connection: OpenConnection
) -> None:
    reader = open_connection("reader")
    reader.command("connect", {})
    assert "subscribe" in reader.command("subscribe", {"channel": "news:today"})
    message = {"headline": "h\u00e9llo \u2713"}
    answer = publish(server, {"channel": "news:today", "message": message})
    push = reader.receive()["push"]
    assert push["channel"] == "news:today"
    assert push["pub"]["data"] == {"headline": "h\u00e9llo \u2713"}
    assert push["pub"]["offset"] == answer["offset"]
    refused = reader.command("publish", {"channel": "news:today", "data": {}})
    assert refused["error"]["code"] == 103, refused  # news: only the service publishes


def ask_token(server: LiveServer, path: str, user: str, body: object = None) -> tuple[int, Any]:
    """The status and answer of a token route, asked with ``user``'s cookie."""
    request = urllib.request.Request(
        server.url(path),
        data=json.dumps(body or {}).encode(),
        headers={"content-type": "application/json", "cookie": f"user={user}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def test_the_token_routes_mint_tokens_for_the_user_auth_py_finds(server: LiveServer) -> None:
    status, answer = ask_token(server, "/api/tokens/connection", "alice")
    assert status == 200, answer
    assert jwt.decode(answer["token"], SECRET, ["HS256"])["sub"] == "alice"
    channel = {"channel": "private:notes#alice"}
    status, answer = ask_token(server, "/api/tokens/subscription", "alice", channel)
    assert status == 200, answer
    assert jwt.decode(answer["token"], SECRET, ["HS256"])["channel"] == "private:notes#alice"
    assert ask_token(server, "/api/tokens/subscription", "bob", channel)[0] == 403
    assert ask_token(server, "/api/tokens/connection", "")[0] == 401
{%- if cookiecutter.framework == "fastapi" %}


def test_the_token_routes_are_in_the_openapi_document_as_they_answer(server: LiveServer) -> None:
    with urllib.request.urlopen(server.url("/openapi.json"), timeout=5) as response:
        document = json.load(response)

    def conforms(schema: dict[str, Any], instance: object) -> None:
        """``instance`` is valid for ``schema``, its $refs read in the document's components."""
        whole = {**schema, "components": document["components"]}
        Draft202012Validator.check_schema(whole)
        Draft202012Validator(whole).validate(instance)

    def json_schema(part: dict[str, Any]) -> dict[str, Any]:
        return dict(part["content"]["application/json"]["schema"])

    mine = {"channel": "private:notes#alice"}
    asking = document["paths"]["/api/tokens/subscription"]["post"]["requestBody"]
    conforms(json_schema(asking), mine)
    statuses = set()
    for path, user, body in [
        ("/api/tokens/connection", "alice", None),
        ("/api/tokens/connection", "", None),
        ("/api/tokens/subscription", "alice", mine),
        ("/api/tokens/subscription", "bob", mine),
        ("/api/tokens/subscription", "alice", {"channel": "nowhere:at-all"}),
    ]:
        status, answer = ask_token(server, path, user, body)
        responses = document["paths"][path]["post"]["responses"]
        conforms(json_schema(responses[str(status)]), answer)
        statuses.add(status)
    assert statuses == {200, 401, 403, 422}
{%- endif %}


def test_a_private_channel_takes_the_subscription_token_the_route_minted(
    server: LiveServer, open_connection: OpenConnection
) -> None:
    alice = open_connection("alice")
    alice.command("connect", {})
    refused = alice.command("subscribe", {"channel": "private:notes#alice"})
    assert refused["error"]["code"] == 103, refused  # no token
    channel = {"channel": "private:notes#alice"}
    _, answer = ask_token(server, "/api/tokens/subscription", "alice", channel)
    subscribed = alice.command("subscribe", {**channel, "token": answer["token"]})
    assert subscribed["subscribe"]["expires"] is True, subscribed


def test_each_connection_of_a_user_is_on_the_personal_channel_from_the_start(
    server: LiveServer, open_connection: OpenConnection
) -> None:
    erin = open_connection("erin")
    connected = erin.command("connect", {})["connect"]
    assert connected["subs"]["user:#erin"]["recoverable"] is True
    body = {"user": "erin", "message": {"text": "your export is ready"}}
    publish(server, body)
    push = erin.receive()["push"]
    assert (push["channel"], push["pub"]["data"]) == ("user:#erin", body["message"])
    refused = erin.command("unsubscribe", {"channel": "user:#erin"})
    assert refused["error"]["code"] == 103, refused  # the service's to end


def test_the_rpc_methods_answer_who_the_connection_is_and_page_through_history(
    server: LiveServer, open_connection: OpenConnection
) -> None:
    frank = open_connection("frank")
    frank.command("connect", {})
    reply = frank.command("rpc", {"method": "whoami", "data": {}})
    assert reply["rpc"]["data"] == {"user": "frank"}
    for n in range(5):
        publish(server, {"channel": "news:pages", "message": {"n": n}})
    pages, before = [], None
    while True:
        data: dict[str, Any] = {"channel": "news:pages", "limit": 2}
        if before is not None:
            data["before"] = before
        page = frank.command("rpc", {"method": "history_page", "data": data})["rpc"]["data"]
        pages.append([publication["data"]["n"] for publication in page["publications"]])
        before = page["next"]
        if before is None:
            break
    assert pages == [[4, 3], [2, 1], [0]]
    bad = {"method": "history_page", "data": {"channel": 1}}
    refused = frank.command("rpc", bad, declared=False)
    assert refused["error"]["code"] == 107, refused  # not what its params schema says
    private = {"channel": "private:notes#alice"}
    refused = frank.command("rpc", {"method": "history_page", "data": private})
    assert refused["error"] == {"code": 403, "message": "permission denied"}, refused


def get(server: LiveServer, path: str) -> tuple[int, dict[str, str], bytes]:
    """``GET path`` as sent, not normalised (``..`` stays): status, headers and body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def test_the_app_serves_the_browser_app_on_its_origin(server: LiveServer) -> None:
    status, headers, body = get(server, "/browser/")
    assert (status, headers["content-type"], body) == (
        200,
        "text/html; charset=utf-8",
        PAGE.encode(),
    )
    module = "/browser/node_modules/centrifuge/build/index.mjs"
    for path in ("/browser/app.js", module):
        status, headers, _ = get(server, path)
        assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    status, headers, _ = get(server, "/browser")  # to /browser/, where relative links work
    assert (status, urljoin(server.url("/browser"), headers["location"])) == (
        307,
        server.url("/browser/"),
    )
    for path in ("/browser/../secret.txt", "/browser/%2e%2e/secret.txt", "/browser/nothing.js"):
        status, _, body = get(server, path)
        assert status == 404, path
        assert b"not for browsers" not in body
    own = Origin(server.url("").rstrip("/"))  # the page's origin: its websockets are let in
    cookie = {"cookie": "user=alice"}
    with connect(server.ws_url(PATH), origin=own, additional_headers=cookie) as websocket:
        websocket.send(json.dumps({"id": 1, "connect": {}}))
        assert "error" not in json.loads(websocket.recv(timeout=5))
{%- if cookiecutter.metrics | ws_yes %}


def test_what_the_endpoint_does_is_in_the_metrics_by_method_and_namespace(
    server: LiveServer, open_connection: OpenConnection
) -> None:
    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(server.url("/metrics"), timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    subscribed = ("channels_subscriptions_total", (("namespace", "news"),))
    unknown = ("channels_commands_total", (("method", "subscribe"), ("outcome", "102")))
    before = samples()
    dave = open_connection("dave")
    dave.command("connect", {})
    dave.command("subscribe", {"channel": "news:metrics"})
    dave.command("subscribe", {"channel": "nowhere:x"})
    after = samples()
    assert after[subscribed] == before.get(subscribed, 0) + 1
    assert after[unknown] == before.get(unknown, 0) + 1
{%- endif %}
