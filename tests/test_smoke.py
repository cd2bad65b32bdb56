"""`python -m ddflow smoke --tiny`: every step runs end to end on the CPU at toy size and reports its numbers beside
the official code's ("not comparable", no pass/fail, no speed ratios) in smoke.json and smoke.md; a tiny budget
truncates the loops and the report says so. Speed ratios only against a reference on the same kind of device."""
import json
import math
from pathlib import Path

import pytest
import yaml

from ddflow.cli import main
from ddflow.errors import DdflowError
from ddflow.smoke import (
    OFFICIAL_DEVICE,
    OFFICIAL_SPEED,
    REFERENCES,
    STEPS,
    references,
    run_smoke,
    same_device_kind,
    tiny_datasets,
)
from ddflow.smoke.report import markdown, verdict

ACCURACY = ["dc_mnist_ipc1", "dm_cifar10_ipc10_snapshot", "dm_cifar10_ipc10_final"]
SPEED = ["dm_s_per_iteration", "dsa_s_per_iteration", "expert_s_per_epoch", "mtt_s_per_iteration", "eval_k1_s",
         "eval_k20_s"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_datasets(tmp_path_factory.mktemp("smoke-data"))


def test_tiny_smoke_runs_every_step_and_prints_references_without_verdicts_or_ratios(tiny_data, tmp_path, capsys):
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
        assert r["ratio"] is None and f"| {r['official']:.4g} | - |" in md   # a tiny CPU run: no ratio to an H100
    for text in ("91.7 ± 0.5", "48.9 ± 0.6", "| not comparable (tiny run) |", "## Speed (not comparable: a tiny run; "
                 "no ratios)", "device: cpu", "torch "):
        assert text in md
    assert "fail" not in md.lower() and "pass" not in md.replace("(pass:", "").lower()
    assert all(r["pass"] is None for r in report["accuracy"]) and report["speed_comparable"] is False


def _full_report(device):
    """A full-scale report (as on a GPU machine) with one accuracy and one speed row, made on `device`."""
    acc = {"label": "DC, MNIST, IPC 1", "iterations": 1000, "planned_iterations": 1000, "models": 10, "mean": 91.5,
           "std": 0.4, "official": REFERENCES["dc_mnist_ipc1"]["official"], "paper": None,
           **verdict(91.5, 0.4, 91.92, 0.39)}
    speed = {"label": "DM s / iteration", "ours": 0.034, "official": 0.068, "ratio": 2.0, "source": "x", "note": ""}
    return {"mode": "full", "comparable": True, "official": "o", "official_device": OFFICIAL_DEVICE,
            "environment": {"device": device, "python": "3", "torch": "2", "ddflow": "0"}, "accuracy": [acc],
            "speed": [speed], "steps": {}, "budgets_s": {}, "wall_s": 1.0, "limit_s": 600}


def test_speed_ratios_only_against_a_reference_on_the_same_kind_of_device():
    assert same_device_kind("NVIDIA H100 80GB HBM3") and not same_device_kind("cpu")
    assert not same_device_kind("NVIDIA A100-SXM4-80GB")
    h100 = _full_report("NVIDIA H100 80GB HBM3")
    md = markdown({**h100, "speed_comparable": True})
    assert "| 0.034 | 0.068 | 2.00x |" in md and "| PASS |" in md
    cpu = _full_report("cpu")
    cpu["speed"][0]["ratio"] = None       # run_smoke drops the ratio when the device kinds differ
    md = markdown({**cpu, "speed_comparable": False})
    assert "## Speed (not comparable: the official figures were measured on an H100, this run on cpu; no ratios)" \
        in md and "| 0.034 | 0.068 | - |" in md and "x |" not in md
    assert "| PASS |" in md               # accuracy is compared on any device at the official scale


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


def test_reference_numbers_are_the_workflow_yaml_shipped_with_the_package():
    """workflow/smoke.yaml is the one source (src/ddflow/smoke/references.yaml links to it); the loader checks it."""
    root = Path(__file__).resolve().parents[1]
    assert references.PATH.resolve() == (root / "workflow" / "smoke.yaml").resolve()
    refs = references.load()
    assert REFERENCES == refs["accuracy"] and OFFICIAL_SPEED == refs["speed"] and OFFICIAL_DEVICE == "H100"
    assert REFERENCES["dc_mnist_ipc1"]["official"]["mean"] == 91.92 and OFFICIAL_SPEED["eval_k20_s"][0] == 166.0
    doc = yaml.safe_load((root / "workflow" / "smoke.yaml").read_text())
    del doc["speed"]["eval_k1_s"]
    with pytest.raises(DdflowError, match=r"smoke\.yaml: speed must hold exactly .*eval_k1_s"):
        references.parse(doc, root / "workflow" / "smoke.yaml")
    doc = yaml.safe_load((root / "workflow" / "smoke.yaml").read_text())
    doc["accuracy"]["dc_mnist_ipc1"]["official"]["mean"] = "high"
    with pytest.raises(DdflowError, match=r"accuracy\.dc_mnist_ipc1\.official\.mean .* must be numbers"):
        references.parse(doc)
