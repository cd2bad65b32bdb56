"""Augmentation, one module per augmenter: DSA (dsa.py), DC's per-image augmentation (dc.py), IDC's DiffAug
(idc.py) and CutMix (cutmix.py); `make_augment` builds one from a protocol's or method's settings."""
from __future__ import annotations

from ..errors import DdflowError
from .dc import DC_TRANSFORMS, DCAugment
from .dsa import DSA, DSA_FAMILIES, DSAParams
from .idc import IDCAugment

__all__ = ["DC_TRANSFORMS", "DSA", "DSA_FAMILIES", "DCAugment", "DSAParams", "IDCAugment", "make_augment"]


def make_augment(kind: str, strategy: str) -> DSA | DCAugment | None:
    """'dsa' -> DSA(strategy), 'dc' -> DCAugment(strategy), 'none' -> None."""
    if kind == "dsa":
        return DSA(strategy)
    if kind == "dc":
        return DCAugment(strategy)
    if kind == "none":
        return None
    raise DdflowError(f"unknown augmentation kind {kind!r}; allowed: dsa, dc, none")
