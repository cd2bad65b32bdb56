"""The kernel family's datasets: imagenette / imagewoof class folders at 128 px, the downsampled-ImageNet npz
release (imagenet64), and each from a local npz; small synthetic files only."""
import numpy as np
import pytest
from PIL import Image

from ddflow import data
from ddflow.errors import DdflowError


def _write_folders(root, classes=10, per=2):
    wnids = [f"n0{i:07d}" for i in range(classes)]
    for split in ("train", "val"):
        for c, w in enumerate(wnids):
            d = root / "imagenette2-160" / split / w
            d.mkdir(parents=True)
            for k in range(per):
                a = np.zeros((160, 240, 3), np.uint8)      # landscape: the centre 160x160 square is class-coloured
                a[:, 40:200] = (10 * c, 20 + k, 200)
                a[:, :40] = 255                            # borders the centre crop removes
                a[:, 200:] = 255
                Image.fromarray(a).save(d / f"{w}_{k}.png")
    return wnids


def test_imagenette_folders_are_centre_cropped_to_128(tmp_path):
    _write_folders(tmp_path)
    out = data.prepare("imagenette", tmp_path / "nette.npz", root=tmp_path)
    a = data.load_arrays(out)
    assert a["x_train"].shape == (20, 128, 128, 3) and a["x_test"].shape == (20, 128, 128, 3)
    assert a["y_train"].tolist() == [c for c in range(10) for _ in range(2)]
    assert np.all(a["x_train"][5] == np.array([20, 21, 200], np.uint8))    # class 2, image 1, borders gone
    real = data.load_real(out, data.get_info("imagenette"))
    assert real.x_train.shape == (20, 3, 128, 128)


def test_imagewoof_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DdflowError, match="imagewoof not found"):
        data.prepare("imagewoof", tmp_path / "w.npz", root=tmp_path)


def test_imagenet64_downsampled_npz_release(tmp_path):
    rng = np.random.default_rng(0)
    planes = {}
    for name, n in (("train_data_batch_1", 3), ("train_data_batch_2", 2), ("val_data", 2)):
        x = rng.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
        planes[name] = x
        np.savez(tmp_path / f"{name}.npz", data=x.reshape(n, -1), labels=np.array([1, 1000, 7][:n]))
    out = data.prepare("imagenet64", tmp_path / "in64.npz", root=tmp_path)
    a = data.load_arrays(out)
    assert a["x_train"].shape == (5, 64, 64, 3) and a["y_train"].tolist() == [0, 999, 6, 0, 999]
    assert np.array_equal(a["x_train"][3], planes["train_data_batch_2"][0].transpose(1, 2, 0))  # R,G,B planes
    assert np.array_equal(a["x_test"][1], planes["val_data"][1].transpose(1, 2, 0))
    (tmp_path / "val_data.npz").unlink()
    with pytest.raises(DdflowError, match="downsampled ImageNet not found"):
        data.prepare("imagenet64", tmp_path / "x.npz", root=tmp_path)


@pytest.mark.parametrize("name,size,classes", [("imagenette", 128, 10), ("imagewoof", 128, 10),
                                               ("imagenet64", 64, 1000)])
def test_from_a_local_npz(tmp_path, name, size, classes):
    rng = np.random.default_rng(1)
    src = tmp_path / "src.npz"
    np.savez(src, x_train=rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8), y_train=np.array([0, 1, 2, 3]),
             x_test=rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8), y_test=np.array([classes - 1, 0]))
    a = data.load_arrays(data.prepare(name, tmp_path / "out.npz", npz=src))
    assert a["x_train"].shape == (4, size, size, 3) and a["y_test"].tolist() == [classes - 1, 0]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((1, 32, 32, 3), np.uint8), y_train=np.array([0]),
             x_test=np.zeros((1, 32, 32, 3), np.uint8), y_test=np.array([0]))
    with pytest.raises(DdflowError, match=f"{size}x{size}"):
        data.prepare(name, tmp_path / "bad_out.npz", npz=bad)
