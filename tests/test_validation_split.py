"""The validation split (ddflow.data.validation): class-balanced, fixed by its seed, inside the training split and
so disjoint from the test split, and carved out of what a method that asks for it distils from."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddflow import hparams
from ddflow.data import RealData, get_info, load_real
from ddflow.data.validation import carve, draw, load_split, write_split
from ddflow.errors import DdflowError


def test_draw_is_class_balanced_deterministic_and_without_repeats():
    y = np.repeat(np.arange(3), [10, 7, 12])
    a = draw(y, 3, 4, seed=0)
    assert np.array_equal(a, draw(y, 3, 4, seed=0))
    assert not np.array_equal(a, draw(y, 3, 4, seed=1))
    assert len(np.unique(a)) == 12 and np.all(np.diff(a) > 0)
    assert np.bincount(y[a], minlength=3).tolist() == [4, 4, 4]
    with pytest.raises(DdflowError, match="class 1 has 7"):
        draw(y, 3, 7, seed=0)


def test_carve_splits_the_training_split_and_leaves_the_test_split(tmp_path):
    info = get_info("mnist5k")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 28, 28, generator=g)
    y = torch.arange(30) % 10
    xt, yt = torch.rand(5, 1, 28, 28, generator=g), torch.arange(5)
    data = RealData(x, y, xt, yt, info)
    split = write_split(y.numpy(), 10, {"per_class": 1, "seed": 3}, "mnist5k", tmp_path / "v.npz")
    idx = load_split(tmp_path / "v.npz", "mnist5k", 30)
    assert np.array_equal(idx, split["val_idx"])
    c = carve(data, idx)
    assert len(c.y_train) == 20 and len(c.y_val) == 10
    # every training image lands in exactly one part; the test split is untouched
    rows = torch.cat([c.x_train, c.x_val]).flatten(1)
    assert torch.equal(torch.sort(rows.sum(1)).values, torch.sort(x.flatten(1).sum(1)).values)
    assert torch.equal(c.x_val, x[torch.from_numpy(idx)]) and torch.equal(c.x_test, xt)
    assert sorted(c.y_val.tolist()) == list(range(10))
    with pytest.raises(DdflowError, match="training split of 30"):
        load_split(tmp_path / "v.npz", "mnist5k", 31)
    with pytest.raises(DdflowError, match="'mnist5k', expected 'mnist'"):
        load_split(tmp_path / "v.npz", "mnist", 30)


def test_the_cli_writes_the_split_of_the_embedded_dataset_disjoint_from_its_test_split(tmp_path):
    data = tmp_path / "mnist5k.npz"
    env = {**__import__("os").environ}
    subprocess.run([sys.executable, "-m", "ddflow", "data", "--dataset", "mnist5k", "--out", str(data)], check=True,
                   env=env, capture_output=True)
    settings = hparams.resolve("validation", "mnist5k", 0, "quick")
    assert settings == {"per_class": 50, "seed": 0}
    out = tmp_path / "mnist5k-val.npz"
    subprocess.run([sys.executable, "-m", "ddflow", "validation-split", "--dataset", "mnist5k", "--data", str(data),
                    "--settings", json.dumps(settings), "--out", str(out)], check=True, env=env, capture_output=True)
    real = load_real(data, get_info("mnist5k"))
    idx = load_split(out, "mnist5k", len(real.y_train))
    assert len(idx) == 500 and np.bincount(real.y_train.numpy()[idx]).tolist() == [50] * 10
    c = carve(real, idx)
    assert len(c.y_train) + len(c.y_val) == len(real.y_train)
    # no validation image is a test image: the split indexes the training split only, and by content
    val = c.x_val.store.reshape(len(idx), -1)
    test = real.x_test.store.reshape(len(real.y_test), -1)
    val_keys = {r.tobytes() for r in val}
    assert not val_keys & {r.tobytes() for r in test}
