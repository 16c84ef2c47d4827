"""ws-template's two everyday commands, on a fresh machine with nothing but Python 3.11+.

    python3 dev.py demo   render the default project, install it, start it
    python3 dev.py test   run the whole test suite (lint, type-check, template tests)

Both create or refresh ``.venv`` with the development dependencies of ``pyproject.toml``.
Standard library only: this script is what installs everything else.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MIN_PYTHON = (3, 11)
MIN_PIP = "25.1"  # the first pip that installs a [dependency-groups] group


def bin_path(environment: Path, name: str) -> Path:
    return environment / "bin" / name


def run(*command: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], cwd=cwd, env=env, check=True)


def ensure_dev_environment() -> Path:
    """Create ``.venv`` (or refresh it when pyproject.toml changed); return its python."""
    python = bin_path(VENV, "python")
    stamp = VENV / ".ws-template-stamp"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        venv.create(VENV, with_pip=True)
    run(python, "-m", "pip", "install", "--quiet", "--upgrade", f"pip>={MIN_PIP}")
    run(python, "-m", "pip", "install", "--quiet", "--group", "dev")
    stamp.write_text(wanted)
    return python


def demo(output: Path, port: int) -> None:
    """Render the default project into ``output``, install it in its own venv, serve it."""
    python = ensure_dev_environment()
    project = output / "ws-service"
    if project.exists():
        shutil.rmtree(project)
    output.mkdir(parents=True, exist_ok=True)
    run(bin_path(VENV, "cookiecutter"), "--no-input", "--output-dir", output, ROOT)
    project_venv = project / ".venv"
    venv.create(project_venv, with_pip=True)
    run(bin_path(project_venv, "python"), "-m", "pip", "install", "--quiet", "-e", ".", cwd=project)
    where = f"127.0.0.1:{port}" if port else "127.0.0.1 (port chosen by the OS, see below)"
    print(
        f"\nServing the default project ({project}) on http://{where}\n"
        f"Talk to it from another terminal:\n"
        f"  {python} -m websockets ws://127.0.0.1:{port or 'PORT'}/ws/echo\n"
        f'  then type {{"type": "keepalive", "client_ns": 1}} or any JSON object.\n'
        f"Press Ctrl+C to stop.\n",
        flush=True,
    )
    python_of_project = str(bin_path(project_venv, "python"))
    command = [python_of_project, "-m", "ws_service", "--host", "127.0.0.1", "--port", str(port)]
    os.chdir(project)
    os.execv(command[0], command)


def test(pytest_args: list[str]) -> None:
    """Lint and type-check the template, then run its tests (two processes)."""
    python = ensure_dev_environment()
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run(python, "-m", "pre_commit", "run", "--all-files", "--show-diff-on-failure", env=env)
    pytest = ["-m", "pytest", "-n", "2", "--dist", "loadgroup", "--durations", "15"]
    run(python, *pytest, *pytest_args, env=env)


def main() -> None:
    if sys.version_info < MIN_PYTHON:
        sys.exit(f"ws-template needs Python {'.'.join(map(str, MIN_PYTHON))} or newer")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="render the default project and start it")
    demo_parser.add_argument("--port", type=int, default=8000, help="0 lets the OS choose")
    demo_parser.add_argument("--output", type=Path, default=ROOT / "build" / "demo")
    test_parser = commands.add_parser("test", help="run the whole test suite")
    test_parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed on to pytest")
    args = parser.parse_args()
    try:
        if args.command == "demo":
            demo(args.output.resolve(), args.port)
        else:
            test(args.pytest_args)
    except subprocess.CalledProcessError as error:
        sys.exit(error.returncode)


if __name__ == "__main__":
    main()
