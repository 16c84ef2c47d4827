"""GET /asyncapi.json of rendered projects, checked by the reference parser (@asyncapi/parser).

Each answer set of test_render is rendered and served on uvicorn; its document must follow
the endpoints it mounts and pass ``conformance/asyncapi/validate.mjs`` with no error and no
warning. An endpoint written the way the generated README shows (the ``shout`` example)
appears once it declares its messages, and what it sends follows the document.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from websocket.testing import LiveServer, RedisServer  # the vendored backend
from websockets.sync.client import connect

from tests.conftest import TEMPLATE, render
from tests.test_render import CASES, DEFAULT_ENDPOINTS, case_params
from ws_template_extension import parse_endpoints

CHECKER = TEMPLATE / "conformance" / "asyncapi"
SEVERITIES = {0: "error", 1: "warning"}  # 2 (information) and 3 (hint) are not findings


def parser_or_skip() -> list[str]:
    """The command that validates documents; in CI, its absence fails the test."""
    node = shutil.which("node")
    reason = None
    if node is None:
        reason = "node is not installed (apt-get install nodejs)"
    elif not (CHECKER / "node_modules" / "@asyncapi" / "parser").is_dir():
        reason = "@asyncapi/parser is not installed (npm ci --prefix conformance/asyncapi)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert node is not None
    return [node, str(CHECKER / "validate.mjs")]


def findings(document: dict[str, Any], folder: Path) -> list[str]:
    """What the reference parser reports about ``document`` as errors or warnings."""
    path = folder / "asyncapi.json"
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [*parser_or_skip(), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    [report] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [
        f"{SEVERITIES[d['severity']]} {d['code']} at {d['path']}: {d['message']}"
        for d in report["diagnostics"]
        if d["severity"] in SEVERITIES
    ]


def package_of(project: Path) -> str:
    [app] = project.glob("*/app.py")
    return app.parent.name


def served_document(project: Path, answers: dict[str, str]) -> dict[str, Any]:
    """Start the project on uvicorn (with a Redis if it needs one); its /asyncapi.json."""
    with ExitStack() as stack:
        environment = {}
        if answers.get("broadcast_backend") == "redis":
            if RedisServer.unavailable():
                pytest.skip(str(RedisServer.unavailable()))
            environment["REDIS_URL"] = stack.enter_context(RedisServer()).url
        server = stack.enter_context(
            LiveServer(f"{package_of(project)}.app:app", env=environment, cwd=project)
        )
        with urllib.request.urlopen(server.url("/asyncapi.json"), timeout=10) as response:
            assert response.headers["content-type"].startswith("application/json")
            document: dict[str, Any] = json.load(response)
        return document


@pytest.mark.parametrize("case", case_params())
def test_every_answer_set_serves_a_valid_document_of_its_endpoints(
    case: str, tmp_path: Path, cookiecutter_config: Path
) -> None:
    answers = CASES[case]
    project = render(tmp_path / "out", cookiecutter_config, answers)
    init = project / package_of(project) / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', '__version__ = "2.3.4"'))
    document = served_document(project, answers)
    assert document["info"]["version"] == "2.3.4"  # the package's, as a team sets it

    endpoints = parse_endpoints(answers.get("endpoints", DEFAULT_ENDPOINTS))
    channels = list(document["channels"].values())
    assert [channel["address"] for channel in channels] == [e.path for e in endpoints]
    for endpoint, channel in zip(endpoints, channels, strict=True):
        names = re.findall(r"\{(\w+)\}", endpoint.path)
        assert sorted(channel.get("parameters", {})) == sorted(names), channel
        has_query = "query" in channel.get("bindings", {}).get("ws", {})
        assert has_query == (endpoint.kind == "broadcast"), channel
        declared = {ref["$ref"].rsplit("/", 1)[-1] for ref in channel["messages"].values()}
        if endpoint.kind == "channels":  # the Centrifuge protocol, not keepalives
            assert {"connect_command", "connect_reply", "error_reply", "pub_push"} <= declared
        else:
            assert {"keepalive", "keepalive_ack", "error"} <= declared, channel
    assert findings(document, tmp_path) == []


SHOUT_SECTION = re.compile(r"^## Add an endpoint\n(.*?)^## ", re.S | re.M)
CODE_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("framework", ["fastapi", "asgi"])
def test_an_endpoint_added_as_the_readme_shows_appears_once_it_declares_its_messages(
    framework: str, tmp_path: Path, cookiecutter_config: Path
) -> None:
    answers = {"framework": framework, "endpoints": "/ws/echo:echo"}
    project = render(tmp_path / "out", cookiecutter_config, answers)
    package = project / package_of(project)
    section = SHOUT_SECTION.search((project / "README.md").read_text())
    assert section is not None
    handler, mount = CODE_BLOCK.findall(section.group(1))
    assert handler.startswith("# endpoints.py")
    assert mount.startswith("# app.py")
    mount_line = mount.splitlines()[-1]
    app = (package / "app.py").read_text()
    healthz = re.search(r'^    app\.add_\w+_route\("/healthz"', app, re.M)
    assert healthz is not None
    (package / "app.py").write_text(
        app[: healthz.start()] + "    " + mount_line + "\n" + app[healthz.start() :]
    )
    endpoints = (package / "endpoints.py").read_text()

    undeclared = "\n".join(line for line in handler.splitlines() if not line.startswith("@"))
    (package / "endpoints.py").write_text(endpoints + "\n\n" + undeclared)
    addresses = [c["address"] for c in served_document(project, answers)["channels"].values()]
    assert addresses == ["/ws/echo"]  # not declared: not described

    (package / "endpoints.py").write_text(endpoints + "\n\n" + handler)
    with LiveServer(f"{package.name}.app:app", cwd=project) as server:
        with urllib.request.urlopen(server.url("/asyncapi.json"), timeout=10) as response:
            document = json.load(response)
        shout = document["channels"]["ws_shout"]
        assert shout["address"] == "/ws/shout"
        sent = {"type": "shout", "text": "h\u00e9llo"}
        with connect(server.ws_url("/ws/shout")) as websocket:
            websocket.send(json.dumps(sent))
            answer = json.loads(websocket.recv(timeout=5))
    assert answer == {"type": "shout", "text": "H\u00c9LLO"}
    payloads = document["components"]["messages"]
    Draft7Validator(payloads["shout"]["payload"]).validate(sent)
    Draft7Validator(payloads["shout"]["payload"]).validate(answer)
    assert findings(document, tmp_path) == []


def test_a_channels_endpoint_s_rpc_methods_are_listed_and_the_parser_accepts_them(
    tmp_path: Path,
) -> None:
    from websocket.asyncapi import channels_endpoint, declares, document
    from websocket.rpc import RpcMethods, RpcRequest

    methods = RpcMethods()

    @methods.method(
        "history.page",
        params={"type": "object", "properties": {"cursor": {"type": "string"}}},
        result={"type": "object", "required": ["items"]},
    )
    async def page(request: RpcRequest) -> dict[str, Any]:
        """One page of a channel's history."""
        return {"items": []}

    @methods.method("whoami")
    async def whoami(request: RpcRequest) -> str:
        return request.user

    @methods.on_send
    async def read(request: RpcRequest) -> None: ...

    @declares(channels_endpoint(methods))
    async def connection(websocket: object) -> None: ...

    described = document([("/connection/websocket", connection)], title="T")
    messages = described["components"]["messages"]
    assert messages["rpc_history_page_command"]["payload"]["properties"]["rpc"]["properties"][
        "method"
    ] == {"const": "history.page"}
    assert "One page of a channel's history." in messages["rpc_history_page_command"]["summary"]
    assert {"rpc_whoami_command", "rpc_whoami_reply", "send_command"} <= set(messages)
    assert findings(described, tmp_path) == []
