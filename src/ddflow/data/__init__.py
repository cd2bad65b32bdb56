"""Datasets: the registry (registry.py), their sources and preparation (sources.py, folders.py), real data in
memory (real.py), and the spaces a method distils in (spaces.py: normalised, or ZCA-whitened with zca.py)."""
from __future__ import annotations

from .real import RealData, check_ipc, class_counts, denormalize, load_real, normalize, to_float
from .registry import DATASETS, DatasetInfo, get_info, normalized_as
from .sources import KEYS, load_arrays, prepare, read_tiny_folder

__all__ = ["DATASETS", "KEYS", "DatasetInfo", "RealData", "check_ipc", "class_counts", "denormalize", "get_info",
           "load_arrays", "load_real", "normalize", "normalized_as", "prepare", "read_tiny_folder", "to_float"]
