"""DC's per-image augmentation (``crop``, ``scale``, ``rotate``, ``noise``), used when evaluating DC, Random and
Herding on MNIST-like data: every image independently picks one transform. It follows the official
VICO-UoE/DatasetCondensation utils.py `augment` (applied per minibatch in `epoch`, mode train) transform for
transform: the crop pads with the minibatch's per-channel mean and shifts by -crop..crop-1 (np.random.permutation(
2 * crop)[0]); the scale resizes to int(U(1-s, 1+s) * H) x int(U(1-s, 1+s) * H) pixels with nearest interpolation
(F.interpolate's default) on a zero canvas, centre-cropped back; the rotate turns by an integer angle in
[-rotate, rotate) (np.random.randint) with scipy.ndimage.rotate (cubic spline, reshape, constant fill with the mean
of the minibatch's channel means), centre-cropped back; noise adds noise * N(0, 1). Only the random streams differ:
draws come from explicit CPU generators, not numpy's global state. ``augment_many`` as in ddflow.augment.dsa, each
chunk (one model's minibatch) with its own mean."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DdflowError
from ..runtime import to_device
from .geometry import _check_generator, _check_images, _check_many, _parse_strategy

DC_TRANSFORMS: tuple[str, ...] = ("crop", "scale", "rotate", "noise")


class DCAugment:
    """DC's per-image augmentation: every image picks ONE of the strategy's transforms uniformly.

    crop: pad by `crop` px with the minibatch's per-channel mean, take an HxW window at integer offsets
    (r, c) in [0, 2*crop); scale: factors (f_h, f_w) uniform in [1-scale, 1+scale] (module doc); rotate: an
    integer angle in [-rotate, rotate) degrees (module doc); noise: x + noise * N(0, 1). No gradients.

    Draw layout (CPU tensors)::

        {"n": int,
         "choice": int64 (n,),           # index into DC_TRANSFORMS per image, -1 = identity
         "crop": int64 (k_crop, 2),      # (r, c) window offsets, for the images choosing crop, in order
         "scale": float32 (k_scale, 2),  # (f_h, f_w) size factors
         "rotate": float32 (k_rotate,),  # whole degrees
         "noise": float32 (k_noise, C, H, W)}  # already multiplied by `noise`
    """

    def __init__(self, strategy: str, crop: int = 4, scale: float = 0.2, rotate: int = 45, noise: float = 0.001):
        self.strategy = strategy
        self.transforms: tuple[str, ...] = _parse_strategy(strategy, DC_TRANSFORMS, "DC augmentation")
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 0:
            raise DdflowError(f"DCAugment crop must be an int >= 0, got {crop!r}")
        for name, v in (("scale", scale), ("rotate", rotate), ("noise", noise)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise DdflowError(f"DCAugment {name} must be a finite number >= 0, got {v!r}")
        if scale >= 1:
            raise DdflowError(f"DCAugment scale must be < 1 (zoom factors 1 +- scale), got {scale!r}")
        if "crop" in self.transforms and crop < 1:
            raise DdflowError(f"DCAugment crop must be >= 1 when the strategy crops, got {crop!r}")
        if "rotate" in self.transforms and (int(rotate) != rotate or rotate < 1):
            raise DdflowError(f"DCAugment rotate must be a whole number of degrees >= 1, got {rotate!r}")
        self.crop, self.scale, self.rotate, self.noise = crop, float(scale), int(rotate), float(noise)

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
                draw["crop"] = torch.randint(0, 2 * self.crop, (k, 2), generator=g)
            elif t == "scale":
                draw["scale"] = torch.rand(k, 2, generator=g) * (2 * self.scale) + (1 - self.scale)
            elif t == "rotate":
                draw["rotate"] = torch.randint(-self.rotate, self.rotate, (k,), generator=g).float()
            elif t == "noise":
                draw["noise"] = torch.randn(k, c, h, w, generator=g) * self.noise
        return draw

    def _transform(self, t: str, x: torch.Tensor, v: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """t applied to x (k, C, H, W) with its parameters v (CPU, first dimension k); `mean` = the minibatch's
        per-channel mean (C,)."""
        k, c, h, w = x.shape
        if t == "noise":
            return x + to_device(v, x.device, x.dtype)
        out = torch.empty_like(x)
        if t == "crop":
            p = self.crop
            padded = mean.view(1, c, 1, 1).expand(k, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p:p + h, p:p + w] = x
            for i, (r, s) in enumerate(v.tolist()):
                out[i] = padded[i, :, r:r + h, s:s + w]
        elif t == "scale":
            for i, (fh, fw) in enumerate(v.tolist()):
                sh, sw = int(fh * h), int(fw * h)  # official: both sizes from shape[2]
                resized = F.interpolate(x[i:i + 1], [sh, sw])[0]  # nearest
                side = max(sh, sw, h, w)
                canvas = x.new_zeros(c, side, side)
                r0, c0 = int((side - sh) / 2), int((side - sw) / 2)
                canvas[:, r0:r0 + sh, c0:c0 + sw] = resized
                r1, c1 = int((side - h) / 2), int((side - w) / 2)
                out[i] = canvas[:, r1:r1 + h, c1:c1 + w]
        elif t == "rotate":
            from scipy.ndimage import rotate as spline_rotate  # here, not at the top: ~0.5 s of every job's start

            fill = float(mean.double().mean())  # official cval = np.mean(mean)
            for i, angle in enumerate(v.tolist()):
                turned = spline_rotate(x[i].cpu().float().numpy(), angle=angle, axes=(-2, -1), cval=fill)
                r, s = int((turned.shape[-2] - h) / 2), int((turned.shape[-1] - w) / 2)
                out[i] = torch.from_numpy(np.ascontiguousarray(turned[:, r:r + h, s:s + w])).to(out)
        else:  # pragma: no cover - the constructor rejects other names
            raise DdflowError(f"unknown DC augmentation {t!r}")
        return out

    def apply(self, x: torch.Tensor, draw: dict) -> torch.Tensor:
        _check_images(x)
        if not isinstance(draw, dict) or "choice" not in draw:
            raise DdflowError("not a DCAugment draw: expected a dict from DCAugment.sample()")
        if draw["n"] != x.shape[0]:
            raise DdflowError(f"draw was sampled for {draw['n']} images but the batch holds {x.shape[0]}")
        choice = draw["choice"]
        with torch.no_grad():
            mean = x.detach().mean(dim=(0, 2, 3))  # official: per channel over the whole minibatch, before any change
            out = x.detach().clone()
            for code, t in enumerate(DC_TRANSFORMS):
                idx = torch.nonzero(choice == code).squeeze(1)
                if idx.numel() == 0:
                    continue
                if draw[t].shape[0] != idx.numel():
                    raise DdflowError(f"draw holds {draw[t].shape[0]} {t!r} parameters for {idx.numel()} images")
                idx_dev = to_device(idx, x.device)
                out.index_copy_(0, idx_dev, self._transform(t, x.detach().index_select(0, idx_dev), draw[t], mean))
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_images(x)
        return self.apply(x, self.sample(x.shape, generator))

    def augment_many(self, x: torch.Tensor, sizes: Sequence[int],
                     generators: Sequence[torch.Generator]) -> torch.Tensor:
        """x = consecutive chunks of the given sizes; chunk k equals self(chunk_k, generators[k])."""
        _check_images(x)
        _check_many(x, sizes, generators)
        if not sizes:
            raise DdflowError("augment_many needs at least one chunk")
        _, c, h, w = x.shape
        out, start = [], 0
        for s, g in zip(sizes, generators):  # each chunk is one model's minibatch, with its own minibatch mean
            out.append(self.apply(x[start:start + s], self.sample((s, c, h, w), g)))
            start += s
        return torch.cat(out)
