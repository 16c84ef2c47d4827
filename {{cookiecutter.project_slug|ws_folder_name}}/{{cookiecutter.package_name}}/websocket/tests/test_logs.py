"""`JsonFormatter`: one JSON object a line, fields as keys, tracebacks as a field."""

from __future__ import annotations

import json
import logging
import sys

from ..logs import JsonFormatter


def record(**extra: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "svc.websocket.guard", logging.INFO, __file__, 1, "%s %d", ("a", 1), None
    )
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_record_is_one_line_of_json_with_its_fields_as_keys() -> None:
    line = JsonFormatter().format(record(event="close", code=1000, duration_seconds=0.25))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "a 1"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "svc.websocket.guard"
    assert entry["time"].endswith("+00:00")
    assert (entry["event"], entry["code"], entry["duration_seconds"]) == ("close", 1000, 0.25)
    assert "args" not in entry
    assert "msg" not in entry


def test_an_error_carries_its_traceback_as_a_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record()
        failed.exc_info = sys.exc_info()
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "a 1"
    assert "ValueError: boom" in entry["traceback"]
    assert "Traceback (most recent call last)" in entry["traceback"]
