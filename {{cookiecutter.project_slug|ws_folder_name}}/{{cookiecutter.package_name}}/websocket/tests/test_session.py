"""The session helpers, driven through each WebSocket face over a scripted ASGI connection."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

import pytest

from ..asgi_types import Message
from ..session import (
    SessionSocket,
    _flat_object,
    drain_text,
    dumps,
    dumps_parsed,
    every,
    keepalive_loop,
    loads,
    next_beat,
    now_ns,
    receive_json,
    run_websocket,
)
from ..testing import ScriptedClient
from .conftest import SocketFactory, VirtualClockLoop


async def wait_forever(websocket: SessionSocket) -> None:
    await asyncio.Event().wait()


def json_sent(message: Message) -> Any:
    assert message["type"] == "websocket.send", message
    return json.loads(message["text"])


async def test_session_accepts_then_closes_1000_when_every_task_returns(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    ran: list[str] = []

    async def first(websocket: SessionSocket) -> None:
        ran.append("first")

    async def second(websocket: SessionSocket) -> None:
        await asyncio.sleep(0.01)
        ran.append("second")

    await run_websocket(make_socket(client), first, second)

    assert sorted(ran) == ["first", "second"]
    assert (await client.next_sent())["type"] == "websocket.accept"
    assert await client.next_sent() == {"type": "websocket.close", "code": 1000, "reason": ""}


async def test_client_disconnect_ends_session_and_cancels_every_task(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    cancelled = asyncio.Event()

    async def sleeper(websocket: SessionSocket) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    tasks_before = asyncio.all_tasks()
    session = asyncio.create_task(run_websocket(make_socket(client), drain_text, sleeper))
    client.send_text("ignored")
    client.disconnect(1001)
    await asyncio.wait_for(session, 2)

    assert cancelled.is_set()
    assert asyncio.all_tasks() == tasks_before
    assert [m["type"] for m in client.sent_so_far()] == ["websocket.accept"]  # no close: peer gone


async def test_task_error_closes_1011_and_is_logged_once_with_path(
    make_socket: SocketFactory, client: ScriptedClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(websocket: SessionSocket) -> None:
        raise ValueError("boom")

    tasks_before = asyncio.all_tasks()
    await run_websocket(make_socket(client), broken, wait_forever)

    assert [m["type"] for m in client.sent_so_far()] == ["websocket.accept", "websocket.close"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "/ws/test" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ValueError)
    assert asyncio.all_tasks() == tasks_before


async def test_close_code_after_error_is_1011(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    async def broken(websocket: SessionSocket) -> None:
        raise RuntimeError("bug")

    await run_websocket(make_socket(client), broken)
    await client.next_sent()
    assert (await client.next_sent())["code"] == 1011


async def test_failed_send_to_departed_client_ends_session_quietly(
    make_socket: SocketFactory, client: ScriptedClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def tick(websocket: SessionSocket) -> None:
        await websocket.send_text("tick")

    session = asyncio.create_task(
        run_websocket(make_socket(client), every(0.01, tick), wait_forever)
    )
    await client.next_sent()  # accept
    await client.next_sent()  # first tick
    client.send_error = OSError("connection lost")  # what uvicorn raises once the peer is gone
    await asyncio.wait_for(session, 2)

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # No close attempted into a dead connection (a tick or two may have gone out before the
    # error was set, on a busy machine).
    assert {message["type"] for message in client.sent_so_far()} <= {"websocket.send"}


async def test_cancelling_the_session_cancels_tasks_and_closes_1001(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    tasks_before = asyncio.all_tasks()
    session = asyncio.create_task(run_websocket(make_socket(client), wait_forever, drain_text))
    await client.next_sent()  # accept
    session.cancel()
    with pytest.raises(asyncio.CancelledError):
        await session

    assert (await client.next_sent())["code"] == 1001
    assert asyncio.all_tasks() == tasks_before


async def test_handler_that_closed_the_socket_itself_is_not_closed_twice(
    make_socket: SocketFactory, client: ScriptedClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def close_with_4000(websocket: SessionSocket) -> None:
        await websocket.close(4000)

    await run_websocket(make_socket(client), close_with_4000, wait_forever)

    assert [m.get("code") for m in client.sent_so_far()] == [None, 4000]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_drain_text_discards_frames_and_returns_on_disconnect(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    websocket = make_socket(client)
    await websocket.accept()
    client.send_text("one")
    client.send_bytes(b"two")
    client.disconnect()
    await asyncio.wait_for(drain_text(websocket), 2)
    assert [m["type"] for m in client.sent_so_far()] == ["websocket.accept"]


async def test_receive_json_forwards_only_objects_and_answers_the_rest(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    received: list[dict[str, Any]] = []

    async def handle(websocket: SessionSocket, message: dict[str, Any]) -> None:
        received.append(message)

    frames = [
        '{"type": "chat", "text": "h\\u00e9llo"}',
        "not json",
        "[1, 2]",
        '"text"',
        "12",
        "null",
        '{"a": NaN}',
        "[" * 100_000,
        "1" * 5000,
        "{}",
    ]
    for frame in frames:
        client.send_text(frame)
    client.disconnect()
    await asyncio.wait_for(run_websocket(make_socket(client), receive_json(handle)), 5)

    assert received == [{"type": "chat", "text": "héllo"}, {}]
    replies = [json_sent(m) for m in client.sent_so_far()[1:]]
    assert all(reply["type"] == "error" for reply in replies)
    reasons = [reply["reason"] for reply in replies]
    assert len(reasons) == 8
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1:5] == [
        "expected a JSON object, got an array",
        "expected a JSON object, got a string",
        "expected a JSON object, got a number",
        "expected a JSON object, got null",
    ]
    assert reasons[5].startswith("invalid JSON")
    assert "NaN" in reasons[5]
    assert reasons[6] == "invalid JSON: nested too deeply"
    assert reasons[7].startswith("invalid JSON")  # 5000 digits: over Python's int limit


async def test_receive_json_rejects_binary_frames_with_a_reason(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    client.send_bytes(b"{}")
    client.disconnect()

    async def handle(websocket: SessionSocket, message: dict[str, Any]) -> None:
        raise AssertionError("a binary frame reached the handler")

    await run_websocket(make_socket(client), receive_json(handle))
    reply = json_sent(client.sent_so_far()[1])
    assert reply == {
        "type": "error",
        "reason": "binary frames are not accepted: send JSON objects as text",
    }


async def test_a_presence_request_on_an_endpoint_without_presence_gets_a_one_sentence_error(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    async def handle(websocket: SessionSocket, message: dict[str, Any]) -> None:
        raise AssertionError("a presence request reached the handler")

    client.send_text('{"type": "presence"}')
    client.disconnect()
    await run_websocket(make_socket(client), receive_json(handle))
    assert json_sent(client.sent_so_far()[1]) == {
        "type": "error",
        "reason": "presence is kept on broadcast endpoints only; this endpoint has none",
    }


async def test_receive_json_answers_keepalives_itself_echoing_client_fields(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    async def handle(websocket: SessionSocket, message: dict[str, Any]) -> None:
        raise AssertionError("a keepalive reached the handler")

    before = now_ns()
    client.send_text(json.dumps({"type": "keepalive", "client_ns": 123, "note": "é"}))
    client.disconnect()
    await run_websocket(make_socket(client), receive_json(handle))

    ack = json_sent(client.sent_so_far()[1])
    assert ack["type"] == "keepalive_ack"
    assert ack["client_ns"] == 123
    assert ack["note"] == "é"
    assert before <= ack["server_ns"] <= now_ns()


KEEPALIVES = [
    '{"type":"keepalive","client_ns":1733541234567890123}',
    ' { "type" : "keepalive", "n": -9223372036854775808, "u": 18446744073709551615 } ',
    '{"type": "keepalive", "big": 18446744073709551616, "neg": -9223372036854775809}',
    '{"type": "keepalive", "f": 0.00001, "g": 1e16, "h": 1.5e-7, "z": -0.0}',
    '{"type": "keepalive", "s": "\\ud800", "t": "\\u2028 \\u0000 é \\"\\\\/"}',
    '{"type": "keepalive", "nested": [0.00001, {"x": 1}], "d": {}, "dup": 1, "dup": 2}',
    '{"type": "keepalive", "b": true, "n": null, "type": "keepalive"}',
]


async def test_keepalive_answers_are_the_text_json_would_write(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    # Flat keepalives are read and answered by orjson where the project has it: the answer
    # must be json's text all the same (numbers past 64 bits, floats, escapes, nesting).
    for frame in KEEPALIVES:
        client.send_text(frame)
    client.send_text('{"type": "keepalive", "bad": NaN}')
    client.send_text('{"type": "keepalive",}')
    client.disconnect()
    await run_websocket(make_socket(client), keepalive_loop)
    sent = [m["text"] for m in client.sent_so_far() if m["type"] == "websocket.send"]
    assert len(sent) == len(KEEPALIVES) + 2
    for frame, text in zip(KEEPALIVES, sent, strict=False):
        server_ns = json.loads(text)["server_ns"]
        expected = {**reference_loads(frame), "type": "keepalive_ack", "server_ns": server_ns}
        assert text == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
    with pytest.raises(json.JSONDecodeError) as trailing_comma:
        reference_loads('{"type": "keepalive",}')
    error = trailing_comma.value
    assert [json.loads(text)["reason"] for text in sent[-2:]] == [
        "invalid JSON: NaN is not a JSON number",  # json's words, not orjson's
        f"invalid JSON: {error.msg} at position {error.pos}",
    ]


async def test_keepalives_are_answered_as_they_come_where_the_server_hands_texts_over(
    make_socket: SocketFactory,
) -> None:
    # RECEIVE_DIRECT (LeanProtocol's): a keepalive sent while the session waits is answered
    # in the server's read callback; anything else, or a keepalive whose answer cannot be
    # sent at once, is queued and read by the session's task, in the order they came.
    client = ScriptedClient(sends_now=True, hands_over=True)
    session = asyncio.create_task(run_websocket(make_socket(client), keepalive_loop))
    assert (await client.next_sent())["type"] == "websocket.accept"

    async def replies(*frames: str | bytes) -> list[Any]:
        for frame in frames:
            client.send_bytes(frame) if isinstance(frame, bytes) else client.send_text(frame)
        return [json_sent(await client.next_sent()) for _ in frames]

    for frame in KEEPALIVES:  # the answers are json's text, as on the task's path
        (ack,) = await replies(frame)
        assert ack == {
            **reference_loads(frame),
            "type": "keepalive_ack",
            "server_ns": ack["server_ns"],
        }
    flat = sum(_flat_object(frame) is not None for frame in KEEPALIVES)  # the others: the task's
    assert 0 < client.handed_over == flat < len(KEEPALIVES)
    answered = await replies(
        '{"type": "keepalive", "id": 1}',
        '{"type": "chat"}',
        b"{}",
        '{"type": "keepalive", "id": 2}',
    )
    assert [(r["type"], r.get("id")) for r in answered] == [
        ("keepalive_ack", 1),
        ("error", None),
        ("error", None),
        ("keepalive_ack", 2),
    ]
    assert client.handed_over == flat + 1  # the others queued behind the chat message

    client.stop_reading()  # its answer cannot go at once: queued, the task sends it
    client.send_text('{"type": "keepalive", "id": 3}')
    client.send_text('{"type": "keepalive", "id": 4}')
    await asyncio.sleep(0.01)
    client.resume_reading()
    answered = [json_sent(await client.next_sent()) for _ in range(2)]
    assert [r["id"] for r in answered] == [3, 4]
    assert (await replies('{"type": "keepalive", "id": 5}'))[0]["id"] == 5
    assert client.handed_over == flat + 2  # 1 and 5

    session.cancel()  # a session cancelled while it waits takes no more texts
    with pytest.raises(asyncio.CancelledError):
        await session
    client.send_text('{"type": "keepalive", "id": 6}')
    assert client.handed_over == flat + 2


async def test_keepalive_loop_acks_keepalives_and_refuses_other_messages(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    client.send_text('{"type": "keepalive", "id": 1}')
    client.send_text('{"type": "chat"}')
    client.send_text('{"type": "keepalive", "id": 2}')
    client.disconnect()
    await run_websocket(make_socket(client), keepalive_loop)

    replies = [json_sent(m) for m in client.sent_so_far()[1:]]
    assert [(r["type"], r.get("id")) for r in replies] == [
        ("keepalive_ack", 1),
        ("error", None),
        ("keepalive_ack", 2),
    ]
    assert replies[1]["reason"] == "this endpoint answers only keepalive messages"


async def test_keepalive_loop_serves_a_whole_connection_as_a_handler(
    make_socket: SocketFactory, client: ScriptedClient
) -> None:
    client.send_text('{"type": "keepalive"}')
    client.disconnect()
    await keepalive_loop(make_socket(client))  # not accepted yet: it runs the session itself

    sent = client.sent_so_far()
    assert sent[0]["type"] == "websocket.accept"
    assert json_sent(sent[1])["type"] == "keepalive_ack"


@pytest.mark.parametrize("seconds", [0, -1, math.nan, math.inf])
def test_every_refuses_a_period_that_is_not_positive_and_finite(seconds: float) -> None:
    async def tick(websocket: SessionSocket) -> None:
        pass

    with pytest.raises(ValueError, match="positive, finite"):
        every(seconds, tick)


def tick_times(
    make_socket: SocketFactory, period: float, work_seconds: float, ticks: int
) -> list[float]:
    """When each tick of ``every(period, ...)`` started, on a virtual clock, for ``ticks`` ticks.

    Each tick takes ``work_seconds``; after the last one the client disconnects.
    """
    times: list[float] = []

    async def session() -> None:
        loop = asyncio.get_running_loop()
        client = ScriptedClient()
        start = loop.time()

        async def tick(websocket: SessionSocket) -> None:
            times.append(loop.time() - start)
            await asyncio.sleep(work_seconds)
            if len(times) == ticks:
                client.disconnect()

        await run_websocket(make_socket(client), every(period, tick), drain_text)

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        runner.run(session())
    return times


def test_every_ticks_at_once_then_on_a_fixed_schedule(make_socket: SocketFactory) -> None:
    # Work inside a tick does not push later ticks back: no drift.
    assert tick_times(make_socket, period=2, work_seconds=0.3, ticks=4) == [0, 2, 4, 6]


def test_every_skips_missed_beats_instead_of_bursting(make_socket: SocketFactory) -> None:
    # Each tick overruns two and a half periods: the beats it missed are skipped.
    assert tick_times(make_socket, period=1, work_seconds=2.5, ticks=3) == [0, 3, 6]


@pytest.mark.parametrize(
    ("beat", "elapsed", "expected"),
    [
        (0, 0.001, 1),  # a quick tick: the next beat
        (0, 0.999999, 1),
        (3, 2.9999999, 4),  # woke a hair early for beat 3: never beat 3 twice
        (0, 2.5, 3),  # beats 1 and 2 missed: skipped
        (5, 5.0, 6),
    ],
)
def test_next_beat(beat: int, elapsed: float, expected: int) -> None:
    assert next_beat(beat, elapsed, 1.0) == expected


def reference_loads(text: str) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1}',
        ' {"a": [1, 2.5, null, true, false]} ',
        '\n{"\\u00e9": "\\u2713", "e": "é"}\n',
        "[" * 50 + "]" * 50,
        "1" * 100,  # an integer longer than 64 bits stays exact
        '"text"',
        '{"a": 1e16, "b": -0.0, "c": 1E-7}',
        '{"dup": 1, "dup": 2}',
        "18446744073709551615",  # the largest integer of 64 bits (unsigned)
        "18446744073709551616",  # one more: an int still, not a float
        "-9223372036854775809",
        '{"n": 123456789012345678901234567890.5, "s": "12345678901234567890"}',
        '"\\ud800 \\u2028"',  # a lone surrogate escaped, and a line separator
        "1e400",  # json reads infinity (orjson refuses it)
        "[0.00001, 1e-05, 5e-324, 1.7976931348623157e308]",
    ],
)
def test_loads_reads_what_json_loads_reads(text: str) -> None:
    assert repr(loads(text)) == repr(reference_loads(text))  # ints stay ints


@pytest.mark.parametrize(
    "text",
    ["", " ", "not json", '{"a": 1} x', '{"a": NaN}', '{"a": -Infinity}', '{"a":}', "[" * 100_000],
)
def test_loads_fails_as_json_loads_fails(text: str) -> None:
    with pytest.raises((ValueError, RecursionError)) as ours:
        loads(text)
    with pytest.raises((ValueError, RecursionError)) as theirs:
        reference_loads(text)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1},
        {"é": ["✓", 1.5, None, True, 10**30], "": {}},
        'text with "quotes" and \n',
        [],
        {"nested": {"deep": [{}, [[]]]}},
        1e16,
        -0.0,
    ],
)
def test_dumps_writes_what_json_dumps_writes(value: Any) -> None:
    expected = json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
    )
    assert dumps(value) == expected


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "keepalive", "client_ns": 1733541234567890123, "note": "é \\u2028 \\u0000"}',
        '{"t": true, "f": false, "n": null, "neg": -9223372036854775808, "s": "\\"\\\\/"}',
        '{"big": 18446744073709551616, "neg": -9223372036854775809}',  # past 64 bits
        '{"a": 0.00001, "b": 1e16, "c": 1.5e-7, "d": -0.0}',  # floats: json writes them
        '{"s": "\\ud800"}',  # a lone surrogate (orjson refuses it)
        '{"nested": [0.00001, {"x": 1}], "d": {}}',
    ],
)
def test_dumps_parsed_writes_what_json_dumps_writes(text: str) -> None:
    value = loads(text)
    expected = json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
    )
    assert dumps_parsed(value) == expected


def test_dumps_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"a": math.nan})
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"a": object()})


def test_dumps_is_not_confused_by_an_earlier_failure_or_a_value_seen_twice() -> None:
    shared: dict[str, Any] = {"x": 1}
    with pytest.raises(TypeError):
        dumps({"ok": shared, "bad": object()})
    assert dumps([shared, shared]) == '[{"x":1},{"x":1}]'
    # A failure inside a value that lives on: an encoder sharing one marker dict between
    # calls keeps the value's mark and then calls it circular.
    lasting: list[Any] = [1, object()]
    with pytest.raises(TypeError):
        dumps(lasting)
    lasting.pop()
    assert dumps(lasting) == "[1]"
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(RecursionError):
        dumps(circular)
