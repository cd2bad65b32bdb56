"""Device choice, thread count, peak memory and logging set-up shared by the CLI stages."""
from __future__ import annotations

import functools
import logging
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DdflowError
from .gpu_slots import own_cuda_device

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The device of a CLI stage. CUDA: this process's own GPU where several are visible (ddflow.gpu_slots: each
    concurrent job on a multi-GPU workstation claims a free one), else `cuda`."""
    import torch  # in each function that uses it: the commands that read only files start without torch (cli)
    if name not in DEVICES:
        raise DdflowError(f"device {name!r} unknown; allowed: {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DdflowError("device 'cuda' requested but torch sees no CUDA device")
    return own_cuda_device() if name == "cuda" else torch.device(name)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
HEAP_KEEP_BYTES = 1 << 30


def reuse_freed_memory() -> bool:
    """Let glibc keep the memory that tensors free and hand it to the next allocation, instead of returning it to the
    system and faulting fresh zeroed pages in again: every allocation comes from the heap (M_MMAP_MAX 0; glibc maps
    each block above 32 MiB, e.g. a 64-image 128x32x32 float activation, and unmaps it when freed) and up to
    HEAP_KEEP_BYTES of free heap stays (M_TRIM_THRESHOLD). On the CPU the page faults of those fresh pages cost a
    quarter of a DC iteration (benchmarks/README.md); the values computed are the same. Returns whether it applied
    (glibc only)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES))
    except (OSError, AttributeError):
        return False


def setup(threads: int | None = None) -> None:
    """Logging to stderr (Snakemake redirects it into results/logs/...), the CPU thread count and the allocator's
    reuse of freed memory (reuse_freed_memory)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    reuse_freed_memory()
    if threads or "SNAKEMAKE_THREADS" in os.environ:
        import torch
        torch.set_num_threads(threads or int(os.environ["SNAKEMAKE_THREADS"]))


def to_device(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`t` as `dtype` (cast where it lies) on `device`, copied without blocking the host when it goes to a GPU. A
    plain `.to('cuda')` is a copy followed by a stream synchronisation (the host waits for all queued GPU work), so a
    hot loop that moves a small random draw every step (a permutation, augmentation parameters) would stall every
    step. A host-to-device non_blocking copy from ordinary pageable memory is safe, CUDA stages the data before the
    call returns (PyTorch tutorial "A guide on good usage of non_blocking and pin_memory()": `.to(device,
    non_blocking=True)` is also faster than pinning first); only device-to-host non_blocking copies need a
    synchronisation, and this helper makes none. On the CPU this is `t.to(dtype).to(device)`: the same values."""
    import torch
    if dtype is not None:
        t = t.to(dtype)
    return t.to(device, non_blocking=torch.device(device).type == "cuda")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        import torch
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process, and peak CUDA memory allocated when on a GPU."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        import torch
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


WORKFLOW_DIR_ENV = "DDFLOW_WORKFLOW_DIR"  # set by workflow/rules/common.smk: the checkout whose Snakefile runs


@functools.lru_cache(maxsize=8)
def git_state(root: str) -> str | None:
    """The commit of the git checkout whose top folder is `root`, with " (uncommitted changes)" when a tracked or
    untracked (not ignored) file differs; None when `root` is not the top of a checkout: a copy without `.git`
    that sits inside another repository must not record that repository's commit."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != Path(root).resolve():
            return None
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")


def git_commit() -> str | None:
    """The package's commit when it runs from a git checkout (an editable install: <checkout>/src/ddflow), else
    None."""
    return git_state(str(Path(__file__).resolve().parents[2]))


def set_workflow_dir(path: str | Path) -> None:
    """Name the workflow checkout for this process and the jobs it starts (they inherit the environment; a cluster
    job parses the Snakefile again and sets it there): called by workflow/rules/common.smk."""
    os.environ[WORKFLOW_DIR_ENV] = str(Path(path).resolve())


def workflow_dir() -> Path | None:
    """The workflow checkout running this job: $DDFLOW_WORKFLOW_DIR (the Snakefile's folder, set when the workflow
    is parsed), else the working directory when it holds a Snakefile (a CLI stage run from a checkout's root)."""
    if os.environ.get(WORKFLOW_DIR_ENV):
        return Path(os.environ[WORKFLOW_DIR_ENV])
    return Path.cwd() if (Path.cwd() / "Snakefile").exists() else None


def provenance(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What made a result: the device (the GPU model on CUDA), Python, torch and its intra-op thread count (CPU
    results depend on it), CUDA, ddflow, the package's commit (`git_commit`) and the commit of the workflow
    checkout that ran the job (`workflow_commit`), each with its uncommitted-changes mark. Every file ddflow writes
    stores it; every CLI log starts with it. A CPU process that has not imported torch (a table or figure made from
    cells, the data and validation-split jobs: cli.WITHOUT_TORCH) records torch, cuda and torch_threads as null
    rather than import torch (seconds of start-up) for them: nothing it computed depended on torch."""
    from . import __version__
    if "torch" in sys.modules or str(device) != "cpu":
        import torch
        device = torch.device(device)
        env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "python": platform.python_version(), "torch": str(torch.__version__), "cuda": torch.version.cuda,
               "torch_threads": torch.get_num_threads()}
    else:
        env = {"device": "cpu", "python": platform.python_version(), "torch": None, "cuda": None,
               "torch_threads": None}
    wf = workflow_dir()
    return {**env, "ddflow": __version__, "git_commit": git_commit(),
            "workflow_dir": str(wf) if wf else None, "workflow_commit": git_state(str(wf)) if wf else None}


def versions(device: str | None = None, uses_torch: bool = True) -> dict[str, Any]:
    """The provenance a log starts with, before any device is resolved: the requested device as given. A command
    that uses torch imports it here (as it would anyway), so that the line names torch's version and threads; one
    that does not (cli.WITHOUT_TORCH) logs them as null."""
    if uses_torch:
        import torch  # noqa: F401
    return {**provenance("cpu"), "device": device}
