"""A FastAPI app of backend endpoints, for the tests that run a real uvicorn server."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from ..backend import create_router
from .sample_sessions import failing, finishing, ticking


async def task_count() -> int:
    """How many asyncio tasks the server runs (to see that sessions leave none behind)."""
    return len(asyncio.all_tasks())


app = FastAPI()
app.include_router(create_router("/ws/keepalive"))
app.include_router(create_router("/ws/fail", failing))
app.include_router(create_router("/ws/finish", finishing))
app.include_router(create_router("/ws/tick", ticking))
app.add_api_route("/tasks", task_count)
