"""ws-template's two everyday commands, on a fresh machine with nothing but Python 3.11+.

    python3 dev.py demo   render the default project, install it, start it
    python3 dev.py test   run the whole test suite (lint, type-check, template tests)

Both create or refresh ``.venv`` with the development dependencies of ``pyproject.toml``;
``test`` also installs the Node.js packages some tests use (``npm ci``, when npm is there and a
folder's node_modules does not match its lock file), and says in one line, before the tests start,
which tests cannot run on this machine and why (they skip, or fail under CI/REQUIRE_*).
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MIN_PYTHON = (3, 11)
MIN_PIP = "25.1"
DEMO_USERS = ("alice", "bob")  # the first pip that installs a [dependency-groups] group
NODE_FOLDERS = {  # folder with a package-lock.json: the tests that need its node_modules
    "bench": "the benchmark's smoke runs",
    "conformance/asyncapi": "the AsyncAPI checks",
    "conformance/centrifuge": "the centrifuge SDK checks",
    "conformance/compose": "the compose.yaml schema checks",
}
CHROMIUM = Path("/usr/bin/chromium")  # where tests/test_console.py looks for it


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


def node_modules_current(folder: Path) -> bool:
    """True when ``folder/node_modules`` holds what ``folder/package-lock.json`` pins.

    npm ci leaves a copy of what it installed in ``node_modules/.package-lock.json``; every
    package of the lock file (but optional ones, which may not be for this platform) must be
    there at the locked version, and nothing else.
    """
    installed_file = folder / "node_modules" / ".package-lock.json"
    if not installed_file.is_file():
        return False
    try:
        locked = json.loads((folder / "package-lock.json").read_text())["packages"]
        installed = json.loads(installed_file.read_text())["packages"]
        for name, package in locked.items():
            if not name or (package.get("optional") and name not in installed):
                continue
            if installed.get(name, {}).get("version") != package.get("version"):
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable: reinstall
        return False
    return set(installed) <= set(locked)


def node_installs(root: Path, which: Callable[[str], str | None]) -> tuple[list[str], list[str]]:
    """The folders of NODE_FOLDERS to ``npm ci``, and why the tests of the others cannot run."""
    if which("node") is None:
        return [], [f"{', '.join(NODE_FOLDERS.values())} (no node)"]
    to_install: list[str] = []
    cannot: list[str] = []
    for folder, tests in NODE_FOLDERS.items():
        if not node_modules_current(root / folder):
            if which("npm") is None:
                cannot.append(f"{tests} (no npm to install {folder}/node_modules)")
            else:
                to_install.append(folder)
    return to_install, cannot


def other_missing_tools(which: Callable[[str], str | None], chromium: Path = CHROMIUM) -> list[str]:
    """Why the tests that need a program other than node cannot run here (as they detect it)."""
    cannot = []
    if which("redis-server") is None:
        cannot.append("the Redis broadcast tests (no redis-server)")
    if which("redis-sentinel") is None:
        cannot.append("the Sentinel failover tests (no redis-sentinel)")
    if not chromium.exists():
        cannot.append(f"the console's browser tests (no {chromium})")
    prometheus = [name for name in ("prometheus", "promtool") if which(name) is None]
    if prometheus:
        cannot.append(f"the Prometheus tests (no {' or '.join(prometheus)})")
    if which("valgrind") is None:
        cannot.append("the benchmark's instruction counts (no valgrind)")
    if which("nginx") is None:
        cannot.append("the compose.yaml proxy test (no nginx)")
    return cannot


def not_run_line(cannot: list[str]) -> str:
    """The one line said before the tests start."""
    if not cannot:
        return "Every test can run on this machine."
    return "Not run on this machine (skipped, or failed under CI/REQUIRE_*): " + "; ".join(cannot)


def install_node_packages(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """``npm ci`` where needed; return why the tests that still cannot run cannot."""
    to_install, cannot = node_installs(ROOT, which)
    npm = which("npm")
    for folder in to_install:
        assert npm is not None
        try:
            run(npm, "ci", "--prefix", folder, "--no-audit", "--no-fund")
        except subprocess.CalledProcessError:
            cannot.append(f"{NODE_FOLDERS[folder]} (npm ci --prefix {folder} failed)")
    return cannot + other_missing_tools(which)


def test(pytest_args: list[str]) -> None:
    """Lint and type-check the template, then run its tests (two processes)."""
    python = ensure_dev_environment()
    cannot = install_node_packages()
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run(python, "-m", "pre_commit", "run", "--all-files", "--show-diff-on-failure", env=env)
    print(not_run_line(cannot), flush=True)
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
