"""Sessions that the sample apps of every face serve, for the tests on a real server."""

from __future__ import annotations

from ..session import SessionSocket, drain_text, every, run_websocket


async def broken(websocket: SessionSocket) -> None:
    raise RuntimeError("a bug in a task")


async def say_bye(websocket: SessionSocket) -> None:
    await websocket.send_text("bye")


async def tick(websocket: SessionSocket) -> None:
    await websocket.send_text("tick")


async def failing(websocket: SessionSocket) -> None:
    """Ends with 1011: a task raises."""
    await run_websocket(websocket, broken, drain_text)


async def finishing(websocket: SessionSocket) -> None:
    """Ends with 1000: every task returns."""
    await run_websocket(websocket, say_bye)


async def ticking(websocket: SessionSocket) -> None:
    """Sends a tick every 10 ms until the client leaves."""
    await run_websocket(websocket, every(0.01, tick), drain_text)
