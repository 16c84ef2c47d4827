"""Rendered projects run correctly under other servers and websocket implementations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEMPLATE, render, require_redis, run, tool_environment

SERVERS = {
    # (The projects' own tests run uvicorn with the runner's LeanProtocol: here, uvicorn's own.)
    "uvicorn-websockets-sansio": {
        "LIVE_SERVER": "uvicorn",
        "LIVE_SERVER_ARGS": "--ws websockets-sansio",
    },
    "uvicorn-wsproto": {"LIVE_SERVER": "uvicorn", "LIVE_SERVER_ARGS": "--ws wsproto"},
    "hypercorn": {"LIVE_SERVER": "hypercorn", "LIVE_SERVER_ARGS": ""},
}


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("framework", ["asgi", "fastapi"])
def test_project_passes_its_tests_under_another_server(
    framework: str, server: str, tmp_path: Path, cookiecutter_config: Path
) -> None:
    # The project's live tests (every endpoint's protocol, close codes, refused paths, no
    # task left behind) start the server that LIVE_SERVER and LIVE_SERVER_ARGS name.
    project = render(tmp_path, cookiecutter_config, {"framework": framework})
    env = tool_environment(**SERVERS[server])
    result = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=env
    )
    assert " passed" in result.stdout


def test_autobahn_cases_pass_on_every_server_but_known_server_failures() -> None:
    script = TEMPLATE / "conformance" / "autobahn.py"
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    servers = ("uvicorn, websockets-sansio", "uvicorn, LeanProtocol (the runner's)")
    for server in (*servers, "uvicorn, wsproto", "hypercorn"):
        assert f"| {server} | 301 |" in result.stdout, result.stdout


def test_a_redis_broadcast_project_passes_its_tests_under_hypercorn(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    # The hub reaches connections through the ASGI lifespan state, which each server
    # implements itself; its cross-process tests run two hypercorn servers on one Redis.
    require_redis()
    answers = {
        "framework": "asgi",
        "endpoints": "/ws/rooms/{room}:broadcast",
        "broadcast_backend": "redis",
    }
    project = render(tmp_path, cookiecutter_config, answers)
    env = tool_environment(**SERVERS["hypercorn"])
    result = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=env
    )
    assert " passed" in result.stdout
    assert "skipped" not in result.stdout
