"""End to end through Snakemake on a tiny config: frepo and isa distilled, evaluated under protocols frepo and krr,
into table isa_t6 (a copied hparams dir with the quick preset shrunk to seconds per job)."""
import json
import re

import pytest

from tiny_workflow import snakemake as _snakemake
from tiny_workflow import tiny_workdir

pytestmark = pytest.mark.workflow

TINY = {"iterations": 3, "batch_real": 32, "pool": 2, "max_online_updates": 2, "width": 8, "snapshots": [0, 2],
        "eval": {p: {"steps": 4, "warmup": 2, "width": 8, "models": 2} for p in ("frepo", "krr")}}
METHODS = ["frepo", "isa"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist5k_path):
    work = tiny_workdir(tmp_path_factory.mktemp("wf_kernel"), {"frepo.yaml": TINY, "featnet.yaml": {"epochs": 1}},
                        tiny_data=mnist5k_path,
                        methods=METHODS, ipcs=[1], tables=["isa_t6"], figures=[])
    # what the tests read (isa_t6 and ISA's side tables of the default run), not the grid figures and fair tables
    _snakemake(work, "results/tables/isa_t6.md", "results/tables/isa/recall_mnist5k_ipc1.md",
               "results/tables/isa/information_mnist5k_ipc1.md")
    return work


def test_frepo_and_isa_through_both_protocols_into_isa_t6(tiny_run):
    for method in METHODS:
        for protocol in ("frepo", "krr"):
            cell = json.loads((tiny_run / f"results/eval/{protocol}/{method}/mnist5k/ipc1/s0.json").read_text())
            assert cell["n_models"] == 2 and len(cell["accuracies"]) == 2
            assert cell["settings"]["steps"] == 4 and 0.0 <= cell["mean"] <= 100.0
        assert (tiny_run / f"results/distilled/{method}/mnist5k/ipc1/s0/it2.pt").exists()
    md = (tiny_run / "results/tables/isa_t6.md").read_text()
    for label in ("FRePo (ori)", "FRePo (KRR)", "ISA (ori)", "ISA (KRR)"):
        line = next(line for line in md.splitlines() if line.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d ± \d+\.\d", line), line
    assert "93.0" in next(line for line in md.splitlines() if line.startswith("| FRePo (ori) "))
    assert not list((tiny_run / "results").rglob("*.tmp*"))


def test_isa_recall_and_information_tables_join_the_default_run(tiny_run):
    recall = (tiny_run / "results/tables/isa/recall_mnist5k_ipc1.md").read_text()
    info = (tiny_run / "results/tables/isa/information_mnist5k_ipc1.md").read_text()
    for method in METHODS:
        assert re.search(rf"\| {method}\s+\| mnist5k .*\|\s+[01]\.\d+ \|", recall), recall
        assert re.search(rf"\| {method}\s+\| mnist5k .*\|\s+\d\.\d+ \|\s+\d\.\d+ \|", info), info
    assert (tiny_run / "results/tables/isa/recall_mnist5k_ipc1.csv").exists()


def test_isa_figure_targets_resolve_to_the_right_jobs(tiny_run):
    out = _snakemake(tiny_run, "results/figures/isa/fig5_mnist5k_ipc1.png", "results/figures/isa/fig8_mnist5k_ipc1.png",
                     "-n", "--quiet", "rules").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # Fig. 5: six discard variants distilled and evaluated (frepo exists); Fig. 8: snapshots 0 and 2 of frepo, isa
    assert jobs["distill"] == "6" and jobs["evaluate"] == "6" and jobs["evaluate_snapshot"] == "4", jobs
