"""normalize_as: MTT (utils.py get_dataset), IDC and DREAM (data.py MEANS/STDS, lines 15-20) normalise CIFAR-100 with
CIFAR-10's mean/std. The runner loads the data with the method's statistics, the record keeps them, evaluation
reuses them, and a trajectory method refuses experts normalised otherwise."""
import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ddflow import hparams
from ddflow.cli import main as cli
from ddflow.data import get_info, load_arrays, normalized_as
from ddflow.errors import DdflowError
from ddflow.records import load_distilled
from ddflow.records.trajectories import check_normalization
from ddflow.settings import distill_cell as run

ROOT = Path(__file__).resolve().parents[1]



def test_normalized_as_takes_the_other_datasets_statistics():
    c100 = get_info("cifar100")
    as10 = normalized_as(c100, "cifar10")
    assert as10.mean == get_info("cifar10").mean and as10.std == get_info("cifar10").std
    assert as10.classes == 100 and as10.name == "cifar100"
    assert normalized_as(c100, None) is c100
    with pytest.raises(DdflowError, match="channels"):
        normalized_as(c100, "mnist")


def test_paper_hparams_normalise_cifar100_as_the_official_code_does():
    for method in ("mtt", "ead", "idc", "dream", "experts"):
        assert hparams.resolve(method, "cifar100", 10, "paper").get("normalize_as") == "cifar10", method
        assert hparams.resolve(method, "cifar10", 10, "paper").get("normalize_as") is None, method
    assert hparams.resolve("dm", "cifar100", 10, "paper").get("normalize_as") is None  # DC/DSA/DM: their own


def test_a_record_keeps_the_statistics_it_was_made_with_and_evaluation_reuses_them(mnist5k_path, tmp_path,
                                                                                    monkeypatch):
    hp_dir = tmp_path / "hp"
    shutil.copytree(ROOT / "workflow" / "hparams", hp_dir)
    doc = yaml.safe_load((hp_dir / "methods" / "random.yaml").read_text())
    doc["quick"] = {**doc.get("quick", {}), "normalize_as": "fmnist"}
    doc["quick"]["eval"] = {"dc": {"epochs": 1, "models": 1}}
    doc.pop("quick_overrides", None)
    (hp_dir / "methods" / "random.yaml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "random.pt"
    rec = run("random", "mnist5k", 1, 0, "quick", torch.device("cpu"), mnist5k_path, out, hp_dir=hp_dir)
    fm = get_info("fmnist")
    assert tuple(rec.mean) == fm.mean and tuple(rec.std) == fm.std
    x = torch.from_numpy(load_arrays(mnist5k_path)["x_train"][rec.extra["train_indices"].numpy()]).float() / 255
    expected = (x.permute(0, 3, 1, 2) - fm.mean[0]) / fm.std[0]
    assert torch.allclose(rec.images, expected, atol=1e-6)
    assert torch.allclose(rec.to_pixels(), x.permute(0, 3, 1, 2), atol=1e-6)
    import ddflow.stages.evaluate as evaluate_stage
    seen = []
    real_load = evaluate_stage.load_real
    monkeypatch.setattr(evaluate_stage, "load_real", lambda path, info, device: (seen.append(info),
                                                                                real_load(path, info, device))[1])
    cell = tmp_path / "cell.json"
    assert cli(["evaluate", "--distilled", str(out), "--data", str(mnist5k_path), "--protocol", "dc", "--preset",
                "quick", "--device", "cpu", "--hparams-dir", str(hp_dir), "--out", str(cell)]) == 0
    assert seen and seen[0].mean == fm.mean and seen[0].std == fm.std  # evaluation normalised as the record
    assert load_distilled(out).mean == rec.mean


def test_trajectory_methods_refuse_experts_normalised_otherwise():
    info = get_info("cifar100")
    own = {"mean": list(info.mean), "std": list(info.std)}
    check_normalization(own, info, "manifest")
    check_normalization({}, info, "manifest")  # files written before the experts recorded their statistics
    with pytest.raises(DdflowError, match="normalize_as"):
        check_normalization(own, dataclasses.replace(info, mean=get_info("cifar10").mean), "manifest")
