"""`python -m ddflow evaluate`: one distilled set under one protocol, in one command for the common case.

The set is a ddflow record, or, with `--dataset`, any file or folder `ddflow import` reads (ddflow.interop.readers:
a plain .pt / .npz, MTT's images_best.pt folder, a DC result file, a folder of PNGs by class): its format is taken
from its name (res_*_{ipc}ipc.pt: dc; images_best.pt or its folder: mtt; another folder: png; else plain), its
space from the file (a ddflow export states it) or `--space`, its IPC from its size. Unless given:
- the real data: the dataset prepared once into the cache, $DDFLOW_CACHE (default ~/.cache/ddflow)/data/{dataset}.npz
  (downloaded by torchvision where the dataset is; the embedded mnist5k needs no network; a dataset read from local
  folders must be prepared with `python -m ddflow data` and given with --data);
- the preset: the record's own, else `paper` (the papers' evaluation settings);
- the protocol: the method's first (an outside set: `mtt` when it carries a learned lr, else `dc`);
- the output: the evaluation cell as JSON on stdout (`--out` writes it to a file instead).
The hyperparameters are the package's own copy unless --hparams-dir / $DDFLOW_HPARAMS name another
(ddflow.hparams.hparams_dir).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import DdflowError
from ..records import FORMAT, DistilledSet, load_distilled
from .readers import DC_NAME, MTT_IMAGES

log = logging.getLogger("ddflow")
CACHE_ENV = "DDFLOW_CACHE"
OUTSIDE_NAME = "outside"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "ddflow"


def dataset_file(dataset: str, data: str | Path | None = None) -> Path:
    """`data` when given, else the dataset prepared once into the cache."""
    from ..data import get_info, prepare

    if data is not None:
        return Path(data)
    info = get_info(dataset)
    out = cache_dir() / "data" / f"{dataset}.npz"
    if out.is_file():
        return out
    if info.source not in ("embedded", "torchvision"):
        raise DdflowError(f"dataset {dataset!r} is read from local files ({info.source}): prepare it with `python -m "
                          f"ddflow data --dataset {dataset} --root DIR --out {out}` (then it is found there) or give "
                          "--data")
    log.info("%s: preparing %s once (later evaluations reuse it)", out, dataset)
    return prepare(dataset, out, root=cache_dir() / "downloads")


def guess_format(path: Path) -> str:
    if path.is_dir():
        return "mtt" if (path / MTT_IMAGES).is_file() else "png"
    if path.name == MTT_IMAGES:
        return "mtt"
    return "dc" if DC_NAME.match(path.name) else "plain"


def _ddflow_record(path: Path) -> DistilledSet | None:
    """The record at `path` when it is a ddflow record, else None (an outside file)."""
    if path.suffix != ".pt" or not path.is_file():
        return None
    from ..io import load_pt

    try:
        obj = load_pt(path, "distilled set")
    except DdflowError:
        return None
    return DistilledSet.from_dict(obj, str(path)) if isinstance(obj, dict) and obj.get("format") == FORMAT else None


def outside_record(path: Path, dataset: str, preset: str, fmt: str | None = None, space: str | None = None,
                   ipc: int | None = None, lr: float | str | None = None, data: Path | None = None,
                   hp_dir: str | Path | None = None, classes: list[str] | None = None) -> tuple[DistilledSet, str]:
    """(record, its default protocol) of an outside set, checked as `ddflow import` checks it (its first experiment
    when a DC file holds several)."""
    from ..data import get_info
    from .imports import build_records, check_entry, options_entry
    from .readers import read_sets

    fmt = fmt or guess_format(path)
    info = get_info(dataset)
    if fmt == "rtp" and ipc is None:
        raise DdflowError(f"{path}: an RTP set's IPC is the float budget it was made with: give --ipc")
    if space is None or ipc is None:
        raw = read_sets(fmt, path, info.channels, classes, info.size, info.classes)[0]
        space = space or raw.space
        if space is None:
            raise DdflowError(f"{path}: say which space its images are in: --space pixels | normalized | zca")
        ipc = ipc or max(1, len(raw.images) // info.classes)
    entry = options_entry(str(path), fmt, dataset, ipc, space, lr=lr, classes=classes)
    imp = check_entry(OUTSIDE_NAME, entry, preset, hp_dir)
    (record,) = build_records(imp, preset, data, seeds=[imp.seeds[0]])
    return record, imp.protocols[0]


def request(distilled: str | Path, dataset: str | None = None, data: str | Path | None = None,
            protocol: str | None = None, preset: str | None = None, hp_dir: str | Path | None = None,
            models: int | None = None, fmt: str | None = None, space: str | None = None, ipc: int | None = None,
            lr: float | str | None = None,
            classes: list[str] | None = None) -> tuple[DistilledSet, str, dict[str, Any], Path]:
    """(record, protocol, its settings, the real data's file) of one evaluation with the defaults above, resolved
    here once (ddflow.settings.eval_settings); the evaluation runner (ddflow.stages.evaluate) takes them."""
    from ..methods import REGISTRY
    from ..settings import eval_settings
    from .imports import settings_method

    path = Path(distilled)
    record = _ddflow_record(path) if dataset is not None else load_distilled(path)
    if record is not None:
        if dataset is not None and dataset != record.dataset:
            raise DdflowError(f"{path}: a {record.dataset} set, not {dataset}")
        preset = preset or record.preset or "paper"
        method = settings_method(record)
        default = REGISTRY[method].protocols[0] if method in REGISTRY else "dc"
    else:
        preset = preset or "paper"
        record, default = outside_record(path, dataset, preset, fmt, space, ipc, lr, None, hp_dir, classes)
    protocol = protocol or default
    if models is not None and models < 1:  # the paper's rule evaluates snapshots with the paper's model count
        raise DdflowError(f"--models = {models}; expected a whole number >= 1")
    settings = eval_settings(settings_method(record), record.dataset, record.ipc,
                             preset, protocol, hp_dir, models)
    return record, protocol, settings, dataset_file(record.dataset, data)


def number_or_path(v: str | None) -> float | str | None:
    try:
        return None if v is None else float(v)
    except ValueError:
        return v
