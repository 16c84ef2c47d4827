"""Project plumbing: the linters catch mistakes, the Dockerfile's own commands work, init_git.

No Docker engine runs here: the image is linted (tests/test_render.py) and its install step,
command and health check are run outside Docker, but it is never built.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import venv
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

from tests.conftest import TEMPLATE, render, run, tool_environment


def lint(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=tool_environment(), capture_output=True, text=True, check=False
    )


def test_actionlint_catches_a_mistake_in_the_workflow(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    project = render(tmp_path, cookiecutter_config, {"broadcast_backend": "redis"})
    broken = tmp_path / "ci.yml"
    text = (project / ".github" / "workflows" / "ci.yml").read_text()
    assert "matrix.python-version" in text
    broken.write_text(text.replace("matrix.python-version", "matrix.python_version"))
    result = lint(["actionlint", str(broken)], cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert 'property "python_version" is not defined' in result.stdout


def test_hadolint_refuses_a_dockerfile_that_runs_as_root(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    project = render(tmp_path, cookiecutter_config, {})
    dockerfile = project / "Dockerfile"
    text = dockerfile.read_text()
    assert "\nUSER 10001:10001\n" in text
    dockerfile.write_text(text.replace("\nUSER 10001:10001\n", "\nUSER root\n"))
    result = lint(["hadolint", "Dockerfile"], cwd=project)
    assert result.returncode == 1, result.stdout
    assert "DL3002" in result.stdout  # "Last USER should not be root"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    joined = dockerfile.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` (no '!' exceptions) keep ``relative`` out."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if bare != pattern and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], bare):
                return True
    return False


def build_context(project: Path, destination: Path) -> list[list[str]]:
    """Copy what the Dockerfile's COPY lines take, less .dockerignore; return its RUN lines."""
    ignore = (project / ".dockerignore").read_text().splitlines()
    patterns = [line for line in ignore if line and not line.startswith("#")]
    assert not any(pattern.startswith("!") for pattern in patterns)
    runs: list[list[str]] = []
    for keyword, arguments in instructions(project / "Dockerfile"):
        if keyword == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                assert (project / source).exists(), f"COPY {source}: not in the project"
                files = [project / source] if (project / source).is_file() else []
                files += [path for path in (project / source).rglob("*") if path.is_file()]
                for path in files:
                    relative = path.relative_to(project).as_posix()
                    assert not dockerignored(source.rstrip("/"), patterns), source
                    if not dockerignored(relative, patterns):
                        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, destination / relative)
        elif keyword == "RUN":
            runs.append(shlex.split(arguments))
    return runs


def exec_form(dockerfile: Path, keyword: str) -> list[str]:
    """The JSON-array command of the Dockerfile's CMD or HEALTHCHECK."""
    [arguments] = [arguments for word, arguments in instructions(dockerfile) if word == keyword]
    command: list[str] = json.loads(arguments[arguments.index("[") :])
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_dockerfile_install_command_and_health_check_work_outside_docker(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    """The image's steps, run here: install from the build context, serve, check health."""
    project = render(tmp_path, cookiecutter_config, {})
    dockerfile = project / "Dockerfile"
    context = tmp_path / "context"
    context.mkdir()
    [install] = build_context(project, context)
    assert not (context / "tests").exists()
    assert not list(context.rglob("websocket/tests"))
    pip_install = install[: install.index("&&")]
    assert pip_install[:2] == ["pip", "install"]
    environment = tmp_path / "image-venv"
    venv.create(environment, with_pip=True)
    bin_dir = environment / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    run([str(bin_dir / "python"), "-m", *pip_install, "--quiet"], cwd=context, env=env)

    port = str(free_port())
    command = [
        {"0.0.0.0": "127.0.0.1", "8000": port}.get(word, word)
        for word in exec_form(dockerfile, "CMD")
    ]
    health_check = [
        word.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        for word in exec_form(dockerfile, "HEALTHCHECK")
    ]
    assert any("/healthz" in word for word in health_check)
    workdir = tmp_path / "elsewhere"  # the installed package serves, not the source tree
    workdir.mkdir()

    def healthy() -> bool:
        check = subprocess.run(health_check, cwd=workdir, env=env, capture_output=True)
        return check.returncode == 0

    assert not healthy()  # nothing serves yet: the check can fail
    log = tmp_path / "server.log"
    with (
        log.open("w") as output,
        subprocess.Popen(
            command, cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT
        ) as server,
    ):
        try:
            deadline = time.monotonic() + 30
            while not healthy():
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the health check never passed"
                time.sleep(0.2)
        finally:
            server.terminate()
            server.wait(timeout=10)


# init_git: the hook runs git with the environment of the process that renders.


@pytest.fixture
def git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty global git config of the test's own, and no identity from the environment."""
    config = tmp_path / "gitconfig"
    config.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("AUTHOR", "COMMITTER"):
        for part in ("NAME", "EMAIL"):
            monkeypatch.delenv(f"GIT_{name}_{part}", raising=False)
    monkeypatch.delenv("EMAIL", raising=False)
    return config


def git(project: Path, *args: str) -> str:
    return run(["git", *args], cwd=project, env=os.environ).stdout.strip()


def hook_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capfd.readouterr().err.splitlines() if line.startswith("ws-template")]


def test_no_repository_unless_asked(tmp_path: Path, cookiecutter_config: Path) -> None:
    project = render(tmp_path, cookiecutter_config, {})
    assert not (project / ".git").exists()


def test_init_git_commits_every_file_once_as_you(
    tmp_path: Path, cookiecutter_config: Path, git_config: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    git_config.write_text("[user]\n\tname = Ada Lovelace\n\temail = ada@example.com\n")
    project = render(tmp_path / "out", cookiecutter_config, {"init_git": "yes"})
    assert hook_lines(capfd) == []
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    files = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert set(git(project, "ls-files").splitlines()) == {f for f in files if ".git/" not in f}
    assert git(project, "rev-list", "--count", "HEAD") == "1"
    assert git(project, "log", "--format=%an <%ae>") == "Ada Lovelace <ada@example.com>"
    assert git(project, "branch", "--show-current") == "main"


def test_init_git_without_an_identity_commits_as_ws_template_and_says_so(
    tmp_path: Path, cookiecutter_config: Path, git_config: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = render(tmp_path / "out", cookiecutter_config, {"init_git": "yes"})
    [line] = hook_lines(capfd)
    assert "git has no user.name or user.email set" in line
    assert "git commit --amend --reset-author" in line
    assert git(project, "log", "--format=%an <%ae>") == "ws-template <ws-template@localhost>"
    assert git(project, "status", "--porcelain") == ""
    assert git_config.read_text() == ""  # the fallback was set for that commit only


def test_init_git_failure_leaves_a_whole_project_and_no_repository(
    tmp_path: Path, cookiecutter_config: Path, git_config: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Commit signing with a signer that always fails makes `git commit` fail.
    git_config.write_text(
        "[user]\n\tname = A\n\temail = a@example.com\n[commit]\n\tgpgsign = true\n"
        "[gpg]\n\tprogram = false\n"
    )
    project = render(tmp_path / "out", cookiecutter_config, {"init_git": "yes"})
    [line] = hook_lines(capfd)
    assert "init_git: git commit failed" in line
    assert "the project is complete but is not a git repository" in line
    assert not (project / ".git").exists()
    assert (project / "ws_service" / "app.py").exists()
    assert (project / "Dockerfile").exists()


def test_init_git_without_git_says_so(
    tmp_path: Path,
    cookiecutter_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # the hook runs with this Python, not PATH's
    project = render(tmp_path / "out", cookiecutter_config, {"init_git": "yes"})
    assert hook_lines(capfd) == [
        "ws-template: init_git: git is not installed; the project is not a git repository"
    ]
    assert not (project / ".git").exists()
    assert (project / "README.md").exists()


def test_init_git_inside_a_repository_makes_no_nested_one(
    tmp_path: Path, cookiecutter_config: Path, git_config: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    outer = tmp_path / "monorepo"
    outer.mkdir()
    git(outer, "init", "--quiet")
    project = render(outer / "services", cookiecutter_config, {"init_git": "yes"})
    [line] = hook_lines(capfd)
    assert f"inside the git repository {outer}" in line
    assert not (project / ".git").exists()


# Yes/no answers as strings: Cookiecutter converts them when they come from the command line
# or extra_context, but a replay file hands them to the template as they are.


def replay_file(folder: Path, **answers: object) -> Path:
    """A replay file: every answer as given, nothing rendered or converted by Cookiecutter."""
    settings = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    defaults = {  # a choice's default is its first option
        key: value[0] if isinstance(value, list) and not key.startswith("_") else value
        for key, value in settings.items()
    }
    context = {
        **defaults,
        "project_slug": "ws-service",
        "package_name": "ws_service",
        **answers,
    }
    path = folder / "replay.json"
    path.write_text(json.dumps({"cookiecutter": context}))
    return path


def replay(path: Path, output: Path, config: Path) -> Path:
    project = cookiecutter(
        str(TEMPLATE), replay=str(path), output_dir=str(output), config_file=str(config)
    )
    return Path(project)


def test_yes_no_strings_from_a_replay_file_are_honoured(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    answers = replay_file(tmp_path, container="no", init_git="off")
    project = replay(answers, tmp_path / "out", cookiecutter_config)
    assert (project / "README.md").exists()
    assert not (project / "Dockerfile").exists()
    assert "## Container image" not in (project / "README.md").read_text()
    assert not (project / ".git").exists()


def test_a_bad_yes_no_from_a_replay_file_stops_generation_with_one_line(
    tmp_path: Path, cookiecutter_config: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    answers = replay_file(tmp_path, container="yes", init_git="maybe")
    output = tmp_path / "out"
    output.mkdir()
    with pytest.raises(FailedHookException):
        replay(answers, output, cookiecutter_config)
    assert hook_lines(capfd) == [
        "ws-template: init_git 'maybe' is not a yes/no answer: use yes or no "
        "(or y/n, true/false, 1/0, on/off)"
    ]
    assert list(output.iterdir()) == []
