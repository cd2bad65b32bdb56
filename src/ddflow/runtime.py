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


def to_device(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`t` as `dtype` (cast where it lies) on `device`. A CPU tensor bound for a GPU is staged in pinned memory and
    copied without blocking: a plain `.to('cuda')` of pageable memory is a copy plus a stream synchronisation, so a
    hot loop that moves a small random draw per step (a permutation, augmentation parameters) would wait for all
    queued GPU work every step; the caching host allocator keeps the pinned copy alive until the transfer is done.
    On the CPU this is `t.to(dtype).to(device)`: the same values as before."""
    if dtype is not None:
        t = t.to(dtype)
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process, and peak CUDA memory allocated when on a GPU."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
