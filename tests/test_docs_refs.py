"""Every reference in the code and the docs resolves inside the repository.

- "§N" (code and docs cite docs/DESIGN.md as "DESIGN.md §N") names a section of docs/DESIGN.md; "§N step K"
  a step of that section's numbered list; `§N "Title"` a heading or a bold lead-in of section N.
- Every relative markdown link in README.md and docs/ points to a file of the repository.
- Every `docs/...` path and every upper-case `NAME.md` the code and the docs mention exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "DESIGN.md"
THIS = Path(__file__).resolve()

# A reference: §N, then optionally "step(s) K[ and L]" and/or a quoted title ("..." or “...”).
REF_RE = re.compile(
    r"§\s*(\d+)"
    r"(?:,?\s+steps?\s+(\d+)(?:\s+and\s+(\d+))?)?"
    r"(?:,?\s+[\"“]([^\"”\n]+)[\"”])?"
)
SECTION_RE = re.compile(r"^## (\d+)\. ", re.M)
LINK_RE = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DOCS_PATH_RE = re.compile(r"(?<![\w/.-])docs/[\w./-]*[\w/]")
DOC_NAME_RE = re.compile(r"(?<![\w/.-])([A-Z][A-Z_]*\.md)\b")


def sources() -> list[Path]:
    """The files whose references must resolve: the package, tests, experiments, README and docs."""
    files = [*ROOT.glob("cenas_jax/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("experiments/**/*.py"),
             *ROOT.glob("experiments/**/*.yaml"), *ROOT.glob("docs/**/*.md"), ROOT / "README.md", ROOT / "Makefile"]
    return sorted(p for p in files if p.resolve() != THIS and "hostile" not in p.parts and p.is_file())


def design_sections(text: str) -> dict[int, str]:
    """{N: the text of section N} of a DESIGN.md-style document (from "## N. " to the next "## ")."""
    heads = list(SECTION_RE.finditer(text))
    out = {}
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        body = text[m.start():end]
        nxt = re.search(r"^## (?!#)", body[3:], re.M)  # an unnumbered "## " section ends it too
        out[int(m.group(1))] = body[: nxt.start() + 3] if nxt else body
    return out


def titles(section: str) -> list[str]:
    """What a quoted title may name: the section's headings and its bold lead-ins."""
    heads = [h.strip() for h in re.findall(r"^#{2,4} (?:\d+\. )?(.+)$", section, re.M)]
    return heads + re.findall(r"\*\*([^*\n]+)\*\*", section)


def steps(section: str) -> set[int]:
    return {int(n) for n in re.findall(r"^(\d+)\. ", section, re.M)}


def bad_refs(text: str, sections: dict[int, str]) -> list[str]:
    """The references in ``text`` that do not resolve against ``sections``, each with the reason."""
    bad = []
    for m in REF_RE.finditer(text):
        n, s1, s2, title = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if n not in sections:
            bad.append(f"{m.group(0)!r}: DESIGN.md has no section {n} (it has {sorted(sections)})")
            continue
        for s in (s1, s2):
            if s is not None and int(s) not in steps(sections[n]):
                bad.append(f"{m.group(0)!r}: section {n} has no step {s}")
        if title is not None:
            t = title.strip().rstrip(".,").lower()
            if not any(h.lower().startswith(t) for h in titles(sections[n])):
                bad.append(f"{m.group(0)!r}: section {n} has no heading or bold lead-in {title!r}")
    return bad


def bad_links(md: Path, root: Path = ROOT) -> list[str]:
    """The relative links of markdown file ``md`` whose target is missing or outside ``root``."""
    bad = []
    for target in LINK_RE.findall(md.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # an absolute URL or an anchor in the same file
        path = (md.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(root.resolve()):
            bad.append(f"{target}: outside the repository")
        elif not path.exists():
            bad.append(f"{target}: no such file ({path.relative_to(root.resolve())})")
    return bad


# --- the checkers themselves catch what they are for -----------------------------------------------------

FAKE = """# doc

## 1. The loop

1. **Prompt.** ...
2. **Sample** ...

### The novelty filter (step 4)

## 2. The sandbox

- **Integrity of scores**: ...

## Appendix

## 3. Scale
"""


@pytest.mark.parametrize("ref, ok", [
    ("DESIGN.md §1", True),
    ("DESIGN.md §3", True),
    ("DESIGN.md §4", False),
    ("DESIGN.md §1 step 2", True),
    ("DESIGN.md §1 steps 1 and 2", True),
    ("DESIGN.md §1 step 3", False),
    ("DESIGN.md §1 steps 1 and 7", False),
    ('DESIGN.md §1 "The novelty filter"', True),
    ("DESIGN.md §1, “The novelty”", True),
    ('DESIGN.md §2, "Integrity of scores"', True),
    ('DESIGN.md §1 "Integrity of scores"', False),
    ('DESIGN.md §2 "Appendix"', False),
])
def test_the_reference_checker_tells_good_from_stale(ref, ok):
    sections = design_sections(FAKE)
    assert sorted(sections) == [1, 2, 3]
    assert "Appendix" not in sections[2]
    assert (bad_refs(ref, sections) == []) is ok, bad_refs(ref, sections)


def test_the_link_checker_finds_a_missing_file_and_one_outside_the_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "README.md").write_text("# readme\n")
    (repo / "docs" / "DESIGN.md").write_text("# design\n")
    (tmp_path / "outside.md").write_text("# not ours\n")
    md = repo / "docs" / "probe.md"
    md.write_text("[ok](DESIGN.md) [ok](../README.md#layout) [web](https://example.org/x.md) [a](#top)\n"
                  "[gone](NOPE.md) ![img](figures/none.png) [out](../../outside.md)\n")
    bad = bad_links(md, repo)
    assert [b.split(":")[0] for b in bad] == ["NOPE.md", "figures/none.png", "../../outside.md"]


# --- the repository ---------------------------------------------------------------------------------------

def test_design_md_has_its_numbered_sections():
    sections = design_sections(DESIGN.read_text())
    assert sorted(sections) == list(range(1, len(sections) + 1)) and len(sections) >= 9


def test_every_section_reference_resolves_in_design_md():
    sections = design_sections(DESIGN.read_text())
    bad, cited = [], 0
    for path in sources():
        text = path.read_text()
        cited += len(REF_RE.findall(text))
        bad += [f"{path.relative_to(ROOT)}: {b}" for b in bad_refs(text, sections)]
    assert cited > 40  # the scan sees the references (there are dozens)
    assert not bad, "\n".join(bad)


def test_every_relative_markdown_link_points_to_a_file():
    mds = [ROOT / "README.md", *ROOT.glob("docs/**/*.md")]
    bad = [f"{md.relative_to(ROOT)}: {b}" for md in mds for b in bad_links(md)]
    assert not bad, "\n".join(bad)


def test_every_docs_path_and_doc_name_mentioned_exists():
    names = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    bad = []
    for path in sources():
        text = path.read_text()
        assert "shared/docs" not in text, f"{path.relative_to(ROOT)} points outside the repository"
        for ref in DOCS_PATH_RE.findall(text):
            if not (ROOT / ref).exists():
                bad.append(f"{path.relative_to(ROOT)}: {ref} does not exist")
        for name in DOC_NAME_RE.findall(text):
            if name not in names:
                bad.append(f"{path.relative_to(ROOT)}: {name} is no file of the repository")
    assert not bad, "\n".join(bad)
