"""End to end through Snakemake on a tiny config: data -> experts (two blocks) -> checkpoint sampling -> mtt, haba,
ead, ead-literal -> evaluation (protocols mtt, haba and soft) -> tables dream_t1 and ead_claims."""
import json
import re

import pytest
import torch

from ddflow.io import load_pt
from tiny_workflow import snakemake as _snakemake
from tiny_workflow import tiny_workdir, write_tiny_mnist5k

pytestmark = pytest.mark.workflow

TINY_QUICK = {
    "experts.yaml": {"experts": 2, "epochs": 2, "block": 1, "batch": 32},
    "mtt.yaml": {"iterations": 2, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 2,
                 "eval": {"mtt": {"epochs": 2, "models": 2}}},
    "ead.yaml": {"iterations": 2, "pool": 3, "t_m": 2, "batch_real": 8, "eval": {"soft": {"epochs": 2, "models": 2}}},
    "random.yaml": {"eval": {"dc": {"epochs": 2, "models": 2}}},
    "haba.yaml": {"iterations": 2, "n_hallucinators": 2, "extractor_net": "ConvNetW32",
                  "eval": {"haba": {"epochs": 2, "models": 2}}},   # windows and steps: mtt's tiny values (inherited)
}
METHODS = ["mtt", "haba", "ead", "ead-literal", "random"]


@pytest.fixture(scope="module")
def tiny_run(mnist5k_path, tmp_path_factory):
    work = tmp_path_factory.mktemp("wft")
    write_tiny_mnist5k(mnist5k_path, work / "tiny.npz")
    tiny_workdir(work, TINY_QUICK, methods=METHODS, ipcs=[1], tables=["dream_t1", "ead_claims"], figures=[],
                 data={"mnist5k": {"npz": str(work / "tiny.npz")}})
    _snakemake(work)
    return work


def test_trajectory_workflow_experts_sampling_methods_evaluation_tables(tiny_run):
    r = tiny_run / "results"
    for i in (0, 1):  # one file per expert, each from its own block job (blocks of 1), then the block's receipt
        e = load_pt(r / f"experts/mnist5k/raw/ConvNetW32/e{i}.pt")
        assert e["index"] == i and e["epochs"] == 2 and e["params"]["classifier.weight"].shape[0] == 3
        assert (r / f"logs/experts/mnist5k/raw/ConvNetW32/block{i}.log").exists()
        receipt = json.loads((r / f"experts/mnist5k/raw/ConvNetW32/block{i}.json").read_text())
        assert receipt["indices"] == [i] and receipt["experts"] == [f"results/experts/mnist5k/raw/ConvNetW32/e{i}.pt"]
    man = json.loads((r / "trajectories/mnist5k/raw/ConvNetW32/mtt-m1-t2.json").read_text())
    assert man["experts"] == [f"results/experts/mnist5k/raw/ConvNetW32/e{i}.pt" for i in (0, 1)]
    pool = load_pt(r / "trajectories/mnist5k/raw/ConvNetW32/ead-p3.pt")
    assert pool["refs"].shape == (3, 2)
    mtt = load_pt(r / "distilled/mtt/mnist5k/ipc1/s0.pt")
    assert mtt["lr"] > 0 and mtt["images"].shape == (10, 1, 28, 28) and mtt["iterations"] == 2
    cell = json.loads((r / "eval/mtt/mtt/mnist5k/ipc1/s0.json").read_text())
    assert cell["protocol"] == "mtt" and len(cell["accuracies"]) == 2
    haba = load_pt(r / "distilled/haba/mnist5k/ipc1/s0.pt")  # the MTT manifest shared; 2 hallucinators x 10 bases
    assert haba["images"].shape == (20, 1, 28, 28) and haba["haba"]["images"] == 20 and haba["lr"] > 0
    assert json.loads((r / "eval/haba/haba/mnist5k/ipc1/s0.json").read_text())["n_models"] == 2  # its row's protocol
    ead = load_pt(r / "distilled/ead/mnist5k/ipc1/s0.pt")
    lit = load_pt(r / "distilled/ead-literal/mnist5k/ipc1/s0.pt")
    assert ead["labels"].shape == (10, 10) and torch.allclose(ead["labels"].sum(1), torch.ones(10))
    assert ead["coefficient"] == 1.0 and lit["coefficient"] == pytest.approx(1 - (100 - 10) / 10)
    for m in ("ead", "ead-literal"):
        cell = json.loads((r / f"eval/soft/{m}/mnist5k/ipc1/s0.json").read_text())
        assert cell["protocol"] == "soft" and 0 <= cell["mean"] <= 100
    md = (r / "tables/dream_t1.md").read_text()
    for label in ("MTT", "HaBa"):
        line = next(x for x in md.splitlines() if x.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d ± \d+\.\d", line), line
    claims = (r / "tables/ead_claims.md").read_text()
    for label in ("EAD (consistent form)", "EAD (paper's literal 1 - alpha)"):
        line = next(x for x in claims.splitlines() if x.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d ± \d+\.\d", line) and "98.4" in line, line
    assert not list(r.rglob("*.tmp*"))
    assert not (r / "resume").exists() or not list((r / "resume").rglob("*.pt"))
    out = _snakemake(tiny_run, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr
