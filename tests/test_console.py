"""The console page at GET /, driven in headless Chromium with Playwright."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from websocket.testing import LiveServer
from websockets.sync.client import connect

from tests.conftest import render

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
ENDPOINTS = "/ws/keepalive, /ws/rooms/{room}:echo, /ws/clock:ticker, /ws/news:broadcast"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"{CHROMIUM} is missing, and REQUIRE_CHROMIUM=1")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
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
        env={"TICK_SECONDS": "0.2", "MAX_MESSAGE_BYTES": "4096"},
        cwd=project,
    ) as server:
        with urllib.request.urlopen(server.url("/"), timeout=5) as response:
            assert "connect-src 'self'" in response.headers["content-security-policy"]
        page = open_console(browser, server, errors)
        expect(page).to_have_title("Console <Test>: console")
        panels = page.locator("section.endpoint")
        expect(panels).to_have_count(4)
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
