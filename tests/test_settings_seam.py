"""The settings seam: every stage job runs with the settings dict its rule resolved (`--settings`), so what Snakemake
hashes is what the job runs with; the runners (ddflow.stages) resolve nothing; the evaluation protocols are handed
the seed id instead of looking a method up."""
import ast
import json
import re
from pathlib import Path

import pytest

from ddflow import hparams
from ddflow.cli import main
from ddflow.records import load_distilled
from ddflow.settings import distill_settings, eval_settings, settings_method, whole_settings

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ddflow"
RESOLVERS = {"resolve", "paper_rule", "protocol_settings", "distill_settings", "eval_settings", "whole_settings"}


def _names(path: Path) -> set[str]:
    """Every imported module and name of a module, and every function it calls by attribute (x.resolve(...))."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out |= {node.module or ""} | {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            out.add(node.func.attr)
    return out


@pytest.mark.parametrize("module", sorted(p.name for p in (SRC / "stages").glob("*.py")))
def test_no_stage_runner_resolves_settings(module):
    names = _names(SRC / "stages" / module)
    modules = {n.split(".")[-1] for n in names}
    assert not names & RESOLVERS and not modules & {"hparams", "settings"}, module


def test_the_evaluation_cell_code_never_imports_methods():
    """protocols/cell.py: the model stream names the protocol and the cell, never the method."""
    names = _names(SRC / "protocols" / "cell.py")
    assert not names & {"methods", "REGISTRY", "get_method", "seed_id"}
    assert not any(n.startswith(("methods", "ddflow.methods")) for n in names)


def test_the_stage_rules_hand_their_resolved_settings_to_the_job():
    """distill, evaluate, evaluate_paper_rule, evaluate_snapshot, whole_dataset_cell: `--settings
    {params.settings:q}` and no --hparams-dir (the job would re-resolve from it)."""
    rules = {}
    for smk in ("distill.smk", "evaluate.smk"):
        text = (ROOT / "workflow" / "rules" / smk).read_text()
        rules.update(re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", text, re.M | re.S))
    for name in ("distill", "evaluate", "evaluate_paper_rule", "evaluate_snapshot", "whole_dataset_cell"):
        assert "--settings {params.settings:q}" in rules[name] and "--hparams-dir" not in rules[name], name


def test_the_distill_job_runs_with_the_given_settings_exactly(mnist5k_path, tmp_path):
    settings = distill_settings("random", "mnist5k", 1, "quick")
    settings["hparams"]["eval"]["dc"]["models"] = 7   # a value no hparams file gives: the job must take it as is
    out = tmp_path / "r.pt"
    assert main(["distill", "--method", "random", "--dataset", "mnist5k", "--data", str(mnist5k_path), "--ipc", "1",
                 "--seed", "0", "--preset", "quick", "--device", "cpu", "--out", str(out), "--hparams-dir",
                 str(tmp_path / "nowhere"), "--settings", json.dumps(settings)]) == 0
    assert load_distilled(out).hparams == settings["hparams"]


def test_the_evaluate_job_runs_with_the_given_settings_exactly(mnist5k_path, tmp_path):
    rec = tmp_path / "r.pt"
    assert main(["distill", "--method", "random", "--dataset", "mnist5k", "--data", str(mnist5k_path), "--ipc", "1",
                 "--seed", "0", "--preset", "quick", "--device", "cpu", "--out", str(rec)]) == 0
    settings = eval_settings("random", "mnist5k", 1, "quick", "dc")
    settings.update(epochs=2, models=1)
    out = tmp_path / "cell.json"
    args = ["evaluate", "--distilled", str(rec), "--data", str(mnist5k_path), "--protocol", "dc", "--device", "cpu",
            "--threads", "1", "--out", str(out), "--hparams-dir", str(tmp_path / "nowhere")]
    assert main([*args, "--settings", json.dumps(settings)]) == 0
    cell = json.loads(out.read_text())
    assert cell["settings"] == settings and cell["n_models"] == 1
    assert main([a for a in args if a != "--data" and a != str(mnist5k_path)] + ["--settings", "{}"]) == 2  # no data


def test_settings_are_what_the_files_resolve_to():
    hp = hparams.resolve("dm", "mnist5k", 1, "quick")
    s = distill_settings("dm", "mnist5k", 1, "quick")
    assert s["hparams"] == hp and s["snapshots"] == sorted(n for n in hp["snapshots"] if n <= hp["iterations"])
    rule = hparams.paper_rule("dm", "mnist5k", 1, "quick")
    with_rule = distill_settings("dm", "mnist5k", 1, "quick", paper_rule=True)["snapshots"]
    assert rule is None or set(s["snapshots"]) <= set(with_rule)
    assert eval_settings("dm", "mnist5k", 1, "quick", "dc", models=3)["models"] == 3
    assert settings_method("outside", "dm") == "dm" and settings_method("dm") == "dm"
    # DSA's 'auto' strategy: resolved once, by the dataset (DatasetInfo.strategy); no flip on MNIST
    assert eval_settings("dsa", "mnist5k", 1, "quick", "dc")["strategy"] == "color_crop_cutout_scale_rotate"
    assert whole_settings("cifar10", "paper")["net"] == "ConvNet"
