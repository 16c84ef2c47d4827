"""The Channels section of a rendered README, run as written.

Its fenced code blocks are taken from the rendered README of a project with a channels
endpoint: the ``sh`` block mints the connection token (bash, with this virtualenv's
``python`` first on PATH), the ``python`` block runs in a subprocess of this virtualenv
(centrifuge-python) and the ``js`` block in Node, beside conformance/centrifuge's
node_modules (npm ``centrifuge``). Only the address changes: the snippets say
``127.0.0.1:8000``, the server listens on a free port. Each must print the publications
that ``POST /api/publish`` sends to ``news:today``, so the docs cannot drift from the service.
The section "Channels in a browser" (a page and its ``app.js``) runs in Chromium in
tests/test_centrifuge_browser.py, and its token routes' answers are held by
tests/test_centrifuge_tokens.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websocket.testing import LiveServer  # the vendored backend
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError
from websockets.typing import Subprotocol

from tests.conftest import render, tool_environment
from tests.test_centrifuge_sdks import (
    DRIVER,
    ENDPOINTS,
    PUBLISH_KEY,
    SECRET,
    Service,
    node_or_skip,
    token,
)

ADDRESS = "127.0.0.1:8000"  # where the snippets expect the service
WAIT = 15.0


@pytest.fixture(scope="module")
def readme_and_service(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Iterator[tuple[str, Service]]:
    """The Channels section of the rendered README, and the project served."""
    project = render(
        tmp_path_factory.mktemp("channels-readme"), cookiecutter_config, {"endpoints": ENDPOINTS}
    )
    [app] = project.glob("*/app.py")
    readme = (project / "README.md").read_text()
    section = readme[readme.index("\n## Channels\n") :]
    section = section[: section.index("\n## ", 1)]
    environment = {"TOKEN_HMAC_SECRET_KEY": SECRET, "PUBLISH_API_KEY": PUBLISH_KEY}
    with LiveServer(f"{app.parent.name}.app:app", env=environment, cwd=project) as server:
        yield section, Service(server, "memory")


def fenced(section: str, language: str) -> str:
    """The one code block of ``language`` in ``section``."""
    [block] = re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.M | re.S)
    return str(block)


def minted_token(section: str) -> str:
    """The token the README's ``sh`` block exports as CENTRIFUGE_TOKEN."""
    script = fenced(section, "sh") + 'printf %s "$CENTRIFUGE_TOKEN"\n'
    result = subprocess.run(
        ["bash", "-euc", script],
        env=tool_environment(TOKEN_HMAC_SECRET_KEY=SECRET),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def at(service: Service, snippet: str) -> str:
    assert ADDRESS in snippet, snippet
    return snippet.replace(ADDRESS, f"127.0.0.1:{service.server.port}")


async def prints_publications(
    command: list[str], cwd: Path, env: dict[str, str], service: Service
) -> tuple[list[str], dict[int, dict[str, int]]]:
    """Start ``command``; publish to news:today until it prints, then three more: the four
    lines it printed, and the messages published by offset."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    answers: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(WAIT):
            # Until the snippet is subscribed, publications go to nobody: publish until
            # one is printed, then three more, each of which must be printed.
            while not lines:
                n = len(answers) + 1
                answers.append(await asyncio.to_thread(service.publish, "news:today", {"n": n}))
                try:
                    async with asyncio.timeout(0.2):
                        lines.append((await process.stdout.readline()).decode().strip())
                except TimeoutError:
                    continue
            first = len(answers)
            for n in range(first + 1, first + 4):
                answers.append(await asyncio.to_thread(service.publish, "news:today", {"n": n}))
                lines.append((await process.stdout.readline()).decode().strip())
    except TimeoutError:
        pass
    finally:
        if process.returncode is None:
            process.kill()
        _, stderr = await process.communicate()
    assert len(lines) == 4, (lines, stderr.decode())
    return lines, {a["offset"]: {"n": n} for n, a in enumerate(answers, 1)}


def test_the_readme_python_snippet_prints_each_publication(
    readme_and_service: tuple[str, Service], tmp_path: Path
) -> None:
    section, service = readme_and_service
    snippet = tmp_path / "snippet.py"
    snippet.write_text(at(service, fenced(section, "python")))
    env = tool_environment(CENTRIFUGE_TOKEN=minted_token(section), PYTHONUNBUFFERED="1")
    command = [sys.executable, str(snippet)]
    lines, published = asyncio.run(prints_publications(command, tmp_path, env, service))
    # print(ctx.pub.offset, ctx.pub.data): the offset, then the message as a dict
    offsets = [int(line.split(" ", 1)[0]) for line in lines]
    assert offsets == list(range(offsets[0], offsets[0] + 4))
    assert offsets[-1] == max(published)
    assert [line.split(" ", 1)[1] for line in lines] == [str(published[o]) for o in offsets]


def test_the_readme_js_snippet_prints_each_publication(
    readme_and_service: tuple[str, Service], tmp_path: Path
) -> None:
    section, service = readme_and_service
    node = node_or_skip()
    (tmp_path / "node_modules").symlink_to(DRIVER / "node_modules")
    snippet = tmp_path / "snippet.mjs"
    snippet.write_text(at(service, fenced(section, "js")))
    command = [node, str(snippet)]
    major = int(subprocess.check_output([node, "--version"], text=True).strip("v\n").split(".")[0])
    if major < 22:  # no global WebSocket before Node 22 (the README says so)
        command.insert(1, "--experimental-websocket")
    env = tool_environment(CENTRIFUGE_TOKEN=minted_token(section))
    lines, published = asyncio.run(prints_publications(command, tmp_path, env, service))
    # console.log(ctx.channel, ctx.data): the channel, then the message as Node shows it
    last = [message["n"] for _, message in sorted(published.items())][-4:]
    assert lines == [f"news:today {{ n: {n} }}" for n in last]


NOT_SERVED = [  # (what the README's table names, in its first column; what its second says)
    ("unidirectional transports", "404"),
    ("`centrifuge-protobuf`", "3501"),
    ("`delta` in `subscribe`", "whole publications"),
    ("`subs` in `connect`", "ignored"),
    ("`send`", "3508"),
]


def test_the_readme_says_what_is_not_served_and_the_service_answers_as_it_says(
    readme_and_service: tuple[str, Service],
) -> None:
    section, service = readme_and_service
    table = section[section.index("**Not served.**") :]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    for named, answer in NOT_SERVED:
        [row] = [r for r in rows if named in r.split(" | ")[0]]
        assert answer in row.split(" | ")[1], row

    async def commands() -> None:
        url = service.ws_url
        async with connect(url, subprotocols=[Subprotocol("centrifuge-protobuf")]) as websocket:
            assert websocket.subprotocol is None
        async with connect(url) as websocket:
            connect_command = {"token": token("alice"), "subs": {"news:subs": {}}}
            await websocket.send(json.dumps({"id": 1, "connect": connect_command}))
            connected = json.loads(await websocket.recv())["connect"]
            assert list(connected["subs"]) == ["user:#alice"]  # her personal channel alone
            subscribe = {"channel": "news:delta", "delta": "fossil"}
            await websocket.send(json.dumps({"id": 2, "subscribe": subscribe}))
            subscribed = json.loads(await websocket.recv())["subscribe"]
            assert "delta" not in subscribed
            await websocket.send(b"\x0a\x00")  # a protobuf command
            with pytest.raises(ConnectionClosedError) as closed:
                await websocket.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 3501
        async with connect(url) as websocket:
            await websocket.send(json.dumps({"id": 1, "connect": {"token": token("alice")}}))
            assert "connect" in json.loads(await websocket.recv())
            await websocket.send(json.dumps({"send": {"data": {"x": 1}}}))
            with pytest.raises(ConnectionClosedError) as closed:
                await websocket.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3508, "not available")

    asyncio.run(commands())
    for path in ("/connection/sse", "/connection/http_stream", "/connection/uni_websocket"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(service.server.url(path), timeout=WAIT)
        refused.value.close()
        assert refused.value.code == 404
