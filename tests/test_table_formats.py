"""Every text field of a table's LaTeX and HTML is escaped (caption, notes, row and column names, cells), and every
paper table ddflow writes compiles with a real pdflatex (skipped, saying why, where none is installed)."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ddflow.report.formats import html_page, latex_document, latex_escape, latex_table
from ddflow.report.tables import build_table, load_spec, write_table
from ddflow.report.timing import write_timing_table
from ddflow.report.xarch import build_xarch_table, write_xarch_table
from test_distill import ROOT

PAPERS = ROOT / "workflow" / "papers"
HOSTILE = r"50% & 3_x #1 $5 ~a ^b \c {d} <e>|f ± Δ − σ — · é"  # every character LaTeX treats specially
PDFLATEX = shutil.which("pdflatex")
NO_LATEX = "pdflatex not installed (Debian: apt-get install texlive-latex-base texlive-latex-recommended)"


def _unescaped(tex: str) -> list[str]:
    """LaTeX specials in `tex` outside the commands latex_escape and the table layout write (and outside the one
    comment line that says what made the table, ddflow.report.tables.write_outputs)."""
    assert len(re.findall(r"^% made by: \{.*\}$", tex, re.M)) <= 1
    tex = re.sub(r"^% made by: \{.*\}$", "", tex, flags=re.M)
    body = re.sub(r"\\(textbackslash|textasciitilde|textasciicircum|textless|textgreater|textbar|ldots)\{\}", "",
                  tex)
    body = re.sub(r"\$\\?[A-Za-z]*\$|\$-\$|\$\^\\circ\$", "", body)          # $\pm$, $\Delta$, $-$ ...
    body = re.sub(r"\\[%&#_${}]", "", body)                                   # \% \& ...
    body = re.sub(r"\\label\{[A-Za-z0-9:._-]*\}", "", body)                       # a key, not text
    body = re.sub(r"\\(begin|end|caption|multicolumn|par|smallskip|footnotesize|toprule|midrule|bottomrule|"
                  r"cline)\b(\{[^{}]*\})*", "", body)
    body = body.replace("\\\\", "").replace("&", "").replace("{", "").replace("}", "")
    return re.findall(r"[%#_$~^\\<>|]|[^\x00-\x7f]", body.replace("é", ""))


def test_latex_escape_turns_every_special_character_into_printable_source():
    assert latex_escape("50%") == r"50\%"
    assert latex_escape(r"a\b") == r"a\textbackslash{}b"      # the backslash is not re-escaped by later rules
    assert latex_escape("{x}_1 & #2 $3 ~^") == r"\{x\}\_1 \& \#2 \$3 \textasciitilde{}\textasciicircum{}"
    assert latex_escape("± Δ σ − —") == r"$\pm$ $\Delta$ $\sigma$ $-$ ---"
    assert latex_escape("é") == "é" and latex_escape("\u2603") == "[U+2603]"   # an unknown symbol stays visible
    assert _unescaped(latex_escape(HOSTILE)) == []


def _hostile_frame() -> pd.DataFrame:
    cols = pd.MultiIndex.from_tuples([(f"Set {HOSTILE}", "IPC 1"), (f"Set {HOSTILE}", "IPC_10")])
    return pd.DataFrame([[HOSTILE, "1.0 ± 0.1"], ["—", None]], columns=cols,
                        index=pd.Index([f"row {HOSTILE}", "DM"], name="Method %"))


def test_every_field_of_the_latex_and_html_is_escaped():
    df = _hostile_frame()
    tex = latex_table(df, f"caption {HOSTILE}", "tab:x_1", [f"note {HOSTILE}", "second note 100%"])
    assert _unescaped(tex) == [], tex
    assert tex.count(r"50\%") == 5  # caption, dataset head, row label, cell, note: each field kept its text
    assert r"IPC\_10" in tex and r"Method \%" in tex and r"\label{tab:x_1}" in tex
    assert r"\par note 50\%" in tex and r"second note 100\%" in tex
    page = html_page(df, f"caption {HOSTILE}", [f"note {HOSTILE} <b>"])
    text = re.sub(r"<[^>]+>", "", page)
    assert "<e>" not in page and "&lt;e&gt;" in page and "&lt;b&gt;" in page    # no markup from the data
    assert text.count("50% &amp; 3_x") >= 5                                      # caption, heads, row, cell, note


def _fake_cells(tmp_path: Path, spec: dict, datasets: list[str], ipcs: list[int]) -> list[Path]:
    out = []
    for i, row in enumerate(r for r in spec["rows"] if r.get("method")):
        for ds in datasets:
            for ipc in ipcs:
                p = tmp_path / f"{i}-{ds}-{ipc}.json"
                p.write_text(json.dumps({"protocol": row.get("protocol", "dc"), "method": row["method"],
                                         "dataset": ds, "ipc": ipc, "seed": 0, "accuracies": [50.0 + i, 52.0],
                                         "preset": "quick", "provenance": {"device": "cpu"}}))
                out.append(p)
    return out


def _write_every_paper_table(tmp_path: Path) -> list[Path]:
    """Every table spec of workflow/papers/ written from fake cells (a cell per row, dataset and IPC), as the table
    rule writes it; plus a table whose spec has LaTeX specials in every text field."""
    written = []
    for path in sorted(PAPERS.glob("*.yaml")):
        spec = load_spec(path)
        work = tmp_path / spec["name"]
        work.mkdir()
        if spec["kind"] == "cells":
            cells = _fake_cells(work, spec, ["mnist5k", "cifar10"], [1, 10])
            write_table(build_table(path, cells, ["mnist5k", "cifar10"], [1, 10]), work / "t")
        elif spec["kind"] == "xarch":
            s = load_spec(path)
            for c in _fake_cells(work, s, [s["dataset"]], [s["ipc"]]):   # one cell per architecture column
                for arch in s["architectures"]:
                    d = json.loads(c.read_text())
                    d["protocol"] = d["protocol"] if arch == "ConvNet" else f"{d['protocol']}-{arch}"
                    (c.parent / f"{c.stem}-{arch}.json").write_text(json.dumps(d))
            write_xarch_table(build_xarch_table(path, sorted(work.glob("*.json"))), work / "t")
        elif spec["kind"] == "timing":
            df = pd.DataFrame([{"row": r["label"], "method": r["method"], "dataset": "mnist5k", "ipc": 10,
                                "n_runs": 1, "inner_loops": 3, "device": "cpu_x", "preset": "quick",
                                **{f"{w}_{c}_s": 0.5 for w in ("ours", "paper")
                                   for c in ("clustering", "update_images", "inner_loop")}} for r in spec["rows"]])
            write_timing_table({"spec": spec, "df": df}, work / "t")
            (tmp_path / "empty_timing").mkdir()   # the default run has no timing runs: heads, no rows
            write_timing_table({"spec": spec, "df": pd.DataFrame()}, tmp_path / "empty_timing" / "t")
            written.append(tmp_path / "empty_timing" / "t.tex")
        else:
            continue
        written.append(work / "t.tex")
    spec = yaml.safe_load((PAPERS / "dream_t1.yaml").read_text())
    spec.update(title=f"Hostile {HOSTILE}", notes=[f"A note: {HOSTILE}"], source=f"src {HOSTILE}")
    spec["rows"][0]["label"] = f"Random {HOSTILE}"
    spec["rows"][0]["note"] = f"row note {HOSTILE}"
    (tmp_path / "hostile.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    (tmp_path / "hostile").mkdir()
    cells = _fake_cells(tmp_path / "hostile", spec, ["mnist5k"], [1])
    write_table(build_table(tmp_path / "hostile.yaml", cells, ["mnist5k"], [1]), tmp_path / "hostile" / "t")
    return written + [tmp_path / "hostile" / "t.tex"]


def test_every_paper_table_escapes_every_field_and_writes_html(tmp_path):
    for tex in _write_every_paper_table(tmp_path):
        text = tex.read_text()
        assert _unescaped(text) == [], (tex, _unescaped(text))
        page = tex.with_suffix(".html").read_text()
        assert "<table" in page and "<ul class=\"notes\">" in page
    hostile = (tmp_path / "hostile" / "t.tex").read_text()
    assert r"Hostile 50\% \& 3\_x" in hostile and r"A note: 50\%" in hostile and r"row note 50\%" in hostile


@pytest.mark.skipif(PDFLATEX is None, reason=NO_LATEX)
def test_every_paper_table_compiles_with_pdflatex(tmp_path):
    """Each table as a paper uses it: \\input{table.tex} in a document that loads booktabs."""
    tables = _write_every_paper_table(tmp_path)
    doc = latex_document([f"\\input{{{t.relative_to(tmp_path).as_posix()}}}" for t in tables])
    (tmp_path / "doc.tex").write_text(doc)
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:]
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "Missing character" not in log and (tmp_path / "doc.pdf").stat().st_size > 1000
    assert f"Output written on doc.pdf ({len(tables)} page" in log.replace("\n", "")
