"""Readers for the kernel family's ImageNet datasets (ISA appendix Table 7), used by ddflow.data.prepare.

imagenette / imagewoof (fast.ai; FRePo lib/dataset/imagenette.py, imagewoof.py read the `imagenette2-160` /
`imagewoof2-160` releases): folder layout `<root>/{train,val}/<wnid>/*.JPEG`, classes in sorted wnid order; each
image centre-cropped to a square and resized to 128 x 128 with area (box) filtering, as FRePo's ops.center_crop.
val serves as the test split (FRePo: split ['train', 'validation']).

imagenet64: the downsampled-ImageNet release (Chrabaszcz et al. 2017, "Imagenet64x64" npz format):
`train_data_batch_1.npz` ... `train_data_batch_10.npz` and `val_data.npz`, each with `data` (N, 12288) uint8 rows
holding the R, G and B planes of a 64 x 64 image, and `labels` 1..1000. val serves as the test split.

Both also load from a local npz (`data: {imagenette: {npz: PATH}}`), through ddflow.data's generic npz source.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DdflowError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def _base(root: Path, names: tuple[str, ...], layout: str, dataset: str) -> Path:
    for cand in (root, *(root / n for n in names)):
        if (cand / "train").is_dir() and (cand / "val").is_dir():
            return cand
    raise DdflowError(f"{root}: {dataset} not found; unpack the release under {root} so that it has the layout "
                      f"{layout}, or set `data: {{{dataset}: {{npz: PATH}}}}` in the config")


def centre_crop_resize(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BOX)
            return np.asarray(im, dtype=np.uint8)
    except DdflowError:
        raise
    except Exception as e:
        raise DdflowError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def read_class_folders(root: str | Path, info) -> dict[str, np.ndarray]:
    """imagenette / imagewoof: `<root>[/<name>2-160]/{train,val}/<wnid>/*`."""
    root = Path(root)
    layout = f"{info.name}2-160/{{train,val}}/<wnid>/*.JPEG"
    base = _base(root, (f"{info.name}2-160", f"{info.name}2-320", f"{info.name}2", info.name), layout, info.name)
    wnids = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    if len(wnids) != info.classes:
        raise DdflowError(f"{base / 'train'}: expected {info.classes} class folders, found {len(wnids)}")
    out = {}
    for split, key in (("train", "train"), ("val", "test")):
        xs, ys = [], []
        for c, w in enumerate(wnids):
            d = base / split / w
            files = sorted(p for p in d.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []
            if not files:
                raise DdflowError(f"{d}: no images for class {w}; expected the layout {layout}")
            xs.extend(centre_crop_resize(p, info.size) for p in files)
            ys.extend([c] * len(files))
        out[f"x_{key}"], out[f"y_{key}"] = np.stack(xs), np.asarray(ys, dtype=np.int64)
    return out


def _read_batch(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            data, labels = f["data"], f["labels"]
    except Exception as e:
        raise DdflowError(f"{path}: not a downsampled-ImageNet npz ({type(e).__name__}: {e})") from None
    d = 3 * size * size
    if data.ndim != 2 or data.shape[1] != d:
        raise DdflowError(f"{path}: data has shape {data.shape}; expected (N, {d}) rows of R, G, B planes")
    x = data.reshape(len(data), 3, size, size).transpose(0, 2, 3, 1)
    y = np.asarray(labels).astype(np.int64) - 1
    return np.ascontiguousarray(x), y


def _read_labels(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as f:
            return np.asarray(f["labels"]).astype(np.int64) - 1
    except Exception as e:
        raise DdflowError(f"{path}: not a downsampled-ImageNet npz ({type(e).__name__}: {e})") from None


def read_imagenet_downsampled(root: str | Path, info) -> dict[str, np.ndarray]:
    """imagenet64: train_data_batch_*.npz and val_data.npz under root (or its Imagenet64_train_npz /
    Imagenet64_val_npz folders)."""
    train, val = _imagenet_files(root, info)
    parts = [_read_batch(p, info.size) for p in train]
    xv, yv = _read_batch(val[0], info.size)
    return {"x_train": np.concatenate([x for x, _ in parts]), "y_train": np.concatenate([y for _, y in parts]),
            "x_test": xv, "y_test": yv}


def _imagenet_files(root: str | Path, info) -> tuple[list[Path], list[Path]]:
    root = Path(root)
    dirs = [root, root / f"Imagenet{info.size}_train_npz", root / f"Imagenet{info.size}_val_npz", root / info.name]
    train = sorted((p for d in dirs if d.is_dir() for p in d.glob("train_data_batch_*.npz")),
                   key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
    val = [d / "val_data.npz" for d in dirs if (d / "val_data.npz").exists()]
    if not train or not val:
        raise DdflowError(f"{root}: downsampled ImageNet not found (need train_data_batch_<k>.npz and val_data.npz, "
                          f"e.g. from Imagenet{info.size}_train_npz.zip / Imagenet{info.size}_val_npz.zip), or set "
                          f"`data: {{{info.name}: {{npz: PATH}}}}` in the config")
    return train, val


def write_imagenet_downsampled(root: str | Path, info, out: str | Path, check) -> None:
    """Prepare imagenet64 straight into the uncompressed npz `out`, one source batch in memory at a time (the
    train split is 15.7 GB as uint8): `check(x, y, split)` validates and converts each batch."""
    from .npzmap import NpzStreamWriter

    train, val = _imagenet_files(root, info)
    labels = [_read_labels(p) for p in train]   # the labels first (small), for the count
    n = sum(len(y) for y in labels)
    xv, yv = check(*_read_batch(val[0], info.size), "test")
    with NpzStreamWriter(out) as w:
        w.add_chunks("x_train", (n, info.size, info.size, 3), np.uint8,
                      (check(*_read_batch(p, info.size), "train")[0] for p in train))
        w.add("y_train", check(np.zeros((0, 1), np.uint8), np.concatenate(labels), "train")[1])
        w.add("x_test", xv)
        w.add("y_test", yv)


READERS = {"class-folders": read_class_folders, "imagenet-downsampled": read_imagenet_downsampled}
