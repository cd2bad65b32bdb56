"""Datasets: the registry (registry.py), their sources and preparation (sources.py, folders.py), real data in
memory (real.py), and the spaces a method distils in (spaces.py: normalised, or ZCA-whitened with zca.py).

The names of real.py (torch tensors) are imported on first use (PEP 562 `__getattr__`): a job that needs only the
registry or the prepared arrays (a table, a figure from cells, the data and validation-split jobs) starts without
importing torch."""
from __future__ import annotations

from .registry import DATASETS, DatasetInfo, get_info, normalized_as
from .sources import KEYS, load_arrays, prepare, read_tiny_folder

_REAL = ("RealData", "check_ipc", "class_counts", "denormalize", "load_real", "normalize", "to_float")

__all__ = ["DATASETS", "KEYS", "DatasetInfo", "RealData", "check_ipc", "class_counts", "denormalize", "get_info",
           "load_arrays", "load_real", "normalize", "normalized_as", "prepare", "read_tiny_folder", "to_float"]


def __getattr__(name: str):
    if name in _REAL:
        from . import real
        return getattr(real, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
