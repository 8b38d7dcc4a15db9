"""The repository stands alone: code points at its own docs/ pages, and every pointer resolves.

(a) No file cites the outside specification (the word ``SPEC`` on its own, "SPEC §", "SPEC.md").
(b) Every ``docs/<page>.md`` or ``docs/<page>.md#<anchor>`` reference in the code, configs, tests,
    experiments, scripts and the README names an existing page, and the anchor matches one of
    its headings; relative links between the docs pages are checked the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED_DIRS = ("vldac_lightning", "conf", "tests", "experiments", "scripts")
SCANNED_FILES = ("README.md", "noxfile.py")
THIS_FILE = Path(__file__).resolve()

# A standalone "SPEC" (case-sensitive): names such as VLDAC_TORCH_SPEC or SPECIAL_TOKENS do not match.
SPEC_CITATION = re.compile(r"\bSPEC\b|SPEC\.md|SPEC §")
DOC_REF = re.compile(r"docs/([A-Za-z0-9_.\-]+\.md)(?:#([A-Za-z0-9_\-]+))?")
# Relative Markdown links inside docs/: [text](page.md#anchor) or [text](#anchor).
MD_LINK = re.compile(r"\]\(([A-Za-z0-9_.\-]*\.md)?(?:#([A-Za-z0-9_\-]+))?\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped (``-`` and ``_`` kept), spaces → ``-``."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())  # inline markup does not reach the anchor
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Anchors of every heading outside code fences; repeated slugs get GitHub's ``-1``, ``-2`` suffixes."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = HEADING.match(line)
        if m is None or in_fence:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def scanned_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for folder in SCANNED_DIRS:
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    return [p for p in files if p.resolve() != THIS_FILE]


def read_text(path: Path) -> str | None:
    """The file's text, or None for binary files (fonts, images)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def spec_citations(files: list[Path], root: Path = ROOT) -> list[str]:
    hits = []
    for path in files:
        text = read_text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if SPEC_CITATION.search(line):
                hits.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return hits


def broken_references(files: list[Path], docs: Path, root: Path = ROOT) -> list[str]:
    """``file:line: reference -> why`` for every docs reference that does not resolve."""
    cache: dict[str, set[str] | None] = {}

    def check(page: str, anchor: str | None) -> str | None:
        if page not in cache:
            target = docs / page
            cache[page] = anchors(target.read_text(encoding="utf-8")) if target.is_file() else None
        page_anchors = cache[page]
        if page_anchors is None:
            return f"docs/{page} does not exist"
        if anchor is not None and anchor not in page_anchors:
            return f"docs/{page} has no heading with anchor #{anchor} (anchors: {sorted(page_anchors)})"
        return None

    problems = []
    for path in files:
        text = read_text(path)
        if text is None:
            continue
        in_docs = path.parent == docs
        for number, line in enumerate(text.splitlines(), 1):
            refs = [(m.group(0), m.group(1), m.group(2)) for m in DOC_REF.finditer(line)]
            if in_docs:
                refs += [(m.group(0), m.group(1) or path.name, m.group(2)) for m in MD_LINK.finditer(line)]
            for ref, page, anchor in refs:
                why = check(page, anchor)
                if why is not None:
                    problems.append(f"{path.relative_to(root)}:{number}: {ref} -> {why}")
    return problems


def test_nothing_cites_the_outside_spec() -> None:
    hits = spec_citations(scanned_files())
    assert not hits, "cite the docs/ pages instead of the outside spec:\n" + "\n".join(hits)


def test_every_docs_reference_resolves() -> None:
    files = scanned_files() + sorted(DOCS.glob("*.md"))
    problems = broken_references(files, DOCS)
    assert not problems, "broken docs references:\n" + "\n".join(problems)


def test_the_code_points_at_the_docs() -> None:
    # The reference check above passes vacuously if nothing references docs/: make sure it has work.
    refs = [m for p in scanned_files() if (t := read_text(p)) for m in DOC_REF.finditer(t)]
    assert len(refs) >= 20
    assert {"algorithm.md", "environments.md", "metrics.md"} <= {m.group(1) for m in refs}


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Value warm-up", "value-warm-up"),
        ("WebShop (planned)", "webshop-planned"),
        ("Reference-code defects we do not reproduce", "reference-code-defects-we-do-not-reproduce"),
        ("`rollout/*` metrics", "rollout-metrics"),
        ("GiGPO", "gigpo"),
        ("snake_case stays", "snake_case-stays"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_anchors_skip_code_fences_and_number_repeats() -> None:
    text = "# Top\n## Part\n```\n# not a heading\n```\n## Part\n"
    assert anchors(text) == {"top", "part", "part-1"}


def test_checks_catch_a_broken_link_and_a_citation(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "page.md").write_text("# Page\n## Good section\n", encoding="utf-8")
    source = tmp_path / "module.py"
    source.write_text(
        "# see docs/page.md#good-section\n"  # fine
        "# see docs/page.md#missing-section\n"  # no such heading
        "# see docs/gone.md\n"  # no such page
        "# rules from SPEC §4\n",  # an outside citation
        encoding="utf-8",
    )
    problems = broken_references([source], docs, root=tmp_path)
    citations = spec_citations([source], root=tmp_path)
    assert [p.split(": ", 1)[0] for p in problems] == ["module.py:2", "module.py:3"]
    assert citations == ["module.py:4: # rules from SPEC §4"]
