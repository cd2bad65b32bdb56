"""HaBa's factorised data (Liu et al., NeurIPS 2022; official Huage001/DatasetFactorization utils.py): the
hallucinator networks, what a HaBa record stores (its extras `haba_bases`, `haba_hallucinators`, `haba`) and the
images rebuilt from it. Shared by the method (ddflow.methods.haba) and its evaluation protocol
(ddflow.protocols.haba)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import DdflowError
from ..nets import init_params_


class Hallucinator(nn.Module):
    """utils.py StyleTranslator: enc conv (no padding) -> scale * h + shift per channel and position -> dec
    transposed conv; maps (B, in_channels, S, S) to (B, channels, S, S)."""

    def __init__(self, in_channels: int, channels: int, size: int, kernel: int):
        super().__init__()
        if kernel < 1 or kernel > size:
            raise DdflowError(f"haba: hallucinator kernel {kernel} does not fit {size}x{size} images")
        inner = size - kernel + 1
        self.enc = nn.Conv2d(in_channels, channels, kernel)
        self.scale = nn.Parameter(torch.ones(1, channels, inner, inner))
        self.shift = nn.Parameter(torch.zeros(1, channels, inner, inner))
        self.dec = nn.ConvTranspose2d(channels, channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.scale * self.enc(x) + self.shift)


def build_hallucinators(n: int, in_channels: int, channels: int, size: int, kernel: int,
                        generator: torch.Generator | None = None) -> nn.ModuleList:
    """n hallucinators; with a generator, their convs drawn from it with PyTorch's default init (scale 1, shift 0)."""
    hals = nn.ModuleList(Hallucinator(in_channels, channels, size, kernel) for _ in range(n))
    if generator is not None:
        init_params_(hals, generator)
    return hals


@torch.no_grad()
def generate(bases: torch.Tensor, hallucinators: nn.ModuleList) -> torch.Tensor:
    """Every basis through every hallucinator: (len(hallucinators) * B, C, S, S), hallucinator after hallucinator."""
    return torch.cat([h(bases) for h in hallucinators])


def storage(bases: torch.Tensor, hallucinators: nn.ModuleList, image_numel: int) -> dict[str, Any]:
    """Numbers stored: the bases' pixels, the hallucinators' parameters, their sum, and that sum in images."""
    n_bases = int(bases.numel())
    n_hal = int(sum(p.numel() for p in hallucinators.parameters()))
    return {"bases": n_bases, "hallucinators": n_hal, "total": n_bases + n_hal,
            "images_equivalent": (n_bases + n_hal) / image_numel}


@torch.no_grad()
def hallucinate(bases: torch.Tensor, hallucinators: nn.ModuleList, picks: torch.Tensor) -> torch.Tensor:
    """bases[i] through hallucinators[picks[i]]: one image per basis (the official evaluation's access, utils.py
    StyleTranslatorSharedDataset.__getitem__ lines 244-251)."""
    out = None
    for j in picks.unique().tolist():
        rows = picks == j
        y = hallucinators[j](bases[rows])
        if out is None:
            out = y.new_empty((len(bases), *y.shape[1:]))
        out[rows] = y
    return out


def factors_from_record(extra: dict[str, Any]) -> tuple[torch.Tensor, nn.ModuleList]:
    """A record's bases and hallucinators (its extras `haba_bases`, `haba_hallucinators`, `haba`)."""
    missing = [k for k in ("haba", "haba_bases", "haba_hallucinators") if k not in extra]
    if missing:
        raise DdflowError(f"not a HaBa record: its extras lack {', '.join(missing)}")
    cfg, bases = extra["haba"], extra["haba_bases"].float()
    hals = build_hallucinators(int(cfg["n_hallucinators"]), bases.shape[1], int(cfg["channels"]), bases.shape[-1],
                               int(cfg["kernel"]))
    hals.load_state_dict(extra["haba_hallucinators"])
    return bases, hals


def generate_from_record(extra: dict[str, Any]) -> torch.Tensor:
    """The evaluated images rebuilt from a record's extras (`haba_bases`, `haba_hallucinators`, `haba`)."""
    return generate(*factors_from_record(extra))
