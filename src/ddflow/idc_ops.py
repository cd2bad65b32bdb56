"""IDC's building blocks (Kim et al., ICML 2022; snu-mllab/Efficient-Dataset-Condensation), shared by the idc and
dream methods and the `idc` evaluation protocol (reference/methods.md section 5):

* multi-formation: `decode` (each stored image -> factor x factor crops, each upsampled to full size, same label)
  and `tile` (factor^2 images downsampled into the patches of one stored image: the 'mix' initialisation);
* `IDCAugment`: IDC's own DiffAug. Unlike DSA's single-family draw, it ALWAYS applies the strategy's flip and color
  (in that order), then ONE family drawn from the rest (crop / scale / rotate), then cutout. Shared mode (the
  official batch=True, used for matching) = one transform for the whole concatenated real + synthetic batch;
  per-sample mode (batch=False, network training) = per-image parameters, one geometric family per call. The
  transforms are DSA's (ddflow.augment); draws come from explicit CPU generators;
* `cutmix`: CutMix with explicit draws, returning the mixing permutation and the label weight (area kept);
* `conv_grad_distance`: IDC's matching distance over conv weights only (bias and classifier skipped),
  'mse' = sum of squared differences, 'l1' = sum of absolute differences;
* `lr_img`: the official tune_lr_img scaling base x (ipc / 10) x (size / base_size)^2.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .augment import DSA, DSA_FAMILIES, DSAParams, _parse_strategy
from .errors import DdflowError

IDC_METRICS = ("mse", "l1")
ALWAYS_BEFORE = ("flip", "color")   # applied first, in this order, whenever listed
ALWAYS_AFTER = ("cutout",)          # applied last whenever listed


# ---- multi-formation ---------------------------------------------------------------------------------------
def decode(images: torch.Tensor, labels: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform multi-formation (official decode_zoom): images (N, C, H, W) in [0, 1] -> (N * factor^2, C, H, W).
    Crop (i, j) of every image (size ceil(H / factor); a size not divisible by factor is padded with 0.5 at the
    bottom/right) is upsampled bilinearly (align_corners=False) back to H x W. Output order is crop-major: all
    images' crop (0, 0), then all images' crop (0, 1), ...; labels repeated in the same order."""
    if factor < 1:
        raise DdflowError(f"multi-formation factor must be >= 1, got {factor}")
    if factor == 1:
        return images, labels
    h, w = images.shape[-2:]
    if h != w:
        raise DdflowError(f"multi-formation needs square images, got {h}x{w}")
    rem = h % factor
    if rem:
        images = F.pad(images, (0, factor - rem, 0, factor - rem), value=0.5)
    s = math.ceil(h / factor)
    crops = [images[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s] for i in range(factor) for j in range(factor)]
    out = F.interpolate(torch.cat(crops), size=(h, w), mode="bilinear", align_corners=False)
    return out, labels.repeat(factor * factor)


def tile(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The official 'mix' initialisation: (n * factor^2, C, H, W) -> (n, C, H, W). Images [k*n, (k+1)*n) are
    resized (nearest) into patch k = (i, j) of the n stored images, row-major; with H % factor = r the first r
    patch rows/columns are one pixel larger."""
    n_all, c, h, w = images.shape
    if n_all % (factor * factor):
        raise DdflowError(f"tile: {n_all} images are not a multiple of factor^2 = {factor * factor}")
    n = n_all // (factor * factor)
    out = images.new_empty((n, c, h, w))
    s, rem = h // factor, h % factor
    k, top = 0, 0
    for i in range(factor):
        hr = s + 1 if i < rem else s
        left = 0
        for j in range(factor):
            wr = s + 1 if j < rem else s
            out[:, :, top:top + hr, left:left + wr] = F.interpolate(images[k * n:(k + 1) * n], size=(hr, wr))
            left += wr
            k += 1
        top += hr
    return out


# ---- IDC's DiffAug -----------------------------------------------------------------------------------------
class IDCAugment:
    """IDC's DiffAug on DSA's transforms (module doc). A draw is a list of single-family DSA draws applied in
    order; each has size n (per sample) or 1 (shared by the whole batch)."""

    def __init__(self, strategy: str, params: DSAParams = DSAParams()):
        families = _parse_strategy(strategy, DSA_FAMILIES, "IDC DiffAug")
        self.strategy = strategy
        self.before = [f for f in ALWAYS_BEFORE if f in families]
        self.after = [f for f in ALWAYS_AFTER if f in families]
        self.single = [f for f in families if f not in ALWAYS_BEFORE + ALWAYS_AFTER]
        self._dsa = {f: DSA(f, params) for f in families}
        self._apply = DSA("none", params)

    def __repr__(self) -> str:
        return f"IDCAugment({self.strategy!r})"

    def _family(self, family: str, n: int, g: torch.Generator) -> dict:
        return self._dsa[family].sample(n, g)  # a one-family DSA draws its (only) family, then its parameters

    def sample(self, n: int, generator: torch.Generator, shared: bool = False) -> list[dict]:
        """Draw order: flip, color, the index of the single family (one randint), its parameters, cutout."""
        m = 1 if shared else n
        draws = [self._family(f, m, generator) for f in self.before]
        if self.single:
            k = int(torch.randint(0, len(self.single), (1,), generator=generator))
            draws.append(self._family(self.single[k], m, generator))
        draws += [self._family(f, m, generator) for f in self.after]
        return draws

    def apply(self, x: torch.Tensor, draws: list[dict]) -> torch.Tensor:
        for d in draws:
            x = self._apply.apply(x, d)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator, shared: bool = False) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], generator, shared))

    def augment_many(self, x: torch.Tensor, sizes: Sequence[int],
                     generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Chunk k (consecutive, sizes[k] images) augmented per sample from generators[k]."""
        out, start = [], 0
        for s, g in zip(sizes, generators):
            out.append(self(x[start:start + s], g))
            start += s
        return torch.cat(out)


# ---- CutMix ------------------------------------------------------------------------------------------------
def cutmix_draw(n: int, height: int, width: int, generator: torch.Generator, beta: float = 1.0) -> dict:
    """One CutMix draw for a batch of n (official rand_bbox): lam ~ Beta(beta, beta) (from a numpy generator seeded
    by one draw of `generator`), a permutation of the batch, a box of side int(size * sqrt(1 - lam)) around a
    uniform centre, clipped to the image. 'keep' = 1 - box area / image area = the weight of the own label."""
    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(beta, beta))
    perm = torch.randperm(n, generator=generator)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y1, y2 = min(max(cy - ch // 2, 0), height), min(max(cy + ch // 2, 0), height)
    x1, x2 = min(max(cx - cw // 2, 0), width), min(max(cx + cw // 2, 0), width)
    keep = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    return {"perm": perm, "box": (y1, y2, x1, x2), "keep": keep, "lam": lam}


def cutmix_apply(x: torch.Tensor, draw: dict) -> torch.Tensor:
    y1, y2, x1, x2 = draw["box"]
    out = x.clone()
    out[:, :, y1:y2, x1:x2] = x[draw["perm"].to(x.device)][:, :, y1:y2, x1:x2]
    return out


def cutmix_loss(logits: torch.Tensor, y: torch.Tensor, draw: dict | None) -> torch.Tensor:
    """keep * CE(logits, y) + (1 - keep) * CE(logits, y[perm]); plain CE without a draw."""
    if draw is None:
        return F.cross_entropy(logits, y)
    keep = draw["keep"]
    return keep * F.cross_entropy(logits, y) + (1 - keep) * F.cross_entropy(logits, y[draw["perm"].to(y.device)])


def maybe_cutmix(n: int, height: int, width: int, generator: torch.Generator, p: float, beta: float) -> dict | None:
    """The official train_epoch: with probability p (one uniform draw) a CutMix draw, else None."""
    if float(torch.rand(1, generator=generator)) < p:
        return cutmix_draw(n, height, width, generator, beta)
    return None


# ---- matching and learning rate ----------------------------------------------------------------------------
def conv_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    """The parameters IDC matches with bias=False, fc=False: the 4-D (conv) weights."""
    return [p for p in net.parameters() if p.dim() == 4]


def conv_grad_distance(g_syn: list[torch.Tensor], g_real: list[torch.Tensor], metric: str) -> torch.Tensor:
    """Sum over the tensors of 'mse' = sum (a - b)^2 or 'l1' = sum |a - b| (official condense.py dist)."""
    if metric not in IDC_METRICS:
        raise DdflowError(f"unknown IDC matching metric {metric!r}; allowed: {', '.join(IDC_METRICS)}")
    if metric == "mse":
        return sum(((s - r) ** 2).sum() for s, r in zip(g_syn, g_real))
    return sum((s - r).abs().sum() for s, r in zip(g_syn, g_real))


def lr_img(base: float, ipc: int, size: int, base_size: int) -> float:
    """Official tune_lr_img: base x (ipc / 10) x (size / base_size)^2 (base_size 28 for MNIST, 32 otherwise)."""
    return base * (ipc / 10) * (size / base_size) ** 2
