"""The README's "Channels in a browser" app, run as written in headless Chromium.

A project with a channels endpoint on Redis is rendered with the README's session-cookie
auth.py; its README's ``html`` and ``js`` blocks become ``browser/index.html`` and
``browser/app.js``, which the project's own app serves at ``/browser/``, on its origin, with
centrifuge-js from npm (conformance/centrifuge's committed lock file, copied as
``browser/node_modules/centrifuge``: its ``build/index.mjs``, where the page's import map
points), as the README says. Nothing is loaded from elsewhere. The page connects with ``getToken`` (``POST
/api/tokens/connection``), subscribes to a public and a private channel (``getToken`` of
``POST /api/tokens/subscription``), is on its personal channel from the start, and calls the
``whoami`` RPC. Then messages flow to the three channels from a second process of the
service (same Redis) while the page's process is restarted, and again while Chromium is
offline and the process restarted under it: each channel shows every message once, in
order (its offsets consecutive), and the short-lived tokens were renewed on the way.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest
from playwright.sync_api import Browser, Page, expect
from websocket.testing import LiveServer, RedisServer  # the vendored backend

from tests.conftest import render, require_redis
from tests.test_centrifuge_sdks import DRIVER, PUBLISH_KEY, SECRET
from tests.test_console import browser
from tests.test_first_hour import AUTH_EXAMPLE

__all__ = ["browser"]  # the Chromium fixture of the console's tests

ENDPOINTS = "/connection/websocket:channels, /ws/rooms/{room}:broadcast"
SESSION = "alice-session-token-0123456789"
USER = "alice"
TOKEN_TTL = "3"  # seconds: each token is renewed several times during the test
NODE_MODULES = DRIVER / "node_modules"  # conformance/centrifuge's lock file: npm centrifuge
WAIT = 20_000  # ms any one expectation on the page may take
CONNECTION = "/api/tokens/connection"
SUBSCRIPTION = "/api/tokens/subscription"


def readme_section(project: Path, title: str) -> str:
    readme = (project / "README.md").read_text()
    section = readme[readme.index(f"\n## {title}\n") :]
    return section[: section.index("\n## ", 1)]


def fenced(section: str, language: str) -> str:
    """The one code block of ``language`` in ``section``."""
    [block] = re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.M | re.S)
    return str(block)


def browser_project(folder: Path, config: Path, framework: str) -> tuple[Path, str]:
    """A rendered project on Redis with the README's auth.py, and the README's browser app
    in it (``browser/``, which the app serves); and the app's import path."""
    answers = {"endpoints": ENDPOINTS, "framework": framework, "broadcast_backend": "redis"}
    project = render(folder, config, answers)
    [package] = [app.parent for app in project.glob("*/app.py")]
    example = AUTH_EXAMPLE.search((project / "README.md").read_text())
    assert example, "the README has an auth.py example"
    (package / "auth.py").write_text(example.group(1))
    section = readme_section(project, "Channels in a browser")
    (project / "browser").mkdir()
    (project / "browser" / "index.html").write_text(fenced(section, "html"))
    (project / "browser" / "app.js").write_text(fenced(section, "js"))
    # npm install centrifuge (a copy: the app serves no link out of the folder)
    shutil.copytree(NODE_MODULES / "centrifuge", project / "browser/node_modules/centrifuge")
    return project, f"{package.name}.app:app"


class Publisher:
    """Publishes ``{"n": 1}``, ``{"n": 2}``... to each channel (the personal one by user)
    through ``server``'s ``POST /api/publish``, from a thread, until stopped."""

    TARGETS: ClassVar[dict[str, dict[str, str]]] = {
        "news:today": {"channel": "news:today"},
        f"private:notes#{USER}": {"channel": f"private:notes#{USER}"},
        f"user:#{USER}": {"user": USER},
    }

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.sent: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def publish_once(self, channel: str) -> None:
        body = {**self.TARGETS[channel], "message": {"n": self.sent[channel] + 1}}
        request = urllib.request.Request(
            self.server.url("/api/publish"),
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {PUBLISH_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        self.sent[channel] += 1

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for channel in self.TARGETS:
                self.publish_once(channel)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def shown(page: Page) -> dict[str, list[tuple[int, Any]]]:
    """What the page lists, by channel: (offset, data) of each publication, in order."""
    texts = page.locator("#publications li").all_text_contents()
    by_channel: dict[str, list[tuple[int, Any]]] = {}
    for text in texts:
        channel, offset, data = text.split(" ", 2)
        by_channel.setdefault(channel, []).append((int(offset), json.loads(data)))
    return by_channel


def wait_until_shown(page: Page, publisher: Publisher, within: float = WAIT / 1000) -> None:
    """Until the page shows the last message published to each channel."""
    deadline = time.monotonic() + within
    while True:
        seen = shown(page)
        last = {c: seen.get(c, [(0, {"n": 0})])[-1][1]["n"] for c in Publisher.TARGETS}
        if all(last[c] >= publisher.sent[c] for c in Publisher.TARGETS):
            return
        assert time.monotonic() < deadline, (dict(publisher.sent), last)
        time.sleep(0.1)


@pytest.fixture(params=["fastapi", "asgi"])
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_readme_browser_app_recovers_every_channel_through_restarts_and_a_cut_network(
    framework: str, browser: Browser, tmp_path: Path, cookiecutter_config: Path
) -> None:
    require_redis()
    project, app = browser_project(tmp_path, cookiecutter_config, framework)
    errors: list[str] = []
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        environment = {
            "REDIS_URL": redis.url,
            "SESSION_TOKENS": f"{USER}={SESSION},bob=bob-session-token-0123456789",
            "TOKEN_HMAC_SECRET_KEY": SECRET,
            "PUBLISH_API_KEY": PUBLISH_KEY,
            "CONNECTION_TOKEN_TTL_SECONDS": TOKEN_TTL,
            "SUBSCRIPTION_TOKEN_TTL_SECONDS": TOKEN_TTL,
            "HISTORY_SIZE": "1000",  # what is published while the page is away, and more
        }
        server = stack.enter_context(LiveServer(app, env=environment, cwd=project))
        other = stack.enter_context(  # the service's second process: the publisher
            LiveServer(app, env=environment, cwd=project)
        )
        context = browser.new_context()
        stack.callback(context.close)
        context.add_cookies([{"name": "session", "value": SESSION, "url": server.url("/")}])
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.on("websocket", lambda websocket: requested.append(websocket.url))
        page.goto(server.url("/browser"))  # redirected to /browser/, the folder's index.html
        expect(page.locator("#user")).to_have_text(USER, timeout=WAIT)  # the whoami RPC

        publisher = Publisher(other)
        # Until the page is subscribed, a public channel's messages go to nobody: publish
        # one to each channel until each is shown.
        deadline = time.monotonic() + WAIT / 1000
        while set(shown(page)) != set(Publisher.TARGETS):
            assert time.monotonic() < deadline, shown(page)
            for channel in set(Publisher.TARGETS) - set(shown(page)):
                publisher.publish_once(channel)
            time.sleep(0.3)
        first = {channel: len(items) for channel, items in shown(page).items()}

        with publisher:
            time.sleep(1)
            server.restart()  # the page's process goes away and comes back
            time.sleep(2)
            wait_until_shown(page, publisher)
            context.set_offline(True)  # no request, no new websocket: a cut network
            server.restart()  # and its connection is gone meanwhile
            time.sleep(float(TOKEN_TTL) + 1)  # its connection token expires meanwhile
            context.set_offline(False)
            requested.append("online")
            time.sleep(2)
        wait_until_shown(page, publisher, 60)  # centrifuge-js's backoff grew offline
        requested.append("recovered")
        # Connected for a while: both tokens are renewed on the same connection (refresh,
        # sub_refresh), and every channel still receives past the first tokens' exp.
        time.sleep(2 * float(TOKEN_TTL) + 1)
        for channel in Publisher.TARGETS:
            publisher.publish_once(channel)
        wait_until_shown(page, publisher)

        for channel, items in shown(page).items():
            # From the first message shown on, every one, once, in order.
            numbers = [data["n"] for _, data in items]
            assert numbers == list(range(numbers[0], publisher.sent[channel] + 1)), channel
            assert len(items) - first[channel] > 50, (channel, len(items))
            offsets = [offset for offset, _ in items]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), channel
        page.screenshot(path=str(tmp_path / "browser.png"), full_page=True)
    assert errors == []
    origin = server.url("/").rstrip("/")
    ws_origin = origin.replace("http://", "ws://")
    marks = ("online", "recovered")
    elsewhere = [u for u in requested if not u.startswith((origin, ws_origin, *marks))]
    assert elsewhere == []  # nothing loaded from elsewhere
    after_online = requested[requested.index("online") : requested.index("recovered")]
    # The connection token had expired offline: the SDK asked for another to reconnect.
    assert server.url(CONNECTION) in after_online, after_online
    renewed = requested[requested.index("recovered") :]
    assert not [url for url in renewed if url.startswith(ws_origin)], renewed  # one connection
    assert renewed.count(server.url(CONNECTION)) >= 2, renewed
    assert renewed.count(server.url(SUBSCRIPTION)) >= 2, renewed
    assert "Traceback" not in server.log, server.log
