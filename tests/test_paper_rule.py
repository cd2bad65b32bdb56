"""The papers' selection rule beside ours: hparams `paper_rule`, the snapshot iterations it adds, the
table's "ours (paper's rule)" row (best of the periodic test evaluations, chosen on test), and the workflow's
extra snapshot evaluations only with config paper_rule: true."""
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from ddflow import hparams
from ddflow.errors import DdflowError
from ddflow.report.paper_rule import LABEL, best_per_seed, select, split_cells
from ddflow.report.tables import build_table, write_table
from ddflow.settings import rule_iterations, snapshot_iterations
from test_distill import ROOT

SPEC = ROOT / "workflow" / "papers" / "dream_t1.yaml"
HP = ROOT / "workflow" / "hparams"


def _cell(tmp_path, method, ipc, seed, accs, it=None, protocol="mtt", dataset="mnist", iterations=100, val=None):
    """A final cell (it None) or a paper-rule snapshot cell at the workflow's paths; its validation accuracies `val`
    (default: the test accuracies)."""
    base = tmp_path / "results" / "eval" / protocol / method / dataset / f"ipc{ipc}"
    p = base / f"s{seed}.json" if it is None else base / f"s{seed}" / "paper_rule" / f"it{it}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"protocol": protocol, "method": method, "dataset": dataset, "ipc": ipc, "seed": seed,
                             "iterations": iterations if it is None else it, "accuracies": accs,
                             "val_accuracies": accs if val is None else val}))
    return p


# ---- hparams --------------------------------------------------------------------------------------------------
def test_the_five_methods_have_the_papers_cadence_and_others_none():
    # mtt-distillation distill.py: eval_it 100, num_eval 5; DREAM condense.py: it_test = arange(0, n_iter + 1, 40),
    # argument.py --repeat 1; IDC condense.py: it_test = [n_iter // 10, n_iter // 5, n_iter // 2, n_iter];
    # ISA script/distill.py: steps_per_eval=10000
    assert hparams.paper_rule("mtt", "cifar10", 10, "paper", HP) == {"every": 100, "models": 5}
    assert hparams.paper_rule("dream", "cifar10", 10, "paper", HP) == {"every": 40, "fractions": None, "models": 1}
    assert hparams.paper_rule("idc", "cifar10", 10, "paper", HP)["fractions"] == [0, 0.1, 0.2, 0.5]
    for m in ("frepo", "isa"):
        assert hparams.paper_rule(m, "cifar10", 1, "paper", HP)["every"] == 10000
    assert hparams.paper_rule("dm", "cifar10", 10, "paper", HP) is None
    # the rule is not a distillation hyperparameter: resolved hparams (and the records' identity) are unchanged
    assert "paper_rule" not in hparams.resolve("mtt", "cifar10", 10, "paper", HP)
    for m in ("mtt", "idc", "dream", "frepo", "isa"):
        hparams.check_file(m, HP)
        assert hparams.paper_rule(m, "mnist5k", 1, "quick", HP)  # the quick preset has a small cadence


@pytest.mark.parametrize("rule, match", [
    ({"every": 0}, "every"), ({"models": 0}, "models"), ({"models": None}, "models"),
    ({"every": None}, "exactly one"), ({"fractions": [0.5]}, "exactly one"),
    ({"every": None, "fractions": [1.5]}, "fractions"), ({"best": True}, "unknown"),
    ([100, 5], "mapping")])   # each merged into the paper section's {every: 5, models: 1}
def test_a_bad_paper_rule_is_an_error_naming_the_file_and_key(tmp_path, rule, match):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "m.yaml").write_text(yaml.safe_dump({"paper": {"iterations": 10, "paper_rule": {"every": 5,
                                                                                                "models": 1}},
                                                     "quick": {"paper_rule": rule}}))
    with pytest.raises(DdflowError, match=match) as e:
        hparams.paper_rule("m", "mnist5k", 1, "quick", tmp_path)
    assert "m.yaml" in str(e.value)


def test_the_rule_iterations_join_the_snapshots_and_stop_before_the_final_set():
    assert rule_iterations(500, {"every": 100}) == [0, 100, 200, 300, 400]
    assert rule_iterations(2000, {"fractions": [0, 0.1, 0.2, 0.5]}) == [0, 200, 400, 1000]   # IDC's it_test
    assert rule_iterations(4, {"fractions": [0, 0.1, 0.2, 0.5]}) == [0, 2]
    hp = {"iterations": 100, "snapshots": [0, 30]}
    assert snapshot_iterations(hp) == [0, 30]                                 # without the rule: as before
    assert snapshot_iterations(hp, {"every": 25, "models": 2}) == [0, 25, 30, 50, 75]


# ---- selection ------------------------------------------------------------------------------------------------
def test_the_best_per_seed_is_the_maximum_over_snapshots_and_final_earliest_on_a_tie():
    finals = {0: (100, 50.0), 1: (100, 70.0)}
    snaps = {0: {0: 10.0, 25: 60.0, 50: 60.0, 75: 55.0}, 1: {0: 10.0, 25: 65.0}}
    assert best_per_seed(finals, snaps, "x") == {0: (25, 60.0), 1: (100, 70.0)}   # tie 25/50 -> 25; final wins s1
    assert best_per_seed({0: (100, 60.0)}, {0: {50: 60.0}}, "x") == {0: (50, 60.0)}   # tie with the final
    with pytest.raises(DdflowError, match="every seed"):
        best_per_seed({0: (100, 50.0), 1: (100, 50.0)}, {0: {0: 10.0}}, "mtt/mtt/mnist/1")   # seed 1's snapshots


def test_table_row_paper_rule_beside_final_mean_over_seeds_of_each_seeds_best(tmp_path):
    cells = [_cell(tmp_path, "mtt", 1, 0, [50.0, 52.0]), _cell(tmp_path, "mtt", 1, 1, [70.0, 70.0]),
             _cell(tmp_path, "mtt", 1, 0, [60.0, 62.0], it=25), _cell(tmp_path, "mtt", 1, 0, [40.0, 40.0], it=50),
             _cell(tmp_path, "mtt", 1, 1, [64.0, 66.0], it=25), _cell(tmp_path, "mtt", 1, 1, [71.0, 71.0], it=50),
             _cell(tmp_path, "dm", 1, 0, [80.0], protocol="dc")]
    finals, rule = split_cells(cells)
    assert len(finals) == 3 and len(rule) == 4
    chosen = select(finals, rule)[("mtt", "mtt", "mnist", 1)]
    assert chosen["iterations"] == {0: 25, 1: 50} and chosen["mean"] == pytest.approx((61.0 + 71.0) / 2)
    assert chosen["std"] == pytest.approx(5.0)

    table = build_table(SPEC, cells, datasets=["mnist"], ipcs=[1])
    df = table["df"]
    mtt = df[df.method == "mtt"].iloc[0]
    assert mtt.ours_mean == pytest.approx(60.5) and mtt.n_models == 4   # ours (final): the snapshots not pooled in
    assert mtt.paper_rule_mean == pytest.approx(66.0) and mtt.paper_rule_iterations == "s0:it25 s1:it50"
    assert pd.isna(df[df.method == "dm"].iloc[0].paper_rule_mean)        # DM: no paper rule
    write_table(table, tmp_path / "t")
    md = (tmp_path / "t.md").read_text()
    lines = md.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("| MTT "))
    assert lines[i + 1].startswith(f"| MTT — {LABEL} ") and "66.0 ± 5.0 (it 25/50)" in lines[i + 1]
    assert "test-set selection, not a fair estimate" in md
    assert "best of periodic evaluations chosen on the test split, as the paper did" in md
    assert f"DM — {LABEL}" not in md


def test_without_paper_rule_cells_the_table_is_unchanged(tmp_path):
    cells = [_cell(tmp_path, "mtt", 1, 0, [50.0, 52.0])]
    table = build_table(SPEC, cells, datasets=["mnist"], ipcs=[1])
    assert "paper_rule_mean" not in table["df"].columns and not table.get("paper_rule")
    write_table(table, tmp_path / "t")
    assert LABEL not in (tmp_path / "t.md").read_text()


def test_a_missing_final_cell_for_a_seed_with_snapshots_is_an_error(tmp_path):
    cells = [_cell(tmp_path, "mtt", 1, 0, [50.0]), _cell(tmp_path, "mtt", 1, 0, [60.0], it=25),
             _cell(tmp_path, "mtt", 1, 1, [60.0], it=25)]
    with pytest.raises(DdflowError, match="every seed"):
        build_table(SPEC, cells, datasets=["mnist"], ipcs=[1])


# ---- workflow ---------------------------------------------------------------------------------------------------
def _planned(tmp_path, paper_rule):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.update(methods=["mtt", "dm"], ipcs=[1], datasets=["mnist5k"], tables=["dream_t1"], paper_rule=paper_rule)
    tmp_path.mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--directory", str(tmp_path),
                           "-s", str(ROOT / "Snakefile"), "--configfile", str(path)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.workflow
def test_dry_run_evaluates_the_papers_snapshots_only_with_paper_rule_on(tmp_path):
    """paper_rule auto (config.yaml's default) is on at the quick preset: the default run has the candidates."""
    off, on = _planned(tmp_path / "off", False), _planned(tmp_path / "on", "auto")
    # no such job planned (the rule's name still appears in the parse-time line listing each rule's torch threads)
    assert not re.search(r"^(rule )?evaluate_paper_rule\b", off, re.M)
    assert "paper_rule/" not in off and "--paper-rule" not in off
    # MTT quick at IPC 1: 50 iterations, fractions [0.5] -> 25 (its final set is its own cell); DM has no rule
    assert "results/eval/mtt/mtt/mnist5k/ipc1/s0/paper_rule/it25.json" in on
    assert "paper_rule/it0.json" not in on and "paper_rule/it50.json" not in on
    assert "/dm/mnist5k/ipc1/s0/paper_rule/" not in on
    assert on.count("rule evaluate_paper_rule:") == 1
    # the validation rule's candidates (MTT's final set and snapshot, with the rule on) score their models on the
    # validation split; DM has no rule, and with the rule off no protocol here chooses on the split
    for plan, with_split in ((off, ()), (on, ("mtt",))):
        evaluations = re.findall(r"python -m ddflow evaluate .*", plan)
        assert {m for m in ("mtt", "dm") if any(f"/{m}/mnist5k/" in e for e in evaluations)} == {"mtt", "dm"}
        for e in evaluations:
            method = "mtt" if "/mtt/mnist5k/" in e else "dm"
            assert ("--validation results/splits/mnist5k.npz" in e) == (method in with_split), e


def test_distill_with_paper_rule_adds_its_snapshots_and_changes_nothing_else(mnist5k_path, tmp_path):
    import shutil

    import torch

    from ddflow.records import load_distilled
    from ddflow.settings import distill_cell as run
    tiny_hparams = tmp_path / "hparams"
    shutil.copytree(HP, tiny_hparams)
    doc = yaml.safe_load((tiny_hparams / "methods" / "dm.yaml").read_text())
    doc["quick"].update(iterations=6, batch_real=4, snapshots=[0, 5])   # DM at a few cheap iterations
    doc["paper"]["paper_rule"] = {"every": 2, "models": 1}
    (tiny_hparams / "methods" / "dm.yaml").write_text(yaml.safe_dump(doc))
    cpu = torch.device("cpu")
    off = run("dm", "mnist5k", 1, 0, "quick", cpu, mnist5k_path, tmp_path / "off.pt", hp_dir=tiny_hparams,
              snapshot_dir=tmp_path / "off")
    on = run("dm", "mnist5k", 1, 0, "quick", cpu, mnist5k_path, tmp_path / "on.pt", hp_dir=tiny_hparams,
             snapshot_dir=tmp_path / "on", paper_rule=True)
    total = off.iterations
    assert sorted(p.name for p in (tmp_path / "off").iterdir()) == ["it0.pt", "it5.pt"]
    want = sorted({0, 5} | set(range(0, total, 2)))
    assert sorted(int(p.name[2:-3]) for p in (tmp_path / "on").iterdir()) == want
    assert torch.equal(off.images, on.images) and off.hparams == on.hparams and "paper_rule" not in on.hparams
    assert torch.equal(load_distilled(tmp_path / "on" / "it0.pt").images, load_distilled(tmp_path / "off" /
                                                                                          "it0.pt").images)


def test_methods_built_on_mtt_do_not_inherit_its_rule():
    for m in ("haba", "tesla", "mtt-isa"):
        hparams.check_file(m, HP)
        for preset, ds in (("paper", "cifar10"), ("quick", "mnist5k")):
            assert hparams.paper_rule(m, ds, 1, preset, HP) is None
