"""The docs hold together: every relative link and #anchor in README.md, CHANGELOG.md and docs/*.md points to a file
and a heading that exist, and every Python block marked runnable runs.

A block is runnable when the line right above its ```python fence is exactly `<!-- runnable -->`. Mark blocks that
run offline in seconds without loading a model; each runs in a fresh namespace inside an empty working directory.
Anchors are GitHub's heading slugs: lowercase, punctuation other than hyphens and underscores dropped, each space a
hyphen, and a repeated heading gets -1, -2, ... in order."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = "<!-- runnable -->"
README_MAX_LINES = 250

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
# [text](target) or ![alt](target), the text possibly wrapped over lines; an optional "title" after the target.
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^()\s<>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def without_fences(text: str) -> str:
    """The text with fenced code blocks blanked out, line numbers kept: a heading there is an example."""
    lines, fence = [], None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None:
            fence = m.group(1) if m else None
            lines.append("" if m else line)
            continue
        # A fence closes on a line of the same character, at least as long, with nothing after it.
        if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and line.strip() == m.group(1):
            fence = None
        lines.append("")
    return "\n".join(lines)


def prose(text: str) -> str:
    """The text with fenced code blocks and inline code blanked out, line numbers kept: a link there is an example."""
    return CODE_SPAN.sub(lambda m: "\n" * m.group(0).count("\n"), without_fences(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (without the numbering of repeats)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in without_fences(path.read_text(encoding="utf-8")).split("\n"):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path) -> list[str]:
    """One line per link in `path` whose file or #anchor does not exist, as 'file:line: target: what is wrong'."""
    text = prose(path.read_text(encoding="utf-8"))
    problems = []
    for m in LINK.finditer(text):
        target = m.group(2)
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue
        line = text.count("\n", 0, m.start()) + 1
        where = f"{path.relative_to(path.parents[1]) if path.parent.name == 'docs' else path.name}:{line}"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where}: {target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: {target}: no heading with the anchor #{anchor} in {dest.name}")
    return problems


def runnable_blocks(path: Path) -> list[tuple[int, str]]:
    """(line of the fence, code) for every block marked runnable; a marker not followed by a python fence raises."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != RUNNABLE:
            continue
        if i + 1 >= len(lines) or lines[i + 1].strip() != "```python":
            raise ValueError(f"{path.name}:{i + 1}: {RUNNABLE} must sit right above a ```python fence")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{path.name}:{i + 2}: the runnable block is never closed")
        blocks.append((i + 2, "\n".join(lines[i + 2 : end]) + "\n"))
    return blocks


def run_block(code: str, name: str, workdir: Path) -> None:
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        exec(compile(code, name, "exec"), {"__name__": "__docs__"})
    finally:
        os.chdir(cwd)


BLOCKS = [(path, line, code) for path in PAGES for line, code in runnable_blocks(path)]


def test_the_pages_exist_and_the_readme_links_every_docs_page():
    assert (ROOT / "README.md").exists() and (ROOT / "CHANGELOG.md").exists()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {m.group(2).partition("#")[0] for m in LINK.finditer(prose(readme))}
    missing = [p.name for p in PAGES if p.parent.name == "docs" and f"docs/{p.name}" not in linked]
    assert not missing, f"README.md links no page for {missing}: add them to its Documentation table"


def test_the_readme_stays_a_five_minute_read():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_every_docs_page_says_first_what_it_is_for():
    for page in (p for p in PAGES if p.parent.name == "docs"):
        paragraphs = [b.strip() for b in page.read_text(encoding="utf-8").split("\n\n") if b.strip()]
        assert paragraphs[0].startswith("# "), f"{page.name} starts with its title"
        assert paragraphs[1].startswith("This page is for"), f"{page.name}: say what the page is for first"


def test_every_relative_link_and_anchor_resolves():
    problems = [p for page in PAGES for p in broken_links(page)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_there_are_runnable_blocks_to_run():
    assert any(path.name == "README.md" for path, _, _ in BLOCKS), "the README's quickstart should be marked runnable"
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(
    ("path", "line", "code"), BLOCKS, ids=[f"{p.relative_to(ROOT)}:{line}" for p, line, _ in BLOCKS]
)
def test_every_runnable_block_runs(path, line, code, tmp_path):
    run_block(code, f"{path.relative_to(ROOT)}:{line}", tmp_path)


def test_the_checker_reports_a_missing_file_a_missing_anchor_and_a_failing_block(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Same\n\n## Same\n\n## Don't `panic`: it's fine\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#same-1) [ok](other.md#dont-panic-its-fine) [ok](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [no anchor](other.md#same-2) [wrapped\ntext](#nowhere)\n\n"
        "`[in code](missing.md)`\n\n```md\n[in a fence](missing.md)\n```\n\n"
        f"{RUNNABLE}\n```python\nraise RuntimeError('the docs are wrong')\n```\n"
    )
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert problems[0].startswith("page.md:4: missing.md: no file")
    assert "page.md:4: other.md#same-2: no heading" in problems[1] and "page.md:4: #nowhere" in problems[2]
    [(line, code)] = runnable_blocks(page)
    assert line == 14
    with pytest.raises(RuntimeError, match="the docs are wrong"):
        run_block(code, "page.md", tmp_path)
    page.write_text(f"{RUNNABLE}\n\n```python\npass\n```\n")
    with pytest.raises(ValueError, match="right above"):
        runnable_blocks(page)


def test_slugs_follow_github():
    assert slug("Seeing the dialogues: `view` and `play`") == "seeing-the-dialogues-view-and-play"
    assert slug("Generating tasks (Sotopia-π step 1)") == "generating-tasks-sotopia-π-step-1"
    assert (
        slug("Recipe: Sotopia-RL's reward model (import -> label)") == "recipe-sotopia-rls-reward-model-import---label"
    )
    assert slug("[Unreleased]") == "unreleased"
    assert slug("`sotopia_env` layout") == "sotopia_env-layout"
