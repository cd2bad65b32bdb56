"""Evaluation protocols, one module per family of protocols, one signature (registry.py), one cell runner (cell.py):
dc.py (`dc`, `mtt`, `soft`), idc.py (`idc`), kernel.py (`frepo`, `krr`), haba.py (`haba`), bilevel.py (`dd`, `ld`),
kip.py (`krr-inf`, `kip-nn`), rcig.py (`rcig`), rfad.py (`rfad-nn`), rtp.py (`rtp`), xarch.py (`dc-resnet18`,
`mtt-vgg11`, ...: a base protocol on another network), regimes.py (`soft-hard`, `dc-teacher`, `dc-noaug`, ...: label
regimes and augmentation variants of the protocols that admit them). Importing the package registers them all."""
from __future__ import annotations

from . import bilevel, dc, haba, idc, kernel, kip, rcig, regimes, rfad, rtp, xarch  # noqa: F401  (importing registers them)
from .cell import evaluate_cell, protocol_settings
from .registry import PROTOCOLS, get_protocol, protocol

__all__ = ["PROTOCOLS", "evaluate_cell", "get_protocol", "protocol", "protocol_settings"]
