"""The README and the docs/ pages stay true to the repository: their links lead somewhere, the
file map in docs/design.md names files that exist (and every module), and the README stays a
five-minute read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DESIGN = ROOT / "docs" / "design.md"
README_MAX_LINES = 260

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A repository path: a top-level file, or a path from a top-level folder, up to punctuation.
PATH = re.compile(
    r"(?<![\w./<-])(Makefile|pyproject\.toml"
    r"|(?:mespot|conf|tests|experiments|docs|\.ci)/(?:[\w./-]*[\w/])?)"
)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def _broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading(page):
    assert _broken_links(page) == []


def _named_paths() -> set[str]:
    return {match.rstrip(".") for match in PATH.findall(DESIGN.read_text(encoding="utf-8"))}


def test_every_path_the_design_names_exists():
    named = _named_paths()
    assert len(named) > 30  # the file map is there, and the pattern finds it
    assert sorted(p for p in named if not (ROOT / p).exists()) == []


def test_the_design_names_every_module():
    """Each module is named, or a folder holding it is: the map is the one list of files."""
    named = _named_paths()
    folders = tuple(p for p in named if p.endswith("/") and p.count("/") > 1)  # not mespot/
    modules = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "mespot").rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    ]
    assert sorted(m for m in modules if m not in named and not m.startswith(folders)) == []


def test_the_readme_is_a_five_minute_read():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md: {len(lines)} lines; move a manual to docs/"
