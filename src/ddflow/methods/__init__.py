"""Distillation methods, one file per method family behind the Method interface (base.py), registered by id
(registry.py). Adding a method = one new file here that calls @register, its import in the block below, and one
workflow/hparams YAML."""
from __future__ import annotations

from . import (  # noqa: F401  (importing registers them)
    cafe,
    dd,
    dm,
    dm_isa,
    ead,
    frepo,
    gradmatch,
    haba,
    herding,
    idc,
    idm,
    kip,
    ld,
    mtt,
    mtt_isa,
    random_pick,
    rcig,
    rcig_isa,
    rfad,
    rfad_isa,
    rtp,
    tesla,
)
from .base import Method, RealSelection
from .registry import REGISTRY, get_method, register

__all__ = ["REGISTRY", "Method", "RealSelection", "get_method", "register"]
