"""A rendered project's app, plus ``GET /_fault/tasks``: the server's asyncio task count.

The fault suite serves this with uvicorn (``PYTHONPATH`` holds this folder, and
``FAULT_APP_MODULE`` names the project's app module) to see from outside that sessions
leave no task behind.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any

inner = importlib.import_module(os.environ["FAULT_APP_MODULE"]).app


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/_fault/tasks":
        body = str(len(asyncio.all_tasks())).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    await inner(scope, receive, send)
