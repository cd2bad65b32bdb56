"""The distilled set (`results/distilled/...pt`): what every method writes and every protocol evaluates.

A distilled set owns its space. `space` says what its images are: 'normalized' (the dataset's mean/std, the
default), 'pixels' ([0, 1], IDC/DREAM) or 'zca' (whitened by the ZCA whose state the record carries). Every
conversion lives here: `to_pixels()` (figures), `to_normalized()` (a fixed feature net's input), `decoded()`
(multi-formation, normalised: what a network trains on) and `real_in_space(data)` (the real data seen through the
record's transform, so a test split is whitened exactly as the synthetic set was made). Nothing else in the library
branches on a space.

On disk a distilled set is a plain dict (format "ddflow.distilled/1"; `torch.load(weights_only=True)` reads it);
`DistilledSet.to_dict()` / `from_dict()` convert. Method-specific extras (timing, train_indices, use_flip,
final_stats, peak memory, ...) travel in `extra`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import RealData, get_info
from ..data.real import mean_std
from ..data.spaces import whiten
from ..data.zca import ZCA
from ..errors import DdflowError
from ..io import load_pt, save_pt
from ..ops.multiformation import decode

FORMAT = "ddflow.distilled/1"
SPACES = ("normalized", "pixels", "zca")


@dataclass
class DistilledSet:
    images: torch.Tensor                  # (N, C, H, W) float, in `space`
    labels: torch.Tensor                  # (N,) int64 hard labels or (N, classes) learned / soft labels
    method: str
    dataset: str
    ipc: int
    seed: int
    mean: tuple[float, ...]               # the dataset's normalisation the set was made with
    std: tuple[float, ...]
    preset: str | None = None
    space: str = "normalized"
    zca: dict[str, Any] | None = None     # ZCA.state_dict() when space == 'zca'
    lr: float | None = None               # a learned evaluation lr (MTT)
    factor: int = 1                       # multi-formation factor (IDC, DREAM)
    hparams: dict[str, Any] = field(default_factory=dict)
    iterations: int | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise DdflowError(f"distilled set in unknown space {self.space!r}; known: {', '.join(SPACES)}")
        if self.space == "zca" and self.zca is None:
            raise DdflowError("distilled set in space 'zca' carries no 'zca' state")
        if int(self.factor) < 1:
            raise DdflowError(f"distilled set with multi-formation factor {self.factor}; must be >= 1")

    # ---- identity ---------------------------------------------------------------------------------------------
    @property
    def cell(self) -> str:
        return f"{self.method}/{self.dataset}/ipc{self.ipc}/s{self.seed}"

    @property
    def soft_labels(self) -> bool:
        return self.labels.dim() == 2

    def hard_labels(self) -> torch.Tensor:
        """Class per image: the labels, or the argmax of learned labels."""
        return self.labels if self.labels.dim() == 1 else self.labels.argmax(1)

    # ---- spaces -----------------------------------------------------------------------------------------------
    def _zca(self) -> ZCA:
        """The record's ZCA, built once per state (normalize() may run on every training batch)."""
        cached = self.__dict__.get("_zca_built")
        if cached is None or cached[0] is not self.zca:
            cached = (self.zca, ZCA.from_state_dict(self.zca))
            self.__dict__["_zca_built"] = cached
        return cached[1]

    def to_pixels(self, clamp: bool = True) -> torch.Tensor:
        """The images as [0, 1] pixels (clamped unless `clamp` is false), for figures."""
        x = self.images.float()
        if self.space == "zca":
            x = self._zca().inverse(x)
        elif self.space == "normalized":
            m, s = mean_std(self.mean, self.std, x)
            x = x * s + m
        return x.clamp(0, 1) if clamp else x

    def to_normalized(self) -> torch.Tensor:
        """The images in the dataset's normalised space (not clamped), e.g. for a feature net trained on it."""
        return self.normalize(self.images.float())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Any batch of images in this record's space (e.g. augmented ones, on any device) -> the dataset's
        normalised space."""
        if self.space == "normalized":
            return x
        m, s = mean_std(self.mean, self.std, x)
        if self.space == "zca":
            x = self._zca().inverse(x)
        return (x - m) / s

    def decoded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-formation decoded (factor from the record), normalised images and their labels: what a network
        trains on. Decoding happens in pixels (its padding value 0.5 is a pixel value); a ZCA set cannot decode."""
        factor = int(self.factor)
        if self.space == "zca" and factor > 1:
            raise DdflowError(f"{self.cell}: multi-formation of a ZCA-space set is not defined")
        x, space = self.images.float(), self.space
        if space == "normalized" and factor > 1:
            m, s = mean_std(self.mean, self.std, x)
            x, space = x * s + m, "pixels"
        x, y = decode(x, self.labels, factor)
        if space == "pixels":
            m, s = mean_std(self.mean, self.std, x)
            x = (x - m) / s
        return x, y

    def real_in_space(self, data: RealData) -> RealData:
        """The real data in this set's space: as loaded (normalised) unless the set is ZCA-whitened, then whitened
        by the same ZCA (pixel sets are normalised by the protocol through decoded())."""
        if self.space != "zca":
            return data
        return whiten(data, self._zca())

    # ---- file format ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT}
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        for key in ("zca", "lr"):
            if out[key] is None:
                del out[key]
        clash = set(self.extra) & set(out)
        if clash:
            raise DdflowError(f"{self.cell}: extra keys {sorted(clash)} collide with record fields")
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, Any], where: str = "distilled set") -> DistilledSet:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise DdflowError(f"{where}: not a ddflow distilled set (format {FORMAT})")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        missing = [k for k in ("images", "labels", "method", "dataset", "ipc", "seed", "mean", "std") if k not in obj]
        if missing:
            raise DdflowError(f"{where}: distilled set lacks {missing}")
        kwargs = {k: obj[k] for k in names if k in obj}
        kwargs["mean"], kwargs["std"] = tuple(obj["mean"]), tuple(obj["std"])
        kwargs["factor"] = int(obj.get("factor", 1))
        if kwargs.get("lr") is not None:
            kwargs["lr"] = float(kwargs["lr"])
        extra = {k: v for k, v in obj.items() if k not in names and k != "format"}
        record = cls(**kwargs, extra=extra)
        check_record(record, where)
        return record

    def save(self, path: str | Path) -> None:
        save_pt(self.to_dict(), path)


def check_record(r: DistilledSet, where: str) -> None:
    """A loaded set is one a network can train on: a known dataset, ipc and seed whole numbers, images a finite
    non-empty (N, C, H, W) float tensor of the dataset's channels and size with N = classes x ipc (HaBa, RTP: their
    decoded image count), hard labels whole numbers in [0, classes) with the same count for every class, or soft
    labels a finite (N, classes) tensor, a finite learned lr > 0. Errors name the file and what is wrong."""
    def bad(what: str) -> DdflowError:
        return DdflowError(f"{where}: {what}")

    try:
        info = get_info(r.dataset)
    except DdflowError as e:
        raise bad(str(e)) from None
    for key in ("ipc", "seed"):
        v = getattr(r, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "ipc" else 0):
            raise bad(f"{key} = {v!r}; expected a whole number >= {1 if key == 'ipc' else 0}")
    x, y = r.images, r.labels
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4:
        raise bad(f"images must be a float tensor (N, C, H, W), got {_describe(x)}")
    if len(x) == 0:
        raise bad("no images (an empty set)")
    if tuple(x.shape[1:]) != (info.channels, info.size, info.size):
        raise bad(f"images of shape {tuple(x.shape[1:])}; {r.dataset} images are "
                  f"{(info.channels, info.size, info.size)} (C, H, W)")
    nonfinite = int((~torch.isfinite(x)).sum())
    if nonfinite:
        raise bad(f"{nonfinite} of {x.numel()} image values are NaN or infinite (a diverged distillation?)")
    coded = next((r.extra[k] for k in ("haba", "rtp") if isinstance(r.extra.get(k), dict)), None)  # decoded sets
    expected = int(coded["images"]) if coded is not None else info.classes * r.ipc
    if len(x) != expected:
        raise bad(f"{len(x)} images; a {r.dataset} set at IPC {r.ipc} holds {expected} ({info.classes} classes x "
                  f"{expected // info.classes})")
    if not isinstance(y, torch.Tensor) or y.dim() not in (1, 2) or len(y) != len(x):
        raise bad(f"labels must be a tensor (N,) of classes or (N, {info.classes}) of learned labels with N = "
                  f"{len(x)}, got {_describe(y)}")
    if y.dim() == 1:
        if y.is_floating_point() or y.dtype == torch.bool:
            raise bad(f"hard labels must be whole numbers, got {y.dtype}")
        if int(y.min()) < 0 or int(y.max()) >= info.classes:
            raise bad(f"labels in [{int(y.min())}, {int(y.max())}]; {r.dataset} classes are 0 to {info.classes - 1}")
        counts = torch.bincount(y.long(), minlength=info.classes)
        if int(counts.min()) != int(counts.max()):
            raise bad(f"images per class {counts.tolist()}; every class must have {len(x) // info.classes}")
    else:
        if y.shape[1] != info.classes or not y.is_floating_point() or not bool(torch.isfinite(y).all()):
            raise bad(f"learned labels must be finite floats (N, {info.classes}), got {_describe(y)}")
    if r.lr is not None and not (math.isfinite(r.lr) and r.lr > 0):
        raise bad(f"learned lr = {r.lr!r}; expected a finite number > 0")
    if len(r.mean) != info.channels or len(r.std) != info.channels or not all(
            math.isfinite(v) for v in (*r.mean, *r.std)) or min(r.std) <= 0:
        raise bad(f"mean {list(r.mean)} / std {list(r.std)}: {info.channels} finite values each, std > 0")


def _describe(t: Any) -> str:
    if isinstance(t, torch.Tensor):
        return f"a {t.dtype} tensor of shape {tuple(t.shape)}"
    return f"a {type(t).__name__}"


def load_distilled(path: str | Path) -> DistilledSet:
    """A distilled set file; a missing, corrupt or foreign file is a DdflowError naming the path."""
    return DistilledSet.from_dict(load_pt(path, "distilled set"), str(path))

