"""The results matrix: cells of every preset (marked; results/RESULTS.md by default), or only paper-preset cells for
docs/RESULTS.md, ours pooled over seeds beside the paper's value, Δ and tolerance."""
import json
import math

import yaml

from ddflow.cli import main
from ddflow.report.matrix import matrix_rows

SPEC = {
    "name": "toy_t1", "title": "Toy", "source": "toy", "paper_datasets": ["mnist"], "paper_ipcs": [1, 10],
    "compare_as": {"mnist5k": "mnist"},
    "rows": [
        {"label": "DM", "method": "dm", "protocol": "dc", "paper": {"mnist": {1: "89.7±0.6", 10: 97.5}}},
        {"label": "MTT", "method": "mtt", "protocol": "mtt", "paper": {"mnist": {1: 91.0}}},
        {"label": "DD", "paper": {"mnist": {10: 79.5}}},
        {"label": "Whole dataset", "method": "whole", "protocol": "dc",
         "paper": {"mnist": {1: "99.6±0.0", 10: "99.6±0.0"}}},
    ],
}


def _cell(root, protocol, method, dataset, ipc, seed, accs, preset, device="NVIDIA H200", date=None):
    path = root / "eval" / protocol / method / dataset / f"ipc{ipc}" / f"s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = {"protocol": protocol, "method": method, "dataset": dataset, "ipc": ipc, "seed": seed, "preset": preset,
            "accuracies": accs, "provenance": {"device": device}}
    if date:
        cell["date"] = date
    path.write_text(json.dumps(cell))


def _toy_results(tmp_path):
    papers, results = tmp_path / "papers", tmp_path / "results"
    papers.mkdir()
    (papers / "toy_t1.yaml").write_text(yaml.safe_dump(SPEC))
    _cell(results, "dc", "dm", "mnist", 1, 0, [89.0, 90.0], "paper", date="2026-11-30T10:00:00+00:00")
    _cell(results, "dc", "dm", "mnist", 1, 1, [91.0, 92.0], "paper", date="2026-12-01T09:00:00+00:00")
    _cell(results, "dc", "dm", "mnist", 10, 0, [95.0], "paper")          # |Δ| 2.5 > max(1, 2·0): not within
    _cell(results, "dc", "dm", "mnist5k", 1, 0, [60.0, 61.0], "quick")   # quick preset: never listed
    _cell(results, "mtt", "mtt", "mnist5k", 1, 0, [60.0], "quick")
    (results / "eval" / "dc" / "dm" / "mnist" / "ipc1" / "s0").mkdir()  # snapshot cells are not final cells
    (results / "eval" / "dc" / "dm" / "mnist" / "ipc1" / "s0" / "it10.json").write_text(json.dumps(
        {"protocol": "dc", "method": "dm", "dataset": "mnist", "ipc": 1, "seed": 0, "preset": "paper",
         "accuracies": [0.0]}))

    whole = results / "eval" / "whole"
    whole.mkdir(parents=True)
    (whole / "mnist.json").write_text(json.dumps(      # the whole-dataset bound: IPC 0, every column
        {"protocol": "dc", "method": "whole", "dataset": "mnist", "ipc": 0, "seed": 0, "preset": "paper",
         "accuracies": [99.5, 99.3]}))
    (whole / "mnist5k.json").write_text(json.dumps(
        {"protocol": "dc", "method": "whole", "dataset": "mnist5k", "ipc": 0, "seed": 0, "preset": "quick",
         "accuracies": [95.0]}))
    return papers, results


def test_docs_matrix_lists_only_paper_preset_cells_with_delta_and_tolerance(tmp_path):
    papers, results = _toy_results(tmp_path)
    rows = matrix_rows(results, papers, ["paper"])
    assert [(r["row"], r["dataset"], r["ipc"]) for r in rows] == [("DM", "mnist", 1), ("DM", "mnist", 10),
                                                                  ("Whole dataset", "mnist", 0)]
    one, ten, bound = rows
    assert bound["paper_mean"] == 99.6 and math.isclose(bound["delta"], 99.4 - 99.6) and bound["within"] is True
    accs = [89.0, 90.0, 91.0, 92.0]
    mean = sum(accs) / 4
    assert math.isclose(one["mean"], mean) and one["n_models"] == 4 and one["n_seeds"] == 2
    assert math.isclose(one["std"], math.sqrt(sum((a - mean) ** 2 for a in accs) / 4))
    assert math.isclose(one["delta"], mean - 89.7) and one["tolerance"] == 1.2 and one["within"] is True
    assert one["date"] == "2026-12-01" and one["devices"] == ["NVIDIA H200"]
    assert math.isclose(ten["delta"], -2.5) and ten["tolerance"] == 1.0 and ten["within"] is False

    out = tmp_path / "docs" / "RESULTS.md"
    args = ["results-matrix", "--results", str(results), "--papers", str(papers), "--out", str(out)]
    assert main(args) == 2 and not out.exists()      # docs/ takes only cells run at paper scale
    assert main(args + ["--presets", "paper"]) == 0
    text = out.read_text()
    assert "| toy_t1 | DM | mnist | 1 | paper | 90.5 ± 1.1 | 4 (2) | 89.7 ± 0.6 | +0.8 | yes | NVIDIA H200 | " \
        "2026-12-01 |" in text
    assert "| toy_t1 | DM | mnist | 10 | paper | 95.0 ± 0.0 | 1 (1) | 97.5 | -2.5 | no |" in text
    assert "mnist5k" not in text and "MTT" not in text and "quick" not in text
    assert "| toy_t1 | Whole dataset | mnist | all | paper | 99.4 ± 0.1 | 2 (1) | 99.6 ± 0.0 | -0.2 | yes |" in text
    assert "2 of 3 paper-preset cells with a paper value are within tolerance." in text


def test_matrix_shows_every_preset_marked_under_results_by_default(tmp_path, monkeypatch):
    papers, results = _toy_results(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["results-matrix", "--papers", str(papers)]) == 0     # --results results, --out results/RESULTS.md
    text = (results / "RESULTS.md").read_text()
    assert "| toy_t1 | DM | mnist | 1 | paper | 90.5 ± 1.1 |" in text
    # quick cells are listed, marked, beside the paper's value, without a verdict (not at the paper's scale)
    assert "| toy_t1 | DM | mnist5k (paper: mnist) | 1 | **quick** (not paper scale) | 60.5 ± 0.5 | 2 (1) | " \
        "89.7 ± 0.6 | -29.2 | — |" in text
    assert "| toy_t1 | MTT | mnist5k (paper: mnist) | 1 | **quick** (not paper scale) | 60.0 ± 0.0 |" in text
    assert "| toy_t1 | Whole dataset | mnist5k (paper: mnist) | all | **quick** (not paper scale) | 95.0 ± 0.0 |" \
        in text
    assert "2 of 3 paper-preset cells with a paper value are within tolerance." in text
    assert not (tmp_path / "docs").exists()


def test_matrix_without_paper_cells_says_so(tmp_path):
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "toy_t1.yaml").write_text(yaml.safe_dump(SPEC))
    _cell(tmp_path / "results", "dc", "dm", "mnist5k", 1, 0, [60.0], "quick")
    out = tmp_path / "RESULTS.md"
    assert main(["results-matrix", "--results", str(tmp_path / "results"), "--papers", str(papers),
                 "--out", str(out), "--presets", "paper"]) == 0
    assert "No paper-preset cells yet." in out.read_text()
