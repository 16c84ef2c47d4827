"""The token routes of a rendered project, and what the SDKs get for every bad token.

A project with a channels endpoint is rendered with the README's session-cookie auth.py
and served on uvicorn. ``POST /api/tokens/connection`` and ``POST
/api/tokens/subscription`` are asked over HTTP as a browser on the same origin would ask
them (the session cookie, JSON): what they mint, for whom, and each refusal with its status
and sentence. Then the refusals the issue names, as centrifuge-python (in this process)
observes them: a subscription token for another channel or another user, signed with
another key, or expired; the personal channel of another user; an RPC with bad data; a
connection token that expires mid-session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from centrifuge import Client, ReplyError  # type: ignore[import-untyped]  # it ships no types
from websocket.testing import LiveServer  # the vendored backend

from tests.conftest import render
from tests.test_centrifuge_sdks import (
    PATH,
    PUBLISH_KEY,
    SECRET,
    Recorder,
    SubscriptionRecorder,
    python_client,
    run,
)
from tests.test_first_hour import AUTH_EXAMPLE

ENDPOINTS = "/connection/websocket:channels"
SESSIONS = {"alice": "alice-session-token-0123456789", "bob": "bob-session-token-0123456789"}
ALICE = {"Cookie": f"session={SESSIONS['alice']}"}  # auth.py lets in no one else
CONNECTION = "/api/tokens/connection"
SUBSCRIPTION = "/api/tokens/subscription"

# centrifuge-python can leave the socket of a connect attempt it cancelled to the garbage
# collector (see tests/test_centrifuge_sdks.py, whose `run` collects after each scenario).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def served_project(folder: Path, config: Path, framework: str) -> tuple[Path, str]:
    """A rendered project with the README's auth.py; its folder and its app's import path."""
    project = render(folder, config, {"endpoints": ENDPOINTS, "framework": framework})
    [package] = [app.parent for app in project.glob("*/app.py")]
    example = AUTH_EXAMPLE.search((project / "README.md").read_text())
    assert example, "the README has an auth.py example"
    (package / "auth.py").write_text(example.group(1))
    return project, f"{package.name}.app:app"


def environment(**extra: str) -> dict[str, str]:
    sessions = ",".join(f"{user}={token}" for user, token in SESSIONS.items())
    return {"SESSION_TOKENS": sessions, "PUBLISH_API_KEY": PUBLISH_KEY, **extra}


@pytest.fixture(scope="module", params=["fastapi", "asgi"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp(f"tokens-{request.param}")
    project, app = served_project(folder, cookiecutter_config, request.param)
    with LiveServer(app, env=environment(TOKEN_HMAC_SECRET_KEY=SECRET), cwd=project) as server:
        yield server
    assert "Traceback" not in server.log, server.log


def ask(
    server: LiveServer,
    path: str,
    body: Any = None,
    *,
    user: str | None = "alice",
    method: str = "POST",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    """The status and JSON answer of ``path``, asked as ``user``'s browser would ask it."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if user is not None:
        sent["Cookie"] = f"session={SESSIONS.get(user, 'not-a-session')}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(server.url(path), data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["cache-control"] == "no-store"
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, SECRET, algorithms=["HS256"])
    return decoded


def test_a_connection_token_is_minted_for_the_user_of_the_request(server: LiveServer) -> None:
    for user in SESSIONS:
        status, answer = ask(server, CONNECTION, user=user)
        assert status == 200, answer
        claims = claims_of(answer["token"])
        assert claims["sub"] == user
        assert "channel" not in claims
        assert abs(claims["exp"] - time.time() - 600) < 30  # CONNECTION_TOKEN_TTL_SECONDS


def test_a_subscription_token_is_minted_only_for_a_channel_grants_token_gives(
    server: LiveServer,
) -> None:
    status, answer = ask(server, SUBSCRIPTION, {"channel": "private:notes#alice"})
    assert status == 200, answer
    claims = claims_of(answer["token"])
    assert (claims["sub"], claims["channel"]) == ("alice", "private:notes#alice")
    status, answer = ask(server, SUBSCRIPTION, {"channel": "private:plans#bob,alice"})
    assert status == 200, answer
    for channel in ("private:notes#bob", "private:notes", "private:notes#alicia"):
        status, answer = ask(server, SUBSCRIPTION, {"channel": channel})
        assert (status, answer) == (
            403,
            {"detail": f"'alice' may not subscribe to {channel!r}."},
        )


def test_the_subscription_route_refuses_what_is_no_token_channel_with_why(
    server: LiveServer,
) -> None:
    refusals = [
        ({"channel": "news:today"}, 422, "takes no subscription token"),
        ({"channel": "nowhere:x"}, 422, "is no known channel"),
        ({"channel": 7}, 422, 'Send {"channel": "<channel>"}.'),
        ({}, 422, 'Send {"channel": "<channel>"}.'),
        ([1], 422, 'Send {"channel": "<channel>"}.'),
    ]
    for body, status, sentence in refusals:
        answered, answer = ask(server, SUBSCRIPTION, body)
        assert answered == status, (body, answer)
        assert sentence in answer["detail"], (body, answer)
    assert ask(server, SUBSCRIPTION, raw=b"{not json") == (400, {"detail": "The body is not JSON."})
    assert ask(server, SUBSCRIPTION, raw=b"x" * 5000)[0] == 400


def test_the_token_routes_refuse_a_request_with_no_user(server: LiveServer) -> None:
    for path, body in ((CONNECTION, None), (SUBSCRIPTION, {"channel": "private:notes#alice"})):
        for user in (None, "mallory"):  # no cookie; a cookie of no session
            status, answer = ask(server, path, body, user=user)
            assert (status, answer) == (401, {"detail": "Sign in first: auth.py found no user."})


def test_the_token_routes_refuse_another_origin_and_other_methods(server: LiveServer) -> None:
    for path in (CONNECTION, SUBSCRIPTION):
        status, answer = ask(server, path, headers={"Origin": "https://elsewhere.example"})
        assert status == 403, answer
        assert "ALLOWED_ORIGINS" in answer["detail"]
        status, answer = ask(server, path, method="GET")
        assert (status, answer) == (405, {"detail": "Ask for a token with POST."})
    same_origin = {"Origin": server.url("/").rstrip("/")}
    assert ask(server, CONNECTION, headers=same_origin)[0] == 200


@pytest.mark.parametrize("framework", ["fastapi"])
def test_without_an_hmac_secret_the_token_routes_answer_503_with_why(
    framework: str, tmp_path: Path, cookiecutter_config: Path
) -> None:
    project, app = served_project(tmp_path, cookiecutter_config, framework)
    with LiveServer(app, env=environment(), cwd=project) as server:
        for path, body in ((CONNECTION, None), (SUBSCRIPTION, {"channel": "private:n#alice"})):
            status, answer = ask(server, path, body)
            assert status == 503, answer
            assert "TOKEN_HMAC_SECRET_KEY" in answer["detail"]
            assert "private key" in answer["detail"]  # RS256, ES256: not minted here
        # and still 401 first for a request with no user
        assert ask(server, CONNECTION, user=None)[0] == 401


# What centrifuge-python gets for each bad token, RPC and personal channel.


@pytest.fixture(scope="module")
def sdk_server(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Iterator[LiveServer]:
    project, app = served_project(
        tmp_path_factory.mktemp("tokens-sdk"), cookiecutter_config, "fastapi"
    )
    with LiveServer(app, env=environment(TOKEN_HMAC_SECRET_KEY=SECRET), cwd=project) as server:
        yield server


@contextlib.asynccontextmanager
async def as_alice(server: LiveServer, **options: Any) -> AsyncIterator[tuple[Client, Recorder]]:
    """alice connected with centrifuge-python: her session cookie (auth.py), and a
    connection token unless ``options`` give another."""
    options.setdefault("token", signed({"sub": "alice"}))
    async with python_client(server.ws_url(PATH), headers=ALICE, **options) as connected:
        await connected[0].connect()
        yield connected


def subscribe(client: Client, recorder: Recorder, channel: str, **options: Any) -> Any:
    """A new subscription of ``client`` to ``channel``, its events recorded."""
    events = SubscriptionRecorder(recorder, channel)
    return client.new_subscription(channel, events=events, **options)


def signed(claims: dict[str, Any], expires_in: float = 600, key: str = SECRET) -> str:
    return jwt.encode({**claims, "exp": int(time.time() + expires_in)}, key, "HS256")


def test_the_sdk_is_refused_a_subscription_token_of_another_channel_user_or_key(
    sdk_server: LiveServer,
) -> None:
    channel = "private:notes#alice"
    refusals = {  # token: what the subscription or connection ends with
        "another channel": (signed({"sub": "alice", "channel": "private:notes#bob"}), "3500"),
        "another user": (signed({"sub": "bob", "channel": channel}), "3500"),
        "another key": (signed({"sub": "alice", "channel": channel}, key="k" * 40), "103"),
    }

    async def scenario(token: str) -> Recorder:
        async with as_alice(sdk_server) as (client, alice):
            await subscribe(client, alice, channel, token=token).subscribe()
            await alice.until(
                lambda: bool(alice.of("unsubscribed") or alice.of("disconnected")), "a refusal"
            )
            return alice

    for what, (token, code) in refusals.items():
        alice = run(scenario(token))
        assert not alice.of("subscribed"), what
        if code == "3500":  # a token the service signed for someone else: invalid token
            assert [e["code"] for e in alice.of("disconnected")][:1] == [3500], (what, alice.events)
        else:
            assert [e["code"] for e in alice.of("unsubscribed")] == [int(code)], (
                what,
                alice.events,
            )


def test_the_sdk_asks_again_for_an_expired_subscription_token_and_gets_in(
    sdk_server: LiveServer,
) -> None:
    channel = "private:notes#alice"
    asked: list[str] = []

    async def get_token(asked_for: str) -> str:  # centrifuge-python passes the channel
        asked.append(asked_for)
        return signed({"sub": "alice", "channel": channel})

    async def scenario() -> Recorder:
        async with as_alice(sdk_server) as (client, alice):
            expired = signed({"sub": "alice", "channel": channel}, expires_in=-10)
            await subscribe(client, alice, channel, token=expired, get_token=get_token).subscribe()
            await alice.count("subscribed", 1)
            return alice

    alice = run(scenario())
    assert asked == [channel]  # once, after the 109
    assert not alice.of("unsubscribed")


def test_the_sdk_cannot_subscribe_to_another_user_s_personal_channel(
    sdk_server: LiveServer,
) -> None:
    async def scenario() -> Recorder:
        async with as_alice(sdk_server) as (client, alice):
            await subscribe(client, alice, "user:#bob").subscribe()
            await alice.count("unsubscribed", 1)
            return alice

    alice = run(scenario())
    assert [e["code"] for e in alice.of("unsubscribed")] == [103]


def test_the_sdk_rpc_answers_and_refuses_bad_data_with_107(sdk_server: LiveServer) -> None:
    async def scenario() -> None:
        async with as_alice(sdk_server) as (client, alice):
            assert (await client.rpc("whoami", {})).data == {"user": "alice"}
            for data in ({"channel": 5}, {"channel": "news:x", "limit": 0}, "text"):
                with pytest.raises(ReplyError) as refused:
                    await client.rpc("history_page", data)
                assert refused.value.code == 107, data
            with pytest.raises(ReplyError) as refused:
                await client.rpc("no_such_method", {})
            assert refused.value.code == 104
            page = await client.rpc("history_page", {"channel": "news:never"})
            assert page.data == {"publications": [], "epoch": page.data["epoch"], "next": None}
            assert alice.of("disconnected") == []  # refusals leave the connection open

    run(scenario())


def test_a_connection_token_that_expires_mid_session_is_renewed_or_the_connection_ends(
    sdk_server: LiveServer,
) -> None:
    handed_out: list[float] = []

    async def scenario(expires_in: float) -> Recorder:
        async def get_token() -> str:
            handed_out.append(expires_in)
            return signed({"sub": "alice"}, expires_in=expires_in)

        first = signed({"sub": "alice"}, expires_in=2)
        async with as_alice(sdk_server, token=first, get_token=get_token) as (_, alice):
            await alice.count("connected", 1)
            await asyncio.sleep(5)  # past the first token's exp, and a renewed one's
            return alice

    alice = run(scenario(expires_in=2))  # renewed with good tokens: one connection throughout
    assert len(handed_out) >= 2, handed_out  # a refresh before each exp
    assert len(alice.of("connected")) == 1, alice.events
    assert [e for e in alice.of("disconnected") if e["code"] != 0] == [], alice.events
    assert not alice.of("error"), alice.events
    handed_out.clear()
    alice = run(scenario(expires_in=-10))  # renewed with expired tokens: the connection ends
    assert handed_out, "the SDK asked for a new token"
    assert len(alice.of("connected")) == 1, alice.events  # and never again with such a token
    assert 109 in [e["server_code"] for e in alice.of("error")], alice.events
