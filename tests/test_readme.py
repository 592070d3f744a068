"""The README and the docs pages (issue 34): a README of at most 250 lines whose test command is the one CI runs,
an extras table naming every extra of pyproject.toml, and relative links in README.md and docs/ that all resolve."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# [text](target) and ![alt](target), an optional "title" after the target; the text may hold one level of [...].
LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')


def markdown_files() -> list[Path]:
    return [README, *sorted((REPO / "docs").rglob("*.md"))]


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) outside ``` fences: links inside code blocks are examples, not links."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as dashes."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for _, line in prose_lines(path) if line.startswith("#")}


def test_the_readme_is_at_most_250_lines() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    """.ci/run runs the line after its "README test command" comment; the README shows that line as a command."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    marker = next(i for i, line in enumerate(ci) if line.startswith("# README test command"))
    command = ci[marker + 1]
    assert "pytest" in command and "'slow or not slow'" in command and "--durations=25" in command, command
    readme_lines = README.read_text(encoding="utf-8").splitlines()
    assert command in readme_lines, f"the README does not show .ci/run's test command:\n{command}"


def test_the_readme_extras_table_names_every_extra() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    rows = {match.group(1) for match in re.finditer(r"^\| `([\w-]+)` \|", README.read_text(encoding="utf-8"), re.M)}
    assert set(extras) <= rows, f"extras missing from the README's table: {sorted(set(extras) - rows)}"


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in markdown_files():
        for number, line in prose_lines(page):
            for match in LINK.finditer(line):
                target = match.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                path, _, anchor = target.partition("#")
                resolved = (page.parent / path) if path else page
                where = f"{page.relative_to(REPO)}:{number}: {target}"
                if not resolved.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
                    broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_pages_name_no_path_of_the_machine_they_were_written_on() -> None:
    """README.md and docs/*.md are read on other machines: no /root, /tmp or /work paths (generated reports in the
    docs/ subfolders record where they ran and are left as written)."""
    pages = [README, *sorted((REPO / "docs").glob("*.md"))]
    found = [f"{page.relative_to(REPO)}:{number}" for page in pages
             for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"(?<![\w.])/(root|tmp|work)/", line)]
    assert not found, found
