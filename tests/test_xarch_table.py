"""The cross-architecture table kind (ddflow.report.xarch): rows = methods, columns = networks, one protocol per
network, paper values beside ours."""
import json

import pandas as pd
import pytest
import yaml

from ddflow.errors import DdflowError
from ddflow.report.xarch import build_xarch_table, load_xarch_spec, write_xarch_table, xarch_cells
from test_distill import ROOT

PAPERS = ROOT / "workflow" / "papers"


def _cell(tmp_path, protocol, method, accs, dataset="cifar10", ipc=10, seed=0):
    p = tmp_path / f"{protocol}-{method}-{seed}.json"
    p.write_text(json.dumps({"protocol": protocol, "method": method, "dataset": dataset, "ipc": ipc, "seed": seed,
                             "accuracies": accs, "preset": "paper"}))
    return p


def test_cells_of_the_table_are_one_protocol_per_architecture():
    spec = load_xarch_spec(PAPERS / "xarch.yaml")
    cells = xarch_cells(spec, ["mtt", "dm"])
    assert ("mtt", "mtt", "cifar10", 10) in cells and ("mtt-resnet18", "mtt", "cifar10", 10) in cells
    assert ("dc-lenet", "dm", "cifar10", 10) in cells and ("dc", "dm", "cifar10", 10) in cells
    assert len(cells) == 2 * len(spec["architectures"])
    quick = load_xarch_spec(PAPERS / "xarch_quick.yaml")
    assert {p for p, *_ in xarch_cells(quick, ["dc"])} == {"dc", "dc-mlp", "dc-lenet"}


def test_layout_ours_beside_paper_per_architecture(tmp_path):
    cells = [_cell(tmp_path, "mtt", "mtt", [64.0, 66.0]), _cell(tmp_path, "mtt-resnet18", "mtt", [45.0, 47.0]),
             _cell(tmp_path, "dc-alexnet", "dm", [30.0])]
    table = build_xarch_table(PAPERS / "xarch.yaml", cells)
    df = table["df"]
    res = df[(df.method == "mtt") & (df.architecture == "ResNet18")].iloc[0]
    assert res.protocol == "mtt-resnet18" and res.ours_mean == pytest.approx(46.0) and res.paper_mean == 46.4
    assert res.difference == pytest.approx(-0.4)
    write_xarch_table(table, tmp_path / "x")
    md = (tmp_path / "x.md").read_text()
    mtt_line = next(line for line in md.splitlines() if line.startswith("| MTT "))
    assert "65.0 ± 1.0" in mtt_line and "64.3 ± 0.7" in mtt_line and "+0.7" in mtt_line and "-0.4" in mtt_line
    assert "ResNet18 ours" in md and "MTT (CVPR 2022) Table 3" in md
    assert len(pd.read_csv(tmp_path / "x.csv")) == 5 * 6
    assert "tab:xarch" in (tmp_path / "x.tex").read_text()


def test_a_network_the_protocol_does_not_admit_is_an_error_naming_the_row(tmp_path):
    spec = yaml.safe_load((PAPERS / "xarch_quick.yaml").read_text())
    spec["rows"].append({"label": "IDC", "method": "idc", "protocol": "idc"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(DdflowError, match=r"bad.yaml: rows\[3\] \(IDC\).*does not admit"):
        load_xarch_spec(bad)
    spec["rows"].pop()
    spec["rows"][0]["paper"] = {"VGG11": 50.0}
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(DdflowError, match="VGG11"):
        load_xarch_spec(bad)
