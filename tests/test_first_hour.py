"""What a new user meets in the first hour, done as the generated README says (issue 31).

The README's check commands on a fresh render, its worked ``auth.py`` example with the change
it asks of the tests, the terminal client against a service that checks clients, the notes
where the README offers ``python -m websockets``, and the settings' start-up messages.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websocket.testing import LiveServer  # the vendored backend, as every project has it

from tests.conftest import render, run, tool_environment

AUTH_EXAMPLE = re.compile(r"```python\n(# auth\.py\n.*?)```", re.DOTALL)
CONFTEST_CHANGE = re.compile(r"```python\n# tests/conftest\.py\n(.*?)```", re.DOTALL)
TOKEN = "t0ken-of-alice"


def section(readme: str, heading: str) -> str:
    """The text of the README section under ``## heading``, up to the next ``## ``."""
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", readme, re.DOTALL | re.M)
    assert found, f"the README has no section {heading!r}"
    return found.group(1)


def apply_the_readme_auth_example(project: Path) -> None:
    """Copy the README's auth.py example verbatim, and make its change to tests/conftest.py."""
    readme = (project / "README.md").read_text()
    example = AUTH_EXAMPLE.search(readme)
    assert example, "the README has an auth.py example"
    (project / "ws_service" / "auth.py").write_text(example.group(1))
    change = CONFTEST_CHANGE.search(readme)
    assert change, "the README says what to change in tests/conftest.py"
    conftest = project / "tests" / "conftest.py"
    text = conftest.read_text()
    for line in change.group(1).strip().splitlines():
        name = line.split(":")[0].split("=")[0].strip()
        text, replaced = re.subn(rf"^{name}\b.*$", line, text, flags=re.M)
        assert replaced == 1, f"tests/conftest.py has no line {name} = ... to fill"
    conftest.write_text(text)


def test_the_readme_check_commands_work_as_written_on_a_fresh_render(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    """``init_git`` is no by default: the README's commands make the repository pre-commit
    needs, and pre-commit then checks every file (not "no files to check")."""
    project = render(tmp_path, cookiecutter_config, {})
    assert not (project / ".git").exists()
    block = re.search(
        r"```sh\n(.*?)```",
        section((project / "README.md").read_text(), "Tests and checks"),
        re.DOTALL,
    )
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    commands = [command for command in commands if command and command != "pytest"]
    cache = tmp_path / "cache"
    env = tool_environment(
        MYPY_CACHE_DIR=str(cache / "mypy"),
        PRE_COMMIT_HOME=str(cache / "pre-commit"),
        GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"),  # no hooksPath of the machine's own
    )
    outputs = [run(["sh", "-c", command], cwd=project, env=env).stdout for command in commands]
    assert any("pre-commit install" in command for command in commands)
    assert (project / ".git" / "hooks" / "pre-commit").exists()
    checked = outputs[-1]
    for hook in ("ruff check", "ruff format", "mypy --strict"):
        assert re.search(rf"^{re.escape(hook)}\.+Passed$", checked, re.M), checked


def test_the_readme_auth_example_with_its_test_change_keeps_the_project_s_suite_passing(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    project = render(tmp_path, cookiecutter_config, {})
    apply_the_readme_auth_example(project)
    result = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"], cwd=project
    )
    assert " passed" in result.stdout
    assert " failed" not in result.stdout


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Iterator[tuple[Path, LiveServer]]:
    """The default project with the README's auth.py example, served; alice's token works."""
    project = render(tmp_path_factory.mktemp("guarded"), cookiecutter_config, {})
    apply_the_readme_auth_example(project)
    env = {"SESSION_TOKENS": f"alice={TOKEN}", "MAX_MESSAGE_BYTES": "1000"}
    with LiveServer("ws_service.app:app", env=env, cwd=project) as server:
        yield project, server


def terminal_client(
    project: Path, url: str, *options: str, typed: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ws_service.client", url, *options],
        cwd=project,
        input=typed,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_terminal_client_sends_a_cookie_or_a_header_and_gets_in(
    guarded: tuple[Path, LiveServer],
) -> None:
    project, server = guarded
    url = server.ws_url("/ws/echo")
    typed = json.dumps({"hello": 1}) + "\n"
    for options in (["--cookie", f"session={TOKEN}"], ["--header", f"Cookie: session={TOKEN}"]):
        done = terminal_client(project, url, *options, typed=typed)
        assert done.returncode == 0, done.stderr
        assert {"hello": 1} in [json.loads(line) for line in done.stdout.splitlines()]


def test_a_refused_terminal_client_says_so_in_one_line(guarded: tuple[Path, LiveServer]) -> None:
    project, server = guarded
    for options in ([], ["--cookie", "session=wrong"]):
        done = terminal_client(project, server.ws_url("/ws/echo"), *options)
        assert done.returncode == 1
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("refused: the handshake was refused with HTTP 403: ")
        assert "--cookie" in lines[0]
    malformed = terminal_client(project, server.ws_url("/ws/echo"), "--header", "Cookie")
    assert malformed.returncode == 2
    assert "invalid NAME:VALUE header value: 'Cookie'" in malformed.stderr
    assert "Traceback" not in malformed.stderr


def test_a_malformed_since_gives_one_line_never_a_traceback(
    guarded: tuple[Path, LiveServer],
) -> None:
    project, server = guarded
    for query in ("since=abc&epoch=x", "since=1.5&epoch=x", "since=-1&epoch=x", "since=3") * 2:
        url = server.ws_url(f"/ws/rooms/room-1?{query}")
        done = terminal_client(project, url, "--cookie", f"session={TOKEN}", typed="{}\n")
        assert done.returncode == 1, done
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("refused: the service closed the connection with 1008")


def test_a_message_over_the_limit_names_max_message_bytes(
    guarded: tuple[Path, LiveServer],
) -> None:
    project, server = guarded
    typed = json.dumps({"text": "x" * 2000}) + "\n"
    done = terminal_client(
        project, server.ws_url("/ws/echo"), "--cookie", f"session={TOKEN}", typed=typed
    )
    assert done.returncode == 1
    assert done.stderr.startswith("refused: the service closed the connection with 1009")
    assert "MAX_MESSAGE_BYTES" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.parametrize("answers", [{}, {"broadcast_backend": "redis"}])
def test_where_the_readme_offers_python_m_websockets_it_says_it_is_closed_when_idle(
    tmp_path: Path, cookiecutter_config: Path, answers: dict[str, str]
) -> None:
    readme = (render(tmp_path, cookiecutter_config, answers) / "README.md").read_text()
    offers = [found.start() for found in re.finditer(r"^python -m websockets ", readme, re.M)]
    assert offers
    for offer in offers:  # the note follows the example, in the same section
        after = readme[offer:].split("\n#", 1)[0]
        assert "IDLE_TIMEOUT_SECONDS" in after, readme[offer : offer + 600]
    install = section(readme, "Install, run, talk to it")
    assert "idle for 60 s" in install
    assert '{"type": "keepalive"}' in install


def test_a_misspelt_setting_is_reported_at_start_up_with_the_likely_name(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    project = render(tmp_path, cookiecutter_config, {})
    env = {"HISTORY_SIZ": "10", "IDLE_TIMEOUT": "5", "MY_OWN_VARIABLE": "1", "HOSTNAME": "h"}
    with LiveServer("ws_service.app:app", env=env, cwd=project) as server:
        pass
    warnings = [line for line in server.log.splitlines() if "did you mean" in line]
    assert len(warnings) == 2, server.log
    assert "HISTORY_SIZ is set, but no setting has that name" in warnings[0]
    assert "did you mean HISTORY_SIZE?" in warnings[0]
    assert "did you mean IDLE_TIMEOUT_SECONDS?" in warnings[1]


def test_an_idle_timeout_of_0_is_refused_saying_how_to_live_with_it(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    project = render(tmp_path, cookiecutter_config, {"endpoints": "/ws"})
    refused = subprocess.run(
        [sys.executable, "-m", "ws_service", "--port", "0"],
        cwd=project,
        env=tool_environment(IDLE_TIMEOUT_SECONDS="0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith("ws_service: IDLE_TIMEOUT_SECONDS='0' must be")
    assert "cannot be turned off" in refused.stderr
    assert "86400" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
