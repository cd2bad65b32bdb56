"""End to end through Snakemake on a tiny config: idc and dream -> the idc protocol -> dream_t1, dream_t2 and the
DREAM Fig. 1 curves of the idc/dream pair; with their snapshot candidates (config paper_rule), the rows "ours
(paper's rule)" and "ours (validation rule)"."""
import json
import re

import pytest

from tiny_workflow import TINY_VALIDATION, tiny_workdir
from tiny_workflow import snakemake as _snakemake

pytestmark = pytest.mark.workflow

TINY_QUICK = {  # the quick preset shrunk to seconds per job
    "idc.yaml": {"iterations": 1, "inner_loops": 1, "n_data": 16, "batch_real": 4, "batch_syn_max": 8,
                 "snapshots": [0], "eval": {"idc": {"epochs": 2, "models": 2}}},
    "dream.yaml": {"iterations": 1, "snapshots": [0], "batch_real": 4,  # (dream's quick sets its own iterations)
                   "representative": {"every": 1, "pool": 20, "kmeans_iters": 5}},
}
METHODS = ["idc", "dream"]


@pytest.fixture(scope="module")
def tiny_idc_run(tmp_path_factory, mnist5k_path):
    work = tiny_workdir(tmp_path_factory.mktemp("wf_idc"), TINY_QUICK, tiny_data=mnist5k_path,
                        methods=METHODS, ipcs=[1],
                        tables=["dream_t1", "dream_t2"], figures=["dream_fig1"], paper_rule=True)
    _snakemake(work)
    return work


def test_idc_and_dream_reach_dream_t1_t2_and_fig1(tiny_idc_run):
    run = tiny_idc_run
    for method in METHODS:
        cell = json.loads((run / f"results/eval/idc/{method}/mnist5k/ipc1/s0.json").read_text())
        assert cell["protocol"] == "idc" and cell["n_models"] == 2 and 0.0 <= cell["mean"] <= 100.0
        assert cell["settings"]["epochs"] == 2 and cell["settings"]["mixup"] == "vanilla"  # MNIST, factor 2
        for it in (0,):  # the snapshot before distilling; the final set (iteration 1) is the cell above
            snap = json.loads((run / f"results/eval/idc/{method}/mnist5k/ipc1/s0/it{it}.json").read_text())
            assert snap["iterations"] == it
        assert (run / f"results/figures/grids/{method}/mnist5k/ipc1/s0.png").stat().st_size > 1000
    md = (run / "results/tables/dream_t1.md").read_text()
    for label, paper in (("IDC", "94.2"), ("DREAM", "95.7")):
        line = next(line for line in md.splitlines() if line.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d ± \d+\.\d", line) and paper in line, line
    assert "best of periodic test evaluations" in md
    # the snapshot candidate (quick paper_rule fractions [0.5] of 1 iteration: it0) and the final cell, each scored
    # on the validation split too; both rule rows under each method (ddflow.report.valrule)
    for method in METHODS:
        for cell in (f"idc/{method}/mnist5k/ipc1/s0.json", f"idc/{method}/mnist5k/ipc1/s0/paper_rule/it0.json"):
            c = json.loads((run / "results/eval" / cell).read_text())
            assert len(c["val_accuracies"]) == c["n_models"] and c["validation"]["images"] == 10 * TINY_VALIDATION, c
    for label in ("IDC", "DREAM"):
        assert re.search(rf"^\| {label} — ours \(paper's rule\) .*\(it [01]\)", md, re.M), md
        assert re.search(rf"^\| {label} — ours \(validation rule\) .*\(it [01]; paper's rule \+\d+\.\d\)", md,
                         re.M), md
    assert "ours (validation rule): per seed" in md
    t2 = (run / "results/tables/dream_t2.md").read_text()
    rows = [line for line in t2.splitlines() if line.startswith("| MNIST")]
    assert len(rows) == 2 and "IDC" in rows[0] and "DREAM" in rows[1], t2
    assert rows[0].count("—") >= 1  # IDC has no clustering time
    assert (run / "results/tables/dream_t2.csv").exists() and (run / "results/tables/dream_t2.tex").exists()
    assert (run / "results/figures/dream/fig1_mnist5k_ipc1.png").stat().st_size > 1000
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(_snakemake(run, "-n"))
