"""ddflow.records: each file's checked loader refuses a foreign or mismatched file with an error naming it (the
evaluation cell, the feature-net checkpoint, the MTT manifest against a method's hparams), and the package keeps the
names every reader imports."""
import json

import pytest
import torch

import ddflow.records as records
from ddflow.data import get_info
from ddflow.errors import DdflowError
from ddflow.records.cell import load_cell
from ddflow.records.featnet import FEATNET_FORMAT, load_feature_net, save_feature_net
from ddflow.records.trajectories import check_manifest, manifest_path, sampler_id

CPU = torch.device("cpu")


def test_the_package_exports_the_names_readers_import():
    for name in ("DistilledSet", "load_distilled", "check_record", "cell_record", "load_cell", "FORMAT", "SPACES"):
        assert hasattr(records, name), name
    assert records.FORMAT == "ddflow.distilled/1" and records.SPACES == ("normalized", "pixels", "zca")


def test_an_evaluation_cell_round_trips_and_a_broken_one_names_its_file(tmp_path):
    info = get_info("mnist5k")
    rec = records.DistilledSet(images=torch.zeros(10, 1, 28, 28), labels=torch.arange(10), method="dm",
                               dataset="mnist5k", ipc=1, seed=2, mean=info.mean, std=info.std, preset="quick")
    cell = records.cell_record(rec, "dc", {"models": 2}, [50.0, 52.0], 1.5, {"peak_mb": 3.0})
    assert cell["mean"] == 51.0 and cell["std"] == 1.0 and cell["n_models"] == 2 and cell["peak_mb"] == 3.0
    path = tmp_path / "s2.json"
    path.write_text(json.dumps(cell))
    assert load_cell(path) == cell
    path.write_text(json.dumps({k: v for k, v in cell.items() if k != "seed"}))
    with pytest.raises(DdflowError, match=r"s2\.json: evaluation cell lacks 'seed'"):
        load_cell(path)
    path.write_text(json.dumps({**cell, "accuracies": []}))
    with pytest.raises(DdflowError, match=r"s2\.json: evaluation cell holds no accuracies"):
        load_cell(path)
    path.write_text("[1, 2]")
    with pytest.raises(DdflowError, match=r"s2\.json: an evaluation cell is a JSON object, got list"):
        load_cell(path)


def test_a_feature_net_checkpoint_loads_into_its_net_and_refuses_another_dataset(tmp_path):
    from ddflow.nets import build_net
    info = get_info("mnist5k")
    torch.manual_seed(0)
    net = build_net("ConvNetW32", info.channels, info.classes, info.size)
    out = tmp_path / "net.pt"
    obj = save_feature_net(out, "ConvNetW32", "mnist5k", net.state_dict(), test_accuracy=90.0, settings={})
    assert obj["format"] == FEATNET_FORMAT and list(obj)[:4] == ["format", "net", "dataset", "state_dict"]
    loaded = load_feature_net(out, info, CPU)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded.eval()(x), net.eval()(x))
    with pytest.raises(DdflowError, match=r"net\.pt: feature net of dataset 'mnist5k', expected 'mnist'"):
        load_feature_net(out, get_info("mnist"), CPU)
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(DdflowError, match=r"x\.pt: not a ddflow feature net file"):
        load_feature_net(tmp_path / "x.pt", info, CPU)


def test_an_mtt_manifest_must_match_the_hparams_and_hold_the_last_window():
    hp = {"sampler": "mtt", "expert_epochs": 2, "max_start_epoch": 3, "net": "ConvNet", "prep": "raw"}
    assert sampler_id(hp) == "mtt-m2-t3"
    assert manifest_path("cifar10", hp) == "results/trajectories/cifar10/raw/ConvNet/mtt-m2-t3.json"
    man = {"expert_epochs": 2, "max_start_epoch": 3, "experts": ["e0.pt", "e1.pt"], "epochs": [4, 4]}
    check_manifest(man, hp, "m.json")                           # the last window [2, 4] is within 4 epochs
    with pytest.raises(DdflowError, match=r"m\.json: manifest expert_epochs 2 != hparams 3"):
        check_manifest(man, {**hp, "expert_epochs": 3}, "m.json")
    with pytest.raises(DdflowError, match=r"expert window up to epoch 4 beyond the trained epochs of \['e1.pt'\]"):
        check_manifest({**man, "epochs": [4, 3]}, hp, "m.json")
    with pytest.raises(DdflowError, match="unknown checkpoint sampler 'x'; known: mtt, ead"):
        sampler_id({**hp, "sampler": "x"})
