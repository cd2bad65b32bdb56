"""Real data: RealData (the train and test splits in the run's data space, with labels) and its helpers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DdflowError
from .images import Images
from .registry import DatasetInfo
from .sources import _validate, load_arrays


def class_counts(y: np.ndarray | torch.Tensor, classes: int) -> np.ndarray:
    y = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    y = y.astype(np.int64, copy=False).ravel()
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise DdflowError(f"labels in [{y.min()}, {y.max()}] are outside [0, {classes})")
    return np.bincount(y, minlength=classes)


def check_ipc(y_train: np.ndarray | torch.Tensor, classes: int, ipc: int, where: str) -> None:
    """Refuse an images-per-class count larger than the smallest class of the train split."""
    if int(ipc) < 1:
        raise DdflowError(f"{where}: ipc must be >= 1, got {ipc}")
    counts = class_counts(y_train, classes)
    c = int(np.argmin(counts))
    if ipc > counts[c]:
        raise DdflowError(f"{where}: ipc={ipc} exceeds the smallest class of the train split "
                          f"(class {c} has {int(counts[c])} images; per-class counts range "
                          f"{int(counts.min())}..{int(counts.max())})")


def to_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.dim() != 4:
        raise DdflowError(f"to_float expects (N, H, W, C) images, got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def mean_std(mean, std, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as (1, C, 1, 1) tensors of `like`'s dtype and device."""
    m = torch.tensor(mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return m, s


def _stats(x: torch.Tensor, info: DatasetInfo) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 4 or x.shape[1] != info.channels:
        raise DdflowError(f"{info.name}: expected (N, {info.channels}, H, W) images, got {tuple(x.shape)}")
    return mean_std(info.mean, info.std, x)


def normalize(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    m, s = _stats(x, info)
    return (x - m) / s


def denormalize(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    m, s = _stats(x, info)
    return x * s + m


@dataclass
class RealData:
    """x_train / x_test: `Images` (uint8 kept, float batches on indexing; what load_real gives) or float32
    (N, C, H, W) tensors (tests, small derived sets); both answer x[idx], len(x), x.shape, x.device, x.to()."""
    x_train: torch.Tensor | Images
    y_train: torch.Tensor
    x_test: torch.Tensor | Images
    y_test: torch.Tensor
    info: DatasetInfo
    #: the validation part of the training split (ddflow.data.validation.carve), None unless a method asked for it
    x_val: torch.Tensor | Images | None = None
    y_val: torch.Tensor | None = None
    #: where x_train's rows sit in the prepared file's training split when the validation part was carved off (the
    #: paired initial draw, ddflow.data.paired, follows them); None: x_train is the whole training split, in order
    train_rows: np.ndarray | None = None
    _per_class: list[torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def indices_per_class(self) -> list[torch.Tensor]:
        """Indices into x_train of each class, in class order (computed once)."""
        if self._per_class is None:
            self._per_class = [torch.nonzero(self.y_train == c).flatten() for c in range(self.info.classes)]
        return self._per_class


def load_real(path: str | Path, info: DatasetInfo, device: str | torch.device = "cpu") -> RealData:
    """Prepared npz -> the images as `Images` (uint8, memory-mapped when the file allows, normalised per batch on
    `device`) and int64 labels on `device`."""
    arrays = _validate(load_arrays(path, mmap=True), info, str(path))
    t = {}
    for s in ("train", "test"):
        t[f"x_{s}"] = Images.load(arrays[f"x_{s}"], info, device)
        t[f"y_{s}"] = torch.from_numpy(np.asarray(arrays[f"y_{s}"], dtype=np.int64)).to(device)
    return RealData(t["x_train"], t["y_train"], t["x_test"], t["y_test"], info)
