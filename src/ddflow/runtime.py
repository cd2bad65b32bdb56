"""Device choice, thread count, peak memory and logging set-up shared by the CLI stages."""
from __future__ import annotations

import logging
import os
import resource
import sys

import torch

from .errors import DdflowError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise DdflowError(f"device {name!r} unknown; allowed: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DdflowError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(name)


def setup(threads: int | None = None) -> None:
    """Logging to stderr (Snakemake redirects it into results/logs/...) and the CPU thread count."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    if threads:
        torch.set_num_threads(threads)
    elif "SNAKEMAKE_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["SNAKEMAKE_THREADS"]))


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process, and peak CUDA memory allocated when on a GPU."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
