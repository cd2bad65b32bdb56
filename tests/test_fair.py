"""Fair-comparison outputs: DD-Ranking's robust scores against hand computations, the storage count of one set of
each kind against a hand count, and both tables and the accuracy-vs-storage figure built from small fake files."""
import json
import math
import shutil
import subprocess

import pandas as pd
import pytest
import torch

from ddflow.errors import DdflowError
from ddflow.records import DistilledSet
from ddflow.report.fair import accuracy_vs_storage
from ddflow.report.formats import latex_document
from ddflow.report.robust import (
    augmentation_robust,
    build_robust,
    check_settings,
    label_robust,
    normalise,
    write_robust,
)
from ddflow.report.storage import build_cost_storage, set_kind, storage, write_cost_storage

MNIST = dict(dataset="mnist", mean=(0.1307,), std=(0.3081,))   # 10 classes of 1 x 28 x 28 = 784 values


def _set(method="dm", ipc=2, labels=None, **kw) -> DistilledSet:
    n = 10 * ipc
    y = torch.arange(10).repeat_interleave(ipc) if labels is None else labels
    return DistilledSet(images=torch.zeros(n, 1, 28, 28), labels=y, method=method, ipc=ipc, seed=0, **MNIST, **kw)


# ---- scores ------------------------------------------------------------------------------------------------------
def test_label_robust_score_by_hand():
    # DD-Ranking README: alpha = w IOR - (1 - w) HLR, LRS = (e^alpha - e^-1) / (e - e^-1); soft_label.py lines 561-564.
    # HLR = 0.99 - 0.90 = 0.09, IOR = 0.95 - 0.80 = 0.15, alpha = 0.5 * 0.15 - 0.5 * 0.09 = 0.03;
    # e^0.03 = 1.0304545, e^-1 = 0.3678794, e = 2.7182818: LRS = 0.6625751 / 2.3504024 = 0.281899
    s = label_robust(real_hard=0.99, syn_hard=0.90, syn_any=0.95, rdm_any=0.80, w=0.5)
    assert s["hlr"] == pytest.approx(0.09) and s["ior"] == pytest.approx(0.15)
    assert s["alpha"] == pytest.approx(0.03) and s["lrs"] == pytest.approx(0.281899, abs=1e-6)
    # w = 1: IOR alone; the map sends -1, 0, 1 to 0, 1/(e+1), 1
    assert label_robust(0.99, 0.90, 0.95, 0.80, w=1.0)["alpha"] == pytest.approx(0.15)
    assert normalise(-1) == pytest.approx(0.0) and normalise(1) == pytest.approx(1.0)
    assert normalise(0) == pytest.approx(1 / (math.e + 1))
    with pytest.raises(DdflowError, match="fraction"):
        label_robust(99.0, 90.0, 95.0, 80.0)          # percentages are refused, not silently saturated


def test_augmentation_robust_score_by_hand():
    # aug_robust.py lines 577-580: beta = g (syn_aug - rdm_aug) + (1 - g) (syn_naug - rdm_naug)
    # = 0.5 * (0.60 - 0.50) + 0.5 * (0.40 - 0.38) = 0.06; e^0.06 = 1.0618365: ARS = 0.6939571 / 2.3504024 = 0.295250
    s = augmentation_robust(0.60, 0.50, 0.40, 0.38, g=0.5)
    assert s["beta"] == pytest.approx(0.06) and s["ars"] == pytest.approx(0.295250, abs=1e-6)
    with pytest.raises(DdflowError, match="augmentation_weight"):
        augmentation_robust(0.6, 0.5, 0.4, 0.38, g=1.5)


def test_settings_are_checked():
    assert check_settings({})["label_weight"] == 0.5
    with pytest.raises(DdflowError, match="unknown key"):
        check_settings({"lrs_lambda": 0.5})
    with pytest.raises(DdflowError, match="no_aug_protocol"):
        check_settings({"no_aug_protocol": "noaug"})


def _cell(tmp_path, protocol, method, ipc, accs, dataset="mnist", seed=0, augment="dc", seconds=10.0):
    p = tmp_path / "cells" / f"{protocol}-{method}-{dataset}-{ipc}-{seed}.json"
    p.parent.mkdir(exist_ok=True)
    p.write_text(json.dumps({"protocol": protocol, "method": method, "dataset": dataset, "ipc": ipc, "seed": seed,
                             "accuracies": accs, "settings": {"augment": augment}, "seconds": seconds,
                             "n_models": len(accs), "peak_rss_mb": 300.0}))
    return p


def test_robust_table_from_fake_cells(tmp_path):
    cells = [_cell(tmp_path, "dc", "dm", 1, [90.0, 92.0]), _cell(tmp_path, "dc", "random", 1, [80.0]),
             _cell(tmp_path, "dc", "whole", 0, [99.0]), _cell(tmp_path, "dc-noaug", "dm", 1, [40.0], augment="none"),
             _cell(tmp_path, "dc-noaug", "random", 1, [38.0], augment="none"),
             _cell(tmp_path, "frepo", "frepo", 1, [95.0], augment=True)]
    df = build_robust(cells, {"dm": "dc", "random": "dc", "frepo": "frepo"},
                      {("frepo", "mnist", 1): True}, {"label_weight": 0.5})
    dm = df[df.method == "dm"].iloc[0]
    # HLR = 0.99 - 0.91 = 0.08, IOR = 0.91 - 0.80 = 0.11: alpha = 0.015; beta = 0.5 * 0.11 + 0.5 * 0.02 = 0.065
    assert dm.hlr == pytest.approx(0.08) and dm.ior == pytest.approx(0.11)
    assert dm.lrs == pytest.approx(normalise(0.015)) and dm.ars == pytest.approx(normalise(0.065))
    assert dm.ddranking_code_lrs == pytest.approx(normalise(1.5))   # the same cells fed in percent, as its code does
    fr = df[df.method == "frepo"].iloc[0]                            # learned labels, no hard-label cell, no Random
    assert fr.labels == "learned" and pd.isna(fr.lrs) and "frepo-hard/frepo" in fr.missing
    assert "frepo/random" in fr.missing and "frepo-noaug/frepo" in fr.missing
    assert df[df.method == "random"].iloc[0].ior == pytest.approx(0.0)
    write_robust(df, tmp_path / "out" / "robust")
    md = (tmp_path / "out" / "robust.md").read_text()
    assert "| +0.080 " in md and "| +0.000 " in md and "—" in md   # signs kept (no number parsing)
    assert "\\begin{table}" in (tmp_path / "out" / "robust.tex").read_text()
    assert (tmp_path / "out" / "robust.html").exists() and (tmp_path / "out" / "robust.csv").exists()


# ---- storage -----------------------------------------------------------------------------------------------------
def test_storage_images_with_hard_labels():
    s = storage(_set())                      # 20 images x 784 = 15,680 floats; labels free
    assert s["kind"] == "images" and s["floats"] == 15_680 and s["bytes_per_class"] == 15_680 * 4 / 10
    assert s["ipc_equivalent"] == pytest.approx(2.0)


def test_storage_learned_labels_and_lr():
    soft = torch.full((20, 10), 0.1)
    s = storage(_set("tesla", labels=soft, lr=0.01))  # 15,680 + 20 x 10 labels + 1 lr = 15,881
    assert s["kind"] == "learned" and (s["images"], s["labels"], s["lr"]) == (15_680, 200, 1)
    assert s["floats"] == 15_881
    assert storage(_set("mtt", lr=0.01))["floats"] == 15_681


def test_storage_multiformation():
    s = storage(_set("idc", factor=2))       # stored: 20 images of 28 x 28; trained on 20 x 2^2 = 80 of 14 x 14
    assert s["kind"] == "multi-formation" and s["floats"] == 15_680 and s["trained_images"] == 80


def test_storage_haba():
    from ddflow.ops.hallucinator import storage as haba_storage
    bases = torch.zeros(10, 1, 1, 28, 28)                   # one basis per class: 7,840
    hals = torch.nn.ModuleList([torch.nn.Conv2d(1, 3, 3), torch.nn.Conv2d(1, 3, 3)])  # (27 + 3) x 2 = 60
    r = _set("haba", ipc=2, lr=0.02)
    r.extra.update({"haba": {"images": 20, "storage": haba_storage(bases, hals, 784)}, "haba_bases": bases,
                    "haba_hallucinators": {k: v for k, v in hals.state_dict().items()}})
    s = storage(r)                           # 7,840 + 60 + 1 lr; not the 20 generated images
    assert set_kind(r) == "haba" and (s["bases"], s["hallucinators"], s["lr"]) == (7_840, 60, 1)
    assert s["floats"] == 7_901 and "images" not in s
    del r.extra["haba"]["storage"]           # a record without the method's count is refused, not recounted
    with pytest.raises(DdflowError, match="haba.storage"):
        storage(r)


def test_storage_haba_with_its_own_hallucinators():
    from ddflow.ops.hallucinator import build_hallucinators
    from ddflow.ops.hallucinator import storage as haba_storage
    # one MNIST hallucinator: two 3x3 convs 1->1 (9 + 1 each) and a 26 x 26 scale and shift = 20 + 1,352 = 1,372
    # (the count workflow/papers/dream_t1.yaml's HaBa note gives at 28x28x1); 5 of them, 1 basis per class, lr
    hals = build_hallucinators(5, 1, 1, 28, 3, generator=torch.Generator().manual_seed(0))
    bases = torch.zeros(10, 1, 28, 28)
    r = _set("haba", ipc=1, lr=0.02, labels=torch.arange(10).repeat(5))
    r.images = torch.zeros(50, 1, 28, 28)
    r.extra.update({"haba": {"images": 50, "storage": haba_storage(bases, hals, 784)}, "haba_bases": bases,
                    "haba_hallucinators": {k: v for k, v in hals.state_dict().items()}})
    assert storage(r)["hallucinators"] == 5 * 1_372 and storage(r)["floats"] == 7_840 + 6_860 + 1


# ---- cost table and figure ---------------------------------------------------------------------------------------
def test_cost_storage_table_and_figure_from_fake_files(tmp_path):
    paths = []
    for seed, secs in ((0, 30.0), (1, 90.0)):
        r = _set("dm", ipc=1, iterations=10, seconds=secs)
        r.seed = seed
        r.extra.update({"peak_rss_mb": 500.0 + seed, "provenance": {"device": "cpu"}})
        paths.append(tmp_path / f"dm{seed}.pt")
        r.save(paths[-1])
    cells = [_cell(tmp_path, "dc", "dm", 1, [50.0, 60.0], seed=0, seconds=20.0),
             _cell(tmp_path, "dc", "dm", 1, [70.0], seed=1, seconds=40.0)]
    df = build_cost_storage(paths, cells, {"dm": "dc"})
    row = df.iloc[0]
    assert (row.seeds, row.floats, row.kind) == (2, 7_840, "images")
    assert row.distill_seconds == pytest.approx(60.0) and row.device_hours == pytest.approx(120 / 3600)
    assert row.peak_rss_mb == 501.0 and row.eval_seconds == pytest.approx(30.0) and row.accuracy == pytest.approx(60)
    write_cost_storage(df, tmp_path / "out" / "cost")
    assert "7,840" in (tmp_path / "out" / "cost.md").read_text()
    assert "Device-h" in (tmp_path / "out" / "cost.tex").read_text()
    accuracy_vs_storage(df, "mnist", tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.pdf").exists()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_fair_tables_compile_with_pdflatex(tmp_path):
    """Both tables' LaTeX (escaped: —, −, ·, ², e^α, the `missing` names with underscores) in a booktabs document."""
    cells = [_cell(tmp_path, "dc", "dm", 1, [90.0]), _cell(tmp_path, "dc", "random", 1, [80.0])]
    write_robust(build_robust(cells, {"dm": "dc", "random": "dc"}, {}), tmp_path / "robust")
    r = _set("idc", ipc=1, factor=2, seconds=5.0)
    r.save(tmp_path / "idc.pt")
    write_cost_storage(build_cost_storage([tmp_path / "idc.pt"], [], {"idc": "idc"}), tmp_path / "cost")
    (tmp_path / "doc.tex").write_text(latex_document(["\\input{robust.tex}", "\\input{cost.tex}"]))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Missing character" not in (tmp_path / "doc.log").read_text(errors="replace")
