"""The console page at GET /, driven in headless Chromium with Playwright."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from websocket.testing import LiveServer
from websockets.sync.client import connect

from tests.conftest import render, unavailable

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it
CHROMIUM_FLAGS = [  # no sandbox as root; no calls home, which this network refuses
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ENDPOINTS = (
    "/ws/keepalive, /ws/rooms/{room}:echo, /ws/clock:ticker, /ws/news:broadcast, "
    "/connection/websocket:channels"
)
SECRET = "a-secret-of-the-channels-console-test-0123456789"
PUBLISH_KEY = "publish-key-of-the-console-test"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        unavailable(reason, required=os.environ.get("REQUIRE_CHROMIUM") == "1")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def open_console(browser: Browser, server: LiveServer, errors: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url("/"))
    return page


@pytest.mark.parametrize("framework", ["fastapi", "asgi"])
def test_the_console_drives_every_endpoint_kind(
    framework: str, browser: Browser, tmp_path: Path, cookiecutter_config: Path
) -> None:
    answers = {"framework": framework, "endpoints": ENDPOINTS, "project_name": "Console <Test>"}
    project = render(tmp_path, cookiecutter_config, answers)
    errors: list[str] = []
    with LiveServer(
        "console_test.app:app",
        server="runner",
        env={"TICK_SECONDS": "0.2", "MAX_MESSAGE_BYTES": "4096", "ANONYMOUS_CONNECTIONS": "yes"},
        cwd=project,
    ) as server:
        with urllib.request.urlopen(server.url("/"), timeout=5) as response:
            assert "connect-src 'self'" in response.headers["content-security-policy"]
        page = open_console(browser, server, errors)
        expect(page).to_have_title("Console <Test>: console")
        panels = page.locator("section.endpoint")
        expect(panels).to_have_count(5)
        lead = page.locator("p.lead")
        for kind in ("Connect to each websocket endpoint", "A broadcast panel", "A channels panel"):
            expect(lead).to_contain_text(kind)
        for panel in panels.all():
            panel.locator("button.connect").click()
        for panel in panels.all():
            expect(panel.locator(".state")).to_have_text("open")
            expect(panel.locator(".rtt")).to_have_text(
                re.compile(r"^\d+\.\d$")
            )  # a keepalive's round trip

        ticker = page.locator('section[data-kind="ticker"]')
        expect(ticker.locator(".ticks")).to_have_text(re.compile(r"^([3-9]|\d\d+)$"))

        echo = page.locator('section[data-kind="echo"]')
        echo.locator("input.message").fill('{"n": 42}')
        echo.locator("button.send-message").click()
        expect(echo.locator("li.in").first).to_have_text('{"n":42}')
        echo.locator("input.message").fill("not json")
        echo.locator("button.send-message").click()
        expect(echo.locator("li.in").first).to_contain_text('"type":"error"')

        news = page.locator('section[data-kind="broadcast"]')  # the sender gets its own too
        news.locator("input.message").fill('{"headline": "hi"}')
        news.locator("button.send-message").click()
        expect(news.locator("li.in").first).to_contain_text('"type":"broadcast"')
        expect(news.locator("li.in").first).to_contain_text('"message":{"headline":"hi"}')
        expect(news.locator(".recovery")).to_have_text("live")
        expect(news.locator(".offset")).to_have_text("1")

        # Disconnect, miss two messages, Connect: the panel resumes with what it missed.
        news.locator("button.connect").click()
        expect(news.locator(".state")).to_have_text("closed 1000 (closed from the console)")
        with connect(server.ws_url("/ws/news")) as other:
            assert json.loads(other.recv(timeout=5))["type"] == "subscribed"
            for n in (1, 2):
                other.send(json.dumps({"missed": n}))
                assert json.loads(other.recv(timeout=5))["message"] == {"missed": n}
        news.locator("button.connect").click()
        expect(news.locator(".recovery")).to_have_text("recovered")
        expect(news.locator("li.in").first).to_contain_text('"message":{"missed":2}')
        expect(news.locator("li.in").nth(1)).to_contain_text('"message":{"missed":1}')
        expect(news.locator(".offset")).to_have_text("3")
        # A connection the service drops (a frame over MAX_MESSAGE_BYTES: 1009) comes back
        # by itself, at its position.
        news.locator("input.message").fill(json.dumps({"big": "x" * 5000}))
        news.locator("button.send-message").click()
        expect(news.locator("li.note").first).to_have_text(re.compile("closed with 1009"))
        expect(news.locator(".state")).to_have_text("open")
        expect(news.locator(".recovery")).to_have_text("recovered")

        # With ANONYMOUS_CONNECTIONS=yes, a channels panel connects with no token.
        channels = page.locator('section[data-kind="channels"]')
        channels.locator("button.subscribe").click()  # news:today, filled in
        expect(channels.locator('li[data-channel="news:today"]')).to_have_attribute(
            "data-state", "subscribed"
        )

        keepalive = page.locator('section[data-kind="keepalive"]')
        keepalive.locator("button.connect").click()  # now labelled Disconnect
        expect(keepalive.locator(".state")).to_have_text("closed 1000 (closed from the console)")
        page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
        page.close()
    assert errors == []
    assert (tmp_path / "console.png").stat().st_size > 10_000


def test_without_the_console_page_nothing_of_it_is_served(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    project = render(tmp_path, cookiecutter_config, {"console_page": "no"})
    assert not (project / "ws_service" / "console.html").exists()
    with LiveServer("ws_service.app:app", server="runner", cwd=project) as server:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url("/"), timeout=5)
        missing.value.close()
        assert missing.value.code == 404


def test_two_consoles_in_one_room_see_each_other_in_presence_and_who_joins_and_leaves(
    browser: Browser, tmp_path: Path, cookiecutter_config: Path
) -> None:
    answers = {"endpoints": "/ws/rooms/{room}:broadcast", "package_name": "presence_console"}
    project = render(tmp_path, cookiecutter_config, answers)
    errors: list[str] = []
    # At most two clients listed: a third connection makes the answer say it was cut.
    with LiveServer(
        "presence_console.app:app",
        server="runner",
        env={"PRESENCE_LIST_LIMIT": "2"},
        cwd=project,
    ) as server:
        first, second = (open_console(browser, server, errors) for _ in range(2))
        rooms = [page.locator('section[data-kind="broadcast"]') for page in (first, second)]
        rooms[0].locator("button.connect").click()
        expect(rooms[0].locator(".state")).to_have_text("open")
        own = re.compile(r"^[A-Za-z0-9_-]{22}$")  # 16 random bytes, base64url
        expect(rooms[0].locator(".client-id")).to_have_text(own)
        rooms[1].locator("button.connect").click()
        expect(rooms[1].locator(".client-id")).to_have_text(own)
        ids = [room.locator(".client-id").inner_text() for room in rooms]
        assert ids[0] != ids[1]
        # The first sees the second join (the second is told nothing of itself).
        joined = rooms[0].locator('li.event[data-event="join"]')
        expect(joined).to_have_count(1)
        expect(joined).to_have_text(f"{ids[1]} (anonymous) joined")
        expect(rooms[1].locator("li.event")).to_have_count(0)

        for room, (mine, theirs) in zip(rooms, (ids, ids[::-1]), strict=True):
            room.locator("button.who").click()
            expect(room.locator(".present")).to_have_text("2")
            expect(room.locator(".cut")).to_be_hidden()
            listed = room.locator("ul.clients li")
            expect(listed).to_have_count(2)
            expect(room.locator(f'ul.clients li[data-client-id="{theirs}"]')).to_have_text(
                f"{theirs} anonymous"
            )
            expect(room.locator("ul.clients li.self")).to_have_text(f"{mine} anonymous (you)")

        # A third connection, not a console: both see it join; the list of two is cut.
        with connect(server.ws_url("/ws/rooms/room-1")) as third:
            third_id = json.loads(third.recv(timeout=5))["client_id"]
            for room in rooms:
                expect(room.locator('li.event[data-event="join"]').first).to_have_text(
                    f"{third_id} (anonymous) joined"
                )
                expect(room.locator(".present")).to_have_text("3")  # kept up by the event
            rooms[1].locator("button.who").click()
            expect(rooms[1].locator(".present")).to_have_text("3")
            expect(rooms[1].locator(".cut")).to_be_visible()
            expect(rooms[1].locator(".cut")).to_have_text(" (list cut: 2 of 3 shown)")
            expect(rooms[1].locator("ul.clients li")).to_have_count(2)
        for room in rooms:
            expect(room.locator('li.event[data-event="leave"]').first).to_have_text(
                f"{third_id} (anonymous) left"
            )
            expect(room.locator(".present")).to_have_text("2")

        # The second leaves from its console: the first sees it go.
        rooms[1].locator("button.connect").click()
        expect(rooms[1].locator(".state")).to_have_text("closed 1000 (closed from the console)")
        expect(rooms[1].locator(".client-id")).to_have_text("-")
        expect(rooms[0].locator('li.event[data-event="leave"]').first).to_have_text(
            f"{ids[1]} (anonymous) left"
        )
        expect(rooms[0].locator(".present")).to_have_text("1")
        expect(rooms[0].locator("ul.clients li")).to_have_count(1)
        first.screenshot(path=str(tmp_path / "presence.png"), full_page=True)
        for page in (first, second):
            page.close()
    assert errors == []


def token(user: str) -> str:
    claims = {"sub": user, "exp": int(time.time()) + 600}
    return jwt.encode(claims, SECRET, "HS256")


def publish(server: LiveServer, channel: str, message: dict[str, object]) -> None:
    request = urllib.request.Request(
        server.url("/api/publish"),
        data=json.dumps({"channel": channel, "message": message}).encode(),
        headers={"Authorization": f"Bearer {PUBLISH_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


@pytest.mark.parametrize("framework", ["fastapi", "asgi"])
def test_a_channels_panel_subscribes_to_several_channels_and_publishes_as_its_user(
    framework: str, browser: Browser, tmp_path: Path, cookiecutter_config: Path
) -> None:
    answers = {
        "framework": framework,
        "endpoints": "/connection/websocket:channels",
        "package_name": "channels_console",
    }
    project = render(tmp_path, cookiecutter_config, answers)
    errors: list[str] = []
    env = {"TOKEN_HMAC_SECRET_KEY": SECRET, "PUBLISH_API_KEY": PUBLISH_KEY}
    with LiveServer("channels_console.app:app", server="runner", env=env, cwd=project) as server:
        alice_page, bob_page = (open_console(browser, server, errors) for _ in range(2))
        alice, bob = (
            page.locator('section[data-kind="channels"]') for page in (alice_page, bob_page)
        )
        # No token, and ANONYMOUS_CONNECTIONS unset: refused, with what to do.
        alice.locator("button.connect").click()
        expect(alice.locator("li.note").nth(1)).to_have_text(
            "connect refused: 101 unauthorized: paste a connection token, or run the service "
            "with ANONYMOUS_CONNECTIONS=yes"
        )
        expect(alice.locator(".state")).to_have_text("closed 1000 (closed from the console)")

        for panel, user in ((alice, "alice"), (bob, "bob")):
            panel.locator("input.token").fill(token(user))
            panel.locator("button.connect").click()
            expect(panel.locator(".state")).to_have_text("open")
            expect(panel.locator(".client-id")).to_have_text(re.compile(r"^\S{8,}$"))
            expect(panel.locator(".rtt")).to_have_text(re.compile(r"^\d+\.\d$"))
        alice_id = alice.locator(".client-id").inner_text()

        # Several channels on one connection.
        for channel in ("news:x", "chat:lobby"):
            alice.locator("input.channel").fill(channel)
            alice.locator("button.subscribe").click()
            row = alice.locator(f'ul.subscriptions li[data-channel="{channel}"]')
            expect(row).to_have_attribute("data-state", "subscribed")
            expect(row.locator(".sub-state")).to_have_text("subscribed at offset 0")
        publish(server, "news:x", {"n": 1})
        expect(alice.locator("li.in").first).to_have_text('news:x #1: {"n":1}')

        # bob joins chat:lobby (alice sees it) and publishes there (both see it, from bob).
        bob.locator("input.channel").fill("chat:lobby")
        bob.locator("button.subscribe").click()
        expect(bob.locator('li[data-channel="chat:lobby"]')).to_have_attribute(
            "data-state", "subscribed"
        )
        bob_id = bob.locator(".client-id").inner_text()
        expect(alice.locator('li.event[data-event="join"]')).to_have_text(
            f"chat:lobby: {bob_id} (bob) joined"
        )
        bob.locator("input.publish-channel").fill("chat:lobby")
        bob.locator("input.message").fill('{"text": "hi"}')
        bob.locator("button.publish").click()
        for panel in (alice, bob):
            expect(panel.locator("li.in").first).to_have_text(
                'chat:lobby #1 from bob: {"text":"hi"}'
            )
        alice.locator('li[data-channel="chat:lobby"] button.who').click()
        expect(alice.locator("li.in").first).to_contain_text("chat:lobby: 2 here: ")
        expect(alice.locator("li.in").first).to_contain_text(f"{alice_id} (alice) (you)")
        expect(alice.locator("li.in").first).to_contain_text(f"{bob_id} (bob)")

        # Refusals say why: news is the service's to publish, foo is no namespace.
        bob.locator("input.publish-channel").fill("news:x")
        bob.locator("button.publish").click()
        expect(bob.locator("li.note").first).to_have_text(
            "publish news:x refused: 103 permission denied: the channel's namespace does not "
            "let this connection do it"
        )
        bob.locator("input.channel").fill("foo:bar")
        bob.locator("button.subscribe").click()
        expect(bob.locator("li.note").first).to_contain_text("subscribe foo:bar refused: 102")
        expect(bob.locator("ul.subscriptions li")).to_have_count(1)

        bob.locator('li[data-channel="chat:lobby"] button.unsubscribe').click()
        expect(bob.locator("ul.subscriptions li")).to_have_count(0)
        expect(alice.locator('li.event[data-event="leave"]')).to_have_text(
            f"chat:lobby: {bob_id} (bob) left"
        )

        # Disconnect, miss two publications, Connect: both channels come back, news:x with
        # what it missed.
        alice.locator("button.connect").click()
        expect(alice.locator(".state")).to_have_text("closed 1000 (closed from the console)")
        expect(alice.locator('li[data-channel="news:x"]')).to_have_attribute(
            "data-state", "subscribing"
        )
        publish(server, "news:x", {"n": 2})
        publish(server, "news:x", {"n": 3})
        alice.locator("button.connect").click()
        news = alice.locator('li[data-channel="news:x"]')
        expect(news.locator(".sub-state")).to_have_text("subscribed at offset 3, recovered")
        expect(alice.locator("li.in").first).to_have_text('news:x #3: {"n":3}')
        expect(alice.locator("li.in").nth(1)).to_have_text('news:x #2: {"n":2}')
        expect(alice.locator('li[data-channel="chat:lobby"]')).to_have_attribute(
            "data-state", "subscribed"
        )
        alice_page.screenshot(path=str(tmp_path / "channels.png"), full_page=True)
        for page in (alice_page, bob_page):
            page.close()
    assert errors == []
