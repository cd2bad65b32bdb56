from pathlib import Path

import pytest

from ddflow import hparams
from ddflow.errors import DdflowError
from ddflow.protocols import protocol_settings


def _write(tmp_path, name, text):
    path = tmp_path / hparams.subfolder(name) / f"{name}.yaml"   # methods/ or stages/ (hparams.hparams_file)
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)


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
    assert hp["iterations"] == hparams.resolve("dc", "mnist5k", 1, "quick")["iterations"] == 30
    assert hp["batch_real"] == 16 and hp["init"] == "real"
    assert hp["representative"]["pool"] == 64 and hp["eval"]["dc"]["augment"] == "dsa"


def _lists_dataset(method: str, dataset: str) -> bool:
    """Whether the method's hparams (or an ancestor's) name `dataset` in an override."""
    for doc in hparams._lineage(method, None):
        for rule in (doc.get("overrides") or []) + (doc.get("quick_overrides") or []):
            value = rule.get("when", {}).get("dataset", [])
            if dataset in (value if isinstance(value, list) else [value]):
                return True
    return False


def test_every_paper_cell_evaluates_on_the_methods_own_net_unless_its_eval_section_names_one():
    """GeorgeCazenavette/mtt-distillation distill.py line 36 (commit 50dccea): get_eval_pool(eval_mode 'S', model)
    evaluates on the model it distils with, e.g. Tiny ImageNet's ConvNetD4."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    grid = yaml.safe_load((root / "config.yaml").read_text())["grid"]["paper"]
    base = yaml.safe_load((root / "workflow" / "hparams" / "stages" / "protocols.yaml").read_text())
    checked = 0
    for method in grid["methods"]:
        datasets = list(grid["datasets"]) + (["tiny"] if _lists_dataset(method, "tiny") else [])
        for dataset in datasets:
            for ipc in grid["ipcs"]:
                hp = hparams.resolve(method, dataset, ipc, "paper")
                for name, specific in hp["eval"].items():
                    if "net" not in base[name]:
                        continue  # frepo / krr: FRePo's Conv from width and depth
                    expected = specific.get("net") or hp.get("net") or base[name]["net"]
                    assert protocol_settings(method, dataset, ipc, "paper", name)["net"] == expected, \
                        (method, dataset, ipc, name)
                    checked += 1
    assert checked > 100
    assert protocol_settings("mtt", "tiny", 10, "paper", "mtt")["net"] == "ConvNetD4"
    assert protocol_settings("mtt", "cifar10", 10, "paper", "mtt")["net"] == "ConvNet"
    # the quick preset distils MTT / EAD with ConvNetW32 and evaluates on ConvNet-128 (docs/families.md), stated
    for method, name in (("mtt", "mtt"), ("ead", "soft"), ("ead-literal", "soft")):
        assert hparams.resolve(method, "mnist5k", 1, "quick")["net"] == "ConvNetW32"
        for ipc in (1, 10):
            assert protocol_settings(method, "mnist5k", ipc, "quick", name)["net"] == "ConvNet"


def test_files_live_in_methods_and_stages_and_a_variant_in_its_familys_file(tmp_path):
    """hparams_file: stage and protocol settings in stages/, methods in methods/; a `variants:` entry of a family's
    file is a method id of its own that resolves as `inherit: <family>` (the six frepo-drop-* of ISA Fig. 5)."""
    root = hparams.hparams_dir()
    assert hparams.hparams_file("protocols").relative_to(root).as_posix() == "stages/protocols.yaml"
    assert hparams.hparams_file("dm").relative_to(root).as_posix() == "methods/dm.yaml"
    assert hparams.hparams_file("frepo-drop-hard20").relative_to(root).as_posix() == "methods/frepo.yaml"
    assert hparams.variant_family("frepo-drop-easy10") == "frepo" and hparams.variant_family("dm") is None
    assert hparams.resolve("frepo-drop-easy30", "cifar10", 10, "paper") == hparams.resolve("frepo", "cifar10", 10,
                                                                                           "paper")
    from ddflow.methods import REGISTRY
    declared = hparams.variants("frepo")
    assert len(declared) == 6 and all(v in REGISTRY for v in declared)
    assert REGISTRY["frepo-drop-hard10"].fixed["keep"] == pytest.approx(-0.9)   # negative: drop the hardest
    assert REGISTRY["frepo-drop-easy20"].fixed["keep"] == pytest.approx(0.8)
    _write(tmp_path, "fam", "paper: {lr: 1.0}\nvariants: {fam-a: {x: 1}}\n")
    assert hparams.resolve("fam-a", "x", 1, "paper", tmp_path) == {"lr": 1.0}
    with pytest.raises(DdflowError, match=r"no hyperparameter file for 'fam-b' \(methods/<method>.yaml"):
        hparams.resolve("fam-b", "x", 1, "paper", tmp_path)
    _write(tmp_path, "fam", "paper: {lr: 1.0}\nvariants: [fam-a]\n")
    with pytest.raises(DdflowError, match="variants must map each variant id"):
        hparams.variants("fam", tmp_path)


def test_a_file_read_again_is_a_fresh_copy_and_an_edit_is_seen_at_once(tmp_path):
    """ddflow.io parses each distinct text once (the paper grid's DAG reads the same hparams thousands of times):
    a caller's change to what it read never reaches the next reader, and a rewrite of the file (same size, within
    the same clock tick) is read as written."""
    _write(tmp_path, "m", "paper: {lr: 1.0, eval: {dc: {models: 20}}}\n")
    first = hparams.load_file("m", tmp_path)
    first["paper"]["eval"]["dc"]["models"] = 3
    first["paper"].pop("lr")
    assert hparams.load_file("m", tmp_path) == {"paper": {"lr": 1.0, "eval": {"dc": {"models": 20}}}}
    assert hparams.resolve("m", "mnist", 1, "paper", tmp_path)["eval"]["dc"]["models"] == 20
    _write(tmp_path, "m", "paper: {lr: 2.0, eval: {dc: {models: 20}}}\n")
    assert hparams.resolve("m", "mnist", 1, "paper", tmp_path)["lr"] == 2.0
    _write(tmp_path, "m", "[not, a, mapping]\n")
    with pytest.raises(DdflowError, match="an hparams file is a mapping"):
        hparams.load_file("m", tmp_path)
