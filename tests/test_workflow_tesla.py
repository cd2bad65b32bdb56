"""End to end through Snakemake on a tiny config: experts -> MTT windows -> tesla (with the experts' soft labels) and
mtt-isa -> protocol mtt -> table isa_t8."""
import json
import re

import pytest
import torch

from ddflow.io import load_pt
from tiny_workflow import snakemake as _snakemake
from tiny_workflow import tiny_workdir, write_tiny_mnist5k

pytestmark = pytest.mark.workflow

EVAL = {"mtt": {"epochs": 2, "models": 2}}
TINY_QUICK = {
    "experts.yaml": {"experts": 2, "epochs": 2, "block": 2, "batch": 32},
    "mtt.yaml": {"iterations": 2, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 2, "eval": EVAL},
    "tesla.yaml": {"iterations": 2, "teacher_label": True, "eval": EVAL},
    "mtt-isa.yaml": {"iterations": 2, "eval": EVAL},
}


@pytest.fixture(scope="module")
def tiny_run(mnist5k_path, tmp_path_factory):
    work = tmp_path_factory.mktemp("wf_tesla")
    write_tiny_mnist5k(mnist5k_path, work / "tiny.npz")
    tiny_workdir(work, TINY_QUICK, methods=["tesla", "mtt-isa"], ipcs=[1], tables=["isa_t8"], figures=[],
                 data={"mnist5k": {"npz": str(work / "tiny.npz")}})
    # what the test reads: isa_t8 (MTT + ISA) and TESLA's cell (no row of isa_t8), not the figures
    _snakemake(work, "results/tables/isa_t8.md", "results/eval/mtt/tesla/mnist5k/ipc1/s0.json")
    return work


def test_tesla_and_mtt_isa_through_the_mtt_protocol_into_isa_t8(tiny_run):
    r = tiny_run / "results"
    tesla = load_pt(r / "distilled/tesla/mnist5k/ipc1/s0.pt")
    assert tesla["labels"].shape == (10, 10) and torch.allclose(tesla["labels"].sum(1), torch.ones(10))
    assert tesla["lr"] > 0 and tesla["iterations"] == 2
    for method in ("tesla", "mtt-isa"):
        cell = json.loads((r / f"eval/mtt/{method}/mnist5k/ipc1/s0.json").read_text())
        assert cell["protocol"] == "mtt" and len(cell["accuracies"]) == 2 and 0 <= cell["mean"] <= 100
    t8 = (r / "tables/isa_t8.md").read_text()
    line = next(x for x in t8.splitlines() if x.startswith("| MTT + ISA "))
    assert re.search(r"\d+\.\d ± \d+\.\d", line), line
