"""benchmarks/holdout_search.py: the held-out split never touches the test split, is stratified and disjoint; the
candidates' changes merge into the hparams files."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hs():
    spec = importlib.util.spec_from_file_location("holdout_search", ROOT / "benchmarks" / "holdout_search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_holdout_split_comes_from_train_only(hs, tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (80, 28, 28, 1), dtype=np.uint8)
    x_train[:, 0, 0, 0] = np.arange(80)  # a pixel that names the image
    y_train = np.repeat(np.arange(10), 8)
    x_test = np.full((20, 28, 28, 1), 255, np.uint8)  # no test image may appear in either part
    np.savez(tmp_path / "mnist5k-prepared.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=np.repeat(np.arange(10), 2))
    out = hs.holdout_npz("mnist5k", tmp_path / "mnist5k-holdout.npz", 0.25, seed=0)
    d = np.load(out)
    fit, held = d["x_train"][:, 0, 0, 0], d["x_test"][:, 0, 0, 0]
    assert len(fit) == 60 and len(held) == 20
    assert set(fit.tolist()).isdisjoint(held.tolist())
    assert sorted(fit.tolist() + held.tolist()) == list(range(80))
    np.testing.assert_array_equal(np.bincount(d["y_test"]), np.full(10, 2))  # 25 % of each class
    np.testing.assert_array_equal(d["y_train"], y_train[fit])
    assert not (d["x_train"] == 255).all(axis=(1, 2, 3)).any()
    assert not list(tmp_path.glob("*.tmp.npz"))


def test_candidate_changes_merge_into_hparams(hs, tmp_path):
    hs.write_hparams(tmp_path, {"ead": {"quick": {"label_temperature": 3.0}}})
    ead = yaml.safe_load((tmp_path / "methods" / "ead.yaml").read_text())
    original = yaml.safe_load((ROOT / "workflow" / "hparams" / "methods" / "ead.yaml").read_text())
    assert ead["quick"]["label_temperature"] == 3.0
    assert ead["quick"]["net"] == original["quick"]["net"]  # the rest of the section is kept
    assert ead["paper"] == original["paper"]
    with pytest.raises(SystemExit, match="nosuch"):
        hs.write_hparams(tmp_path, {"nosuch": {"quick": {}}})
