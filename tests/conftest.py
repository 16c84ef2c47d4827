"""Helpers of the template's tests: render the template, run commands in what it made."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest
from cookiecutter.main import cookiecutter
from websocket.testing import RedisServer  # the vendored backend, as every project has it

TEMPLATE = Path(__file__).resolve().parent.parent
PROJECT_TEMPLATE = TEMPLATE / "{{cookiecutter.project_slug|ws_folder_name}}"
VENDORED_BACKEND = PROJECT_TEMPLATE / "{{cookiecutter.package_name}}" / "websocket"


@pytest.fixture(scope="session")
def cookiecutter_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Cookiecutter user config that keeps replay files out of the home folder."""
    folder = tmp_path_factory.mktemp("cookiecutter-config")
    config = folder / "config.yaml"
    config.write_text(
        f'cookiecutters_dir: "{folder / "cookiecutters"}"\nreplay_dir: "{folder / "replay"}"\n'
    )
    return config


def render(output_dir: Path, config: Path, answers: Mapping[str, str]) -> Path:
    """Render the template as ``cookiecutter --no-input`` with ``answers``; the project folder."""
    project = cookiecutter(
        str(TEMPLATE),
        no_input=True,
        extra_context=dict(answers),
        output_dir=str(output_dir),
        config_file=str(config),
    )
    return Path(project)


def unavailable(reason: str, *, required: bool | None = None) -> NoReturn:
    """Skip a test this machine cannot run, saying why; fail it where it must run: in CI
    (``CI`` set), or where ``required`` says so (a ``REQUIRE_...`` variable)."""
    if os.environ.get("CI") if required is None else required:
        pytest.fail(reason)
    pytest.skip(reason)


def require_redis() -> None:
    """Go on only where redis-server runs (see `unavailable`; ``REQUIRE_REDIS=1`` in CI)."""
    missing = RedisServer.unavailable()
    if missing:
        unavailable(missing, required=RedisServer.required())


def node_with(folder: Path, package: str) -> str:
    """The node command, once ``package`` is installed in ``folder`` (see `unavailable`)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (apt-get install nodejs)")
    if not (folder / "node_modules" / package).is_dir():
        where = folder.relative_to(TEMPLATE)
        unavailable(f"{package} is not installed (npm ci --prefix {where})")
    return node


def pytest_sessionstart(session: pytest.Session) -> None:
    """Forget the figures of an earlier run (on the controller, not on xdist workers)."""
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(TEMPLATE / "build" / "fault-suite", ignore_errors=True)
        shutil.rmtree(TEMPLATE / "build" / "broadcast", ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures that tests wrote to build/fault-suite/ and build/broadcast/."""
    for name, title in (("fault-suite", "fault suite figures"), ("broadcast", "broadcast figures")):
        folder = TEMPLATE / "build" / name
        if not folder.is_dir():
            continue
        terminalreporter.section(title)
        for path in sorted(folder.glob("*.json")):
            terminalreporter.write_line(f"{path.stem}: {path.read_text()}")


def tool_environment(**extra: str) -> dict[str, str]:
    """This environment, with this interpreter's tools (ruff, mypy, ...) first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def run(
    command: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; fail the test with its output unless it succeeds."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env=dict(env or tool_environment()),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} failed in {cwd} ({result.returncode}):\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result
