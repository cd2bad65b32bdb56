"""Throughput measurements shared by benchmarks/bench.py and `python -m ddflow smoke`: seconds per distillation
iteration of any registered method, timed after one warm-up step (cuDNN autotuning, allocator) with the GPU
synchronised at both ends, optionally time-boxed."""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import torch

from .. import hparams
from ..data import RealData
from ..progress import Progress
from ..runtime import peak_memory_mb, reset_peak
from ..seeding import generator
from ..stages.distill import build_method


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_method(data: RealData, device: torch.device, method: str, ipc: int, iters: int, preset: str,
                hp: dict[str, Any] | None = None, inputs: dict[str, str] | None = None,
                budget_s: float | None = None, hp_dir: str | Path | None = None) -> dict[str, Any]:
    """Seconds per distillation iteration of `method` over `iters` timed steps after one warm-up step, and the peak
    memory of the timed steps; `cpu_seconds_per_iteration` is this process's CPU time per step (all its threads),
    steadier than the wall clock on a shared machine, of which `system_seconds_per_iteration` in the kernel (page
    faults of fresh allocations: `page_faults_per_iteration`). `hp` replaces the resolved hyperparameters; `inputs`
    as the runner's. With `budget_s`, the timed loop stops once that many seconds are spent (after at least one step):
    `iterations` says how many were timed and `truncated` whether that is fewer than asked."""
    hp = hp if hp is not None else hparams.resolve(method, data.info.name, ipc, preset, hp_dir)
    built = build_method(method, hp, data, ipc, generator("bench", method), device, inputs)  # as the runner
    m, data = built.method, built.data
    m.init()
    m.step(0)
    sync(device)
    reset_peak(device)
    progress = Progress(iters, f"time {method}/{data.info.name}/ipc{ipc}")
    done, t0, c0, r0 = 0, time.time(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    for it in range(1, iters + 1):
        progress.update(it, **m.step(it))
        done = it
        if budget_s is not None and done < iters and time.time() - t0 >= budget_s:
            break
    sync(device)
    dt = (time.time() - t0) / done
    cpu = (time.process_time() - c0) / done
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    progress.close()
    return {"bench": "distill", "method": method, "dataset": data.info.name, "ipc": ipc, "preset": preset,
            "seconds_per_iteration": dt, "iterations_per_s": 1 / dt,
            "cpu_seconds_per_iteration": cpu, "system_seconds_per_iteration": (r1.ru_stime - r0.ru_stime) / done,
            "page_faults_per_iteration": (r1.ru_minflt - r0.ru_minflt) / done, "iterations": done,
            "truncated": done < iters,
            **peak_memory_mb(device)}
