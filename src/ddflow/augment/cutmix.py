"""CutMix with explicit draws (IDC's and DREAM's official rand_bbox / train_epoch): a draw holds the mixing
permutation, the box and the label weight (area kept); the matching loss is ddflow.ops.losses.cutmix_loss."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..runtime import to_device


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
    out[:, :, y1:y2, x1:x2] = x[to_device(draw["perm"], x.device)][:, :, y1:y2, x1:x2]
    return out


def maybe_cutmix(n: int, height: int, width: int, generator: torch.Generator, p: float, beta: float) -> dict | None:
    """The official train_epoch: with probability p (one uniform draw) a CutMix draw, else None."""
    if float(torch.rand(1, generator=generator)) < p:
        return cutmix_draw(n, height, width, generator, beta)
    return None
