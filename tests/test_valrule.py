"""The validation rule (ddflow.report.valrule): cells score their models on the validation split, the row
"ours (validation rule)" chooses each seed's candidate on it and reports that candidate's test accuracy once."""
import numpy as np
import pandas as pd
import pytest
import torch

from ddflow.data import RealData, get_info
from ddflow.data.validation import carve, draw, held_out
from ddflow.errors import DdflowError
from ddflow.protocols.registry import Scores, joined, scored
from ddflow.records import DistilledSet
from ddflow.report.tables import build_table, write_table
from ddflow.report.valrule import LABEL, chosen_per_seed, select
from test_paper_rule import SPEC, _cell

CPU = torch.device("cpu")


# ---- selection ------------------------------------------------------------------------------------------------
def test_each_seed_takes_the_candidate_best_on_validation_and_reports_its_test_mean_earliest_on_a_tie():
    finals = {0: (100, 50.0, 55.0), 1: (100, 80.0, 70.0)}   # seed -> (iteration, val mean, test mean)
    snaps = {0: {0: (10.0, 90.0), 25: (60.0, 61.0), 50: (60.0, 64.0)},   # val ties 25/50 -> 25; test prefers it0
             1: {25: (79.0, 75.0)}}                                     # the final set wins on val, not on test
    assert chosen_per_seed(finals, snaps, "x") == {0: (25, 61.0), 1: (100, 70.0)}
    assert chosen_per_seed({0: (100, 60.0, 1.0)}, {0: {50: (60.0, 2.0)}}, "x") == {0: (50, 2.0)}   # tie: earlier
    with pytest.raises(DdflowError, match="every seed"):
        chosen_per_seed({0: (100, 1.0, 1.0), 1: (100, 1.0, 1.0)}, {0: {0: (1.0, 1.0)}}, "mtt/mtt/mnist/1")


def _cells(tmp_path):
    """Two seeds of MTT where validation and test disagree, and DM (no paper rule, no candidates)."""
    return [_cell(tmp_path, "mtt", 1, 0, [50.0, 52.0], val=[58.0, 58.0]),
            _cell(tmp_path, "mtt", 1, 0, [60.0, 62.0], it=25, val=[40.0, 40.0]),   # best on test, poor on val
            _cell(tmp_path, "mtt", 1, 0, [55.0, 55.0], it=50, val=[59.0, 59.0]),   # best on val
            _cell(tmp_path, "mtt", 1, 1, [70.0, 70.0], val=[66.0, 66.0]),          # best on val and on test
            _cell(tmp_path, "mtt", 1, 1, [64.0, 66.0], it=25, val=[66.0, 60.0]),
            _cell(tmp_path, "dm", 1, 0, [80.0], protocol="dc", val=[81.0])]


def test_table_row_validation_rule_under_the_papers_rule_with_the_inflation(tmp_path):
    cells = _cells(tmp_path)
    finals = [c for c in cells if "paper_rule" not in str(c)]
    chosen = select(finals, [c for c in cells if "paper_rule" in str(c)])[("mtt", "mtt", "mnist", 1)]
    assert chosen["iterations"] == {0: 50, 1: 100} and chosen["mean"] == pytest.approx((55.0 + 70.0) / 2)
    assert chosen["std"] == pytest.approx(7.5)

    table = build_table(SPEC, cells, datasets=["mnist"], ipcs=[1])
    df = table["df"]
    mtt = df[df.method == "mtt"].iloc[0]
    assert mtt.ours_mean == pytest.approx(60.5)                       # ours (final): seeds' final cells
    assert mtt.paper_rule_mean == pytest.approx((61.0 + 70.0) / 2)   # chosen on test: it25 and the final set
    assert mtt.valrule_mean == pytest.approx(62.5) and mtt.valrule_iterations == "s0:it50 s1:it100"
    assert mtt.rule_inflation == pytest.approx(65.5 - 62.5)
    assert pd.isna(df[df.method == "dm"].iloc[0].valrule_mean)        # DM: one candidate, the final set
    write_table(table, tmp_path / "t")
    md = (tmp_path / "t.md").read_text()
    lines = md.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("| MTT "))
    assert lines[i + 1].startswith("| MTT — ours (paper's rule) ")
    assert lines[i + 2].startswith(f"| MTT — {LABEL} ") and "62.5 ± 7.5 (it 50/100; paper's rule +3.0)" in lines[i + 2]
    assert f"DM — {LABEL}" not in md and "their validation-rule value is ours (final)" in md
    assert "ours (validation rule): per seed" in md


def test_a_candidate_without_validation_accuracies_is_an_error_naming_the_cell(tmp_path):
    cells = _cells(tmp_path)
    _cell(tmp_path, "mtt", 1, 1, [64.0, 66.0], it=25, val=[])   # rewritten: made without the validation split
    with pytest.raises(DdflowError, match=r"s1/paper_rule/it25\.json: .*no val_accuracies"):
        build_table(SPEC, cells, datasets=["mnist"], ipcs=[1])


# ---- the cells: scores on the validation split of the same models ---------------------------------------------
def _data(n_train=60, n_test=20, classes=10):
    g = torch.Generator().manual_seed(0)
    info = get_info("mnist5k")
    return RealData(torch.rand(n_train, 1, 28, 28, generator=g), torch.arange(n_train) % classes,
                    torch.rand(n_test, 1, 28, 28, generator=g), torch.arange(n_test) % classes, info)


def test_scores_carry_the_same_models_accuracy_on_the_validation_split():
    data = _data()
    seen = []

    def acc(x, y):
        seen.append(len(y))
        return [float(len(y)), float(len(y)) + 1]   # two "models"

    assert scored(acc, data) == [20.0, 21.0] and scored(acc, data).val is None    # no split: no forward on it
    assert seen == [20, 20]
    val = scored(acc, held_out(data, draw(data.y_train.numpy(), 10, 2, 0)))
    assert val == [20.0, 21.0] and val.val == [20.0, 21.0]   # 2 per class x 10 classes
    both = joined([Scores([1.0], [2.0]), Scores([3.0], [4.0])])
    assert both == [1.0, 3.0] and both.val == [2.0, 4.0]
    assert joined([Scores([1.0], [2.0]), Scores([3.0])]).val is None
    with pytest.raises(DdflowError, match="validation accuracies"):
        Scores([1.0, 2.0], [1.0])


def test_validation_images_are_training_images_never_trained_on_and_not_test_images():
    data = _data()
    idx = draw(data.y_train.numpy(), 10, 2, 0)
    out = held_out(data, idx)
    assert len(out.x_train) == 0 and len(out.y_train) == 0          # the protocol is handed no training image
    assert torch.equal(out.x_val, data.x_train[torch.from_numpy(idx)]) and torch.equal(out.x_test, data.x_test)
    fit = carve(data, idx)        # a protocol that chooses on the split: its fit part excludes it
    fit_rows = {tuple(r.flatten().tolist()[:8]) for r in fit.x_train}
    assert not fit_rows & {tuple(r.flatten().tolist()[:8]) for r in out.x_val}
    assert not {tuple(r.flatten().tolist()[:8]) for r in data.x_test} & {tuple(r.flatten().tolist()[:8])
                                                                        for r in out.x_val}


def test_an_evaluation_cell_scores_its_models_on_the_validation_split(mnist5k_path, tmp_path):
    from ddflow.data.sources import load_arrays
    from ddflow.data.validation import write_split
    from ddflow.stages.evaluate import run

    info = get_info("mnist5k")
    y = np.asarray(load_arrays(mnist5k_path)["y_train"])
    split = tmp_path / "split.npz"
    write_split(y, info.classes, {"per_class": 3, "seed": 0}, "mnist5k", split)
    g = torch.Generator().manual_seed(0)
    record = DistilledSet(images=torch.randn(10, 1, 28, 28, generator=g), labels=torch.arange(10), method="random",
                          dataset="mnist5k", ipc=1, seed=0, mean=info.mean, std=info.std)
    settings = {"net": "ConvNet", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "batch": 256, "epochs": 1,
                "models": 2, "augment": "none"}
    torch.set_num_threads(1)
    cell = run(record, "dc", settings, mnist5k_path, CPU, out=tmp_path / "c.json", validation=split)
    assert len(cell["val_accuracies"]) == cell["n_models"] == 2 and cell["validation"]["images"] == 30
    assert cell["val_mean"] == pytest.approx(sum(cell["val_accuracies"]) / 2)
    plain = run(record, "dc", settings, mnist5k_path, CPU)
    assert plain["accuracies"] == cell["accuracies"] and "val_accuracies" not in plain   # the same models
