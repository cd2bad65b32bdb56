"""Distillation methods, one file per method family behind the Method interface (base.py), registered by id
(registry.py). Adding a method = one new file here that calls @register, its import in the line below, and one
workflow/hparams YAML."""
from __future__ import annotations

from . import (  # noqa: F401  (importing registers them)
    cafe,
    dm,
    dm_isa,
    ead,
    frepo,
    gradmatch,
    haba,
    herding,
    idc,
    idm,
    mtt,
    mtt_isa,
    random_,
    rfad,
    rfad_isa,
    tesla,
)
from .base import Method, RealSelection
from .registry import REGISTRY, get_method, register

__all__ = ["REGISTRY", "Method", "RealSelection", "get_method", "register"]
