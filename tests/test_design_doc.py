"""docs/design.md is the design the code cites: every `docs/design.md §N` in README, BENCHMARKS, src/ and tests/
resolves to a numbered section heading, and nothing still cites a design file that is not in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
CITATION = re.compile(r"docs/design\.md (§[\d.]+(?:(?:, | and )§[\d.]+)*)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)


def _cited_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "BENCHMARKS.md"]
    for folder in ("src", "tests", "benchmarks", "examples"):
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".sh", ".yaml"))
    return [f for f in files if f.is_file()]


def _citations() -> list[tuple[str, str]]:
    """(where, section) for every section a file cites."""
    found = []
    for path in _cited_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in CITATION.finditer(line):
                for section in re.findall(r"§([\d.]+)", match.group(1)):
                    found.append((f"{path.relative_to(ROOT)}:{lineno}", section.rstrip(".")))
    return found


def test_sections_are_numbered_and_unique():
    sections = HEADING.findall(DESIGN.read_text(encoding="utf-8"))
    assert len(sections) >= 10
    assert len(sections) == len(set(sections)), "a section number is used twice"
    for section in sections:
        parent = section.rpartition(".")[0]
        assert not parent or parent in sections, f"§{section} has no parent section §{parent}"


def test_every_citation_resolves_to_a_section():
    sections = set(HEADING.findall(DESIGN.read_text(encoding="utf-8")))
    citations = _citations()
    assert len(citations) >= 22, "the code, README and BENCHMARKS cite the design document by section"
    dead = [f"{where}: §{section}" for where, section in citations if section not in sections]
    assert not dead, "citations of sections docs/design.md does not have:\n" + "\n".join(dead)


def test_no_citation_of_a_missing_design_file():
    stale = [f"{path.relative_to(ROOT)}:{i}" for path in _cited_files()
             for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"\bDESIGN(\.md)?\b", line) and path != Path(__file__).resolve()]
    assert not stale, "cites DESIGN.md, which is not in the repository; cite docs/design.md §N:\n" + "\n".join(stale)


def test_code_named_by_the_design_exists():
    """The modules and functions the design document names are the ones in src/."""
    text = DESIGN.read_text(encoding="utf-8")
    for module in set(re.findall(r"`(fapo(?:\.\w+)+)`", text)):
        parts = module.split(".")
        for cut in range(len(parts), 1, -1):  # fapo.grm.client.GenRMClient -> src/fapo/grm/client.py
            base = ROOT / "src" / Path(*parts[:cut])
            if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
                break
        else:
            raise AssertionError(f"docs/design.md names {module}, which is not in src/")
