"""A ddflow distilled record back to other tools: a plain .pt / .npz (exact, by default) or per-image PNGs by class.

What is exported is what a network trains on: multi-formation sets (IDC / DREAM) are decoded (into the dataset's
normalised space). The plain file holds `images` (N, C, H, W) float32, `labels` ((N,) int64 or (N, classes)
float32), `lr` when the set has a learned lr, `space`, `mean`, `std` (the normalisation the set was made with),
`dataset`, `ipc`, `method`, `seed`.

- space `native` (the default): the images exactly as the record holds them, in its own space (normalized, pixels or
  zca; a ZCA set's whitening state is written beside, `{stem}.zca.pt`). Nothing is clipped: `python -m ddflow import
  --format plain --space <the file's space>` (plus `--zca {stem}.zca.pt` for a ZCA set) gives back identical tensors.
- space `pixels`: [0, 1] pixels for tools that want them. Values outside [0, 1] (a normalised or whitened set may
  hold many) are clipped; the fraction clipped is logged as a warning, since the clipped set is another set.
- PNGs are 8-bit pixels: clipped to [0, 1] (with the same warning) and rounded to 1/255.
"""
from __future__ import annotations

import logging
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

log = logging.getLogger("ddflow")
EXPORT_SPACES = ("native", "pixels")


def export_native(record: DistilledSet) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images, labels, space) of what a network trains on, exactly (no clipping)."""
    if int(record.factor) == 1:
        return record.images.float(), record.labels, record.space
    x, y = record.decoded()
    return x, y, "normalized"


def unclipped_pixels(record: DistilledSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(images as pixels, not clipped, labels) of what a network trains on."""
    x, y, space = export_native(record)
    if space == "zca":
        return record._zca().inverse(x), y
    if space == "normalized":
        m, s = mean_std(record.mean, record.std, x)
        x = x * s + m
    return x, y


def clip_pixels(x: torch.Tensor, what: str) -> torch.Tensor:
    """x clipped to [0, 1], with a warning naming the fraction of values clipped (none: no warning)."""
    outside = int(((x < 0) | (x > 1)).sum())
    if outside:
        log.warning("%s: %.1f %% of the values (%d of %d) lie outside [0, 1] pixels and are clipped; the exported set "
                    "is not the distilled one (export with --space native for an exact copy)", what,
                    100.0 * outside / x.numel(), outside, x.numel())
    return x.clamp(0, 1)


def write_plain(record: DistilledSet, out: str | Path, space: str = "native") -> None:
    out = Path(out)
    if out.suffix not in (".pt", ".npz"):
        raise DdflowError(f"{out}: export writes a .pt or .npz file")
    if space not in EXPORT_SPACES:
        raise DdflowError(f"export --space {space!r}; allowed: {', '.join(EXPORT_SPACES)}")
    if space == "native":
        x, y, written = export_native(record)
    else:
        x, y = unclipped_pixels(record)
        x, written = clip_pixels(x, str(out)), "pixels"
    meta = {"space": written, "dataset": record.dataset, "ipc": int(record.ipc), "method": record.method,
            "seed": int(record.seed), "mean": [float(v) for v in record.mean], "std": [float(v) for v in record.std]}
    if written == "zca":
        save_pt(record._zca().state_dict(), out.with_name(f"{out.stem}.zca.pt"))
    if out.suffix == ".pt":
        obj = {"images": x.float().contiguous(), "labels": y.contiguous(), **meta}
        if record.lr is not None:
            obj["lr"] = float(record.lr)
        save_pt(obj, out)
    else:
        arrays = {"images": x.float().numpy(), "labels": y.numpy(), **{k: np.asarray(v) for k, v in meta.items()}}
        if record.lr is not None:
            arrays["lr"] = np.asarray(float(record.lr))
        save_npz(out, **arrays)
    zca = f" --zca {out.with_name(out.stem + '.zca.pt')}" if written == "zca" else ""
    log.info("%s: %s space; read it back with: python -m ddflow import --format plain --space %s%s", out, written,
             written, zca)


def write_pngs(record: DistilledSet, out_dir: str | Path) -> None:
    """out_dir/{class}/{index:04d}.png (8-bit, grey or RGB), written in a temporary folder renamed into place."""
    from PIL import Image

    out_dir = Path(out_dir)
    x, y = unclipped_pixels(record)
    x = clip_pixels(x, str(out_dir))
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


def export_record(record: DistilledSet, out: str | Path | None = None, png_dir: str | Path | None = None,
                  space: str = "native") -> None:
    if out is None and png_dir is None:
        raise DdflowError("export: give --out (a .pt / .npz file) and/or --png-dir")
    if out is not None:
        write_plain(record, out, space)
    if png_dir is not None:
        write_pngs(record, png_dir)
