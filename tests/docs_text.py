"""The documentation as tests read it: the README and the pages of the docs site (docs/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def pages() -> list[Path]:
    """The README, then every page of the site, in name order."""
    return [README, *sorted(DOCS.glob("*.md"))]


def everything() -> str:
    """All the documentation, one text: what "documented" means for commands, options and keys."""
    return "\n".join(path.read_text(encoding="utf-8") for path in pages())


def section(title: str) -> str:
    """The section headed ``title`` (at any level, on any page), up to the next heading of its level."""
    for path in pages():
        text = path.read_text(encoding="utf-8")
        found = re.search(rf"^(#+) {re.escape(title)}\n", text, re.MULTILINE)
        if found:
            rest = text[found.end():]
            end = re.search(rf"^#{{1,{len(found.group(1))}}} ", rest, re.MULTILINE)
            return rest[:end.start()] if end else rest
    raise AssertionError(f"no section headed {title!r} in the documentation")


def block_after(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` in the documentation."""
    found = re.search(rf"<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)```", everything(), re.DOTALL)
    assert found is not None, f"the documentation has no block after <!-- {marker} -->"
    return found.group(1)
