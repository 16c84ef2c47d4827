"""An option that is off leaves nothing of itself in the project it renders.

For each option (every yes/no, every choice, each endpoint kind's own parts), one project
is rendered with it on and one with it off, all else equal. What the "on" project has and
the "off" one lacks gives the option's markers: its files, settings, dependencies (and
their import names), README headings and the names its Python code defines; `OPTIONS`
adds the words that name it (``prometheus``, ``Dockerfile``, ...). None of them may appear
in the "off" project, except in the few places `OPTIONS` allows, each with its reason: a
service refuses the settings of options it lacks, and says how to turn one on. Each marker
must appear in the "on" project, so a marker that names nothing cannot pass unnoticed.

The vendored backend (``websocket/``) is the same library in every project; whole modules of
it that an option alone uses are files, removed with the option, and checked as such.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import render

ALL_KINDS = (
    "/ws/keepalive, /ws/echo:echo, /ws/clock:ticker, /ws/rooms/{room}:broadcast, "
    "/connection/websocket:channels"
)


def without(kinds: str) -> str:
    """The default endpoints less those of ``kinds`` (space-separated)."""
    entries = [entry.strip() for entry in ALL_KINDS.split(",")]
    return ", ".join(e for e in entries if e.rpartition(":")[2] not in kinds.split())


class Allowed(NamedTuple):
    """Text of ``path`` (relative to the project, package folder as ``PKG``) that may name
    the option when it is off, and why."""

    path: str
    pattern: str
    reason: str


class Option(NamedTuple):
    on: dict[str, str]
    off: dict[str, str]
    words: tuple[str, ...] = ()
    """Words that name the option, searched without regard to case."""
    allowed: tuple[Allowed, ...] = ()


REFUSED = Allowed(
    "PKG/settings.py",
    r'^    "[A-Z_]+": [A-Z_]+,$|^[A-Z_]+ = \(?\n?(    )?"[^\n]*\n(    "[^\n]*\n)*\)?',
    "the settings of an option that is off are refused when set, not ignored",
)
REFUSED_TESTED = Allowed(
    "tests/test_runner.py",
    r"^UNREAD = \[\n(    [^\n]*\n)*\]|^CLASHES = \[\n.*?^\]",
    "the project's test that those settings are refused",
)
SHARED_CHECKS = Allowed(
    "tests/client_protocol.py",
    r"^def check_\w+_endpoint\(.*?(?=^def |^[A-Z])",
    "the protocol checks of every kind, copied unrendered into every project",
)
REFUSED_DOCUMENTED = Allowed(
    "README.md",
    r"^- \*\*a variable this service does not read\*\*.*?(?=^- \*\*)",
    "the README lists the settings it refuses",
)
TURN_ON = "the README and the refusals say how to render the service with the option on"
VENDORED = "the vendored backend, the same in every project, keeps it (its tests use it)"

OPTIONS: dict[str, Option] = {
    "metrics": Option({}, {"metrics": "no"}, ("prometheus", "metrics_", "multiproc")),
    "console_page": Option(
        {}, {"console_page": "no"}, ("console page", "console.html", "CONSOLE_")
    ),
    "ci": Option({}, {"ci": "none"}, (".github/", "CI workflow", "continuous integration")),
    "container": Option(
        {"broadcast_backend": "redis"},
        {"broadcast_backend": "redis", "container": "no"},
        ("Dockerfile", "dockerignore", "docker build", "docker compose", "nginx", "HEALTHCHECK"),
    ),
    "broadcast_backend redis": Option(
        {"broadcast_backend": "redis"},
        {},
        ("redis",),
        (
            REFUSED,
            REFUSED_TESTED,
            *(
                Allowed(
                    path,
                    r"broadcast_backend[= ]redis|\{\"broadcast_backend\": \"redis\"\}",
                    TURN_ON,
                )
                for path in ("README.md", "PKG/settings.py", "tests/test_runner.py")
            ),
            Allowed("README.md", r"^## Moving to the Redis backend\n.*?(?=^## )", TURN_ON),
            Allowed(
                "README.md", r", or use Redis\.|the\s+same endpoints then meet in Redis\.", TURN_ON
            ),
            REFUSED_DOCUMENTED,
        ),
    ),
    "broadcast_backend memory": Option(
        {},
        {"broadcast_backend": "redis"},
        ("MemoryHub", "memory backend"),
        (Allowed("README.md", r"`MemoryHub` \(positions and history in memory\)", VENDORED),),
    ),
    "framework fastapi": Option(
        {}, {"framework": "asgi"}, ("fastapi", "TestClient", "create_router")
    ),
    "framework asgi": Option({"framework": "asgi"}, {}, ("asgi_backend",)),
    "channels endpoints": Option(
        {},
        {"endpoints": without("channels")},
        ("centrifuge", "NAMESPACES", "connection token"),
        (REFUSED, REFUSED_TESTED, SHARED_CHECKS),
    ),
    "broadcast and channels endpoints (the hub)": Option(
        {},
        {"endpoints": without("broadcast channels")},
        ("publish_api", "/api/publish", "/api/presence", "hub_of", "PUBLISH_API_KEY"),
        (
            REFUSED,
            REFUSED_TESTED,
            REFUSED_DOCUMENTED,
            SHARED_CHECKS,
            Allowed("README.md", r"such as `stamp_sender`", VENDORED),
            Allowed(
                "PKG/console.html",
                r"^  showPresence\(message\) \{\n.*?^  \}",
                "KNOWN LEFTOVER: the console's one panel for the template's own protocol still "
                "shows a broadcast endpoint's presence answer whatever the kinds",
            ),
        ),
    ),
    "ticker endpoints": Option(
        {}, {"endpoints": without("ticker")}, ("TICK_SECONDS",), (REFUSED, REFUSED_TESTED)
    ),
    "init_git": Option({"init_git": "yes"}, {}),
}


class Markers(NamedTuple):
    """What belongs to an option, by kind of marker: each a set of strings."""

    files: set[str]
    settings: set[str]
    dependencies: set[str]
    headings: set[str]
    names: set[str]
    words: set[str]


def project_files(project: Path) -> dict[str, Path]:
    """The project's files by relative path (the package folder as ``PKG``), .git left out."""
    [package] = [p.parent.name for p in project.glob("*/__init__.py") if p.parent.name != "tests"]
    return {
        str(path.relative_to(project)).replace(f"{package}/", "PKG/", 1): path
        for path in project.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(project).parts[:1]
    }


def settings_of(files: dict[str, Path]) -> set[str]:
    return set(re.findall(r'read\(\s*"([A-Z_]+)"', files["PKG/settings.py"].read_text()))


def dependencies_of(files: dict[str, Path]) -> set[str]:
    """Distribution names (lower case) and their import names, dev extra included."""
    project = tomllib.loads(files["pyproject.toml"].read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {re.split(r"[\[<>=~ ]", requirement)[0].lower() for requirement in requirements}
    modules = importlib.metadata.packages_distributions()
    imports = {m for m, dists in modules.items() if {d.lower() for d in dists} & names}
    return names | {m for m in imports if not m.startswith("_")}


def headings_of(files: dict[str, Path]) -> set[str]:
    return set(re.findall(r"^#+ .+$", files["README.md"].read_text(), re.MULTILINE))


def names_of(files: dict[str, Path]) -> dict[str, set[str]]:
    """Top-level names each Python file outside the vendored backend defines."""
    defined: dict[str, set[str]] = {}
    for relative, path in files.items():
        if path.suffix != ".py" or relative.startswith(("PKG/websocket/", "tests/")):
            continue
        names = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
        defined[relative] = names
    return defined


IDENTIFIER = re.compile(r"_*[A-Za-z0-9]+(_[A-Za-z0-9]+)+|_*[A-Z][a-z0-9]+([A-Z][a-z0-9]*)+")
"""Names distinct enough to search for: with an underscore inside, or in CamelCase."""


def markers(option: Option, on: Path, off: Path) -> Markers:
    """The option's markers: what ``on`` has that ``off`` lacks, and its words."""
    on_files, off_files = project_files(on), project_files(off)
    only = set(on_files) - set(off_files)
    files = {name for relative in only for name in (relative, Path(relative).name)}
    on_names, off_names = names_of(on_files), names_of(off_files)
    names = set().union(*(n - off_names.get(f, set()) for f, n in on_names.items()))
    return Markers(
        files={f.removeprefix("PKG/") for f in files},
        settings=settings_of(on_files) - settings_of(off_files),
        dependencies=dependencies_of(on_files) - dependencies_of(off_files),
        headings=headings_of(on_files) - headings_of(off_files),
        names={name for name in names if IDENTIFIER.fullmatch(name)},
        words=set(option.words),
    )


def pattern_of(kind: str, marker: str) -> re.Pattern[str]:
    if kind == "headings":
        return re.compile(re.escape(marker), re.MULTILINE)
    if kind == "words":
        return re.compile(re.escape(marker), re.IGNORECASE)
    flags = re.IGNORECASE if kind == "dependencies" else 0
    return re.compile(rf"(?<![\w.-]){re.escape(marker)}(?![\w-])", flags)


def texts(project: Path, allowed: tuple[Allowed, ...] = ()) -> dict[str, str]:
    """The project's text files outside the vendored backend, ``allowed`` text blanked."""
    found = {}
    for relative, path in project_files(project).items():
        if relative.startswith("PKG/websocket/"):
            continue
        text = path.read_text()
        for allowance in allowed:
            if allowance.path == relative:
                text = re.sub(allowance.pattern, "", text, flags=re.MULTILINE | re.DOTALL)
        found[relative] = text
    return found


@pytest.mark.parametrize("name", OPTIONS)
def test_an_option_that_is_off_leaves_nothing_of_itself(
    name: str, tmp_path: Path, cookiecutter_config: Path
) -> None:
    option = OPTIONS[name]
    on = render(tmp_path / "on", cookiecutter_config, option.on)
    off = render(tmp_path / "off", cookiecutter_config, option.off)
    found = markers(option, on, off)
    on_texts = "\n".join([*texts(on).values(), *project_files(on)])
    off_texts = texts(off, option.allowed)
    left: list[str] = []
    for kind, values in found._asdict().items():
        for marker in sorted(values):
            pattern = pattern_of(kind, marker)
            assert pattern.search(on_texts), f"{name}: the {kind} marker {marker!r} names nothing"
            for relative, text in off_texts.items():
                for match in pattern.finditer(f"{relative}\n{text}"):
                    line = f"{relative}\n{text}"[: match.start()].count("\n")
                    left.append(f"{relative}:{line}: {kind} {marker!r}")
    assert not left, f"{name} is off, but the project still has:\n" + "\n".join(left)
