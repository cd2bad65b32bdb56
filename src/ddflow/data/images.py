"""Real images kept as uint8 and turned into float batches only when a batch is read.

A prepared split is (N, H, W, C) uint8: in memory, on a device, or memory-mapped from an uncompressed prepared
file (ddflow.data.sources.load_arrays). `Images` serves it as float32 (N, C, H, W) on indexing, in the data space
of the run: pixels / 255 normalised with the dataset's mean/std ('raw'), or the pixels through a fitted ZCA. So a
dataset costs its uint8 size in host memory (ImageNet-64's 1.28 M training images: 15.7 GB, or only the pages a
run touches when memory-mapped) instead of four times that as float32, and preprocessing makes no second copy.

`Images` answers what the code asks of an image tensor: `x[idx]` (int, slice, index tensor or array), `len(x)`,
`x.shape`, `x.device`, `x.to(device)` (the same store, batches delivered on `device`). A batch is computed with the
same float32 operations as normalising the whole split at once, so results do not depend on the batch size.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DdflowError
from .registry import DatasetInfo
from .zca import ZCA

#: a uint8 store up to this size is copied onto an accelerator device once; larger ones stay on the host
DEVICE_STORE_BYTES = 8 << 30


def _float_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1] (the operations of data.real.to_float)."""
    return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


class Images:
    """uint8 images served as float32 batches in a data space (see the module docstring)."""

    dtype = torch.float32

    def __init__(self, store: np.ndarray | torch.Tensor, info: DatasetInfo, device: str | torch.device = "cpu",
                 zca: ZCA | None = None, space: str | None = None):
        if store.ndim != 4 or store.shape[-1] != info.channels or store.dtype not in (np.uint8, torch.uint8):
            raise DdflowError(f"{info.name}: Images expects (N, H, W, {info.channels}) uint8 images, got "
                              f"{tuple(store.shape)} {store.dtype}")
        self.store, self.info, self.device = store, info, torch.device(device)
        self.zca = None if zca is None else zca.to(self.device)
        self.space = space or ("zca" if zca is not None else "normalized")
        if self.space not in ("normalized", "zca", "pixels"):
            raise DdflowError(f"Images: unknown space {self.space!r}")
        n, h, w, c = store.shape
        self.shape = torch.Size((n, c, h, w))
        # the normalisation constants on the delivery device, made once rather than per batch
        self._mean = torch.tensor(info.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(info.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    @classmethod
    def load(cls, array: np.ndarray, info: DatasetInfo, device: str | torch.device) -> "Images":
        """A split as read from a prepared file: on an accelerator when it fits DEVICE_STORE_BYTES, else left
        where it is (a memory map stays a memory map)."""
        device = torch.device(device)
        if device.type != "cpu" and array.nbytes <= DEVICE_STORE_BYTES:
            return cls(torch.from_numpy(np.ascontiguousarray(array)).to(device), info, device)
        return cls(array, info, device)

    def __len__(self) -> int:
        return int(self.shape[0])

    def dim(self) -> int:
        return 4

    def size(self, d: int | None = None):
        return self.shape if d is None else self.shape[d]

    def to(self, device: str | torch.device) -> "Images":
        return Images(self.store, self.info, device, self.zca, self.space)

    def whitened(self, zca: ZCA) -> "Images":
        """The same images in the space of `zca` (fitted on [0, 1] pixels)."""
        return Images(self.store, self.info, self.device, zca, "zca")

    def pixels(self) -> "Images":
        """The same images as [0, 1] pixels (e.g. to fit a ZCA on)."""
        return Images(self.store, self.info, self.device, None, "pixels")

    def _gather(self, idx: Any) -> torch.Tensor:
        """uint8 rows `idx` of the store as a tensor on self.device."""
        if isinstance(self.store, torch.Tensor):
            if isinstance(idx, torch.Tensor):
                idx = idx.to(self.store.device)
            return self.store[idx].to(self.device)
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        rows = self.store[idx]
        # a slice of a read-only memory map is a view into the file: copy it (uint8, a quarter of the float batch)
        rows = np.array(rows) if not rows.flags.writeable or not rows.flags.c_contiguous else rows
        return torch.from_numpy(rows).to(self.device)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if isinstance(idx, tuple):   # x[i, c, h, w] / x[rows, c]: rows first, then index the float batch
            out = self[idx[0]]
            single_row = isinstance(idx[0], (int, np.integer)) or (isinstance(idx[0], torch.Tensor)
                                                                   and idx[0].dim() == 0)
            return out[idx[1:]] if single_row else out[(slice(None),) + tuple(idx[1:])]
        if isinstance(idx, (torch.Tensor, np.ndarray)) and idx.ndim > 1:   # e.g. (classes, batch) indices
            out = self[idx.reshape(-1)]
            return out.view(*idx.shape, *out.shape[1:])
        single = isinstance(idx, (int, np.integer)) or (isinstance(idx, torch.Tensor) and idx.dim() == 0)
        rows = self._gather([int(idx)] if single else idx)
        x = _float_pixels(rows)
        if self.space == "zca":
            x = self.zca.apply(x)
        elif self.space == "normalized":
            x = (x - self._mean) / self._std
        return x[0] if single else x

    def materialize(self) -> torch.Tensor:
        """The whole split as one float32 tensor (small data only)."""
        return self[:]

    def __repr__(self) -> str:
        kind = type(self.store).__name__ if getattr(self.store, "flags", None) is None or \
            self.store.flags.owndata else "view (memory map)"
        return f"Images({self.info.name}, {tuple(self.shape)}, {self.space}, store={kind}, device={self.device})"
