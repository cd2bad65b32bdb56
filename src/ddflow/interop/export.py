"""A ddflow distilled record back to other tools: per-image PNGs by class, or a plain .pt / .npz in pixels.

What is exported is what a network trains on, in [0, 1] pixels: multi-formation sets are decoded (IDC / DREAM),
ZCA sets are un-whitened, normalised sets de-normalised (clamped to [0, 1]). The plain file holds `images`
(N, C, H, W) float32, `labels` ((N,) int64 or (N, classes) float32), `lr` when the set has a learned lr, and
`space: 'pixels'`, `dataset`, `ipc`, `method`, `seed`: `python -m ddflow import --format plain --space pixels`
reads it back.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..data.real import mean_std
from ..errors import DdflowError
from ..io import save_npz, save_pt
from ..records import DistilledSet


def export_pixels(record: DistilledSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [0, 1] pixels, labels) of what a network trains on."""
    if int(record.factor) == 1:
        return record.to_pixels(), record.labels
    x, y = record.decoded()
    m, s = mean_std(record.mean, record.std, x)
    return (x * s + m).clamp(0, 1), y


def write_plain(record: DistilledSet, out: str | Path) -> None:
    out = Path(out)
    x, y = export_pixels(record)
    meta = {"space": "pixels", "dataset": record.dataset, "ipc": int(record.ipc), "method": record.method,
            "seed": int(record.seed)}
    if out.suffix == ".pt":
        obj = {"images": x.float().contiguous(), "labels": y.contiguous(), **meta}
        if record.lr is not None:
            obj["lr"] = float(record.lr)
        save_pt(obj, out)
    elif out.suffix == ".npz":
        arrays = {"images": x.float().numpy(), "labels": y.numpy(), **{k: np.asarray(v) for k, v in meta.items()}}
        if record.lr is not None:
            arrays["lr"] = np.asarray(float(record.lr))
        save_npz(out, **arrays)
    else:
        raise DdflowError(f"{out}: export writes a .pt or .npz file")


def write_pngs(record: DistilledSet, out_dir: str | Path) -> None:
    """out_dir/{class}/{index:04d}.png (8-bit, grey or RGB), written in a temporary folder renamed into place."""
    from PIL import Image

    out_dir = Path(out_dir)
    x, y = export_pixels(record)
    classes = y.argmax(1) if y.dim() == 2 else y
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        counts: dict[int, int] = {}
        for img, c in zip(x, classes.tolist()):
            a = (img.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            (tmp / str(c)).mkdir(exist_ok=True)
            i = counts.get(c, 0)
            counts[c] = i + 1
            Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(tmp / str(c) / f"{i:04d}.png")
        os.chmod(tmp, 0o777 & ~_umask())
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_record(record: DistilledSet, out: str | Path | None = None, png_dir: str | Path | None = None) -> None:
    if out is None and png_dir is None:
        raise DdflowError("export: give --out (a .pt / .npz file) and/or --png-dir")
    if out is not None:
        write_plain(record, out)
    if png_dir is not None:
        write_pngs(record, png_dir)
