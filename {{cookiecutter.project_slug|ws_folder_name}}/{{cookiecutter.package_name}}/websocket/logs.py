"""Structured logs: `JsonFormatter` writes each log record as one JSON object on one line.

Part of the websocket backend vendored by ws-template (version and upgrade notes in
``__init__.py``). Standard library only. ``LOG_FORMAT=json`` selects it for the service's
own loggers and, through the runner (``python -m <package>``), for uvicorn's.

Every object has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; the fields
a log call passes with ``extra=`` become keys of their own (the guard's open and close lines
have ``event``, ``path``, ``client``, ``code``, ``duration_seconds``, ...), and an exception's
traceback is the ``traceback`` field, so one event is always one line.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

_STANDARD: Final = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
"""Attributes every record has (uvicorn adds ``color_message``): not extra fields."""


class JsonFormatter(logging.Formatter):
    """Formats a record as a one-line JSON object (see the module's docs)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["traceback"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
