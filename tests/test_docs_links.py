"""The documentation holds together: README.md stays short, and every relative link and #anchor
in README.md, config/README.md and docs/*.md points at a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a `# comment` there is no heading)."""
    return _FENCE.sub("", page.read_text())


def anchors(page: Path) -> set[str]:
    """GitHub's anchor of every heading: lower case, punctuation but `-` and `_` dropped, spaces
    to `-`, `-1`, `-2` .. added to repeats."""
    seen: dict[str, int] = {}
    out = set()
    for title in _HEADING.findall(prose(page)):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    return [t for t in _LINK.findall(prose(page)) if not re.match(r"[a-z]+:", t)]


def test_readme_fits_in_300_lines():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_checker_finds_a_broken_link_and_anchor(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A title: `x`\n\n[ok](#a-title-x) [gone](missing.md) [bad](#nope)\n```\n# not a heading\n```\n")
    assert anchors(page) == {"a-title-x"} and links(page) == ["#a-title-x", "missing.md", "#nope"]


def _keys(node: dict) -> set[str]:
    """Every property name in a JSON schema, nested objects and $defs included."""
    out = set()
    for sub in (node.get("properties") or {}).values():
        out |= _keys(sub)
    out |= set(node.get("properties") or {})
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out |= _keys(node[key])
    for sub in (node.get("$defs") or {}).values():
        out |= _keys(sub)
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(key) or []:
            out |= _keys(sub)
    return out


def test_every_config_key_is_documented_in_config_readme():
    import yaml
    schema = yaml.safe_load((REPO / "workflow" / "physrec" / "schemas" / "config.schema.yaml").read_text())
    spans = re.findall(r"`([^`\n]+)`", prose(REPO / "config" / "README.md"))
    named = set(re.findall(r"\w+", " ".join(spans)))  # `key`, `record.key`, `{key: 1, ...}`
    assert not sorted(_keys(schema) - named), "config keys config/README.md does not name"
