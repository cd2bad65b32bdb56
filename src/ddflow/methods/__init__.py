"""Distillation methods, one file per method family behind the Method interface (base.py), registered by id
(registry.py). Adding a method = one new file here that calls @register, its import in the line below, and one
workflow/hparams YAML."""
from __future__ import annotations

from . import cafe, dm, dm_isa, ead, frepo, gradmatch, haba, herding, idc, idm, kip, mtt, mtt_isa, random_, tesla  # noqa: F401  (importing registers them)
from .base import Method, RealSelection
from .registry import REGISTRY, get_method, register

__all__ = ["REGISTRY", "Method", "RealSelection", "get_method", "register"]
