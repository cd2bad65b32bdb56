"""A GPU of its own for every job on a multi-GPU workstation.

Snakemake's local executor counts GPU jobs (`--resources gpu=4`) but does not say which GPU a job gets, so without
this every job would run on cuda:0. A job claims the first free slot among the visible GPUs: an exclusive lock
(fcntl.flock) on that GPU's lock file, held until the process ends. The kernel drops the lock when the process ends,
however it ends (kill -9 included), so a crashed job never keeps a GPU. Lock files are named by the GPU's UUID: the
same physical GPU has the same lock whatever CUDA_VISIBLE_DEVICES a job sees. They live in $DDFLOW_GPU_LOCK_DIR
(default: a per-user directory in the temporary directory). DDFLOW_GPU_SLOTS=0 turns this off (plain `cuda`).

On a machine shared with other users the folder is checked before use: a real directory (not a link) owned by this
user with no access for group or others (0700), so nobody else can plant a file or a link in it; lock files are
opened without following links and never truncated, so a planted link cannot make a job write into another file.
A job that finds every GPU held waits up to $DDFLOW_GPU_WAIT seconds (default 86400), then fails with a message
naming the lock files and their holders.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import DdflowError

log = logging.getLogger(__name__)


WAIT_ENV = "DDFLOW_GPU_WAIT"
DEFAULT_WAIT_S = 86400.0  # a day: longer than any queued job of the paper preset's single cells


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"ddflow-gpu-locks-{os.getuid()}"
    return Path(os.environ.get("DDFLOW_GPU_LOCK_DIR") or default)


def private_dir(directory: Path) -> Path:
    """`directory`, made 0700 when absent; an existing one must be a real directory owned by this user that group
    and others cannot enter (else a DdflowError saying what is wrong and how to fix it)."""
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    st = os.lstat(directory)
    problem = None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory (a link or a file)"
    elif st.st_uid != os.getuid():
        problem = f"is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    elif st.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):o}; group and others must have no access (chmod 700)"
    if problem:
        raise DdflowError(f"GPU lock folder {directory} {problem}; fix it or point DDFLOW_GPU_LOCK_DIR at a folder "
                          f"of your own")
    return directory


def _open_lock(path: Path) -> int:
    """The lock file's descriptor: created 0600 when absent, never through a link, never truncated."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        raise DdflowError(f"GPU lock file {path}: cannot open it without following links ({e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_nlink != 1:
        os.close(fd)
        raise DdflowError(f"GPU lock file {path} is not a plain file of this user's own (a hard link or another "
                          f"user's file); remove it")
    return fd


def wait_seconds() -> float:
    value = os.environ.get(WAIT_ENV)
    if not value:
        return DEFAULT_WAIT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise DdflowError(f"${WAIT_ENV} = {value!r}; expected a finite number of seconds >= 0")
    return seconds


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
    directory = private_dir(directory or lock_dir())
    for index, gpu_id in enumerate(ids):
        fd = _open_lock(_lock_path(directory, str(gpu_id)))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.pwrite(fd, f"{os.getpid():>12}\n".encode(), 0)  # who holds it (fixed width: no truncation needed)
        return Slot(index, fd)
    return None


def _holders(ids: Sequence[str], directory: Path) -> str:
    out = []
    for gpu_id in ids:
        path = _lock_path(directory, str(gpu_id))
        try:
            out.append(f"{path.name}: pid {path.read_text().split()[0]}")
        except (OSError, IndexError):
            continue
    return "; ".join(out) or "unknown"


def claim(ids: Sequence[str], directory: Path | None = None, timeout: float | None = None,
          poll: float = 1.0) -> Slot:
    """A free GPU among `ids`, waiting while all are held by other jobs (Snakemake's gpu resource keeps them from
    outnumbering the GPUs; other ddflow processes may not be counted). `timeout` seconds (None: $DDFLOW_GPU_WAIT,
    default a day), then a DdflowError naming the lock files and the processes holding them."""
    if not ids:
        raise DdflowError("no GPU to claim: torch sees no CUDA device")
    timeout = wait_seconds() if timeout is None else timeout
    start, waiting = time.monotonic(), False
    while True:
        slot = try_claim(ids, directory)
        if slot is not None:
            if waiting:
                log.info("claimed GPU %d after waiting %.0f s", slot.index, time.monotonic() - start)
            return slot
        if time.monotonic() - start >= timeout:
            where = directory or lock_dir()
            raise DdflowError(f"all {len(ids)} GPUs stayed held by other jobs for {timeout:g} s (lock files in "
                              f"{where}: {_holders(ids, where)}); run fewer GPU jobs at once (--resources gpu=N), "
                              f"raise ${WAIT_ENV}, or set DDFLOW_GPU_SLOTS=0 to share GPUs")
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
