"""End to end through Snakemake on a tiny config: RTP distilled on mnist5k at budget 1 (29 decoded images per class),
evaluated under protocol rtp, into table ead_baselines (a copied hparams dir with the quick preset shrunk)."""
import json

import pytest

from ddflow.records import load_distilled
from tiny_workflow import snakemake as _snakemake
from tiny_workflow import tiny_workdir

pytestmark = pytest.mark.workflow

TINY = {"iterations": 2, "inner_steps": 2, "batch_syn": 2, "batch_real": 2,
        "eval": {"rtp": {"net": "ConvNetW32", "epochs": 1, "models": 2}}}


def test_rtp_cell_through_snakemake_into_ead_baselines(tmp_path, mnist5k_path):
    work = tiny_workdir(tmp_path, {"rtp.yaml": TINY}, tiny_data=mnist5k_path,
                        methods=["rtp"], ipcs=[1], tables=["ead_baselines"],
                        figures=[])
    _snakemake(work, "results/tables/ead_baselines.md")
    cell = json.loads((work / "results/eval/rtp/rtp/mnist5k/ipc1/s0.json").read_text())
    assert cell["n_models"] == 2 and len(cell["accuracies"]) == 2 and 0.0 <= cell["mean"] <= 100.0
    rec = load_distilled(work / "results/distilled/rtp/mnist5k/ipc1/s0.pt")
    extra = rec.extra
    assert extra["rtp"]["budget"] == 1 and extra["rtp"]["rows_per_class"] == 29 and len(rec.images) == 290
    assert extra["rtp"]["stored_floats"] == extra["rtp_basis"].numel() + extra["rtp_coeffs"].numel() == 7776
    md = (work / "results/tables/ead_baselines.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| RTP (IPC = float budget) "))
    assert "98.7" in line and f"{cell['mean']:.1f}" in line, line
    assert "29/470/2430 images per class on MNIST" in md
    assert not list((work / "results").rglob("*.tmp*"))
