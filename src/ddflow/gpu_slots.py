"""A GPU of its own for every job on a multi-GPU workstation.

Snakemake's local executor counts GPU jobs (`--resources gpu=4`) but does not say which GPU a job gets, so without
this every job would run on cuda:0. A job claims the first free slot among the visible GPUs: an exclusive lock
(fcntl.flock) on that GPU's lock file, held until the process ends. The kernel drops the lock when the process ends,
however it ends (kill -9 included), so a crashed job never keeps a GPU. Lock files are named by the GPU's UUID: the
same physical GPU has the same lock whatever CUDA_VISIBLE_DEVICES a job sees. They live in $DDFLOW_GPU_LOCK_DIR
(default: a per-user directory in the temporary directory). DDFLOW_GPU_SLOTS=0 turns this off (plain `cuda`).
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import DdflowError

log = logging.getLogger(__name__)


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"ddflow-gpu-locks-{os.getuid()}"
    return Path(os.environ.get("DDFLOW_GPU_LOCK_DIR") or default)


@dataclass
class Slot:
    """A claimed GPU: its index among the visible devices and the open lock file that holds it."""
    index: int
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor of the lock file drops the lock
            self.fd = None


def _lock_path(directory: Path, gpu_id: str) -> Path:
    return directory / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu_id)}.lock"


def try_claim(ids: Sequence[str], directory: Path | None = None) -> Slot | None:
    """The first of the GPUs `ids` (their UUIDs, in visible order) whose lock this process could take, or None when
    all are held."""
    directory = directory or lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for index, gpu_id in enumerate(ids):
        fd = os.open(_lock_path(directory, str(gpu_id)), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious user
        return Slot(index, fd)
    return None


def claim(ids: Sequence[str], directory: Path | None = None, timeout: float | None = None,
          poll: float = 1.0) -> Slot:
    """A free GPU among `ids`, waiting while all are held by other jobs (Snakemake's gpu resource keeps them from
    outnumbering the GPUs; other ddflow processes may not be counted). `timeout` seconds, then a DdflowError."""
    if not ids:
        raise DdflowError("no GPU to claim: torch sees no CUDA device")
    start, waiting = time.monotonic(), False
    while True:
        slot = try_claim(ids, directory)
        if slot is not None:
            if waiting:
                log.info("claimed GPU %d after waiting %.0f s", slot.index, time.monotonic() - start)
            return slot
        if timeout is not None and time.monotonic() - start >= timeout:
            raise DdflowError(f"all {len(ids)} GPUs stayed held by other jobs for {timeout:g} s "
                              f"(lock files in {directory or lock_dir()})")
        if not waiting:
            log.info("all %d GPUs are held by other ddflow jobs; waiting for one to be released", len(ids))
            waiting = True
        time.sleep(poll)


_held: Slot | None = None


def own_cuda_device():
    """This process's GPU as a torch device: cuda:i of the GPU it claimed (claimed on the first call, held until the
    process ends), made the current device; plain `cuda` where one GPU is visible (a SLURM job sees only its own)
    or DDFLOW_GPU_SLOTS=0."""
    global _held
    import torch

    n = torch.cuda.device_count()
    if n <= 1 or os.environ.get("DDFLOW_GPU_SLOTS") == "0":
        return torch.device("cuda")
    if _held is None:
        ids = [str(getattr(torch.cuda.get_device_properties(i), "uuid", i)) for i in range(n)]
        _held = claim(ids)
        log.info("this job runs on GPU %d of %d (lock %s)", _held.index, n, _lock_path(lock_dir(), ids[_held.index]))
    torch.cuda.set_device(_held.index)
    return torch.device("cuda", _held.index)
