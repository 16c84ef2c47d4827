"""Bad input on a channels endpoint of a rendered project, over real sockets: each answered
by its code, and nothing else disturbed (a centrifuge-python client subscribed meanwhile
gets every message, and the server logs no traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websocket.testing import LiveServer  # the vendored backend
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import render
from tests.test_centrifuge_sdks import (
    ENDPOINTS,
    PUBLISH_KEY,
    SECRET,
    WAIT,
    Recorder,
    Service,
    python_client,
    run,
    subscribe,
    token,
)

# centrifuge-python 0.7 leaves some sockets to the garbage collector (test_centrifuge_sdks).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CONNECT = json.dumps({"id": 1, "connect": {}})
PRESENCE = json.dumps({"id": 2, "presence": {"channel": "news:x"}})
# (what the client sends after connecting, or None: before; the close code or error expected)
BAD_INPUT: dict[str, tuple[bool, list[str], int]] = {
    "garbage": (True, ["\x00\x01 not json"], 3501),
    "truncated-json": (True, ['{"id":2,"subscribe":{"channel":"news:x"'], 3501),
    "wrong-field-types": (True, ['{"id":2,"subscribe":{"channel":["news:x"]}}'], 3501),
    "id-not-an-integer": (True, ['{"id":"2","subscribe":{"channel":"news:x"}}'], 3501),
    "id-a-float": (True, ['{"id":2.5,"subscribe":{"channel":"news:x"}}'], 3501),
    "only-newlines": (True, ["\n\n\n\n"], 3501),
    "600-commands-in-one-frame": (True, ["\n".join([PRESENCE] * 600)], 3501),
    "10000-commands-in-one-frame": (True, ["\n".join([PRESENCE] * 10_000)], 1009),
    "subscribe-before-connect": (False, ['{"id":1,"subscribe":{"channel":"news:x"}}'], 3501),
    "connect-twice": (True, ['{"id":2,"connect":{}}'], 3501),
    "binary-frame": (True, [], 3501),
    "another-key": (False, [json.dumps({"id": 1, "connect": {"token": "KEY"}})], 3500),
    "alg-none": (False, [json.dumps({"id": 1, "connect": {"token": "NONE"}})], 3500),
}


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Iterator[Service]:
    answers = {"endpoints": ENDPOINTS, "metrics": "no", "console_page": "no"}
    project = render(tmp_path_factory.mktemp("bad-input"), cookiecutter_config, answers)
    [app] = project.glob("*/app.py")
    environment = {
        "TOKEN_HMAC_SECRET_KEY": SECRET,
        "PUBLISH_API_KEY": PUBLISH_KEY,
        "ANONYMOUS_CONNECTIONS": "yes",
    }
    with LiveServer(f"{app.parent.name}.app:app", env=environment, cwd=project) as server:
        yield Service(server, "memory")
    assert "Traceback" not in server.log, server.log


async def close_code_after(service: Service, connected: bool, frames: list[str]) -> Any:
    """The close code (or the error reply) the server answers ``frames`` with."""
    async with connect(service.ws_url, max_size=None, ping_interval=None) as websocket:
        if connected:
            await websocket.send(CONNECT)
            assert "connect" in json.loads(await websocket.recv())
        for frame in frames:
            if "KEY" in frame or "NONE" in frame:
                forged = token("bob", key="another key of at least thirty-two bytes")
                frame = frame.replace("KEY", forged).replace("NONE", token("bob", alg="none"))
            await websocket.send(frame)
        if not frames:
            await websocket.send(b"\x00binary")
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(WAIT):
                while True:
                    reply = json.loads(await websocket.recv())
                    if "error" in reply:
                        return reply["error"]["code"]
        return websocket.close_code


def test_each_bad_input_gets_its_code_and_a_subscriber_beside_it_misses_nothing(
    service: Service,
) -> None:
    async def scenario() -> None:
        async with python_client(service.ws_url) as (client, recorder):
            news = subscribe(client, recorder, "news:bad-input")
            await client.connect()
            await news.subscribe()
            await recorder.count("subscribed", 1)
            await beside(recorder)

    async def beside(recorder: Recorder) -> None:
        codes = {}
        for number, (name, (connected, frames, _)) in enumerate(BAD_INPUT.items(), 1):
            codes[name] = await close_code_after(service, connected, frames)
            await asyncio.to_thread(service.publish, "news:bad-input", {"n": number})
        huge = await close_code_after(
            service, True, [json.dumps({"id": 2, "subscribe": {"channel": "news:" + "x" * 300}})]
        )
        assert huge == 106
        assert codes == {name: code for name, (_, _, code) in BAD_INPUT.items()}
        await recorder.count("publication", len(BAD_INPUT), "news:bad-input")
        publications = recorder.of("publication", "news:bad-input")
        assert [p["data"]["n"] for p in publications] == list(range(1, len(BAD_INPUT) + 1))
        assert [p["offset"] for p in publications] == list(range(1, len(BAD_INPUT) + 1))
        assert recorder.of("disconnected") == []

    run(scenario())
