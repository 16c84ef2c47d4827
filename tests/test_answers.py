"""The answers: the endpoints parser, derived names, and bad answers stopping generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException

from tests.conftest import TEMPLATE, render
from ws_template_extension import (
    AnswerError,
    Endpoint,
    answer_problems,
    check_yes_no,
    derive_package_name,
    parse_endpoints,
    python_string,
)

DEFAULTS = {
    "project_name": "WS Service",
    "project_slug": "ws-service",
    "package_name": "ws_service",
    "description": "A websocket service.",
    "author_name": "Your Name",
    "author_email": "you@example.com",
    "endpoints": "/ws/keepalive, /ws/echo:echo, /ws/clock:ticker, /ws/rooms/{room}:broadcast, "
    "/connection/websocket:channels",
    "tick_seconds": "1.0",
    "framework": "fastapi",
}


def test_default_endpoints_parse_to_every_kind() -> None:
    assert parse_endpoints(DEFAULTS["endpoints"]) == [
        Endpoint("/ws/keepalive", "keepalive", "ws_keepalive", (), "/ws/keepalive"),
        Endpoint("/ws/echo", "echo", "ws_echo", (), "/ws/echo"),
        Endpoint("/ws/clock", "ticker", "ws_clock", (), "/ws/clock"),
        Endpoint("/ws/rooms/{room}", "broadcast", "ws_rooms_room", ("room",), "/ws/rooms/room-1"),
        Endpoint(
            "/connection/websocket",
            "channels",
            "connection_websocket",
            (),
            "/connection/websocket",
        ),
    ]


def test_the_default_answers_are_the_ones_cookiecutter_json_gives() -> None:
    settings = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    assert settings["endpoints"] == DEFAULTS["endpoints"]


def test_path_parameters_are_listed_and_filled_in_example_urls() -> None:
    [endpoint] = parse_endpoints("/ws/rooms/{room}/users/{user_id}:echo")
    assert endpoint.params == ("room", "user_id")
    assert endpoint.example_url == "/ws/rooms/room-1/users/user_id-1"
    assert endpoint.handler == "ws_rooms_room_users_user_id"


def test_broadcast_is_a_kind_and_redis_takes_a_broadcast_endpoint() -> None:
    [endpoint] = parse_endpoints("/ws/rooms/{room}:broadcast")
    assert (endpoint.kind, endpoint.handler) == ("broadcast", "ws_rooms_room")
    answers = {**DEFAULTS, "endpoints": "/ws/rooms/{room}:broadcast, /ws/echo:echo"}
    assert answer_problems({**answers, "broadcast_backend": "redis"}) == []
    assert answer_problems({**answers, "broadcast_backend": "memory"}) == []


def test_channels_is_a_kind_and_redis_takes_a_channels_endpoint_alone() -> None:
    [endpoint] = parse_endpoints("/connection/websocket:channels")
    assert (endpoint.kind, endpoint.handler) == ("channels", "connection_websocket")
    answers = {**DEFAULTS, "endpoints": "/connection/websocket:channels, /ws/echo:echo"}
    assert answer_problems({**answers, "broadcast_backend": "redis"}) == []
    assert answer_problems({**answers, "broadcast_backend": "memory"}) == []


def test_a_channels_endpoint_takes_no_path_parameter() -> None:
    with pytest.raises(AnswerError, match=r"^endpoints: '/c/\{x\}:channels' has a path param"):
        parse_endpoints("/ws/rooms/{room}:broadcast, /c/{x}:channels")
    [endpoint] = parse_endpoints("/c/{x}")  # the same path is fine for another kind
    assert endpoint.params == ("x",)


def test_kind_defaults_to_keepalive_and_spaces_are_trimmed() -> None:
    endpoints = parse_endpoints("  /a ,/b : echo ,, ")
    assert [(e.path, e.kind) for e in endpoints] == [("/a", "keepalive"), ("/b", "echo")]


@pytest.mark.parametrize(
    ("paths", "handlers"),
    [
        ("/", ["root"]),
        ("/class, /print, /every, /echo", ["class_endpoint", "print_endpoint", "every_endpoint", "echo_endpoint"]),
        ("/1/x", ["endpoint_1_x"]),
        ("/ws/X, /ws/x-, /ws/x.", ["ws_x", "ws_x_2", "ws_x_3"]),
        ("/api/v1/organizations/{org}/projects/{project}/events", ["org_projects_project_events"]),
        ("/" + "a" * 70, ["a" * 40]),
    ],
)  # fmt: skip
def test_handler_names_are_unique_safe_identifiers(paths: str, handlers: list[str]) -> None:
    names = [endpoint.handler for endpoint in parse_endpoints(paths)]
    assert names == handlers
    assert all(name.isidentifier() and len(name) <= 40 for name in names)


@pytest.mark.parametrize(
    ("slug", "package"),
    [
        ("ws-service", "ws_service"),
        ("My.Service", "my_service"),
        ("123-go", "service_123_go"),
        ("json", "json_service"),
        ("fastapi", "fastapi_service"),
        ("class", "class_service"),
        ("---", "service"),
    ],
)
def test_derived_package_name_is_always_usable(slug: str, package: str) -> None:
    assert derive_package_name(slug) == package
    assert answer_problems({**DEFAULTS, "package_name": package}) == []


@pytest.mark.parametrize(
    "text",
    ["plain", "it's", 'say "hi"', 'both \' and ""', "back\\slash", "''' + evil + '''", "é ✓"],
)
def test_python_string_is_an_inert_literal_of_the_text(text: str) -> None:
    literal = python_string(text)
    assert eval(literal) == text  # only a literal: eval cannot run code


BAD_ANSWERS = [
    # (answers, what the error line must say)
    ({"endpoints": ""}, "endpoints '' lists no endpoint"),
    ({"endpoints": " , ,"}, "lists no endpoint"),
    ({"endpoints": "ws/echo"}, "path 'ws/echo' must start with '/'"),
    ({"endpoints": "/ws/a b"}, "has ' ', which is not allowed in a path here"),
    ({"endpoints": "/ws/caf\u00e9"}, "which is not allowed in a path here"),
    ({"endpoints": "/ws/it's"}, '"/ws/it\'s" has "\'", which is not allowed'),
    ({"endpoints": '/ws/"x"'}, "which is not allowed in a path here"),
    ({"endpoints": "/ws/a\\b"}, "which is not allowed in a path here"),
    ({"endpoints": "/ws/a\nb"}, "'\\n', which is not allowed"),
    ({"endpoints": "/ws/a?x=1"}, "'?', which is not allowed"),
    ({"endpoints": "/ws/a%20b"}, "'%', which is not allowed"),
    ({"endpoints": "/ws/a, /ws/a/"}, "'/ws/a/' duplicates '/ws/a'"),
    ({"endpoints": "/ws/{a}:echo, /ws/{b}"}, "'/ws/{b}' duplicates '/ws/{a}'"),
    (
        {"endpoints": "/ws/x:chat"},
        "unknown kind 'chat'; allowed kinds: keepalive, echo, ticker, broadcast, channels",
    ),
    ({"endpoints": "/ws/x:"}, "an empty kind; allowed kinds"),
    ({"endpoints": "/ws/{1x}"}, "{1x}, which is not a valid name"),
    ({"endpoints": "/ws/{}"}, "empty parameter '{}'"),
    ({"endpoints": "/ws/{room"}, "unbalanced '{'"),
    ({"endpoints": "/ws/room}"}, "unbalanced '}'"),
    ({"endpoints": "/ws/{id:int}"}, "converters are not supported, write {id}"),
    ({"endpoints": "/ws/{a}/{a}"}, "uses the parameter {a} twice"),
    ({"endpoints": "/ws//x"}, "empty segment"),
    ({"endpoints": "/ws/../x"}, "'.' or '..' segment"),
    ({"tick_seconds": "0"}, "tick_seconds '0' must be a positive number"),
    ({"tick_seconds": "-1"}, "tick_seconds '-1' must be a positive number"),
    ({"tick_seconds": "soon"}, "tick_seconds 'soon' must be a positive number"),
    ({"tick_seconds": "nan"}, "tick_seconds 'nan'"),
    ({"tick_seconds": "inf"}, "tick_seconds 'inf'"),
    ({"package_name": "1abc"}, "package_name '1abc' is not a Python identifier"),
    ({"package_name": "my-pkg"}, "package_name 'my-pkg' is not a Python identifier"),
    ({"package_name": "s\u00e9rvice"}, "is not a Python identifier"),
    ({"package_name": "class"}, "package_name 'class' is a Python keyword"),
    ({"package_name": "match"}, "package_name 'match' is a Python keyword"),
    ({"package_name": "json"}, "would shadow the module 'json'"),
    ({"package_name": "asyncio"}, "would shadow the module 'asyncio'"),
    ({"package_name": "fastapi"}, "would shadow the module 'fastapi'"),
    ({"package_name": "tests"}, "would shadow the module 'tests'"),
    ({"project_slug": "../evil"}, "project_slug '../evil' must be a folder and distribution name"),
    ({"project_slug": "a/b"}, "project_slug 'a/b' must be"),
    ({"project_slug": "-x"}, "project_slug '-x' must be"),
    ({"project_slug": "/tmp/absolute"}, "project_slug '/tmp/absolute' must be"),
    ({"project_slug": ""}, "project_slug '' must be"),
    ({"project_name": "", "project_slug": "x"}, "project_name is empty"),
    (
        {"project_name": "Two\nLines"},
        "project_name 'Two\\nLines' contains the control character U+000A",
    ),
    ({"project_name": "Tab\there"}, "U+0009"),
    ({"project_name": "abc\u202edef"}, "U+202E"),
    ({"description": "Line one\nline two"}, "description 'Line one\\nline two' contains"),
    ({"author_name": "Bell\x07"}, "author_name 'Bell\\x07' contains the control character U+0007"),
    ({"author_email": "not-an-email"}, "author_email 'not-an-email' is not an e-mail address"),
    (
        {"endpoints": "/ws/keepalive, /ws/echo:echo", "broadcast_backend": "redis"},
        "broadcast_backend 'redis' needs a broadcast or channels endpoint: add one to "
        "endpoints (e.g. '/ws/rooms/{room}:broadcast') or answer memory",
    ),
    (
        {"endpoints": "/c/{x}:channels"},
        "endpoints: '/c/{x}:channels' has a path parameter; a channels endpoint carries its "
        "channels in its messages, so its path takes none (the SDKs' docs use "
        "/connection/websocket)",
    ),
]


@pytest.mark.parametrize(("answers", "message"), BAD_ANSWERS)
def test_answer_problems_name_the_bad_value(answers: dict[str, str], message: str) -> None:
    problems = answer_problems({**DEFAULTS, **answers})
    assert len(problems) == 1, problems
    assert message in problems[0]


def test_parse_endpoints_raises_the_same_message() -> None:
    with pytest.raises(AnswerError, match="unknown kind 'chat'"):
        parse_endpoints("/ws/x:chat")


def test_nested_braces_are_unbalanced() -> None:
    # Not tried through Cookiecutter: it renders answers as Jinja, so "{{room}}" never
    # reaches the hook as typed.
    with pytest.raises(AnswerError, match="unbalanced"):
        parse_endpoints("/ws/{{room}}")


def test_defaults_have_no_problem() -> None:
    assert answer_problems(DEFAULTS) == []


@pytest.mark.parametrize(("answers", "message"), BAD_ANSWERS)
def test_bad_answer_stops_generation_with_one_line_and_leaves_nothing(
    answers: dict[str, str],
    message: str,
    tmp_path: Path,
    cookiecutter_config: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "output"  # a slug like "../evil" would aim beside it
    output.mkdir()
    with pytest.raises(FailedHookException):
        render(output, cookiecutter_config, answers)
    stderr_lines = capfd.readouterr().err.splitlines()
    ours = [line for line in stderr_lines if line.startswith("ws-template: ")]
    assert len(ours) == 1, stderr_lines
    assert message in ours[0]
    assert [path.name for path in tmp_path.iterdir()] == ["output"]
    assert list(output.iterdir()) == []


def test_unknown_framework_is_refused_before_anything_is_written(
    tmp_path: Path, cookiecutter_config: Path
) -> None:
    with pytest.raises(ValueError, match="django provided for choice variable framework"):
        render(tmp_path, cookiecutter_config, {"framework": "django"})
    assert list(tmp_path.iterdir()) == []


def test_several_problems_give_one_line_each(
    tmp_path: Path, cookiecutter_config: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FailedHookException):
        render(tmp_path, cookiecutter_config, {"endpoints": "x", "tick_seconds": "0"})
    ours = [line for line in capfd.readouterr().err.splitlines() if line.startswith("ws-template:")]
    assert len(ours) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("answer", "meaning"),
    [(True, True), ("yes", True), ("Y", True), ("on", True), ("1", True), (" true ", True),
     (False, False), ("no", False), ("N", False), ("off", False), ("0", False), ("FALSE", False)],
)  # fmt: skip
def test_yes_no_answers_take_the_usual_spellings(answer: bool | str, meaning: bool) -> None:
    assert check_yes_no("init_git", answer) is meaning
    assert answer_problems({**DEFAULTS, "init_git": answer, "container": answer}) == []


# Cookiecutter itself refuses these from the command line or extra_context, before the hook
# (a replay file hands them to the hook: tests/test_plumbing.py); the checks stand behind it.
BAD_CHOICES = [
    ({"ci": "gitlab"}, "ci 'gitlab' is not one of: github, none"),
    ({"broadcast_backend": "kafka"}, "broadcast_backend 'kafka' is not one of: memory, redis"),
    ({"container": "maybe"}, "container 'maybe' is not a yes/no answer: use yes or no"),
    ({"init_git": ""}, "init_git '' is not a yes/no answer"),
    ({"init_git": "nope"}, "init_git 'nope' is not a yes/no answer"),
]


@pytest.mark.parametrize(("answers", "message"), BAD_CHOICES)
def test_answer_problems_name_a_bad_choice_or_yes_no(answers: dict[str, str], message: str) -> None:
    problems = answer_problems({**DEFAULTS, **answers})
    assert len(problems) == 1, problems
    assert message in problems[0]


@pytest.mark.parametrize("answers", [answers for answers, _ in BAD_CHOICES])
def test_cookiecutter_refuses_a_bad_choice_or_yes_no_before_anything_is_written(
    answers: dict[str, str], tmp_path: Path, cookiecutter_config: Path
) -> None:
    [(name, value)] = answers.items()
    with pytest.raises(ValueError, match=f"{value} provided for .*variable {name}"):
        render(tmp_path, cookiecutter_config, answers)
    assert list(tmp_path.iterdir()) == []
