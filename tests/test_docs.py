"""The documentation: a README short enough to read, and no relative link that leads nowhere."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

# [text](target) and ![alt](target); the target ends at whitespace or the closing
# parenthesis (an optional "title" after a space is not part of it).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _documents():
    names = ["README.md", "CONTRIBUTING.md", "cluster/README.md", "benchmarks/README.md"]
    files = [REPO / n for n in names if (REPO / n).is_file()]
    return files + sorted((REPO / "docs").glob("*.md"))


def _links(text):
    """Link targets, outside fenced code blocks."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            yield from LINK.findall(line)


def _relative(target):
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
        return None  # http(s), mailto, ...; a pure anchor
    return target.split("#", 1)[0] or None


def test_readme_is_at_most_250_lines():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    missing = []
    for target in _links(doc.read_text()):
        path = _relative(target)
        if path is not None and not (doc.parent / path).exists():
            missing.append(target)
    assert not missing, f"{doc.relative_to(REPO)} links to missing files: {missing}"


def test_link_pattern_reads_the_forms_the_docs_use():
    text = "[a](x.md) ![b](img/y.jpg) [`c`](z.md#part) [d](https://e.org/f) [g](#h)\n```\n[no](in-code.md)\n```\n"
    assert list(_links(text)) == ["x.md", "img/y.jpg", "z.md#part", "https://e.org/f", "#h"]
    assert [_relative(t) for t in _links(text)] == ["x.md", "img/y.jpg", "z.md", None, None]
