"""Atomic writes and checked loads: an output either appears whole or not at all."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from .errors import DdflowError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the group on a shared cluster
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        full = _disk_full(e, path.parent)
        if full:
            raise DdflowError(f"{path}: the disk is full ({full}); nothing was written: free space under "
                              f"{path.parent} and rerun") from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _disk_full(e: BaseException, folder: Path) -> str | None:
    """Why a failed write is a full disk, or None: an OSError 'no space' / 'quota exceeded', or a writer's error
    that hides one (torch.save reports a short write as "unexpected pos ..." or "file write failed") on a file
    system with no space left."""
    if isinstance(e, OSError) and e.errno in _NO_SPACE:
        return os.strerror(e.errno)
    if isinstance(e, RuntimeError) and any(s in str(e) for s in ("unexpected pos", "file write failed")):
        try:
            st = os.statvfs(folder)
        except OSError:
            return None
        free = st.f_bavail * st.f_frsize
        if free < 1 << 20:
            return f"{free} bytes free; the writer said: {str(e).splitlines()[0][:200]}"
    return None


def load_resume(path: Path, what: str = "resume file") -> dict | None:
    """A resume file's state, or None (start afresh) when there is none. A corrupt or foreign one (a job killed
    while writing it on a file system without atomic renames, a disk full) is moved aside to `<name>.corrupt` with
    a warning instead of failing every rerun until someone deletes it by hand."""
    if not path.exists():
        return None
    try:
        state = load_pt(path, what)
        if not isinstance(state, dict):
            raise DdflowError(f"{path}: not a {what}")
        return state
    except DdflowError as e:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.warning("%s; moved aside to %s, starting afresh", e, aside)
        return None


def save_pt(obj: Any, path: str | os.PathLike) -> None:
    import torch  # here, not at the top: the jobs that read only JSON, YAML and npz start without torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_pt(path: str | os.PathLike, what: str = "ddflow file") -> Any:
    """torch.load with weights_only=True; a missing, corrupt or foreign file is a DdflowError naming the path."""
    import torch  # as in save_pt
    path = Path(path)
    if not path.exists():
        raise DdflowError(f"{path}: missing {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise DdflowError(f"{path}: corrupt or not a {what} ({type(e).__name__}: {e})") from None


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "result file") -> Any:
    path = Path(path)
    if not path.exists():
        raise DdflowError(f"{path}: missing {what}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DdflowError(f"{path}: corrupt {what} ({e})") from None


_PARSED: dict[str, bytes] = {}


def _parsed_yaml(text: str) -> Any:
    """yaml.safe_load(text), a fresh copy each call, parsed once per distinct text: building the paper grid's DAG
    resolves thousands of cells, each reading the same few hparams and protocol files (keyed by the text itself, so
    an edited file is parsed again, however soon after its last read)."""
    if text not in _PARSED:
        if len(_PARSED) >= 256:
            _PARSED.clear()
        _PARSED[text] = pickle.dumps(yaml.safe_load(text), protocol=pickle.HIGHEST_PROTOCOL)
    return pickle.loads(_PARSED[text])


def read_yaml_mapping(path: str | os.PathLike, missing: str, expected: str, empty_ok: bool = True) -> dict:
    """A YAML file that must hold a mapping: a missing file, invalid YAML, another type or (unless `empty_ok`, when
    it reads as {}) an empty file is a DdflowError naming the path (`missing` says what the file is, `expected` what
    a valid one looks like)."""
    path = Path(path)
    if not path.exists():
        raise DdflowError(f"{path}: {missing}")
    try:
        doc = _parsed_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise DdflowError(f"{path}: invalid YAML ({e})") from None
    if doc is None and not empty_ok:
        raise DdflowError(f"{path}: {expected}, got an empty file")
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise DdflowError(f"{path}: {expected}, got a {type(doc).__name__}")
    return doc


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
