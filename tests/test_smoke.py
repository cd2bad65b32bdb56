"""`python -m ddflow smoke --tiny` (issue 14): every step runs end to end on the CPU at toy size and reports its
numbers beside the official code's, with the ratios, in smoke.json and smoke.md; a tiny budget truncates the loops
and the report says so."""
import json
import math

import pytest

from ddflow.cli import main
from ddflow.errors import DdflowError
from ddflow.smoke import OFFICIAL_SPEED, REFERENCES, STEPS, run_smoke, tiny_datasets

ACCURACY = ["dc_mnist_ipc1", "dm_cifar10_ipc10_snapshot", "dm_cifar10_ipc10_final"]
SPEED = ["dm_s_per_iteration", "dsa_s_per_iteration", "expert_s_per_epoch", "mtt_s_per_iteration", "eval_k1_s",
         "eval_k20_s"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_datasets(tmp_path_factory.mktemp("smoke-data"))


def test_tiny_smoke_runs_every_step_and_prints_references_and_ratios(tiny_data, tmp_path, capsys):
    out = tmp_path / "smoke"
    rc = main(["smoke", "--tiny", "--device", "cpu", "--threads", "1", "--out", str(out),
               "--mnist", str(tiny_data["mnist"]), "--cifar10", str(tiny_data["cifar10"])])
    assert rc == 0
    report = json.loads((out / "smoke.json").read_text())
    md = (out / "smoke.md").read_text()
    assert capsys.readouterr().out == md
    assert list(report["steps"]) == list(STEPS) and not any("error" in s for s in report["steps"].values())
    assert report["mode"] == "tiny" and report["comparable"] is False
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"]
    assert [r["name"] for r in report["accuracy"]] == ACCURACY
    assert [r["name"] for r in report["speed"]] == SPEED
    for r in report["accuracy"]:
        assert r["reached"] and not r["truncated"] and r["iterations"] == r["planned_iterations"]
        assert all(math.isfinite(r[k]) for k in ("mean", "std", "difference", "tolerance", "sigma"))
        assert r["tolerance"] == max(1.0, 2 * max(r["std"], r["official"]["std"]))
        assert r["official"]["mean"] == REFERENCES[r["name"]]["official"]["mean"]
        assert f"{r['official']['mean']:.2f} ± {r['official']['std']:.2f}" in md
    for r in report["speed"]:
        assert math.isfinite(r["ours"]) and r["ours"] > 0 and not r["truncated"]
        assert r["official"] == OFFICIAL_SPEED[r["name"]][0]
        assert r["ratio"] == pytest.approx(r["official"] / r["ours"])
        assert f"| {r['official']:.4g} | {r['ratio']:.2f}x |" in md
    for text in ("91.7 ± 0.5", "48.9 ± 0.6", "not comparable", "device: cpu", "torch "):
        assert text in md


def test_tiny_budget_truncates_the_loops_and_still_evaluates(tiny_data, tmp_path):
    report = run_smoke(tmp_path / "smoke", __import__("torch").device("cpu"), mnist=tiny_data["mnist"],
                       cifar10=tiny_data["cifar10"], tiny=True, budget=0.001, steps=["dc", "dm", "dsa", "eval"])
    md = (tmp_path / "smoke" / "smoke.md").read_text()
    acc = {r["name"]: r for r in report["accuracy"]}
    speed = {r["name"]: r for r in report["speed"]}
    dc, final = acc["dc_mnist_ipc1"], acc["dm_cifar10_ipc10_final"]
    assert dc["truncated"] and dc["iterations"] == 1 < dc["planned_iterations"] and math.isfinite(dc["mean"])
    assert final["truncated"] and final["iterations"] == 1 and math.isfinite(final["mean"])
    assert acc["dm_cifar10_ipc10_snapshot"]["reached"] is False  # the snapshot lies beyond the iteration reached
    assert speed["dsa_s_per_iteration"]["truncated"] and speed["eval_k20_s"]["ours"] is None
    assert all(s["truncated"] for s in report["steps"].values())
    for text in ("1/3 (truncated)", "not reached (time budget)", "not run: the step's time budget was spent"):
        assert text in md


def test_smoke_names_the_missing_dataset_flag(tmp_path):
    with pytest.raises(DdflowError, match="--cifar10 PATH.npz is needed by step"):
        run_smoke(tmp_path, __import__("torch").device("cpu"), steps=["dm"])
    with pytest.raises(DdflowError, match="--mnist .*no such file"):
        run_smoke(tmp_path, __import__("torch").device("cpu"), mnist=str(tmp_path / "nope.npz"), steps=["dc"])
