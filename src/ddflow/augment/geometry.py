"""Checks and geometric primitives shared by the augmenters (DSA, DC's, IDC's): strategy parsing, argument
checks, integer shifts, affine warps and their thetas. Every random draw happens in the augmenters, from explicit
CPU generators; these functions draw nothing."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import DdflowError
from ..runtime import to_device


def _round_half_up(value: float) -> int:
    """int(v + 0.5), as the official code rounds sizes (Python's round() would round 2.5 to 2)."""
    return int(math.floor(value + 0.5))


def _parse_strategy(strategy: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not isinstance(strategy, str):
        raise DdflowError(f"{what} strategy must be a string like {'_'.join(allowed)!r}, got {strategy!r}")
    text = strategy.strip()
    if text in ("", "none"):
        return ()
    parts = tuple(text.split("_"))
    for part in parts:
        if part not in allowed:
            raise DdflowError(
                f"unknown {what} family {part!r} in strategy {strategy!r}; "
                f"allowed: {', '.join(allowed)} (joined by '_'), or 'none'"
            )
    return parts


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise DdflowError(f"expected a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise DdflowError(
            f"augmentation draws come from a CPU generator (then move to the data's device); "
            f"got a generator on {generator.device}"
        )


def _check_size(n: object, what: str = "batch size") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DdflowError(f"{what} must be a non-negative int, got {n!r}")
    return n


def _check_images(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DdflowError(f"expected images of shape (N, C, H, W), got {shape}")
    if not x.is_floating_point():
        raise DdflowError(f"expected floating-point images, got dtype {x.dtype}")
    return x


def _check_many(x: torch.Tensor, sizes: Sequence[int], generators: Sequence[torch.Generator]) -> None:
    if len(sizes) != len(generators):
        raise DdflowError(f"got {len(sizes)} chunk sizes but {len(generators)} generators")
    for s in sizes:
        _check_size(s, "chunk size")
    if sum(sizes) != x.shape[0]:
        raise DdflowError(f"chunk sizes {list(sizes)} sum to {sum(sizes)}, but the batch holds {x.shape[0]} images")


def _shift(x: torch.Tensor, dh: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    """out[n, :, i, j] = x[n, :, i + dh[n], j + dw[n]], zero where that falls outside the image.

    dh, dw: CPU int64 (N,). Vectorised: pad by the largest shift, then two gathers (differentiable)."""
    n, c, h, w = x.shape
    if n == 0:
        return x.clone()
    mh = int(dh.abs().max())
    mw = int(dw.abs().max())
    xp = F.pad(x, (mw, mw, mh, mh)) if (mh or mw) else x
    rows = to_device(torch.arange(h).unsqueeze(0) + dh.unsqueeze(1) + mh, x.device)  # (N, H)
    cols = to_device(torch.arange(w).unsqueeze(0) + dw.unsqueeze(1) + mw, x.device)  # (N, W)
    xr = xp.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, xp.shape[3]))
    return xr.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """grid_sample(x, affine_grid(theta)) with bilinear, zero padding, align_corners=True.
    theta: CPU (N, 2, 3), any float dtype."""
    theta = to_device(theta, x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _scale_theta(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    sx = sx.double()
    sy = sy.double()
    z = torch.zeros_like(sx)
    return torch.stack([sx, z, z, z, sy, z], dim=1).view(-1, 2, 3)


def _rotate_theta(angle: torch.Tensor, aspect: float = 1.0) -> torch.Tensor:
    """Rotation in normalised coordinates; aspect = (H-1)/(W-1) makes it a true pixel-space rotation
    on a non-square image (aspect 1 is the official DSA matrix)."""
    a = angle.double()
    cos, sin = torch.cos(a), torch.sin(a)
    z = torch.zeros_like(a)
    return torch.stack([cos, -sin * aspect, z, sin / aspect, cos, z], dim=1).view(-1, 2, 3)


def _family_codes(chunks: Sequence[tuple[str, int]], names: Sequence[str]) -> torch.Tensor:
    """Per-sample index into names, from ((name, size), ...)."""
    chunks = [(f, s) for f, s in chunks if s > 0]
    codes = torch.tensor([names.index(f) for f, _ in chunks], dtype=torch.long)
    sizes = torch.tensor([s for _, s in chunks], dtype=torch.long)
    return torch.repeat_interleave(codes, sizes)
