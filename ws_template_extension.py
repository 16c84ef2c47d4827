"""The one parser of ws-template's answers, as a local Jinja extension.

Cookiecutter loads `WsTemplateExtension` (``_extensions`` in ``cookiecutter.json``); its
filters give the templates the parsed endpoints and safe literals, and give the pre-gen
hook the list of problems with the answers. Filters never raise: an exception inside a
filter would leave a half-made project behind, so the hook stops bad answers first.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import keyword
import math
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from jinja2 import Environment
from jinja2.ext import Extension

KINDS = ("keepalive", "echo", "ticker", "broadcast", "channels")
"""Endpoint kinds, in the order the docs list them; the first is the default."""

FRAMEWORKS = ("fastapi", "asgi")

HUB_KINDS = ("broadcast", "channels")
"""The kinds whose endpoints meet in the service's hub (``broadcast_backend``)."""

BROADCAST_BACKENDS = ("memory", "redis")
"""Where broadcast and channels endpoints meet: in one process's memory, or in Redis."""

CI_PROVIDERS = ("github", "none")

YES_NO_ANSWERS = {
    "container": True,
    "init_git": False,
    "console_page": True,
    "metrics": True,
}
"""Yes/no prompts (Cookiecutter booleans) and their defaults."""

YES = ("1", "true", "t", "yes", "y", "on")
NO = ("0", "false", "f", "no", "n", "off")
"""The spellings Cookiecutter's own yes/no prompt accepts, in any case."""

FREE_TEXT_ANSWERS = ("project_name", "description", "author_name")

PATH_CHARACTERS = re.compile(r"[A-Za-z0-9._~/-]")
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DISTRIBUTION_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# Top-level modules that a generated project imports or installs: a package of the same
# name would shadow them. ("tests" is the project's own test package.)
SHADOWED_MODULES = frozenset(
    {
        "anyio",
        "annotated_types",
        "click",
        "dotenv",
        "fastapi",
        "h11",
        "httpcore",
        "httptools",
        "httpx",
        "hypothesis",
        "idna",
        "mypy",
        "pre_commit",
        "pydantic",
        "pydantic_core",
        "pytest",
        "redis",
        "ruff",
        "sniffio",
        "starlette",
        "tests",
        "typing_extensions",
        "uvicorn",
        "uvloop",
        "watchfiles",
        "websockets",
        "wsproto",
        "yaml",
    }
)

# Names defined in the generated endpoints module besides the handlers.
HANDLER_MODULE_NAMES = frozenset(
    {
        "Any",
        "WebSocket",
        "annotations",
        "drain_text",
        "echo",
        "every",
        "get_settings",
        "hub_of",
        "itertools",
        "keepalive_loop",
        "now_ns",
        "receive_json",
        "channels_config",
        "run_broadcast",
        "run_channels",
        "run_websocket",
        "send_tick",
        "tick_sender",
    }
)


class AnswerError(ValueError):
    """An answer that cannot be used; the message is one line naming it and what is allowed."""


@dataclass(frozen=True)
class Endpoint:
    """One websocket endpoint of the generated service."""

    path: str
    kind: str
    handler: str
    """The name of its handler function in the generated ``endpoints.py``."""
    params: tuple[str, ...]
    example_url: str
    """The path with every parameter filled in, for tests and docs."""


def parse_endpoints(answer: str) -> list[Endpoint]:
    """Parse the ``endpoints`` answer: comma-separated ``PATH[:KIND]`` entries.

    Raises `AnswerError` for the first problem found.
    """
    entries = [entry.strip() for entry in answer.split(",")]
    entries = [entry for entry in entries if entry]
    if not entries:
        raise AnswerError(
            f"endpoints {answer!r} lists no endpoint: give comma-separated PATH[:KIND] entries, "
            f"e.g. '/ws/keepalive, /ws/echo:echo'"
        )
    seen: dict[str, str] = {}
    endpoints: list[Endpoint] = []
    handlers: set[str] = set()
    for entry in entries:
        path, kind = _split_entry(entry)
        params = _check_path(path)
        if kind == "channels" and params:
            raise AnswerError(
                f"endpoints: {entry!r} has a path parameter; a channels endpoint carries its "
                f"channels in its messages, so its path takes none (the SDKs' docs use "
                f"/connection/websocket)"
            )
        shape = _route_shape(path)
        if shape in seen:
            raise AnswerError(
                f"endpoints: {path!r} duplicates {seen[shape]!r} "
                f"(paths are compared without a trailing '/' and parameter names)"
            )
        seen[shape] = path
        handler = _handler_name(path, handlers)
        handlers.add(handler)
        example = re.sub(r"\{([^}]*)\}", r"\1-1", path)
        endpoints.append(Endpoint(path, kind, handler, params, example))
    return endpoints


def _split_entry(entry: str) -> tuple[str, str]:
    """Split ``PATH[:KIND]`` at the first ':' outside braces."""
    depth = 0
    for index, char in enumerate(entry):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == ":" and depth == 0:
            path, kind = entry[:index].strip(), entry[index + 1 :].strip()
            if kind not in KINDS:
                shown = f"unknown kind {kind!r}" if kind else "an empty kind"
                raise AnswerError(
                    f"endpoints: {entry!r} has {shown}; allowed kinds: {', '.join(KINDS)}"
                )
            return path, kind
    return entry, KINDS[0]


def _check_path(path: str) -> tuple[str, ...]:
    """Check one path; return its parameter names."""
    allowed = "letters, digits, '-', '.', '_', '~', '/' and {name} parameters"
    if not path.startswith("/"):
        raise AnswerError(f"endpoints: path {path!r} must start with '/'")
    params: list[str] = []
    index = 0
    while index < len(path):
        char = path[index]
        if char == "{":
            end = path.find("}", index)
            nested = path.find("{", index + 1)
            if end == -1 or (nested != -1 and nested < end):
                raise AnswerError(f"endpoints: path {path!r} has an unbalanced '{{'")
            params.append(_check_parameter(path, path[index + 1 : end]))
            index = end + 1
            continue
        if char == "}":
            raise AnswerError(f"endpoints: path {path!r} has an unbalanced '}}'")
        if not PATH_CHARACTERS.fullmatch(char):
            raise AnswerError(
                f"endpoints: path {path!r} has {char!r}, which is not allowed in a path here; "
                f"use {allowed}"
            )
        index += 1
    if "//" in path:
        raise AnswerError(f"endpoints: path {path!r} has an empty segment ('//')")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise AnswerError(f"endpoints: path {path!r} has a '.' or '..' segment")
    duplicates = sorted({name for name in params if params.count(name) > 1})
    if duplicates:
        raise AnswerError(f"endpoints: path {path!r} uses the parameter {{{duplicates[0]}}} twice")
    return tuple(params)


def _check_parameter(path: str, name: str) -> str:
    if not name:
        raise AnswerError(
            f"endpoints: path {path!r} has an empty parameter '{{}}'; name it, e.g. {{room}}"
        )
    if ":" in name:
        bare = name.split(":")[0]
        raise AnswerError(
            f"endpoints: path {path!r} has the converter in {{{name}}}; "
            f"converters are not supported, write {{{bare}}}"
        )
    if not PARAMETER_NAME.fullmatch(name):
        raise AnswerError(
            f"endpoints: path {path!r} has the parameter {{{name}}}, which is not a valid name: "
            f"use a letter or '_' followed by letters, digits or '_'"
        )
    return name


def _route_shape(path: str) -> str:
    """What two paths share when they would be the same route."""
    shape = re.sub(r"\{[^}]*\}", "{}", path)
    return shape.rstrip("/") or "/"


MAX_HANDLER_NAME = 40
"""Handler names stay short enough that no line naming one needs wrapping."""


def _handler_name(path: str, taken: set[str]) -> str:
    """A Python identifier for the handler of ``path``, unique among ``taken``.

    It joins the path's words, dropping leading ones while the name is too long
    ('/api/v1/orgs/{org}/events' -> 'api_v1_orgs_org_events').
    """
    words = [word for word in re.split(r"[^a-z0-9]+", path.lower()) if word]
    while len(words) > 1 and len("_".join(words)) > MAX_HANDLER_NAME:
        words = words[1:]
    base = "_".join(words)[:MAX_HANDLER_NAME].rstrip("_") or "root"
    if base[0].isdigit():
        base = f"endpoint_{base}"
    if keyword.iskeyword(base) or hasattr(builtins, base) or base in HANDLER_MODULE_NAMES:
        base = f"{base}_endpoint"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}_{number}", number + 1
    return name


def check_package_name(name: str) -> None:
    """Raise `AnswerError` unless ``name`` can be the generated package's import name."""
    if not (name.isascii() and name.isidentifier()):
        raise AnswerError(
            f"package_name {name!r} is not a Python identifier: use letters, digits and '_', "
            f"not starting with a digit (e.g. 'ws_service')"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise AnswerError(f"package_name {name!r} is a Python keyword; choose another name")
    if name in sys.stdlib_module_names or name in SHADOWED_MODULES:
        raise AnswerError(
            f"package_name {name!r} would shadow the module {name!r} that the service "
            f"imports; choose another name (e.g. '{name}_service')"
        )


def check_tick_seconds(value: str) -> float:
    """The ``tick_seconds`` answer as a number, or `AnswerError`."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise AnswerError(f"tick_seconds {value!r} must be a positive number of seconds, e.g. 1.0")
    return seconds


def check_free_text(name: str, value: str) -> None:
    """Names, descriptions: one line of visible text (it lands in TOML, Python and Markdown)."""
    for char in value:
        category = unicodedata.category(char)
        if category.startswith("C") or category in ("Zl", "Zp"):
            raise AnswerError(
                f"{name} {value!r} contains the control character U+{ord(char):04X}; "
                f"use one line of visible text"
            )


def check_yes_no(name: str, value: object) -> bool:
    """A yes/no answer as a bool: a Cookiecutter boolean, or a string such as 'yes' or 'no'.

    A boolean given on the command line or read from a replay file can arrive as a string.
    """
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in YES:
        return True
    if text in NO:
        return False
    raise AnswerError(
        f"{name} {value!r} is not a yes/no answer: use yes or no (or y/n, true/false, 1/0, on/off)"
    )


def is_yes(value: object) -> bool:
    """A yes/no answer as a bool; a bad one (already stopped by the pre-gen hook) is no."""
    try:
        return check_yes_no("answer", value)
    except AnswerError:
        return False


def answer_problems(answers: Mapping[str, object]) -> list[str]:
    """Every problem with the answers, one line each; empty when all can be used."""
    problems: list[str] = []

    def check(check_one: Callable[..., object], *args: str) -> None:
        try:
            check_one(*args)
        except AnswerError as error:
            problems.append(str(error))

    text = {key: str(answers.get(key, "")) for key in answers}
    if not text.get("project_name", "").strip():
        problems.append("project_name is empty; give the service a name, e.g. 'WS Service'")
    for name in FREE_TEXT_ANSWERS:
        check(check_free_text, name, text.get(name, ""))
    slug = text.get("project_slug", "")
    if not DISTRIBUTION_NAME.fullmatch(slug):
        problems.append(
            f"project_slug {slug!r} must be a folder and distribution name: letters, digits, "
            f"'.', '_' and '-', starting and ending with a letter or digit"
        )
    check(check_package_name, text.get("package_name", ""))
    email = text.get("author_email", "")
    if email and not EMAIL.fullmatch(email):
        problems.append(f"author_email {email!r} is not an e-mail address (or leave it empty)")
    check(parse_endpoints, text.get("endpoints", ""))
    check(check_tick_seconds, text.get("tick_seconds", ""))
    framework = text.get("framework", "")
    if framework not in FRAMEWORKS:
        problems.append(f"framework {framework!r} is not one of: {', '.join(FRAMEWORKS)}")
    backend = text.get("broadcast_backend", BROADCAST_BACKENDS[0])
    kinds = {endpoint.kind for endpoint in endpoints_or_empty(text.get("endpoints", ""))}
    if backend not in BROADCAST_BACKENDS:
        problems.append(
            f"broadcast_backend {backend!r} is not one of: {', '.join(BROADCAST_BACKENDS)}"
        )
    elif backend != BROADCAST_BACKENDS[0] and kinds and not kinds & set(HUB_KINDS):
        problems.append(
            f"broadcast_backend {backend!r} needs a broadcast or channels endpoint: add one to "
            f"endpoints (e.g. '/ws/rooms/{{room}}:broadcast') or answer {BROADCAST_BACKENDS[0]}"
        )
    ci = text.get("ci", CI_PROVIDERS[0])
    if ci not in CI_PROVIDERS:
        problems.append(f"ci {ci!r} is not one of: {', '.join(CI_PROVIDERS)}")
    for name, default in YES_NO_ANSWERS.items():
        try:
            check_yes_no(name, answers.get(name, default))
        except AnswerError as error:
            problems.append(str(error))
    return problems


INVALID_FOLDER = "ws-template-invalid-project-slug"


def folder_name(slug: str) -> str:
    """The project folder's name: the slug, or a placeholder when the slug is unusable.

    Cookiecutter creates this folder before the pre-gen hook can refuse the slug, so a slug
    like '../x', 'a/b' or '/abs' must not become a path; the hook then stops generation
    and Cookiecutter removes the placeholder folder.
    """
    return slug if DISTRIBUTION_NAME.fullmatch(slug) else INVALID_FOLDER


def derive_package_name(slug: str) -> str:
    """A safe default import name for the project ``slug`` ('ws-service' -> 'ws_service')."""
    name = re.sub(r"[^a-z0-9]+", "_", slug.lower()).strip("_") or "service"
    if name[0].isdigit():
        name = f"service_{name}"
    try:
        check_package_name(name)
    except AnswerError:
        name = f"{name}_service"
    return name


def python_string(value: str) -> str:
    """``value`` as a Python string literal in the quotes that ``ruff format`` keeps."""
    quote = "'" if value.count('"') > value.count("'") else '"'
    body = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return f"{quote}{body}{quote}"


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (free text has no control characters)."""
    return json.dumps(value, ensure_ascii=False)


def float_literal(value: str) -> str:
    """A valid ``tick_seconds`` answer as a Python float literal ('1' -> '1.0')."""
    try:
        return repr(check_tick_seconds(value))
    except AnswerError:
        return "1.0"  # the pre-gen hook has already stopped this answer


LINE_LENGTH = 100
"""The generated projects' line length (``[tool.ruff]`` in their ``pyproject.toml``)."""


@dataclass(frozen=True)
class Call:
    """A call expression whose arguments are code text or one nested `Call`."""

    function: str
    args: tuple[str | Call, ...]

    def flat(self) -> str:
        args = ", ".join(arg.flat() if isinstance(arg, Call) else arg for arg in self.args)
        return f"{self.function}({args})"


def call(function: str, *args: str | Call) -> Call:
    return Call(function, args)


def formatted(expression: Call, indent: int) -> str:
    """``expression`` as ``ruff format`` lays it out at ``indent`` (first line not indented).

    Generated code must pass ``ruff format --check`` whatever the length of the paths
    and names in it; this is ruff's layout for calls of simple arguments.
    """
    return "\n".join(_layout(expression, indent))


def _layout(expression: Call, indent: int) -> list[str]:
    flat = expression.flat()
    if indent + len(flat) <= LINE_LENGTH:
        return [flat]
    inner = " " * (indent + 4)
    closing = " " * indent + ")"
    opening = f"{expression.function}("
    if len(expression.args) == 1 and isinstance(expression.args[0], Call):
        nested = _layout(expression.args[0], indent + 4)
        return [opening, inner + nested[0], *nested[1:], closing]
    texts = [arg.flat() if isinstance(arg, Call) else arg for arg in expression.args]
    joined = ", ".join(texts)
    if indent + 4 + len(joined) <= LINE_LENGTH:
        return [opening, inner + joined, closing]
    return [opening, *(f"{inner}{text}," for text in texts), closing]


def endpoint_dicts(endpoints: list[Endpoint]) -> list[dict[str, object]]:
    """The endpoints as plain data, for ``tojson``."""
    return [dataclasses.asdict(endpoint) for endpoint in endpoints]


def endpoints_or_empty(answer: str) -> list[Endpoint]:
    try:
        return parse_endpoints(answer)
    except AnswerError:
        return []  # the pre-gen hook has already stopped this answer


class WsTemplateExtension(Extension):
    """Registers the filters the templates and hooks use."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters.update(
            ws_endpoints=endpoints_or_empty,
            ws_endpoint_dicts=endpoint_dicts,
            ws_answer_problems=answer_problems,
            ws_package_name=derive_package_name,
            ws_folder_name=folder_name,
            ws_python_string=python_string,
            ws_toml_string=toml_string,
            ws_float=float_literal,
            ws_yes=is_yes,
        )
        environment.globals.update(ws_call=call, ws_formatted=formatted)
