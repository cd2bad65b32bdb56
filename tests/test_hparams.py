import pytest

from ddflow import hparams
from ddflow.errors import DdflowError
from ddflow.protocols import protocol_settings


def _write(tmp_path, name, text):
    (tmp_path / f"{name}.yaml").write_text(text)


def test_resolution_order_paper_then_overrides_then_quick(tmp_path):
    _write(tmp_path, "m", """
paper: {lr: 1.0, iterations: 1000, eval: {dc: {epochs: 1000, models: 20}}}
overrides:
  - when: {dataset: cifar10, ipc: [50]}
    set: {lr: 10.0}
quick: {iterations: 10, eval: {dc: {models: 2}}}
quick_overrides:
  - when: {ipc: 50}
    set: {iterations: 5}
""")
    assert hparams.resolve("m", "mnist", 1, "paper", tmp_path)["lr"] == 1.0
    assert hparams.resolve("m", "cifar10", 50, "paper", tmp_path)["lr"] == 10.0
    assert hparams.resolve("m", "cifar10", 10, "paper", tmp_path)["lr"] == 1.0
    q = hparams.resolve("m", "cifar10", 50, "quick", tmp_path)
    assert q["lr"] == 10.0 and q["iterations"] == 5
    assert q["eval"] == {"dc": {"epochs": 1000, "models": 2}}  # nested dicts merge


def test_inherit_gives_a_variant_its_parents_values(tmp_path):
    _write(tmp_path, "base", "paper: {a: 1, b: 2}\nquick: {a: 0}\n")
    _write(tmp_path, "variant", "inherit: base\npaper: {b: 3}\n")
    assert hparams.resolve("variant", "x", 1, "paper", tmp_path) == {"a": 1, "b": 3}
    assert hparams.resolve("variant", "x", 1, "quick", tmp_path) == {"a": 0, "b": 3}


def test_bad_hparams_inputs_are_clear_errors(tmp_path):
    _write(tmp_path, "m", "paper: {a: 1}\nextra: 2\n")
    with pytest.raises(DdflowError, match="unknown top-level keys"):
        hparams.resolve("m", "x", 1, "paper", tmp_path)
    with pytest.raises(DdflowError, match="preset 'fast' unknown"):
        hparams.resolve("dm", "mnist", 1, "fast")
    with pytest.raises(DdflowError, match="no hyperparameter file"):
        hparams.resolve("nope", "mnist", 1, "paper")


def test_repository_hparams_match_the_official_defaults():
    dm = hparams.resolve("dm", "cifar10", 10, "paper")
    assert (dm["iterations"], dm["lr_img"], dm["momentum"], dm["batch_real"], dm["init"]) == \
        (20000, 1.0, 0.5, 256, "real")
    assert hparams.resolve("dm", "cifar10", 100, "paper")["lr_img"] == 10
    s = protocol_settings("dm", "cifar10", 10, "paper", "dc")
    assert (s["lr"], s["momentum"], s["weight_decay"], s["batch"], s["epochs"], s["augment"], s["models"]) == \
        (0.01, 0.9, 0.0005, 256, 1000, "dsa", 20)
    assert s["strategy"] == "color_crop_cutout_flip_scale_rotate"
    assert protocol_settings("dm", "mnist", 1, "paper", "dc")["strategy"] == "color_crop_cutout_scale_rotate"
    # DC's Table 1 baselines: MNIST with DC augmentation for 1000 epochs, elsewhere 300 epochs without
    r = protocol_settings("random", "mnist", 1, "paper", "dc")
    assert (r["epochs"], r["augment"], r["strategy"]) == (1000, "dc", "crop_scale_rotate")
    r = protocol_settings("herding", "cifar10", 1, "paper", "dc")
    assert (r["epochs"], r["augment"]) == (300, "none")


def test_quick_reductions_reach_grandchildren_after_all_paper_values(tmp_path):
    _write(tmp_path, "root",
           "paper: {iterations: 1000, eval: {epochs: 300}}\nquick: {iterations: 10, eval: {epochs: 5}}\n")
    _write(tmp_path, "child", "inherit: root\npaper: {eval: {epochs: 1000}}\n")
    _write(tmp_path, "grandchild", "inherit: child\npaper: {extra: 1}\n")
    assert hparams.resolve("grandchild", "x", 1, "paper", tmp_path) == {"iterations": 1000, "eval": {"epochs": 1000},
                                                                      "extra": 1}
    # the root's quick reductions apply after the child's paper values, to every descendant
    assert hparams.resolve("grandchild", "x", 1, "quick", tmp_path) == {"iterations": 10, "eval": {"epochs": 5},
                                                                      "extra": 1}
    _write(tmp_path, "loop", "inherit: loop\n")
    with pytest.raises(DdflowError, match="cycle"):
        hparams.resolve("loop", "x", 1, "paper", tmp_path)


def test_dsa_dream_quick_preset_gets_the_dc_quick_reductions():
    hp = hparams.resolve("dsa-dream", "mnist5k", 1, "quick")
    assert hp["iterations"] == 40 and hp["batch_real"] == 16 and hp["init"] == "real"
    assert hp["representative"]["pool"] == 64 and hp["eval"]["dc"]["augment"] == "dsa"
