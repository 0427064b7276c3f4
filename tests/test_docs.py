"""The documentation keeps up with the code: every setting documented, README short, links alive."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from asgi_resume.config import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 260

# [text](target) and [text]: target, skipping images' and code's look-alikes well enough for our files
INLINE_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]\n]+\]:\s*(\S+)", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text("utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in FENCE.sub("", path.read_text("utf-8")).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_configuration_page_lists_every_option() -> None:
    text = (DOCS / "configuration.md").read_text("utf-8")
    missing = [option.env for option in OPTIONS if f"`{option.env}`" not in text]
    assert not missing, f"docs/configuration.md does not document {', '.join(missing)}"
    wrong_default = [option.env for option in OPTIONS if option.default and option.default not in text]
    assert not wrong_default, f"docs/configuration.md lacks the default of {', '.join(wrong_default)}"


def test_readme_is_a_short_guide() -> None:
    lines = README.read_text("utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_keeps_the_open_webui_placeholder_or_its_section() -> None:
    assert "## open-webui" in README.read_text("utf-8")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: path.name)
def test_relative_links_point_at_existing_files(path: Path) -> None:
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: {', '.join(broken)}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {Path(target.partition("#")[0]).name for target in links(README)}
    orphans = [page.name for page in sorted(DOCS.glob("*.md")) if page.name not in linked]
    assert not orphans, f"README.md does not link {', '.join(orphans)}"


def test_readme_python_snippets_compile() -> None:
    text = README.read_text("utf-8")
    snippets = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert snippets
    for snippet in snippets:
        compile(snippet, "README.md", "exec")
