"""A FastAPI app of backend endpoints, for the tests that run a real uvicorn server."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, WebSocket

from ..backend import create_router, drain_text, every, run_websocket


async def broken(websocket: WebSocket) -> None:
    raise RuntimeError("a bug in a task")


async def say_bye(websocket: WebSocket) -> None:
    await websocket.send_text("bye")


async def tick(websocket: WebSocket) -> None:
    await websocket.send_text("tick")


async def failing(websocket: WebSocket) -> None:
    await run_websocket(websocket, broken, drain_text)


async def finishing(websocket: WebSocket) -> None:
    await run_websocket(websocket, say_bye)


async def ticking(websocket: WebSocket) -> None:
    await run_websocket(websocket, every(0.01, tick), drain_text)


async def task_count() -> int:
    """How many asyncio tasks the server runs (to see that sessions leave none behind)."""
    return len(asyncio.all_tasks())


app = FastAPI()
app.include_router(create_router("/ws/keepalive"))
app.include_router(create_router("/ws/fail", failing))
app.include_router(create_router("/ws/finish", finishing))
app.include_router(create_router("/ws/tick", ticking))
app.add_api_route("/tasks", task_count)
