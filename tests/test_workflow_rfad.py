"""End to end through Snakemake on a tiny config: rfad distilled on mnist5k IPC 1 (from the training split minus
the validation split, which the workflow writes first) and evaluated under protocol rfad-nn (early stopping on that
split)."""
import json

import pytest
import torch

from ddflow.records import load_distilled
from tiny_workflow import snakemake, tiny_workdir

pytestmark = pytest.mark.workflow

TINY = {"iterations": 4, "width": 8, "n_models": 1, "batch_real": 32, "n_batches": 1, "valid_models": 2,
        "valid_every": 2, "eval": {"rfad-nn": {"width": 8, "iterations": 6, "valid_every": 2, "patience": 4,
                                                "models": 2}}}


def test_rfad_distils_with_the_validation_split_and_evaluates_under_rfad_nn(tmp_path, mnist5k_path):
    work = tiny_workdir(tmp_path, {"rfad.yaml": TINY}, tiny_data=mnist5k_path,
                        methods=["rfad"], ipcs=[1], tables=[], figures=[])
    snakemake(work, "results/eval/rfad-nn/rfad/mnist5k/ipc1/s0.json")
    cell = json.loads((work / "results/eval/rfad-nn/rfad/mnist5k/ipc1/s0.json").read_text())
    assert cell["n_models"] == 2 and len(cell["accuracies"]) == 2 and 0.0 <= cell["mean"] <= 100.0
    assert cell["settings"]["width"] == 8 and cell["settings"]["label_scale"] == 8
    rec = load_distilled(work / "results/distilled/rfad/mnist5k/ipc1/s0.pt")
    assert "validation split" in rec.extra["seen"] and rec.extra["best_iter"] in (0, 2, 4)
    assert rec.images.shape == (10, 1, 28, 28) and torch.equal(rec.labels, torch.arange(10))
    assert (work / "results/splits/mnist5k.npz").exists()
