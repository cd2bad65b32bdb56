"""The whole-dataset bound (ddflow.stages.whole): ConvNets trained on the full training split by the dc protocol's
loop, one cell per dataset, printed in every IPC column of a table's "Whole dataset" row beside DC's Table 1 value."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ddflow.cli import main
from ddflow.config import check
from ddflow.report.tables import build_table
from ddflow.settings import whole_settings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_settings_are_dc_evaluate_synset_on_the_full_split():
    s = whole_settings("cifar10", "paper", ROOT / "workflow" / "hparams")
    # DC main.py lines 22-27 (epoch_eval_train 300, lr_net 0.01, batch_train 256); utils.py evaluate_synset's SGD
    assert (s["epochs"], s["lr"], s["batch"], s["momentum"], s["weight_decay"]) == (300, 0.01, 256, 0.9, 0.0005)
    assert s["net"] == "ConvNet" and s["augment"] == "none" and s["models"] == 5


def _tiny_npz(path, rng):
    """A learnable toy mnist5k-shaped set: each class a bright square at its own place."""
    def split(n):
        y = np.repeat(np.arange(10), n)
        x = rng.integers(0, 40, size=(len(y), 28, 28, 1), dtype=np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 8, 2 * c:2 * c + 8] = 255
        return x, y
    (xtr, ytr), (xte, yte) = split(12), split(3)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def test_whole_cell_fills_every_ipc_column_of_its_row(tmp_path):
    hp = tmp_path / "hparams"
    shutil.copytree(ROOT / "workflow" / "hparams", hp)
    doc = yaml.safe_load((hp / "stages" / "whole.yaml").read_text())
    doc["quick"] = {"epochs": 20, "models": 2, "net": "ConvNetW32"}   # width 32: seconds on a shared CPU
    (hp / "stages" / "whole.yaml").write_text(yaml.safe_dump(doc))
    _tiny_npz(tmp_path / "toy.npz", np.random.default_rng(0))
    out = tmp_path / "eval" / "whole" / "mnist5k.json"
    args = ["whole", "--dataset", "mnist5k", "--data", str(tmp_path / "toy.npz"), "--preset", "quick",
            "--device", "cpu", "--hparams-dir", str(hp), "--out", str(out)]
    assert main(args) == 0
    cell = json.loads(out.read_text())
    assert cell["method"] == "whole" and cell["ipc"] == 0 and cell["n_models"] == 2 and cell["train_images"] == 120
    assert cell["settings"]["epochs"] == 20 and cell["preset"] == "quick" and cell["provenance"]["device"] == "cpu"
    assert min(cell["accuracies"]) > 50.0          # a learnable toy: far above chance (10 %)
    first = cell["accuracies"]
    assert main(args) == 0 and json.loads(out.read_text())["accuracies"] == first   # same names, same numbers

    table = build_table(ROOT / "workflow" / "papers" / "dream_t1.yaml", [out], datasets=["mnist5k"], ipcs=[1, 10])
    rows = table["df"][table["df"].row == "Whole dataset"]
    assert list(rows.ours_mean) == pytest.approx([cell["mean"]] * 2)
    assert list(rows.paper_mean) == [99.6, 99.6]         # DC Table 1, MNIST (mnist5k is compared as mnist)


def test_the_whole_row_is_accepted_by_the_config_check():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.update(methods=["random"], ipcs=[1], tables=["dream_t1"])
    check(cfg, ROOT / "workflow" / "hparams", ROOT / "workflow" / "papers")
