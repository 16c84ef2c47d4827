"""ws-template's two everyday commands, on a fresh machine with nothing but Python 3.11+.

    python3 dev.py demo   render the default project, install it, start it
    python3 dev.py test   run the whole test suite (lint, type-check, template tests)

Both create or refresh ``.venv`` with the development dependencies of ``pyproject.toml``.
Standard library only: this script is what installs everything else.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MIN_PYTHON = (3, 11)
MIN_PIP = "25.1"
DEMO_USERS = ("alice", "bob")  # the first pip that installs a [dependency-groups] group


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
    # Made for this run only, so that every endpoint can be tried at once (never in production).
    demo_settings = {
        "ANONYMOUS_CONNECTIONS": "yes",
        "TOKEN_HMAC_SECRET_KEY": secrets.token_urlsafe(32),
        "PUBLISH_API_KEY": secrets.token_urlsafe(32),
    }
    print(demo_instructions(project, port, python, demo_settings), flush=True)
    python_of_project = str(bin_path(project_venv, "python"))
    command = [python_of_project, "-m", "ws_service", "--host", "127.0.0.1", "--port", str(port)]
    os.chdir(project)
    os.execve(command[0], command, {**os.environ, **demo_settings})


def demo_instructions(project: Path, port: int, python: Path, settings: dict[str, str]) -> str:
    """What the demo serves, with its settings, and what to try first."""
    address = f"127.0.0.1:{port or 'PORT'}"
    where = f"127.0.0.1:{port}" if port else "127.0.0.1 (port chosen by the OS, see below)"
    secret, key = settings["TOKEN_HMAC_SECRET_KEY"], settings["PUBLISH_API_KEY"]
    tokens = "".join(f"    {user}: {connection_token(user, secret)}\n" for user in DEMO_USERS)
    publish = json.dumps({"channel": "news:today", "message": {"text": "hello"}})
    return (
        f"\nServing the default project ({project}) on http://{where}\n"
        "Open it in a browser: its console page connects to every endpoint.\n"
        "For this demo only, it runs with ANONYMOUS_CONNECTIONS=yes (a channels client with no\n"
        "user may connect) and a TOKEN_HMAC_SECRET_KEY and a PUBLISH_API_KEY made for this run.\n"
        "\nThings to try:\n"
        "- /ws/rooms/{room}: connect from two browser tabs; what one sends, both receive.\n"
        "- /connection/websocket: connect, subscribe to news:today, publish to it from a shell:\n"
        f"    curl -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        f"      -d '{publish}' http://{address}/api/publish\n"
        "- chat:lobby is for users: paste a token into the panel's token field, connect,\n"
        "  subscribe to chat:lobby and publish; a second tab as the other user sees the first\n"
        "  join, and what it publishes:\n"
        f"{tokens}"
        f"- From a shell: {python} -m websockets ws://{address}/ws/echo\n"
        '  then type {"type": "keepalive", "client_ns": 1} or any JSON object.\n'
        "Press Ctrl+C to stop.\n"
    )


def connection_token(user: str, secret: str, hours: int = 24) -> str:
    """A connection token of the channels endpoint for ``user``: a JSON Web Token signed with
    ``secret`` (HS256), as your sign-in would mint one (README, "Channels")."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = part(json.dumps({"sub": user, "exp": int(time.time()) + hours * 3600}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{part(signature)}"


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
