"""Template updates with cruft: a later template change reaches a project, the user's edits stay.

cruft runs in subprocesses: Cookiecutter appends the template folder to ``sys.path``, so a
second copy of the template in this process could reuse the cached extension module.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.conftest import TEMPLATE, run, tool_environment

TEMPLATE_FILES = [
    "cookiecutter.json",
    "ws_template_extension.py",
    "hooks",
    "{{cookiecutter.project_slug|ws_folder_name}}",
]
VENDORED_INIT = Path("{{cookiecutter.project_slug|ws_folder_name}}/{{cookiecutter.package_name}}")
VENDORED_INIT = VENDORED_INIT / "websocket" / "__init__.py"
TEMPLATE_CHANGE = "The template changed after this project was made (tests/test_cruft.py).\n"
USER_EDIT = "\n## Deploying\n\nOur own notes, which a template update must keep.\n"


class Workspace:
    """A folder with the template as a git repository of its own, as users would clone it,
    and the environment cruft and git run in (no user or system git configuration)."""

    def __init__(self, folder: Path, cookiecutter_config: Path) -> None:
        self.env = tool_environment(
            COOKIECUTTER_CONFIG=str(cookiecutter_config),
            GIT_CONFIG_GLOBAL=str(folder / "gitconfig"),  # no signing, no hooks
            GIT_CONFIG_NOSYSTEM="1",
            GIT_AUTHOR_NAME="Test User",
            GIT_AUTHOR_EMAIL="test@example.com",
            GIT_COMMITTER_NAME="Test User",
            GIT_COMMITTER_EMAIL="test@example.com",
        )
        (folder / "gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
        self.template = folder / "ws-template"
        self.template.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
        for name in TEMPLATE_FILES:
            source = TEMPLATE / name
            if source.is_dir():
                shutil.copytree(source, self.template / name, ignore=ignore)
            else:
                shutil.copyfile(source, self.template / name)
        self.git("init", "--quiet", cwd=self.template)
        self.git("add", "--all", cwd=self.template)
        self.git("commit", "--quiet", "-m", "The template", cwd=self.template)

    def git(self, *args: str, cwd: Path) -> str:
        return run(["git", *args], cwd=cwd, env=self.env).stdout.strip()


def cruft(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["cruft", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_cruft_update_brings_a_template_change_and_keeps_the_users_edits(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    workspace = Workspace(tmp_path, cookiecutter_config)
    env, git, template = workspace.env, workspace.git, workspace.template

    # A project from it; init_git=yes commits it, and cruft then adds .cruft.json.
    context = json.dumps({"project_name": "Cruft Demo", "init_git": "yes"})
    created = cruft(
        "create", "--no-input", "--extra-context", context, str(template), cwd=tmp_path, env=env
    )
    assert created.returncode == 0, created.stdout + created.stderr
    project = tmp_path / "cruft-demo"
    assert git("status", "--porcelain", cwd=project) == "?? .cruft.json"
    git("add", ".cruft.json", cwd=project)
    git("commit", "--quiet", "-m", "Link the project to its template", cwd=project)
    assert cruft("check", cwd=project, env=env).returncode == 0

    # The user's own edit, committed.
    readme = project / "README.md"
    readme.write_text(readme.read_text() + USER_EDIT)
    edited_readme = readme.read_text()
    git("commit", "--quiet", "-am", "Deployment notes", cwd=project)

    # The template moves on: one more line in the vendored module's docs.
    vendored = template / VENDORED_INIT
    text = vendored.read_text()
    marker = "A project keeps the face its framework uses.\n"
    assert marker in text
    vendored.write_text(text.replace(marker, marker + TEMPLATE_CHANGE))
    git("commit", "--quiet", "-am", "Vendored module: one more line of docs", cwd=template)
    template_head = git("rev-parse", "HEAD", cwd=template)

    check = cruft("check", cwd=project, env=env)
    assert check.returncode == 1
    assert "out of date" in check.stdout

    update = cruft("update", "--skip-apply-ask", cwd=project, env=env)
    assert update.returncode == 0, update.stdout + update.stderr
    changed = git("diff", "HEAD", "--name-only", cwd=project).splitlines()
    assert sorted(changed) == [".cruft.json", "cruft_demo/websocket/__init__.py"]
    assert git("status", "--porcelain", "--untracked-files=all", "--", "*.rej", cwd=project) == ""
    refreshed = project / "cruft_demo" / "websocket" / "__init__.py"
    assert refreshed.read_bytes() == vendored.read_bytes()  # the vendored module, refreshed
    assert readme.read_text() == edited_readme  # the user's edit, untouched
    assert json.loads((project / ".cruft.json").read_text())["commit"] == template_head

    git("commit", "--quiet", "-am", "Update from the template", cwd=project)
    passed = cruft("check", cwd=project, env=env)
    assert passed.returncode == 0, passed.stdout
    assert "up to date" in passed.stdout


def test_cruft_update_moves_a_project_from_the_memory_to_the_redis_backend(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    """The README's "Moving to the Redis backend": its cruft command, the user's edits kept."""
    workspace = Workspace(tmp_path, cookiecutter_config)
    env, git, template = workspace.env, workspace.git, workspace.template
    answers = {
        "project_name": "Chat",
        "endpoints": "/ws/rooms/{room}:broadcast",
        "broadcast_backend": "memory",
        "init_git": "yes",
    }
    created = cruft(
        "create", "--no-input", "--extra-context", json.dumps(answers), str(template),
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    project = tmp_path / "chat"
    git("add", ".cruft.json", cwd=project)
    git("commit", "--quiet", "-m", "Link the project to its template", cwd=project)
    readme = project / "README.md"
    readme.write_text(readme.read_text() + USER_EDIT)
    git("commit", "--quiet", "-am", "Deployment notes", cwd=project)
    assert not (project / "chat" / "websocket" / "redis_hub.py").exists()

    [command] = [
        line for line in readme.read_text().splitlines() if "--variables-to-update" in line
    ]
    assert command == """cruft update -y --variables-to-update '{"broadcast_backend": "redis"}'"""
    update = cruft(*shlex.split(command)[1:], cwd=project, env=env)
    assert update.returncode == 0, update.stdout + update.stderr
    assert git("status", "--porcelain", "--untracked-files=all", "--", "*.rej", cwd=project) == ""
    for path in (
        "chat/websocket/redis_hub.py",
        "chat/websocket/redis_batch.py",
        "tests/test_broadcast_redis.py",
        "compose.yaml",
    ):
        assert (project / path).is_file(), path
    assert '"redis>=' in (project / "pyproject.toml").read_text()
    assert 'read("REDIS_URL"' in (project / "chat" / "settings.py").read_text()
    assert readme.read_text().endswith(USER_EDIT)  # the user's edit, kept
    cruft_state = json.loads((project / ".cruft.json").read_text())
    assert cruft_state["context"]["cookiecutter"]["broadcast_backend"] == "redis"
