"""The docs stay true to the tree: no link leaves the repository, links resolve, the README's layout
names the folders that exist (and every source folder is named)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "client" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
LOCAL_URL = re.compile(r"^https?://(127\.0\.0\.1|localhost)(:\d+)?(/|$)")
SOURCE_FOLDERS = ("app", "worker", "contract", "cli", "client", "migrations", "bench", "tests")


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code is not a link
    return [a or b for a, b in LINK.findall(text)]


def test_pages_exist() -> None:
    assert all(p.is_file() for p in PAGES)
    assert len(PAGES) >= 7


def test_no_link_leaves_the_repository() -> None:
    bad = []
    for page in PAGES:
        for target in _links(page):
            if LOCAL_URL.match(target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            resolved = (page.parent / path).resolve()
            if "://" in target or not resolved.is_relative_to(ROOT) or not resolved.exists():
                bad.append(f"{page.relative_to(ROOT)}: {target}")
    assert bad == []


def test_readme_layout_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = {m.group(1) for m in re.finditer(r"^([A-Za-z_]+)/", block, flags=re.M)}
    assert named, "the layout block names no folder"
    assert sorted(n for n in named if not (ROOT / n).is_dir()) == []
    assert sorted(set(SOURCE_FOLDERS) - named) == []
