"""DC's per-image augmentation (``crop``, ``scale``, ``rotate``, ``noise``), used when evaluating DC, Random and
Herding on MNIST-like data: every image independently picks one transform. Draws come from explicit CPU
generators; ``augment_many`` as in ddflow.augment.dsa."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import DdflowError
from ..runtime import to_device
from .geometry import (
    _check_generator,
    _check_images,
    _check_many,
    _parse_strategy,
    _rotate_theta,
    _scale_theta,
    _shift,
    _warp,
)

DC_TRANSFORMS: tuple[str, ...] = ("crop", "scale", "rotate", "noise")


class DCAugment:
    """DC's per-image augmentation: every image picks ONE of the strategy's transforms uniformly.

    crop: pad by `crop` px with the image's per-channel mean, take an HxW window at integer offsets
    (r, c) in [0, 2*crop]; scale: zoom about the centre by (s_h, s_w) uniform in [1-scale, 1+scale],
    filled with the per-channel mean; rotate: angle uniform in [-rotate, rotate] degrees about the
    centre, filled with the per-channel mean; noise: x + noise * N(0, 1). No gradients.

    Draw layout (CPU tensors)::

        {"n": int,
         "choice": int64 (n,),           # index into DC_TRANSFORMS per image, -1 = identity
         "crop": int64 (k_crop, 2),      # (r, c) window offsets, for the images choosing crop, in order
         "scale": float32 (k_scale, 2),  # (s_h, s_w) zoom factors
         "rotate": float32 (k_rotate,),  # degrees
         "noise": float32 (k_noise, C, H, W)}  # already multiplied by `noise`
    """

    def __init__(self, strategy: str, crop: int = 4, scale: float = 0.2, rotate: float = 45.0, noise: float = 0.001):
        self.strategy = strategy
        self.transforms: tuple[str, ...] = _parse_strategy(strategy, DC_TRANSFORMS, "DC augmentation")
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 0:
            raise DdflowError(f"DCAugment crop must be an int >= 0, got {crop!r}")
        for name, v in (("scale", scale), ("rotate", rotate), ("noise", noise)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise DdflowError(f"DCAugment {name} must be a finite number >= 0, got {v!r}")
        if scale >= 1:
            raise DdflowError(f"DCAugment scale must be < 1 (zoom factors 1 +- scale), got {scale!r}")
        self.crop, self.scale, self.rotate, self.noise = crop, float(scale), float(rotate), float(noise)

    def __repr__(self) -> str:
        return (f"DCAugment({self.strategy!r}, crop={self.crop}, scale={self.scale}, "
                f"rotate={self.rotate}, noise={self.noise})")

    def sample(self, shape: Sequence[int], generator: torch.Generator) -> dict:
        """A draw for images of `shape` (N, C, H, W). Fixed order: every image's choice, then for each
        transform of DC_TRANSFORMS in the strategy, the parameters of the images that chose it."""
        _check_generator(generator)
        if len(shape) != 4:
            raise DdflowError(f"expected an image batch shape (N, C, H, W), got {tuple(shape)}")
        n, c, h, w = (int(s) for s in shape)
        draw = {
            "n": n,
            "choice": torch.full((n,), -1, dtype=torch.long),
            "crop": torch.zeros(0, 2, dtype=torch.long),
            "scale": torch.zeros(0, 2),
            "rotate": torch.zeros(0),
            "noise": torch.zeros(0, c, h, w),
        }
        if not self.transforms:
            return draw
        pick = torch.randint(0, len(self.transforms), (n,), generator=generator)
        codes = torch.tensor([DC_TRANSFORMS.index(t) for t in self.transforms], dtype=torch.long)
        choice = codes[pick]
        draw["choice"] = choice
        g = generator
        for code, t in enumerate(DC_TRANSFORMS):
            if t not in self.transforms:
                continue
            k = int((choice == code).sum())
            if t == "crop":
                draw["crop"] = torch.randint(0, 2 * self.crop + 1, (k, 2), generator=g)
            elif t == "scale":
                draw["scale"] = torch.rand(k, 2, generator=g) * (2 * self.scale) + (1 - self.scale)
            elif t == "rotate":
                draw["rotate"] = (torch.rand(k, generator=g) * 2 - 1) * self.rotate
            elif t == "noise":
                draw["noise"] = torch.randn(k, c, h, w, generator=g) * self.noise
        return draw

    @staticmethod
    def _concat(draws: Sequence[dict]) -> dict:
        out = {"n": sum(d["n"] for d in draws)}
        for key in ("choice", "crop", "scale", "rotate", "noise"):
            out[key] = torch.cat([d[key] for d in draws], dim=0)
        return out

    def _transform(self, t: str, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """t applied to x (k, C, H, W) with its parameters v (CPU, first dimension k)."""
        _, _, h, w = x.shape
        if t == "noise":
            return x + to_device(v, x.device, x.dtype)
        mean = x.mean(dim=(2, 3), keepdim=True)  # per image, per channel
        centred = x - mean  # transforms fill with 0 here, i.e. with the mean after adding it back
        if t == "crop":
            moved = _shift(centred, v[:, 0] - self.crop, v[:, 1] - self.crop)
        elif t == "scale":
            # zoom by s about the centre: output point u samples the input at u / s
            moved = _warp(centred, _scale_theta(1.0 / v[:, 1].double(), 1.0 / v[:, 0].double()))
        elif t == "rotate":
            aspect = (h - 1) / (w - 1) if h > 1 and w > 1 else 1.0
            moved = _warp(centred, _rotate_theta(v.double() * (math.pi / 180), aspect))
        else:  # pragma: no cover - the constructor rejects other names
            raise DdflowError(f"unknown DC augmentation {t!r}")
        return moved + mean

    def apply(self, x: torch.Tensor, draw: dict) -> torch.Tensor:
        _check_images(x)
        if not isinstance(draw, dict) or "choice" not in draw:
            raise DdflowError("not a DCAugment draw: expected a dict from DCAugment.sample()")
        if draw["n"] != x.shape[0]:
            raise DdflowError(f"draw was sampled for {draw['n']} images but the batch holds {x.shape[0]}")
        choice = draw["choice"]
        with torch.no_grad():
            out = x.detach().clone()
            for code, t in enumerate(DC_TRANSFORMS):
                idx = torch.nonzero(choice == code).squeeze(1)
                if idx.numel() == 0:
                    continue
                if draw[t].shape[0] != idx.numel():
                    raise DdflowError(f"draw holds {draw[t].shape[0]} {t!r} parameters for {idx.numel()} images")
                idx_dev = to_device(idx, x.device)
                out.index_copy_(0, idx_dev, self._transform(t, x.detach().index_select(0, idx_dev), draw[t]))
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_images(x)
        return self.apply(x, self.sample(x.shape, generator))

    def call_many(self, x: torch.Tensor, sizes: Sequence[int], generators: Sequence[torch.Generator]) -> torch.Tensor:
        """x = consecutive chunks of the given sizes; chunk k equals self(chunk_k, generators[k])."""
        _check_images(x)
        _check_many(x, sizes, generators)
        if not sizes:
            raise DdflowError("call_many needs at least one chunk")
        _, c, h, w = x.shape
        draws = [self.sample((s, c, h, w), g) for s, g in zip(sizes, generators)]
        return self.apply(x, self._concat(draws))

    augment_many = call_many
