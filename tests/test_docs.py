"""Documentation that the README, the table specs, the hparams files and the code point to exists in the
repository, and every BibTeX key a table spec or docs/methods.md names is defined in docs/references.bib."""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "docs" / "references.bib"
TOP = ("docs", "workflow", "src", "tests", "profiles", "benchmarks", "envs", ".ci", "reference", "..")
# a path in the repository: under one of its top folders, or a bare document name (README.md, CITATION.cff, ...)
PATH = re.compile(r"(?<![\w/.-])((?:" + "|".join(re.escape(t) for t in TOP) + r"|ddflow)/[\w./-]*[\w-]"
                  r"|[\w-]+\.(?:md|cff|bib|toml))(?![\w/{<*])")
OUTPUTS = {"smoke.md"}             # files the pipeline writes (smoke/smoke.md), not repository files


def pointing_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CITATION.cff", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("papers", "hparams"):
        files += sorted((ROOT / "workflow" / folder).rglob("*.yaml"))   # hparams: methods/ and stages/
    return files + sorted((ROOT / "src").rglob("*.py"))


def named_paths(text: str) -> set[str]:
    found = set()
    for m in PATH.finditer(text):
        p = m.group(1).rstrip(".")
        if "{" in text[m.end():m.end() + 1] or p in OUTPUTS:
            continue
        found.add(p)
    return found


def exists(p: str) -> bool:
    if p.startswith(".."):
        return False                   # outside the repository: a user's checkout has no such file
    if p.startswith("ddflow/"):
        p = "src/" + p
    return any((ROOT / base / p).exists() for base in ("", "docs")) or any(ROOT.glob(p))


def test_the_path_pattern_finds_what_it_should():
    text = ("see docs/protocols.md, `workflow/hparams/methods/dm.yaml`, DESIGN.md and "
            "../shared/reference/paper-tables.md; not results/x.md or {dataset}.npz")
    assert named_paths(text) == {"docs/protocols.md", "workflow/hparams/methods/dm.yaml", "DESIGN.md",
                                 "../shared/reference/paper-tables.md"}
    assert not exists("DESIGN.md") and not exists("../shared/reference/paper-tables.md")
    assert exists("docs/protocols.md") and exists("ddflow/methods/frepo.py")


@pytest.mark.parametrize("path", pointing_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_exists(path):
    missing = sorted(p for p in named_paths(path.read_text()) if not exists(p))
    assert not missing, f"{path.relative_to(ROOT)} names files absent from the repository: {missing}"


def test_table_notes_and_sources_name_existing_files():
    for spec_path in sorted((ROOT / "workflow" / "papers").glob("*.yaml")):
        spec = yaml.safe_load(spec_path.read_text())
        texts = [str(spec.get("source", ""))] + [str(n) for n in spec.get("notes", [])]
        texts += [str(r.get(k, "")) for r in spec.get("rows", []) if isinstance(r, dict) for k in ("source", "note")]
        missing = sorted(p for t in texts for p in named_paths(t) if not exists(p))
        assert not missing, f"{spec_path.name}: {missing}"


def bib_keys() -> set[str]:
    return set(re.findall(r"^@\w+\{([^,\s]+),", BIB.read_text(), re.M))


def test_bib_has_every_method_paper_once():
    text = BIB.read_text()
    keys = re.findall(r"^@\w+\{([^,\s]+),", text, re.M)
    assert len(keys) == len(set(keys)) and text.count("@") == len(keys)
    assert {"zhao2021dc", "zhao2021dsa", "zhao2023dm", "cazenavette2022mtt", "kim2022idc", "liu2023dream",
            "zhou2022frepo", "li2025isa", "ead", "welling2009herding", "nguyen2021kip", "loo2022rfad", "liu2022haba",
            "wang2022cafe", "zhao2023idm", "cui2023tesla", "wang2018dd", "bohdal2020ld", "deng2022rtp",
            "loo2023rcig"} <= set(keys)
    for entry in re.split(r"\n(?=@)", text.split("\n@", 1)[1]):
        assert "title" in entry and "year" in entry, entry[:80]


def test_every_bib_key_referenced_exists():
    keys = bib_keys()
    for spec_path in sorted((ROOT / "workflow" / "papers").glob("*.yaml")):
        spec = yaml.safe_load(spec_path.read_text())
        named = [spec["source_bib"]] if spec.get("source_bib") else []
        for value in (spec.get("bib") or {}).values():
            named += [k.strip() for k in str(value).split(",")]
        assert set(named) <= keys, f"{spec_path.name}: {sorted(set(named) - keys)} not in docs/references.bib"
        if spec.get("kind", "cells") in ("cells", "timing") and spec.get("bib"):   # no key for a row that is gone
            assert set(spec["bib"]) <= {r["label"] for r in spec["rows"]}, f"{spec_path.name}: bib names no row"
    cited = {k.strip() for group in re.findall(r"\[([a-z][\w; ]*\d{4}\w*(?:; [\w]+)*)\]",
                                               (ROOT / "docs" / "methods.md").read_text()) for k in group.split(";")}
    assert cited and cited <= keys, sorted(cited - keys)
