"""The fault suite: rendered projects on a real uvicorn meet churn, garbage, floods and cuts.

Each flavour's default project runs on uvicorn (127.0.0.1, a free port) with small limits,
through tests/fault_app.py so that its asyncio task count can be read from outside. The
figures (cycles, fuzz cases, baseline and after) are written to build/fault-suite/ and
printed at the end of the run (see conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import struct
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websocket.testing import LEAN_PROTOCOL, LiveServer  # the vendored backend

from tests.conftest import TEMPLATE, render
from tests.rawsocket import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    HandshakeRefused,
    RawWebSocket,
    open_and_leave,
)

FIGURES = TEMPLATE / "build" / "fault-suite"
ENDPOINTS = ["/ws/keepalive", "/ws/echo", "/ws/clock"]
LIMITS = {
    "TICK_SECONDS": "0.05",
    "MAX_MESSAGE_BYTES": "8192",
    "MESSAGES_PER_SECOND": "50",
    "MESSAGE_BURST": "20",
    "IDLE_TIMEOUT_SECONDS": "2",
    "SEND_TIMEOUT_SECONDS": "2",
    "ALLOWED_ORIGINS": "https://allowed.example",
}
CHURN_CYCLES = 10_000
CHURN_RSS_BOUND_MIB = 25  # stated bound on RSS growth over the churn, after a warm-up
FUZZ_CASES = 150
DOCUMENTED_CLOSE_CODES = {1000, 1002, 1003, 1007, 1008, 1009}  # never 1011, never none


def record(flavour: str, name: str, figures: dict[str, Any]) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{flavour}-{name}.json").write_text(json.dumps(figures))


def flavour_params() -> list[Any]:
    return [
        pytest.param(f, marks=pytest.mark.xdist_group(f"faults-{f}")) for f in ("fastapi", "asgi")
    ]


@pytest.fixture(scope="module", params=flavour_params())
def project(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
) -> tuple[str, Path]:
    flavour: str = request.param
    output = tmp_path_factory.mktemp(f"faults-{flavour}")
    return flavour, render(output, cookiecutter_config, {"framework": flavour})


class Server:
    """A rendered project served by uvicorn, with its /proc figures at hand."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self.live = LiveServer(
            "fault_app:app",
            env={
                **env,
                "FAULT_APP_MODULE": "ws_service.app",
                "PYTHONPATH": str(TEMPLATE / "tests"),
            },
            args=["--ws", LEAN_PROTOCOL.format(package="ws_service")],  # as the runner serves
            cwd=project,
        )

    def __enter__(self) -> Server:
        self.live.__enter__()
        self.port = self.live.port
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.live.stop()

    def tasks(self) -> int:
        with urllib.request.urlopen(self.live.url("/_fault/tasks"), timeout=5) as response:
            return int(response.read())

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.live.pid}/fd"))

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.live.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]

    def settle(self, tasks: int, timeout: float = 15.0) -> int:
        """Wait until the task count is back to ``tasks``; the count it ended at."""
        deadline = time.monotonic() + timeout
        while (now := self.tasks()) > tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return now


# uvicorn's websockets-sansio logs each invalid UTF-8 text frame at ERROR with a traceback
# (it then closes with 1007, as it should): a client can cause it; it is not a fault.
UVICORN_INVALID_UTF8 = re.compile(
    r"ERROR: +Invalid UTF-8 sequence received from client\.\nTraceback.*?\nUnicodeDecodeError: .*?\n",
    re.DOTALL,
)


def troubles(log: str) -> list[str]:
    """What in a server log shows a fault: tracebacks, lost tasks, unclosed resources."""
    log = UVICORN_INVALID_UTF8.sub("", log)
    signs = (
        "Traceback",
        "Task was destroyed",
        "unclosed",
        "Exception in ASGI",
        "was never retrieved",
    )
    return [sign for sign in signs if sign in log]


@pytest.fixture(scope="module")
def server(project: tuple[str, Path]) -> Iterator[Server]:
    with Server(project[1], LIMITS) as running:
        yield running
    assert troubles(running.live.log) == [], running.live.log


def keepalive_round_trip(port: int, path: str = "/ws/keepalive") -> None:
    """A healthy client's keepalive comes back acknowledged within two seconds."""
    connection = RawWebSocket.connect(port, path, timeout=2)
    try:
        connection.send(TEXT, b'{"type": "keepalive", "n": 7}')
        frame = connection.receive()
        while frame is not None and json.loads(frame.payload).get("type") == "tick":
            frame = connection.receive()
        assert frame is not None
        assert json.loads(frame.payload)["type"] == "keepalive_ack"
        connection.send(CLOSE, struct.pack("!H", 1000))
    finally:
        connection.close()


def test_churn_leaves_no_task_fd_or_memory_behind(
    project: tuple[str, Path], server: Server
) -> None:
    flavour = project[0]
    ways = ["close frame", "reset", "half-close"]

    async def churn(cycles: int) -> None:
        semaphore = asyncio.Semaphore(50)

        async def cycle(number: int) -> None:
            async with semaphore:
                path = ENDPOINTS[number % len(ENDPOINTS)]
                await asyncio.wait_for(open_and_leave(server.port, path, ways[number // 3 % 3]), 10)

        await asyncio.gather(*(cycle(number) for number in range(cycles)))

    asyncio.run(churn(300))  # warm-up: allocator pools, imports, caches
    time.sleep(0.5)
    tasks, fds, rss = server.tasks(), server.fds(), server.rss_mib()
    started = time.monotonic()
    asyncio.run(churn(CHURN_CYCLES))
    seconds = time.monotonic() - started
    tasks_after, fds_after, rss_after = server.settle(tasks), server.fds(), server.rss_mib()
    figures = {
        "cycles": CHURN_CYCLES,
        "seconds": round(seconds, 1),
        "tasks": [tasks, tasks_after],
        "fds": [fds, fds_after],
        "rss_mib": [round(rss, 1), round(rss_after, 1)],
    }
    record(flavour, "churn", figures)
    assert tasks_after == tasks
    assert fds_after <= fds + 2  # + the stats request's own socket, at most
    assert rss_after - rss < CHURN_RSS_BOUND_MIB
    keepalive_round_trip(server.port)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
PAYLOADS = st.one_of(
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(["type", "client_ns", "text"]), JSON_VALUES, max_size=3).map(
        lambda value: json.dumps(value).encode()
    ),
    st.just(b'{"type": "keepalive", "client_ns": 1}'),
    st.text(max_size=200).map(str.encode),
    st.binary(max_size=200),  # often invalid UTF-8
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),  # deep nesting
    st.integers(4000, 6000).map(lambda digits: b"9" * digits),  # past Python's int limit
    st.integers(4000, 6000).map(
        lambda size: b'{"big": "' + b"x" * size + b'"}'
    ),  # over the size limit
)
WHOLE_MESSAGES = st.tuples(st.sampled_from([TEXT, BINARY]), PAYLOADS).map(
    lambda m: [(m[0], m[1], True)]
)
FRAGMENTED_MESSAGES = st.tuples(
    st.sampled_from([TEXT, BINARY]), st.lists(PAYLOADS, min_size=2, max_size=3)
).map(
    lambda m: [
        (m[0] if i == 0 else CONTINUATION, part, i == len(m[1]) - 1) for i, part in enumerate(m[1])
    ]
)
CONTROL_FRAMES = st.tuples(st.sampled_from([PING, PONG]), st.binary(max_size=125)).map(
    lambda m: [(m[0], m[1], True)]
)
PROTOCOL_VIOLATIONS = st.one_of(
    st.tuples(st.sampled_from([3, 7, 11, 15]), st.binary(max_size=20)).map(
        lambda m: [(m[0], m[1], True)]
    ),
    st.binary(max_size=20).map(
        lambda payload: [(CONTINUATION, payload, True)]
    ),  # nothing to continue
    st.binary(min_size=126, max_size=200).map(
        lambda payload: [(PING, payload, True)]
    ),  # control too long
    st.binary(max_size=20).map(lambda payload: [(PING, payload, False)]),  # a fragmented control
)
# Well-formed messages, so that the service's own handling is what gets exercised, and in one
# case out of five a protocol violation at the end, which the server must close with 1002.
FRAMES = st.tuples(
    st.lists(
        st.one_of(WHOLE_MESSAGES, FRAGMENTED_MESSAGES, CONTROL_FRAMES), min_size=1, max_size=4
    ),
    st.one_of(st.just([]), st.just([]), st.just([]), st.just([]), PROTOCOL_VIOLATIONS),
).map(lambda parts: [frame for message in [*parts[0], parts[1]] for frame in message])


def test_fuzzed_frames_get_documented_answers_and_a_healthy_client_is_served(
    project: tuple[str, Path], server: Server
) -> None:
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=FUZZ_CASES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(path=st.sampled_from(ENDPOINTS), frames=FRAMES)
    def fuzz(path: str, frames: list[tuple[int, bytes, bool]]) -> None:
        connection = RawWebSocket.connect(server.port, path, timeout=5)
        try:
            with contextlib.suppress(OSError):  # the server may close mid-way
                for opcode, payload, fin in frames:
                    connection.send(opcode, payload, fin)
            # Let the server answer first: a close frame in the same read as invalid UTF-8
            # trips uvicorn itself (its send_close(1007) meets a closing connection).
            replies, close, ended = connection.receive_until_quiet(quiet=0.05)
            if close is None and not ended:  # the session is still open: end it ourselves
                connection.send(CLOSE, struct.pack("!H", 1000))
                more, close = connection.receive_until_close()
                replies += more
        finally:
            connection.close()
        assert close is not None, "the connection ended without a close frame"
        assert close.close_code in DOCUMENTED_CLOSE_CODES, close
        for reply in replies:
            if reply.opcode == TEXT:  # every text reply is a JSON object of the protocol
                assert isinstance(json.loads(reply.payload), dict)
        outcomes[f"close {close.close_code}"] += 1
        keepalive_round_trip(server.port)

    fuzz()
    record(project[0], "fuzz", {"cases": sum(outcomes.values()), "outcomes": dict(outcomes)})
    assert sum(outcomes.values()) == FUZZ_CASES


def close_after(
    connection: RawWebSocket, *frames: tuple[int, bytes]
) -> tuple[list[Any], int | None]:
    for opcode, payload in frames:
        connection.send(opcode, payload)
    replies, close = connection.receive_until_close()
    connection.close()
    return [
        json.loads(r.payload) for r in replies if r.opcode == TEXT
    ], close.close_code if close else None


def test_an_oversized_message_is_closed_with_1009(server: Server) -> None:
    _, code = close_after(
        RawWebSocket.connect(server.port, "/ws/echo"), (TEXT, b'{"x": "' + b"y" * 9000 + b'"}')
    )
    assert code == 1009


def test_a_flood_is_closed_with_1008(server: Server) -> None:
    connection = RawWebSocket.connect(server.port, "/ws/echo")
    replies, code = close_after(connection, *[(TEXT, b'{"n": 1}')] * 40)
    assert code == 1008
    assert 15 <= len(replies) <= 25  # the burst of 20 was served, then the connection closed


def test_an_idle_client_is_closed_with_1008_and_keepalives_count(server: Server) -> None:
    connection = RawWebSocket.connect(server.port, "/ws/keepalive")
    for _ in range(3):  # 1.2 s apart, under the 2 s idle timeout
        time.sleep(1.2)
        connection.send(TEXT, b'{"type": "keepalive"}')
        frame = connection.receive()
        assert frame is not None
        assert json.loads(frame.payload)["type"] == "keepalive_ack"
    started = time.monotonic()
    _, code = close_after(connection)
    assert code == 1008
    assert 1.5 < time.monotonic() - started < 4


def test_invalid_utf8_is_closed_by_the_server_with_1007(server: Server) -> None:
    assert (
        close_after(RawWebSocket.connect(server.port, "/ws/echo"), (TEXT, b"\xff\xfe"))[1] == 1007
    )


def test_garbage_gets_error_replies_and_the_session_goes_on(server: Server) -> None:
    garbage = [b"not json", b"[1, 2]", b"3", b"[" * 2000, b"9" * 5000, b'{"a": NaN}']
    connection = RawWebSocket.connect(server.port, "/ws/echo")
    for payload in garbage:
        connection.send(TEXT, payload)
    connection.send(BINARY, b"\x00\x01")
    connection.send(TEXT, b'{"ok": 1}')
    frames, close, _ = connection.receive_until_quiet(quiet=0.5, within=5)
    connection.close()
    replies = [json.loads(frame.payload) for frame in frames]
    assert [reply.get("type") for reply in replies] == ["error"] * 7 + [None]
    assert replies[-1] == {"ok": 1}
    assert close is None  # still open


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        (None, True),  # not a browser
        ("http://127.0.0.1:{port}", True),  # the service's own page
        ("https://allowed.example", True),  # ALLOWED_ORIGINS
        ("https://evil.example", False),  # cross-site websocket hijacking
    ],
)
def test_origin_check(server: Server, origin: str | None, accepted: bool) -> None:
    headers = {"Origin": origin.format(port=server.port)} if origin else {}
    if accepted:
        RawWebSocket.connect(server.port, "/ws/keepalive", headers).close()
    else:
        with pytest.raises(HandshakeRefused) as refused:
            RawWebSocket.connect(server.port, "/ws/keepalive", headers)
        assert refused.value.status == 403


def test_a_slow_reader_is_dropped_without_delaying_others(
    project: tuple[str, Path], server: Server
) -> None:
    rss_before = server.rss_mib()
    slow = RawWebSocket.connect(server.port, "/ws/echo", receive_buffer=4096, timeout=0.5)
    fast = RawWebSocket.connect(server.port, "/ws/echo")
    chunk = b'{"x": "' + b"y" * 3900 + b'"}'
    worst_reply = 0.0
    deadline = time.monotonic() + 30
    while "dropped: it does not read" not in server.live.log:
        assert time.monotonic() < deadline, "the slow reader was never dropped"
        with contextlib.suppress(OSError):  # its sends stall, or fail once it is dropped
            for _ in range(10):
                slow.send(TEXT, chunk)  # its echoes pile up: it reads nothing
        sent = time.monotonic()
        fast.send(TEXT, b'{"ping": 1}')
        assert fast.receive() is not None
        worst_reply = max(worst_reply, time.monotonic() - sent)
        time.sleep(0.25)  # under the rate limit
    slow.close()
    fast.close()
    growth = server.rss_mib() - rss_before
    figures = {"fast_worst_reply_seconds": worst_reply, "rss_growth_mib": growth}
    record(project[0], "slow-reader", figures)
    assert worst_reply < 1.0  # answered at once, not after the 2 s send timeout
    assert growth < 20  # the server held a bounded amount for the slow reader


def test_a_full_server_closes_with_1013(project: tuple[str, Path]) -> None:
    with Server(
        project[1], {**LIMITS, "MAX_CONNECTIONS": "3", "IDLE_TIMEOUT_SECONDS": "30"}
    ) as full:
        held = [RawWebSocket.connect(full.port, "/ws/keepalive") for _ in range(3)]
        extra = RawWebSocket.connect(full.port, "/ws/keepalive")
        assert close_after(extra)[1] == 1013
        held.pop().close()
        time.sleep(0.3)
        RawWebSocket.connect(full.port, "/ws/keepalive").close()  # a place is free again
        for connection in held:
            connection.close()


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_shutdown_closes_every_client_and_exits_cleanly(
    project: tuple[str, Path], signal_name: str
) -> None:
    with Server(project[1], {**LIMITS, "IDLE_TIMEOUT_SECONDS": "30"}) as running:
        clients = [RawWebSocket.connect(running.port, path) for path in ENDPOINTS * 5]
        started = time.monotonic()
        os.kill(running.live.pid, getattr(signal, signal_name))
        codes = []
        for client in clients:
            client.sock.settimeout(5)
            codes.append(client.receive_until_close(limit=10_000)[1])
            client.close()
        status = running.live.wait(timeout=10)
        seconds = time.monotonic() - started
    assert all(close is not None and close.close_code == 1012 for close in codes), codes
    assert status in (0, -getattr(signal, signal_name))  # uvicorn re-raises SIGTERM
    assert seconds < 5
    assert troubles(running.live.log) == [], running.live.log
    assert "ERROR" not in running.live.log


def test_the_readme_authentication_example_refuses_and_accepts(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    project = render(tmp_path, cookiecutter_config, {})
    readme = (project / "README.md").read_text()
    example = re.search(r"```python\n(# auth\.py.*?)```", readme, re.DOTALL)
    assert example, "the README has an auth.py example"
    (project / "ws_service" / "auth.py").write_text(example.group(1))
    with Server(
        project, {"SESSION_TOKENS": "alice=t0ken-a", "IDLE_TIMEOUT_SECONDS": "30"}
    ) as running:
        with pytest.raises(HandshakeRefused) as refused:
            RawWebSocket.connect(running.port, "/ws/echo")
        assert refused.value.status == 403
        with pytest.raises(HandshakeRefused):
            RawWebSocket.connect(running.port, "/ws/echo", {"Cookie": "session=wrong"})
        connection = RawWebSocket.connect(running.port, "/ws/echo", {"Cookie": "session=t0ken-a"})
        connection.send(TEXT, b'{"hello": 1}')
        assert json.loads(connection.receive().payload) == {"hello": 1}  # type: ignore[union-attr]
        connection.close()
    assert "t0ken" not in running.live.log
