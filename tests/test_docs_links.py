"""Every relative link of the template's own documents resolves: to a file, and to a heading.

Links in fenced code blocks are not links; ``http(s):`` and ``mailto:`` ones are not checked
(no network in the tests). An anchor is matched against GitHub's slugs of the target's headings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import TEMPLATE

DOCUMENTS = ["README.md", "docs/benchmarks.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = FENCE.sub("", document.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def links(document: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", document.read_text()))


def broken_links(document: Path) -> list[str]:
    broken = []
    for target in links(document):
        if re.match(r"(https?|mailto):", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    return broken


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_relative_link_resolves(name: str) -> None:
    document = TEMPLATE / name
    assert links(document), f"{name} has no links: the pattern is wrong"
    assert broken_links(document) == []


def test_the_readme_links_the_benchmarks_once_and_leads_with_the_users_path() -> None:
    readme = (TEMPLATE / "README.md").read_text()
    assert links(TEMPLATE / "README.md").count("docs/benchmarks.md") == 1
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    assert headings[:5] == [
        "## Quick start",
        "## Generate a project",
        "## Run it",
        "## Extend it",
        "## Update it",
    ]
    assert "## Benchmark" not in readme
    assert "## Capacity" not in readme


def test_a_broken_link_and_a_missing_heading_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Some: heading, 1,000 `code`\n")
    document = tmp_path / "doc.md"
    document.write_text(
        "# Doc\n\n[ok](other.md#some-heading-1000-code) [self](#doc) [web](https://x.invalid)\n"
        "[gone](missing.md) [bad anchor](other.md#nothing) ![img](other.md)\n"
        "```sh\n[in code](nowhere.md)\n```\n"
    )
    assert broken_links(document) == [
        f"missing.md: no file {tmp_path / 'missing.md'}",
        "other.md#nothing: no heading #nothing in other.md",
    ]
