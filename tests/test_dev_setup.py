"""What ``python3 dev.py test`` installs before the tests, and the line it says about the rest.

The decisions are tested with fake PATHs (a ``which`` that knows only some programs) and fake
node_modules folders: nothing is installed here, so this adds no time to the suite.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import dev
from tests.conftest import TEMPLATE

EVERY_PROGRAM = (
    "node",
    "npm",
    "redis-server",
    "redis-sentinel",
    "prometheus",
    "promtool",
    "valgrind",
    "nginx",
)


def which_of(*programs: str) -> Callable[[str], str | None]:
    """A shutil.which that finds only ``programs``."""
    return lambda name: f"/usr/bin/{name}" if name in programs else None


def lock(**versions: str) -> dict[str, object]:
    packages: dict[str, object] = {"": {"name": "checker"}}
    packages.update({f"node_modules/{name}": {"version": v} for name, v in versions.items()})
    return {"lockfileVersion": 3, "packages": packages}


def write_folder(root: Path, folder: str, locked: dict[str, object], installed: object) -> None:
    """``root/folder`` with a package-lock.json, and node_modules as npm ci leaves it (or not)."""
    (root / folder).mkdir(parents=True)
    (root / folder / "package-lock.json").write_text(json.dumps(locked))
    if installed is not None:
        (root / folder / "node_modules").mkdir()
        hidden = (
            installed
            if isinstance(installed, str)
            else json.dumps({**locked, "packages": installed})
        )
        (root / folder / "node_modules" / ".package-lock.json").write_text(hidden)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The three node folders, each installed as its lock file says."""
    for folder in dev.NODE_FOLDERS:
        locked = lock(ws="8.18.0")
        write_folder(tmp_path, folder, locked, {"node_modules/ws": {"version": "8.18.0"}})
    return tmp_path


def test_the_template_has_a_lock_file_in_every_node_folder() -> None:
    for folder in dev.NODE_FOLDERS:
        assert (TEMPLATE / folder / "package-lock.json").is_file(), folder
        # without a trailing slash, so that a link named node_modules is ignored too
        assert f"{folder}/node_modules" in (TEMPLATE / ".gitignore").read_text().splitlines()
        assert f"npm ci --prefix {folder} " in (TEMPLATE / ".ci" / "run").read_text()


def test_nothing_is_installed_or_reported_where_everything_is_there(root: Path) -> None:
    assert dev.node_installs(root, which_of(*EVERY_PROGRAM)) == ([], [])
    chromium = root / "chromium"
    chromium.touch()
    assert dev.other_missing_tools(which_of(*EVERY_PROGRAM), chromium) == []
    assert dev.not_run_line([]) == "Every test can run on this machine."


@pytest.mark.parametrize(
    ("installed", "why"),
    [
        (None, "no node_modules (a fresh clone)"),
        ({}, "an empty install"),
        ({"node_modules/ws": {"version": "8.17.0"}}, "another version"),
        ({"node_modules/ws": {"version": "8.18.0"}, "node_modules/x": {}}, "a package unlocked"),
        ("{not json", "a broken hidden lock file"),
        ('{"packages": ["ws"]}', "a hidden lock file of another shape"),
    ],
)
def test_a_folder_whose_node_modules_does_not_match_its_lock_is_installed(
    tmp_path: Path, installed: object, why: str
) -> None:
    for folder in dev.NODE_FOLDERS:
        write_folder(tmp_path, folder, lock(ws="8.18.0"), installed)
    to_install, cannot = dev.node_installs(tmp_path, which_of(*EVERY_PROGRAM))
    assert to_install == list(dev.NODE_FOLDERS), why
    assert cannot == []


def test_optional_packages_of_other_platforms_need_not_be_installed(tmp_path: Path) -> None:
    locked = lock(ws="8.18.0")
    locked["packages"]["node_modules/fsevents"] = {"version": "2.3.3", "optional": True}  # type: ignore[index]
    write_folder(tmp_path, "bench", locked, {"node_modules/ws": {"version": "8.18.0"}})
    assert dev.node_modules_current(tmp_path / "bench")


def test_without_npm_a_stale_folder_is_reported_not_installed(root: Path) -> None:
    (root / "conformance" / "asyncapi" / "node_modules" / ".package-lock.json").unlink()
    to_install, cannot = dev.node_installs(root, which_of("node"))
    assert to_install == []
    assert cannot == ["the AsyncAPI checks (no npm to install conformance/asyncapi/node_modules)"]


def test_without_node_every_node_test_is_reported_in_one_entry(root: Path) -> None:
    to_install, cannot = dev.node_installs(root, which_of("npm"))
    assert to_install == []
    assert cannot == [
        "the benchmark's smoke runs, the AsyncAPI checks, the centrifuge SDK checks, "
        "the compose.yaml schema checks (no node)"
    ]


def test_the_line_names_each_missing_program_as_the_tests_detect_it(tmp_path: Path) -> None:
    cannot = dev.other_missing_tools(which_of("node", "npm", "promtool"), tmp_path / "chromium")
    assert cannot == [
        "the Redis broadcast tests (no redis-server)",
        "the Sentinel failover tests (no redis-sentinel)",
        f"the console's browser tests (no {tmp_path / 'chromium'})",
        "the Prometheus tests (no prometheus)",
        "the benchmark's instruction counts (no valgrind)",
        "the compose.yaml proxy test (no nginx)",
    ]
    line = dev.not_run_line(cannot)
    assert "\n" not in line
    assert line.startswith("Not run on this machine (skipped, or failed under CI/REQUIRE_*): ")
    assert Path("/usr/bin/chromium") == dev.CHROMIUM  # where tests/test_console.py looks


def test_a_failed_npm_ci_is_reported_and_the_tests_still_run(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "bench" / "node_modules" / ".package-lock.json").unlink()
    commands: list[tuple[str, ...]] = []

    def failing_run(*command: str) -> None:
        commands.append(command)
        raise subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(dev, "ROOT", root)
    monkeypatch.setattr(dev, "run", failing_run)
    cannot = dev.install_node_packages(which_of(*EVERY_PROGRAM))
    assert commands == [("/usr/bin/npm", "ci", "--prefix", "bench", "--no-audit", "--no-fund")]
    assert cannot[0] == "the benchmark's smoke runs (npm ci --prefix bench failed)"
