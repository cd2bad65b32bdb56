"""IDC's own DiffAug (Kim et al., ICML 2022; snu-mllab/Efficient-Dataset-Condensation), on DSA's transforms.

Unlike DSA's single-family draw, it ALWAYS applies the strategy's flip and color (in that order), then ONE family
drawn from the rest (crop / scale / rotate), then cutout. Shared mode (the official batch=True, used for matching) =
one transform for the whole concatenated real + synthetic batch; per-sample mode (batch=False, network training) =
per-image parameters, one geometric family per call. Draws come from explicit CPU generators.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .dsa import DSA, DSA_FAMILIES, DSAParams
from .geometry import _parse_strategy

ALWAYS_BEFORE = ("flip", "color")   # applied first, in this order, whenever listed

ALWAYS_AFTER = ("cutout",)          # applied last whenever listed


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
