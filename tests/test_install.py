"""A rendered project installs into a fresh virtual environment as its README says."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import render, run


@pytest.mark.parametrize("framework", ["fastapi", "asgi"])
def test_project_installs_and_passes_its_checks_in_a_fresh_venv(
    framework: str, tmp_path: Path, cookiecutter_config: Path
) -> None:
    project = render(tmp_path, cookiecutter_config, {"framework": framework})
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = str(environment / "bin" / "python")
    env = {
        **os.environ,
        "PATH": f"{environment / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(environment),
    }
    env.pop("PYTHONPATH", None)
    # The README's commands: pip install -e ".[dev]", then pytest and pre-commit.
    run([python, "-m", "pip", "install", "--quiet", "-e", ".[dev]"], cwd=project, env=env)
    run(["git", "init", "--quiet"], cwd=project, env=env)
    run(["git", "add", "--all"], cwd=project, env=env)
    run(["pre-commit", "run", "--all-files"], cwd=project, env=env)
    tests = run(["pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    assert " passed" in tests.stdout
    # The package is importable from anywhere, not only from the project folder.
    run([python, "-c", "import ws_service.app"], cwd=tmp_path, env=env)
    # One version, in the package: what pip installed is what the API documents name.
    version = "import importlib.metadata as m, ws_service; print(m.version('ws-service'))"
    version += "; print(ws_service.__version__)"
    assert run([python, "-c", version], cwd=tmp_path, env=env).stdout.split() == ["0.1.0"] * 2
    if framework == "asgi":  # it installs and runs without any web framework
        for module in ("fastapi", "starlette"):
            import_it = [python, "-c", f"import {module}"]
            absent = subprocess.run(import_it, env=env, capture_output=True, check=False)
            assert absent.returncode != 0, f"{module} is installed in the asgi flavour's venv"
