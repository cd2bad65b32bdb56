"""DSA, the differentiable Siamese augmentation of DSA/DM (families ``color``, ``crop``, ``cutout``, ``flip``,
``scale``, ``rotate``), in the official single-family ("S") mode: every call draws ONE family for the whole batch
(or for each chunk of it) and per-sample parameters for it. Randomness is split from application: ``sample()``
returns a *draw* (a plain dict of CPU tensors) and ``apply()`` applies it, differentiably, on any device. A draw of
size 1 broadcasts to any batch, which is how Siamese augmentation shares one transform between a real and a
synthetic batch.

Like every augmenter of ddflow.augment it offers ``augment_many(x, sizes, generators)``: the batch is consecutive
chunks, chunk k drawing from ``generators[k]`` exactly what a separate call on that chunk with that generator would
draw, so K models trained together see the same augmentations as K models trained one by one.

DSA draw layout (every tensor lives on the CPU, first dimension ``n``)::

    {"n": int,                              # batch size it was sampled for; 1 = broadcast (Siamese)
     "chunks": ((family, size), ...),       # consecutive chunks, sizes sum to n; family 'none' = identity
     "flip": bool (n,),                     # flip horizontally (width axis)
     "scale": float32 (n, 2),               # (sx, sy): theta = [[sx, 0, 0], [0, sy, 0]]
     "angle": float32 (n,),                 # radians: theta = [[cos, -sin, 0], [sin, cos, 0]]
     "crop": float32 (n, 2),                # U[0,1) for the (height, width) shift, turned into an
                                            #   integer in [-s, s], s = round(ratio_crop_pad * size),
                                            #   once the image size is known (see crop_shifts)
     "cutout": float32 (n, 2),              # U[0,1) for the (row, col) hole centre (see cutout_boxes)
     "brightness": float32 (n,),            # additive: (U - 0.5) * brightness
     "saturation": float32 (n,),            # factor:   U * saturation
     "contrast": float32 (n,)}              # factor:   U + contrast

Entries of a family a sample did not draw hold neutral values (no flip, scale 1, angle 0, zero
shift, ...) and are ignored by ``apply()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import DdflowError
from ..runtime import to_device
from .geometry import (
    _check_generator,
    _check_images,
    _check_many,
    _check_size,
    _family_codes,
    _parse_strategy,
    _rotate_theta,
    _round_half_up,
    _scale_theta,
    _shift,
    _warp,
)

DSA_FAMILIES: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")

_DSA_PARAM_KEYS: tuple[str, ...] = (
    "flip", "scale", "angle", "crop", "cutout", "brightness", "saturation", "contrast",
)


@dataclass(frozen=True)
class DSAParams:
    """Ranges of the DSA transforms (defaults = the official ParamDiffAug)."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self) -> None:
        for name in ("prob_flip", "ratio_scale", "ratio_rotate", "ratio_crop_pad", "ratio_cutout",
                     "brightness", "saturation", "contrast"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise DdflowError(f"DSAParams.{name} must be a finite number >= 0, got {v!r}")
        if self.ratio_scale <= 0:
            raise DdflowError(f"DSAParams.ratio_scale must be > 0, got {self.ratio_scale!r}")
        if self.prob_flip > 1:
            raise DdflowError(f"DSAParams.prob_flip must be in [0, 1], got {self.prob_flip!r}")


class DSA:
    """Differentiable Siamese augmentation, single family per call ('S' mode)."""

    def __init__(self, strategy: str, params: DSAParams = DSAParams()):
        if not isinstance(params, DSAParams):
            raise DdflowError(f"params must be a DSAParams, got {type(params).__name__}")
        self.strategy = strategy
        self.params = params
        self.families: tuple[str, ...] = _parse_strategy(strategy, DSA_FAMILIES, "DSA")

    def __repr__(self) -> str:
        return f"DSA({self.strategy!r}, {self.params!r})"

    # ---- draws ---------------------------------------------------------------------------------

    @staticmethod
    def make_draw(family: str, n: int = 1, **values: torch.Tensor) -> dict:
        """A draw by hand: one chunk of `family` ('none' allowed) with neutral parameters, the given
        entries (see the module doc for their shapes) replacing the neutral ones."""
        if family != "none" and family not in DSA_FAMILIES:
            raise DdflowError(f"unknown DSA family {family!r}; allowed: {', '.join(DSA_FAMILIES)}, or 'none'")
        draw = DSA._neutral(_check_size(n), family)
        for key, value in values.items():
            if key not in _DSA_PARAM_KEYS:
                raise DdflowError(f"unknown DSA draw entry {key!r}; allowed: {', '.join(_DSA_PARAM_KEYS)}")
            value = torch.as_tensor(value, dtype=draw[key].dtype)
            if value.shape != draw[key].shape:
                raise DdflowError(f"draw entry {key!r} must have shape {tuple(draw[key].shape)}, "
                                  f"got {tuple(value.shape)}")
            draw[key] = value
        return draw

    @staticmethod
    def _neutral(n: int, family: str) -> dict:
        return {
            "n": n,
            "chunks": ((family, n),),
            "flip": torch.zeros(n, dtype=torch.bool),
            "scale": torch.ones(n, 2),
            "angle": torch.zeros(n),
            "crop": torch.full((n, 2), 0.5),
            "cutout": torch.full((n, 2), 0.5),
            "brightness": torch.zeros(n),
            "saturation": torch.ones(n),
            "contrast": torch.ones(n),
        }

    def _sample_one(self, n: int, g: torch.Generator) -> dict:
        """Fixed order: the family (one randint), then that family's parameters only."""
        if not self.families:
            return self._neutral(n, "none")
        k = int(torch.randint(0, len(self.families), (1,), generator=g))
        family = self.families[k]
        draw = self._neutral(n, family)
        p = self.params
        if family == "color":
            draw["brightness"] = (torch.rand(n, generator=g) - 0.5) * p.brightness
            draw["saturation"] = torch.rand(n, generator=g) * p.saturation
            draw["contrast"] = torch.rand(n, generator=g) + p.contrast
        elif family == "crop":
            draw["crop"] = torch.rand(n, 2, generator=g)
        elif family == "cutout":
            draw["cutout"] = torch.rand(n, 2, generator=g)
        elif family == "flip":
            draw["flip"] = torch.rand(n, generator=g) < p.prob_flip
        elif family == "scale":
            r = p.ratio_scale
            draw["scale"] = torch.rand(n, 2, generator=g) * (r - 1.0 / r) + 1.0 / r
        elif family == "rotate":
            draw["angle"] = (torch.rand(n, generator=g) - 0.5) * 2 * p.ratio_rotate / 180 * math.pi
        return draw

    @staticmethod
    def _concat(draws: Sequence[dict]) -> dict:
        out = {"n": sum(d["n"] for d in draws), "chunks": tuple(c for d in draws for c in d["chunks"])}
        for key in _DSA_PARAM_KEYS:
            out[key] = torch.cat([d[key] for d in draws], dim=0)
        return out

    def sample(self, n: int, generator: torch.Generator, groups: int = 1) -> dict:
        """A draw for n images: `groups` equal consecutive chunks, each drawing its own family (and
        then its parameters) from `generator`, chunk after chunk."""
        _check_size(n)
        _check_generator(generator)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise DdflowError(f"groups must be an int >= 1, got {groups!r}")
        if n % groups:
            raise DdflowError(f"batch size {n} is not divisible into {groups} equal groups")
        size = n // groups
        return self._concat([self._sample_one(size, generator) for _ in range(groups)])

    def sample_many(self, sizes: Sequence[int], generators: Sequence[torch.Generator]) -> dict:
        """One family + per-sample parameters per (size, generator), concatenated in order; chunk k
        equals sample(sizes[k], generators[k]) from the same generator state."""
        if len(sizes) != len(generators):
            raise DdflowError(f"got {len(sizes)} chunk sizes but {len(generators)} generators")
        if not sizes:
            raise DdflowError("sample_many needs at least one chunk")
        for s, g in zip(sizes, generators):
            _check_size(s, "chunk size")
            _check_generator(g)
        return self._concat([self._sample_one(s, g) for s, g in zip(sizes, generators)])

    def siamese(self, generator: torch.Generator) -> dict:
        """A draw of size 1: apply() gives every image of any batch that one transform."""
        return self.sample(1, generator)

    def siamese_pair(self, real: torch.Tensor, syn: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One class's real and synthetic batches under one shared draw (the official per-class seed of DC/DSA,
        DM, CAFE and IDM: the same transform for both batches)."""
        draw = self.siamese(generator)
        return self.apply(real, draw), self.apply(syn, draw)

    def siamese_per_class(self, reals, syns, generator: torch.Generator) -> tuple[list, list]:
        """siamese_pair for each class in order (one draw per class from `generator`): (augmented reals, syns)."""
        pairs = [self.siamese_pair(r, s, generator) for r, s in zip(reals, syns, strict=True)]
        return [r for r, _ in pairs], [s for _, s in pairs]

    # ---- draw inspection -----------------------------------------------------------------------

    def crop_shifts(self, draw: dict, height: int, width: int) -> torch.Tensor:
        """Integer (dh, dw) per sample, (n, 2) int64: out[i, j] = in[i + dh, j + dw] (zeros outside)."""
        u = draw["crop"].double()
        sh = _round_half_up(height * self.params.ratio_crop_pad)
        sw = _round_half_up(width * self.params.ratio_crop_pad)
        dh = torch.clamp(torch.floor(u[:, 0] * (2 * sh + 1)), max=2 * sh).long() - sh
        dw = torch.clamp(torch.floor(u[:, 1] * (2 * sw + 1)), max=2 * sw).long() - sw
        return torch.stack([dh, dw], dim=1)

    def cutout_boxes(self, draw: dict, height: int, width: int) -> torch.Tensor:
        """(top, left, bottom, right) per sample, (n, 4) int64, bottom/right exclusive, clipped to
        the image: the zeroed hole. As officially: hole size round(ratio * size), centre c drawn from
        [0, size - hole % 2], hole rows [c - hole // 2, c - hole // 2 + hole)."""
        u = draw["cutout"].double()
        out = []
        for col, size in ((0, height), (1, width)):
            hole = _round_half_up(size * self.params.ratio_cutout)
            span = size + 1 - hole % 2
            centre = torch.clamp(torch.floor(u[:, col] * span), max=span - 1).long()
            lo = centre - hole // 2
            out.append((lo.clamp(0, size), (lo + hole).clamp(0, size)))
        (top, bottom), (left, right) = out
        return torch.stack([top, left, bottom, right], dim=1)

    # ---- application ---------------------------------------------------------------------------

    def _apply_family(self, family: str, x: torch.Tensor, p: dict) -> torch.Tensor:
        """x: (N, C, H, W) on any device; p: CPU parameters with first dimension N."""
        n, _, h, w = x.shape
        if family == "none":
            return x
        if family == "color":
            b = to_device(p["brightness"], x.device, x.dtype).view(n, 1, 1, 1)
            s = to_device(p["saturation"], x.device, x.dtype).view(n, 1, 1, 1)
            c = to_device(p["contrast"], x.device, x.dtype).view(n, 1, 1, 1)
            x = x + b
            m = x.mean(dim=1, keepdim=True)
            x = (x - m) * s + m
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - m) * c + m
        if family == "flip":
            f = to_device(p["flip"], x.device).view(n, 1, 1, 1)
            return torch.where(f, x.flip(3), x)
        if family == "scale":
            return _warp(x, _scale_theta(p["scale"][:, 0], p["scale"][:, 1]))
        if family == "rotate":
            return _warp(x, _rotate_theta(p["angle"]))
        if family == "crop":
            d = self.crop_shifts(p, h, w)
            return _shift(x, d[:, 0], d[:, 1])
        if family == "cutout":
            box = self.cutout_boxes(p, h, w)
            rows = torch.arange(h).unsqueeze(0)
            cols = torch.arange(w).unsqueeze(0)
            in_r = (rows >= box[:, 0:1]) & (rows < box[:, 2:3])  # (N, H)
            in_c = (cols >= box[:, 1:2]) & (cols < box[:, 3:4])  # (N, W)
            hole = in_r.unsqueeze(2) & in_c.unsqueeze(1)
            keep = to_device((~hole).unsqueeze(1), x.device, x.dtype)
            return x * keep
        raise DdflowError(f"unknown DSA family {family!r} in draw; allowed: {', '.join(DSA_FAMILIES)}, or 'none'")

    def apply(self, x: torch.Tensor, draw: dict) -> torch.Tensor:
        """Apply a draw to x (N, C, H, W), differentiably. The draw must have been sampled for N
        images, or for 1 (then broadcast: every image gets that one transform)."""
        _check_images(x)
        if not isinstance(draw, dict) or "n" not in draw or "chunks" not in draw:
            raise DdflowError("not a DSA draw: expected a dict from DSA.sample()/sample_many()/siamese()")
        n_draw, n = draw["n"], x.shape[0]
        if n_draw != n and n_draw != 1:
            raise DdflowError(f"draw was sampled for {n_draw} images but the batch holds {n} "
                              "(only size-1 draws broadcast)")
        chunks = tuple(draw["chunks"])
        if sum(s for _, s in chunks) != n_draw:
            raise DdflowError(f"draw chunks {chunks} do not add up to its size {n_draw}")
        for key in _DSA_PARAM_KEYS:
            if key not in draw or draw[key].shape[0] != n_draw:
                raise DdflowError(f"draw entry {key!r} missing or not of length {n_draw}")

        params = {k: draw[k] for k in _DSA_PARAM_KEYS}
        if n_draw != n:  # size-1 draw: broadcast sample 0 to the batch
            params = {k: v.expand(n, *v.shape[1:]) for k, v in params.items()}
        families = list(dict.fromkeys(f for f, s in chunks if s > 0))
        if n == 0 or not families:
            return x
        if len(families) == 1:
            return self._apply_family(families[0], x, params)

        # several families (several groups): each family on the samples that drew it, then reorder
        codes = _family_codes(chunks, families)
        pieces, order = [], []
        for k, family in enumerate(families):
            idx = torch.nonzero(codes == k).squeeze(1)
            sub = {key: v.index_select(0, idx) for key, v in params.items()}
            pieces.append(self._apply_family(family, x.index_select(0, to_device(idx, x.device)), sub))
            order.append(idx)
        inverse = torch.argsort(torch.cat(order))
        return torch.cat(pieces, dim=0).index_select(0, to_device(inverse, x.device))

    def __call__(self, x: torch.Tensor, generator: torch.Generator, groups: int = 1) -> torch.Tensor:
        _check_images(x)
        return self.apply(x, self.sample(x.shape[0], generator, groups))

    def augment_many(self, x: torch.Tensor, sizes: Sequence[int],
                     generators: Sequence[torch.Generator]) -> torch.Tensor:
        """x = consecutive chunks of the given sizes; chunk k augmented with generators[k] exactly as
        self(chunk_k, generators[k]) would be."""
        _check_images(x)
        _check_many(x, sizes, generators)
        return self.apply(x, self.sample_many(sizes, generators))
