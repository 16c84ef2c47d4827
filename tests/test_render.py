"""Render a matrix of answers; each project must be clean, lint, type-check and pass its tests."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest
from websocket.testing import RedisServer  # the vendored backend, as every project has it

from tests.conftest import VENDORED_BACKEND, render, run, tool_environment
from ws_template_extension import is_yes, parse_endpoints

DEFAULT_ENDPOINTS = (
    "/ws/keepalive, /ws/echo:echo, /ws/clock:ticker, /ws/rooms/{room}:broadcast, "
    "/connection/websocket:channels"
)
ODD_NAME = "Zo\u00eb's \"Quoted\" \\ Service''' + x"
ODD_DESCRIPTION = "Says \"hi\", 'bye' and \\n; {braces} <b>bold</b>"

# Files that name the settings of other kinds of service, to refuse them when set.
SETTINGS_FILES = ("settings.py", "test_runner.py")

CASES: dict[str, dict[str, str]] = {
    "defaults": {},
    "one-endpoint": {"endpoints": "/ws"},
    "path-parameters": {
        "endpoints": "/ws/rooms/{room}:echo, /ws/users/{user_id}/inbox:echo, "
        "/ws/feeds/{feed}/{channel}:ticker",
    },
    "many-endpoints": {
        "endpoints": "/, /ws/a-b.c~d:echo, /1/x:ticker, /ws/class:echo, /class, /every:ticker, "
        "/print:echo, /ws/x/:ticker, /ws/X, /ws/x-, /ws/" + "long" * 12 + ":echo, "
        "/api/v1/organizations/{org}/projects/{project}/events/stream:ticker",
        "tick_seconds": "0.5",
    },
    "odd-names": {
        "project_name": ODD_NAME,
        "description": ODD_DESCRIPTION,
        "author_name": "\u00c6r\u00f8sk\u00f8bing O'Brien",
        "author_email": "",
        "endpoints": "/ws/echo:echo",
        "tick_seconds": "2",
    },
    "explicit-names": {
        "project_slug": "my.svc",
        "package_name": "my_svc_pkg",
        "author_name": "",
        "author_email": "",
        "endpoints": "/live:ticker, /ping",
    },
    "no-ci-no-container-git-init": {
        "ci": "none",
        "container": "no",
        "init_git": "yes",
        "metrics": "no",
    },
    "asgi-defaults": {"framework": "asgi"},
    "asgi-one-endpoint": {
        "framework": "asgi",
        "endpoints": "/ws/echo:echo",
        "console_page": "no",
        "metrics": "no",
    },
    "asgi-many-endpoints": {
        "framework": "asgi",
        "endpoints": "/, /ws/rooms/{room}:echo, /ws/a-b.c~d:ticker, /class, /ws/"
        + "long" * 12
        + ":echo, "
        "/api/v1/organizations/{org}/projects/{project}/events/stream:ticker",
    },
    "asgi-odd-names": {
        "framework": "asgi",
        "project_name": ODD_NAME,
        "description": ODD_DESCRIPTION,
        "package_name": "odd_asgi",
    },
    "broadcast-memory": {
        "endpoints": "/ws/rooms/{room}:broadcast, /ws/news:broadcast, /ws/echo:echo"
    },
    "broadcast-redis": {"endpoints": "/ws/rooms/{room}:broadcast", "broadcast_backend": "redis"},
    "asgi-broadcast-memory": {
        "framework": "asgi",
        "endpoints": "/ws/news:broadcast, /ws/clock:ticker",
    },
    "asgi-broadcast-redis": {
        "framework": "asgi",
        "endpoints": "/ws/rooms/{room}:broadcast, /ws/keepalive",
        "broadcast_backend": "redis",
    },
    "channels-memory": {"endpoints": "/connection/websocket:channels, /ws/rooms/{room}:broadcast"},
    "asgi-channels-redis": {
        "framework": "asgi",
        "endpoints": "/connection/websocket:channels",
        "broadcast_backend": "redis",
    },
}

# The vendored files each framework keeps (the others are removed after generation).
BACKEND_FILES = {
    "fastapi": {"backend.py", "tests/sample_app.py", "tests/test_backend.py"},
    "asgi": {
        "asgi.py",
        "asgi_backend.py",
        "tests/sample_asgi_app.py",
        "tests/test_asgi.py",
        "tests/test_asgi_backend.py",
    },
}
SHARED_BACKEND_FILES = {
    "__init__.py",
    "asgi_types.py",
    "asyncapi.py",
    "broadcast.py",
    "client.py",
    "guard.py",
    "logs.py",
    "session.py",
    "testing.py",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/hub_contract.py",
    "tests/sample_sessions.py",
    "tests/test_asyncapi.py",
    "tests/test_broadcast.py",
    "tests/test_guard.py",
    "tests/test_live.py",
    "tests/test_logs.py",
    "tests/test_session.py",
    "tests/test_uvicorn_protocol.py",
    "tests/test_workers.py",
    "uvicorn_protocol.py",
    "workers.py",
}
# The vendored files only the Redis broadcast backend keeps (they import redis).
REDIS_BACKEND_FILES = {
    "redis_hub.py",
    "redis_batch.py",
    "redis_sentinel.py",
    "tests/test_redis_epochs.py",
    "tests/test_redis_hub.py",
    "tests/test_redis_sentinel.py",
    "tests/test_sharded_redis_hub.py",
}
# The vendored files only projects with a channels endpoint keep (tokens.py imports jwt,
# rpc.py jsonschema; static.py serves their browser app).
CHANNELS_BACKEND_FILES = {
    "centrifuge_protocol.py",
    "namespaces.py",
    "rpc.py",
    "static.py",
    "tokens.py",
    "tests/channels_server.py",
    "tests/test_centrifuge_protocol.py",
    "tests/test_channels_tokens.py",
    "tests/test_namespaces.py",
    "tests/test_rpc.py",
    "tests/test_personal_channels.py",
    "tests/test_static.py",
    "tests/sample_channels_app.py",
    "tests/test_tokens.py",
}
# The vendored files only projects with a hub (a broadcast or channels endpoint) keep.
HUB_BACKEND_FILES = {"publish_api.py", "tests/test_publish_api.py"}
# The vendored files only projects with metrics keep (they import prometheus_client).
METRICS_BACKEND_FILES = {"metrics.py", "tests/test_metrics.py"}


def case_params(framework: str | None = None) -> list[object]:
    """The cases (of one framework, if given), one xdist group each: each renders once."""
    return [
        pytest.param(name, marks=pytest.mark.xdist_group(name))
        for name, answers in CASES.items()
        if framework in (None, answers.get("framework", "fastapi"))
    ]


class Rendered(NamedTuple):
    answers: dict[str, str]
    path: Path


@pytest.fixture(scope="module", params=case_params())
def rendered(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
) -> Rendered:
    answers = CASES[request.param]
    return Rendered(
        answers, render(tmp_path_factory.mktemp(request.param), cookiecutter_config, answers)
    )


@pytest.fixture
def project(rendered: Rendered) -> Path:
    return rendered.path


def files_of(project: Path) -> list[Path]:
    return sorted(
        path for path in project.rglob("*") if path.is_file() and ".git" not in path.parts
    )


def test_no_jinja_is_left_in_any_file_or_name(project: Path) -> None:
    for path in files_of(project):
        text = path.read_text()
        if ".github" in path.relative_to(project).parts:  # GitHub's own ${{ expressions }}
            text = re.sub(r"\$\{\{ [a-z.-]+ \}\}", "", text)
        for marker in ("{{", "{%", "{#"):
            assert marker not in text, f"{marker!r} left in {path}"
            assert marker not in str(path.relative_to(project))


def test_no_blank_line_litter(project: Path) -> None:
    # Python files are held to ruff format (in the pre-commit test); the rest to this.
    for path in files_of(project):
        text = path.read_text()
        if not text:
            continue  # empty __init__.py
        assert text.endswith("\n"), f"{path} does not end with a newline"
        assert not text.endswith("\n\n"), f"{path} ends with a blank line"
        assert not text.startswith("\n"), f"{path} starts with a blank line"
        for number, line in enumerate(text.splitlines(), 1):
            assert line == line.rstrip(), f"{path}:{number} has trailing white space"
        if path.suffix == ".md":  # code blocks follow their language's rules
            text = re.sub(r"^```.*?^```$", "```", text, flags=re.MULTILINE | re.DOTALL)
        if path.suffix != ".py":
            assert "\n\n\n" not in text, f"{path} has two blank lines in a row"


def test_vendored_backend_is_byte_identical_to_the_template(rendered: Rendered) -> None:
    answers, project = rendered
    [backend] = [p.parent for p in project.glob("*/websocket/__init__.py")]
    files = {p.relative_to(backend): p.read_bytes() for p in backend.rglob("*.py")}
    for relative, content in files.items():
        assert content == (VENDORED_BACKEND / relative).read_bytes(), relative
    framework = answers.get("framework", "fastapi")
    redis = REDIS_BACKEND_FILES if uses_redis(answers) else set()
    metrics = METRICS_BACKEND_FILES if uses_metrics(answers) else set()
    channels = CHANNELS_BACKEND_FILES if uses_channels(answers) else set()
    hub = HUB_BACKEND_FILES if kinds_of(answers) & {"broadcast", "channels"} else set()
    expected = SHARED_BACKEND_FILES | BACKEND_FILES[framework] | redis | metrics | channels | hub
    assert {str(p) for p in files} == expected


def uses_redis(answers: dict[str, str]) -> bool:
    return answers.get("broadcast_backend", "memory") == "redis"


def uses_metrics(answers: dict[str, str]) -> bool:
    return is_yes(answers.get("metrics", "yes"))


def kinds_of(answers: dict[str, str]) -> set[str]:
    return {
        endpoint.kind for endpoint in parse_endpoints(answers.get("endpoints", DEFAULT_ENDPOINTS))
    }


def uses_channels(answers: dict[str, str]) -> bool:
    return "channels" in kinds_of(answers)


def test_without_a_channels_endpoint_nothing_of_it_is_rendered_or_installed(
    rendered: Rendered,
) -> None:
    answers, project = rendered
    channels = uses_channels(answers)
    dependencies = tomllib.loads((project / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    assert ("PyJWT[crypto]>=2.8" in dependencies) == channels
    assert ("jsonschema>=4.23" in dependencies) == channels  # rpc.py checks params with it
    assert (project / "tests" / "test_channels.py").exists() == channels
    [package] = [p.parent for p in project.glob("*/app.py")]
    assert (package / "channels.py").exists() == channels
    if not channels:
        for path in files_of(project):
            if path.suffix in (".py", ".toml", ".md") and "websocket" not in path.parts:
                text = path.read_text()
                assert "centrifuge" not in text.lower(), path
                assert "TOKEN_HMAC_SECRET_KEY" not in text or path.name in SETTINGS_FILES, path


def test_without_metrics_nothing_of_them_is_rendered_or_installed(rendered: Rendered) -> None:
    answers, project = rendered
    dependencies = tomllib.loads((project / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    assert ("prometheus-client>=0.26" in dependencies) == uses_metrics(answers)
    assert (project / "tests" / "test_metrics.py").exists() == uses_metrics(answers)
    if not uses_metrics(answers):
        for path in files_of(project):
            if path.suffix in (".py", ".toml", ".md"):
                text = path.read_text()
                assert "prometheus" not in text.lower() or "websocket" in path.parts, path


def test_broadcast_tests_come_with_broadcast_endpoints_and_redis_ones_with_redis(
    rendered: Rendered,
) -> None:
    answers, project = rendered
    endpoints = parse_endpoints(answers.get("endpoints", DEFAULT_ENDPOINTS))
    broadcast = any(endpoint.kind == "broadcast" for endpoint in endpoints)
    assert (project / "tests" / "test_broadcast.py").exists() == broadcast
    redis_broadcast = uses_redis(answers) and broadcast
    assert (project / "tests" / "test_broadcast_redis.py").exists() == redis_broadcast


@pytest.mark.parametrize("rendered", case_params("asgi"), indirect=True)
def test_the_asgi_flavour_imports_no_framework(rendered: Rendered) -> None:
    project = rendered.path
    [package] = [p.parent for p in project.glob("*/app.py")]
    sources = [p for p in package.rglob("*.py") if "tests" not in p.parts]
    for source in sources:
        assert not re.search(
            r"^\s*(from|import) (fastapi|starlette)\b", source.read_text(), re.M
        ), source
    dependencies = tomllib.loads((project / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    redis = ["redis>=8.1"] if uses_redis(rendered.answers) else []
    metrics = ["prometheus-client>=0.26"] if uses_metrics(rendered.answers) else []
    channels = ["PyJWT[crypto]>=2.8", "jsonschema>=4.23"] if uses_channels(rendered.answers) else []
    # websockets is the Python client's library (websocket/client.py), not a framework.
    # orjson reads and writes flat JSON objects (keepalives) in the session helpers.
    expected = [
        "orjson>=3.10",
        *metrics,
        *channels,
        *redis,
        "uvicorn[standard]>=0.54",
        "websockets>=17.0",
    ]
    assert dependencies == expected


def test_answers_come_out_as_inert_text(rendered: Rendered) -> None:
    answers, project = rendered
    metadata = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert metadata["description"] == answers.get("description", "A websocket service.")
    name = answers.get("project_name", "WS Service")
    assert name in (project / "README.md").read_text()
    if answers.get("framework", "fastapi") == "fastapi":
        # The app's title is the exact name: importing the module does not run it as code.
        [package] = [p.parent.name for p in project.glob("*/app.py")]
        title = run(
            [sys.executable, "-c", f"import {package}.app as app; print(app.TITLE, end='')"],
            cwd=project,
        ).stdout
        assert title == name


def test_readme_lists_every_endpoint(rendered: Rendered) -> None:
    answers, project = rendered
    readme = (project / "README.md").read_text()
    for endpoint in parse_endpoints(answers.get("endpoints", DEFAULT_ENDPOINTS)):
        assert f"| `{endpoint.path}` | {endpoint.kind} |" in readme


def test_workflow_and_dockerfile_follow_the_answers_and_pass_their_linters(
    rendered: Rendered,
) -> None:
    answers, project = rendered
    workflow = project / ".github" / "workflows" / "ci.yml"
    assert workflow.exists() == (answers.get("ci", "github") == "github")
    if workflow.exists():
        run(["actionlint", str(workflow)], cwd=project)  # shellcheck checks its run: scripts
    container = is_yes(answers.get("container", True))
    assert (project / "Dockerfile").exists() == container
    assert (project / ".dockerignore").exists() == container
    if container:
        run(["hadolint", "Dockerfile"], cwd=project)  # fails on any finding, info included


def test_passes_its_own_pre_commit_hooks(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """ruff check, ruff format and mypy --strict, as the project's pre-commit config runs them."""
    cache = tmp_path_factory.getbasetemp()  # one per xdist worker: reused across cases
    env = tool_environment(
        MYPY_CACHE_DIR=str(cache / "mypy"), PRE_COMMIT_HOME=str(cache / "pre-commit")
    )
    run(["git", "init", "--quiet"], cwd=project, env=env)
    run(["git", "add", "--all"], cwd=project, env=env)
    run(
        [sys.executable, "-m", "pre_commit", "run", "--all-files", "--show-diff-on-failure"],
        cwd=project,
        env=env,
    )


def test_passes_its_own_tests(rendered: Rendered) -> None:
    answers, project = rendered
    missing = RedisServer.unavailable()
    if uses_redis(answers) and missing and not RedisServer.required():
        pytest.skip(missing)  # the project's own Redis tests would skip
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)
    assert " passed" in result.stdout
    assert "skipped" not in result.stdout
