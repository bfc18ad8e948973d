"""The README and docs/ hold together: every relative link and #anchor resolves, the
architecture page's layout lists exactly what the tree holds, and the operating page names
every command."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from relay import cli
from tests.support.cli import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)


def prose(text: str) -> str:
    """A page without its fenced blocks and code spans (nothing in them is a link)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation but `-` and `_`
    dropped, spaces made hyphens, repeats numbered."""
    seen: Counter[str] = Counter()
    found = set()
    for line in FENCE.sub("", text).splitlines():
        heading = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if not heading:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))  # a link: its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        found.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return found


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text()))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # https:, mailto: ...
    ]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked.read_text())):
            broken.append(f"{target}: no heading with that anchor")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_link_check_finds_what_is_broken(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## The `x` part: a, b\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Twice\n\n## Twice\n\n"
        "[ok](other.md) [ok](other.md#the-x-part-a-b) [ok](#twice-1) [web](https://x.example/#y)\n"
        "[gone](missing.md) [bad](other.md#nothing) [bad](#twice-2)\n"
        "`[not a link](missing.md)`\n\n```\n[not a link](missing.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nothing: no heading with that anchor",
        "#twice-2: no heading with that anchor",
    ]


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {target.partition("#")[0] for target in relative_links(ROOT / "README.md")}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set()


def test_paths_of_docs_named_in_prose_exist() -> None:
    """`docs/NAME.md` written as text (not as a link) names a page that is there."""
    for page in [*PAGES, ROOT / "CHANGELOG.md"]:
        for name in re.findall(r"\bdocs/([\w.-]+\.md)\b", page.read_text()):
            assert (ROOT / "docs" / name).exists(), f"{page.name} names docs/{name}"


def test_the_readme_stays_short_and_starts_with_its_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    opening = readme.split("```")[1].splitlines()
    assert opening[0] == "sh"
    assert [line.split("#")[0].strip() for line in opening[1:]] == ["make demo", "make test"]


# ------------------------------------------------------------ architecture.md's layout


def tree_paths() -> set[str]:
    """What the layout must list: each top-level folder, what sql/ and deploy/ hold, the
    suites' folders, and every folder and file of relay/ (a package's `__init__.py` is its
    folder's row). Folders end with `/`."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = [f for f in files if (ROOT / f).exists()]  # deleted, not yet committed
    wanted = set()
    for f in files:
        parts = f.split("/")
        if len(parts) == 1:
            continue
        wanted.add(parts[0] + "/")
        if parts[0] in ("sql", "deploy"):
            wanted.add("/".join(parts[:2]) + ("/" if len(parts) > 2 else ""))
        if parts[0] == "tests" and len(parts) > 2:
            wanted.add("/".join(parts[:2]) + "/")
        if parts[0] == "relay":
            wanted |= {"/".join(parts[:i]) + "/" for i in range(1, len(parts))}
            if parts[-1] != "__init__.py":
                wanted.add(f)
    return wanted


def layout_paths() -> list[str]:
    text = (ROOT / "docs/architecture.md").read_text()
    section = text[text.index("\n## Layout\n") :].split("\n## ")[1]
    return re.findall(r"^\| `([^`]+)` \|", section, re.M)


def test_the_architecture_layout_lists_exactly_the_tree() -> None:
    listed = layout_paths()
    assert [p for p, n in Counter(listed).items() if n > 1] == [], "listed twice"
    tree = tree_paths()
    assert {"relay/", "relay/cli.py", "relay/devserver/app.py", "tests/unit/", "sql/"} <= tree
    assert sorted(tree - set(listed)) == [], "in the tree, not in docs/architecture.md"
    assert sorted(set(listed) - tree) == [], "in docs/architecture.md, not in the tree"


# ------------------------------------------------------------ operating.md's commands


def test_the_operating_page_names_every_command() -> None:
    parser = cli.build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    text = (ROOT / "docs/operating.md").read_text()
    table = text[text.index("## The command line") :].split("\n## ")[0]
    named = set(re.findall(r"^\| `pgpulse ([a-z-]+)", table, re.M))
    assert named == set(commands.choices)
