"""The validation split: a class-balanced part of the training split, drawn once per dataset with a fixed seed.

What a method or protocol chooses on held-out data (LD's step count, RFAD's early stopping, kip-nn's learning rate)
it chooses on this split, never on the test split. It is carved from the training split, so it cannot overlap the
test split; a method that asks for it (`requires` holds "validation") distils from the rest of the training split
(the fit part) and its record says so (`extra["seen"]`). Its size per dataset is data
(workflow/hparams/stages/validation.yaml); the split is written as results/splits/{dataset}.npz: the indices into
the prepared file's train split, with the settings that drew them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DdflowError
from ..io import save_npz

if TYPE_CHECKING:
    from .real import RealData

FORMAT = "ddflow.validation/1"


def draw(labels: np.ndarray, classes: int, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` images of every class, drawn without replacement by one numpy Generator
    seeded with `seed` (a permutation per class, in class order). Refuses a class that would keep fewer than one
    image for fitting."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    if int(per_class) < 1:
        raise DdflowError(f"validation per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(int(seed))
    picked = []
    for c in range(classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class:
            raise DdflowError(f"validation split: class {c} has {len(idx)} training images, per_class {per_class} "
                              "would leave none to distil from")
        picked.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(picked))


def write_split(y_train: np.ndarray, classes: int, settings: dict[str, Any], dataset: str, out: str | Path) -> dict:
    """Draw the split with `settings` ({per_class, seed}) and write it atomically to `out`."""
    missing = [k for k in ("per_class", "seed") if k not in settings]
    if missing:
        raise DdflowError(f"validation settings for {dataset}: missing {missing} "
                          "(workflow/hparams/stages/validation.yaml)")
    idx = draw(y_train, classes, int(settings["per_class"]), int(settings["seed"]))
    save_npz(out, val_idx=idx, per_class=np.int64(settings["per_class"]), seed=np.int64(settings["seed"]),
             train_size=np.int64(len(y_train)), format=np.array(FORMAT), dataset=np.array(dataset))
    return {"val_idx": idx, "per_class": int(settings["per_class"]), "seed": int(settings["seed"])}


def split_file(dataset: str, data_path: str | Path, settings: dict[str, Any], out: str | Path) -> dict:
    """The validation split of a prepared dataset file, written to `out` (the validation-split command)."""
    from .registry import get_info
    from .sources import load_arrays
    split = write_split(load_arrays(data_path, mmap=True)["y_train"], get_info(dataset).classes, settings, dataset, out)
    print(f"validation split of {dataset}: {len(split['val_idx'])} images ({split['per_class']} per class, seed "
          f"{split['seed']}) -> {out}")
    return split


def load_split(path: str | Path, dataset: str, train_size: int) -> np.ndarray:
    """The validation indices of `path`, checked against the dataset and the size of its training split."""
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DdflowError(f"{path}: not a readable validation split ({e})") from None
    if str(d.get("format", "")) != FORMAT:
        raise DdflowError(f"{path}: not a ddflow validation split (format {FORMAT!r} expected)")
    if str(d["dataset"]) != dataset:
        raise DdflowError(f"{path}: validation split of {str(d['dataset'])!r}, expected {dataset!r}")
    if int(d["train_size"]) != int(train_size):
        raise DdflowError(f"{path}: drawn from a training split of {int(d['train_size'])} images, this one has "
                          f"{train_size}: remake it (delete the file)")
    idx = d["val_idx"].astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= train_size or np.any(np.diff(idx) <= 0)):
        raise DdflowError(f"{path}: validation indices are not sorted, unique indices into the training split")
    return idx


def _index(t, idx: np.ndarray):
    """t[idx] for a tensor `t`, the indices moved to its device."""
    import torch  # here, not at the top: the validation-split job reads and writes numpy arrays only
    return t[torch.from_numpy(idx).to(t.device)]


def _rows(x, idx: np.ndarray):
    from .images import Images
    if isinstance(x, Images):
        if isinstance(x.store, np.ndarray):
            store = np.ascontiguousarray(x.store[idx])   # a copy, also of a memory map
        else:
            store = _index(x.store, idx).contiguous()
        return Images(store, x.info, x.device, x.zca, x.space)
    return _index(x, idx)


def held_out(data: RealData, val_idx: np.ndarray) -> RealData:
    """What an evaluation that chooses nothing on held-out data is handed: the validation part (x_val / y_val),
    the test split, and an empty training split. Its protocol trains on the distilled set only, so it needs no
    training image (none is copied), and its models are scored on the validation images they never saw."""
    from .real import RealData
    val = np.asarray(val_idx, dtype=np.int64)
    none = np.empty(0, dtype=np.int64)
    y = data.y_train
    return RealData(_rows(data.x_train, none), y[:0], data.x_test, data.y_test, data.info,
                    x_val=_rows(data.x_train, val), y_val=_index(y, val))


def carve(data: RealData, val_idx: np.ndarray) -> RealData:
    """`data` with its training split cut in two: x_train/y_train = the fit part (in the order of the training
    split; `train_rows` = its rows' indices in the training split), x_val/y_val = the validation part; the test
    split unchanged."""
    from .real import RealData
    keep = np.ones(len(data.y_train), dtype=bool)
    keep[val_idx] = False
    fit, val = np.flatnonzero(keep), np.asarray(val_idx, dtype=np.int64)
    y = data.y_train
    return RealData(_rows(data.x_train, fit), _index(y, fit), data.x_test, data.y_test,
                    data.info, x_val=_rows(data.x_train, val), y_val=_index(y, val),
                    train_rows=fit)
