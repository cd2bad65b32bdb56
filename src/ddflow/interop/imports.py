"""Imported distilled sets: a set made by other code (ddflow.interop.readers) becomes a ddflow record
`results/distilled/{name}/{dataset}/ipc{ipc}/s{seed}.pt` that every protocol fitting it evaluates.

An import is a config entry `imports: {name: {path, format, dataset, ipc, space, seed?, lr?, zca?, protocols?,
eval_as?, tables?}}` (or the same as `python -m ddflow import` options). Its `name` is not a registered method: it
acts as a method id only for the paths, the evaluation rules and the table rows, and is made explicit as follows.
- protocols: the protocols its cells are evaluated under (default: `kip-nn` for a KIP set, `rfad-nn` for an RFAD
  best.npz, `mtt` for an MTT set or any import with an `lr`, else `dc`). Which protocols fit which set (FITS below) is
  checked when the record is made: dc / mtt / idc train on hard labels (mtt also needs the learned lr), soft on
  (N, classes) labels, krr / frepo / rfad-nn / krr-inf / kip-nn on either.
- eval_as: the registered method whose evaluation settings (its hparams' `eval.<protocol>`: epochs, augmentation,
  number of models, net) the import is evaluated with (default: a DC result file's own method dc / dsa / dm; else
  dm for dc, mtt for mtt, ead for soft, frepo for krr / frepo, idc for idc, rfad for rfad-nn). The evaluation
  models are seeded from the import's name (ddflow.protocols.cell).
- seeds: one record per experiment of a DC result file (seed = its index in 'data'), else `seed` (default 0).
- tables: the configured tables that print the import as a row (default: the configured accuracy tables whose spec
  says `imports: true`, when the import's dataset and IPC are configured columns; ddflow.config.check_imports).
- classes (format png): the class folders' names in class order, when they are not the class indices 0, 1, ...
- normalize_as: the dataset whose mean/std a 'normalized' set used (default: as eval_as normalises the dataset;
  MTT's CIFAR-100 sets use CIFAR-10's).
- space: 'pixels' ([0, 1]), 'normalized' (the dataset's mean/std, as DC/DM/MTT save) or 'zca' with `zca` = a ddflow
  ZCA state file (ddflow.data.zca.ZCA.state_dict) or a ZCA kind (kornia: MTT's, frepo: FRePo's, rfad: RFAD's, kip:
  KIP's) refitted here on the dataset's training split, as the official code fits it (KIP's nn_training.ipynb fits on
  the training split less its last 5,000 images).
Bad input is a DdflowError naming the config key or the file: shape, class count, images per class != ipc, values
outside the stated space's range, NaN.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import hparams
from ..data import DATASETS, get_info, load_real, normalized_as
from ..data.spaces import preprocess
from ..data.zca import ZCA
from ..errors import DdflowError
from ..io import load_pt
from ..methods import REGISTRY
from ..protocols import PROTOCOLS, protocol_settings
from ..records import SPACES, DistilledSet
from .readers import FORMATS, RawSet, dc_file_fields, read_dc, read_lr, read_sets

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")
REQUIRED = ("path", "format", "dataset", "ipc", "space")  # workflow/schemas/config.schema.yaml states the same
KEYS = ("path", "format", "dataset", "ipc", "space", "seed", "lr", "zca", "protocols", "eval_as", "tables",
        "normalize_as", "classes")
ZCA_KINDS = ("kornia", "frepo", "rfad", "kip")
DEFAULT_EVAL_AS = {"dc": "dm", "mtt": "mtt", "soft": "ead", "krr": "frepo", "frepo": "frepo", "idc": "idc",
                   "rfad-nn": "rfad", "krr-inf": "kip", "kip-nn": "kip", "rtp": "rtp"}
PIXEL_SLACK = 1e-3          # pixels may overshoot [0, 1] by rounding
NORMALIZED_LIMIT = 100.0    # |value| beyond this is not a normalised image (e.g. 0-255 bytes normalised)


@dataclass
class ImportEntry:
    name: str
    path: str
    format: str
    dataset: str
    ipc: int
    space: str
    seeds: list[int]
    protocols: list[str]
    eval_as: str
    lr: float | str | None = None
    zca: str | None = None
    tables: list[str] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    normalize_as: str | None = None
    classes: list[str] | None = None


def _hard_only(r: DistilledSet) -> str | None:
    return "it trains on hard labels; the set has soft labels" if r.soft_labels else None


def _mtt_fit(r: DistilledSet) -> str | None:
    return _hard_only(r) or (None if r.lr is not None else "it trains with a learned lr; the set has none (key lr)")


def _soft_fit(r: DistilledSet) -> str | None:
    return None if r.soft_labels else "it trains on (N, classes) soft labels; the set has hard labels"


FITS = {"dc": _hard_only, "mtt": _mtt_fit, "idc": _hard_only, "soft": _soft_fit,
        "krr": lambda r: None, "frepo": lambda r: None, "rfad-nn": lambda r: None, "krr-inf": lambda r: None,
        "kip-nn": lambda r: None, "rtp": _hard_only}


def check_entry(name: str, entry: Any, preset: str, hp_dir: str | Path | None = None,
                resolve: bool = True) -> ImportEntry:
    """One config entry checked (names, files, protocols, eval_as's settings), before any job. `resolve=False`: the
    workflow's import job, whose entry the workflow checked and resolved at parse time (its normalize_as given
    when it has one): nothing is resolved again."""
    where = f"config imports.{name}"
    if not isinstance(name, str) or not name or set(name) - NAME_CHARS:
        raise DdflowError(f"config imports: name {name!r} must be lower-case letters, digits and '-'")
    if name in REGISTRY or name == "whole":
        raise DdflowError(f"{where}: {name!r} is a registered method (or 'whole', the whole-dataset bound); an import "
                          "needs its own name")
    if not isinstance(entry, dict):
        raise DdflowError(f"{where}: must be a mapping of {', '.join(KEYS)}")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise DdflowError(f"{where}: unknown keys {unknown}; allowed: {', '.join(KEYS)}")
    for key in REQUIRED:
        if entry.get(key) is None:
            raise DdflowError(f"{where}.{key} is required")
    fmt, dataset, space = entry["format"], entry["dataset"], entry["space"]
    if fmt not in FORMATS:
        raise DdflowError(f"{where}.format = {fmt!r}; allowed: {', '.join(FORMATS)}")
    if dataset not in DATASETS:
        raise DdflowError(f"{where}.dataset = {dataset!r}; known: {', '.join(DATASETS)}")
    if space not in SPACES:
        raise DdflowError(f"{where}.space = {space!r}; allowed: {', '.join(SPACES)}")
    ipc = entry["ipc"]
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise DdflowError(f"{where}.ipc = {ipc!r}; must be a whole number >= 1")
    path = Path(entry["path"]).expanduser()
    if not path.exists():
        raise DdflowError(f"{where}.path: {path} does not exist")
    zca = entry.get("zca")
    if (space == "zca") != (zca is not None):
        raise DdflowError(f"{where}.zca: give it exactly when space is 'zca' (a ZCA state file or one of "
                          f"{', '.join(ZCA_KINDS)})")
    if zca is not None and zca not in ZCA_KINDS and not Path(zca).expanduser().is_file():
        raise DdflowError(f"{where}.zca = {zca!r}: neither a ZCA kind ({', '.join(ZCA_KINDS)}) nor an existing file")
    lr = entry.get("lr")
    if lr is not None and not ((isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0)
                               or (isinstance(lr, str) and Path(lr).expanduser().is_file())):
        raise DdflowError(f"{where}.lr = {lr!r}: a learned lr > 0 or an existing .pt file holding one")
    source: dict[str, Any] = {}
    if fmt == "dc":
        source = dc_file_fields(path) or {}
        if source and int(source["ipc"]) != ipc:
            raise DdflowError(f"{where}.ipc = {ipc}, but {path.name} names IPC {source['ipc']}")
        seeds = list(range(len(read_dc(path))))
        if entry.get("seed") is not None:
            raise DdflowError(f"{where}.seed: a DC result file gives one seed per experiment; leave seed out")
    else:
        seed = entry.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DdflowError(f"{where}.seed = {seed!r}; must be a whole number >= 0")
        seeds = [seed]
    default_protocols = (["kip-nn"] if fmt == "kip" else ["rfad-nn"] if fmt == "rfad" else ["rtp"] if fmt == "rtp" else
                         ["mtt"] if fmt == "mtt" or lr is not None else ["dc"])
    protocols = entry.get("protocols") or default_protocols
    if isinstance(protocols, str):
        protocols = [protocols]
    for p in protocols:
        if p not in PROTOCOLS or p not in FITS:
            allowed = ", ".join(q for q in PROTOCOLS if q in FITS)
            raise DdflowError(f"{where}.protocols: {p!r} unknown; allowed: {allowed}")
    file_method = (source.get("method") or "").lower()
    default = file_method if protocols[0] == "dc" and file_method in REGISTRY else DEFAULT_EVAL_AS[protocols[0]]
    eval_as = entry.get("eval_as") or default
    if eval_as not in REGISTRY:
        raise DdflowError(f"{where}.eval_as = {eval_as!r}: not a registered method; known: "
                          f"{', '.join(sorted(REGISTRY))}")
    for p in protocols if resolve else ():
        try:
            protocol_settings(eval_as, dataset, ipc, preset, p, hp_dir)
        except DdflowError as e:
            raise DdflowError(f"{where}.eval_as = {eval_as!r} cannot evaluate protocol {p!r}: {e}") from None
    # the mean/std a 'normalized' set was made with: as eval_as normalises this dataset unless stated (MTT: CIFAR-100
    # with CIFAR-10's statistics, utils.py get_dataset; workflow/hparams/methods/mtt.yaml normalize_as)
    normalize_as = entry.get("normalize_as")
    if resolve and "normalize_as" not in entry:
        normalize_as = hparams.resolve(eval_as, dataset, ipc, preset, hp_dir).get("normalize_as")
    try:
        normalized_as(get_info(dataset), normalize_as)
    except DdflowError as e:
        raise DdflowError(f"{where}.normalize_as: {e}") from None
    tables = entry.get("tables")
    if tables is not None and (not isinstance(tables, list) or not all(isinstance(t, str) for t in tables)):
        raise DdflowError(f"{where}.tables must be a list of table names")
    classes = entry.get("classes")
    if classes is not None:
        n = get_info(dataset).classes
        if fmt != "png":
            raise DdflowError(f"{where}.classes: only format png names its class folders")
        if (not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes)
                or len(set(classes)) != len(classes) or len(classes) != n):
            raise DdflowError(f"{where}.classes = {classes!r}: the {n} class folder names of {dataset}, in class "
                              "order, each once")
    return ImportEntry(name, str(path), fmt, dataset, ipc, space, seeds, list(protocols), eval_as,
                       lr, zca, tables, source, normalize_as, classes)


def options_entry(path: str, fmt: str, dataset: str, ipc: int | None, space: str | None, seed: int | None = None,
                  **options: Any) -> dict[str, Any]:
    """The config entry that command-line options state (`ddflow import`, `ddflow evaluate` of an outside set), to be
    checked by check_entry: the options given (None: not given); `seed` 0 unless given, left out for a DC result
    file (one seed per experiment)."""
    given = {"path": path, "format": fmt, "dataset": dataset, "ipc": ipc, "space": space, **options}
    entry = {k: v for k, v in given.items() if v is not None}
    if fmt != "dc":
        entry["seed"] = seed if seed is not None else 0
    return entry


def check_imports(imports: dict | None, preset: str, hp_dir: str | Path | None = None) -> dict[str, ImportEntry]:
    if imports is None:
        return {}
    if not isinstance(imports, dict):
        raise DdflowError("config imports: a mapping of name -> {path, format, dataset, ipc, space, ...}")
    return {name: check_entry(name, entry, preset, hp_dir) for name, entry in imports.items()}


# ---- records ---------------------------------------------------------------------------------------------------
def check_set(raw: RawSet, dataset: str, ipc: int, space: str, where: str,
              per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32, labels int64 or float32 soft) of a raw set, in class order; errors name `where`. Every class
    holds `ipc` images, or `per_class` when given (an RTP set: its decoded rows per class)."""
    need = ipc if per_class is None else per_class
    info = get_info(dataset)
    x, y = raw.images, raw.labels
    shape = (info.channels, info.size, info.size)
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        raise DdflowError(f"{where}: images of shape {tuple(x.shape)}; {dataset} needs "
                          f"(N, {', '.join(map(str, shape))})")
    x = x.float()
    if not torch.isfinite(x).all():
        raise DdflowError(f"{where}: images hold NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if space == "pixels" and (lo < -PIXEL_SLACK or hi > 1 + PIXEL_SLACK):
        raise DdflowError(f"{where}: values in [{lo:.3g}, {hi:.3g}] are not [0, 1] pixels (0-255 bytes? normalised "
                          "images? state the space)")
    if space == "normalized" and lo >= 0 and hi <= 1:
        raise DdflowError(f"{where}: every value is in [0, 1]: these look like pixels, not images normalised with "
                          f"{dataset}'s mean/std (state space: pixels)")
    if space != "pixels" and max(abs(lo), abs(hi)) > NORMALIZED_LIMIT:
        raise DdflowError(f"{where}: values in [{lo:.3g}, {hi:.3g}] are not {space} images")
    if y.dim() == 2:
        if y.shape != (len(x), info.classes):
            raise DdflowError(f"{where}: soft labels of shape {tuple(y.shape)}; need ({len(x)}, {info.classes})")
        y = y.float()
        if not torch.isfinite(y).all():
            raise DdflowError(f"{where}: labels hold NaN or infinite values")
        classes = y.argmax(1)
    elif y.dim() == 1 and len(y) == len(x):
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise DdflowError(f"{where}: hard labels must be whole class indices")
        y = y.long()
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.classes):
            raise DdflowError(f"{where}: labels in [{int(y.min())}, {int(y.max())}]; {dataset} has classes "
                              f"0..{info.classes - 1}")
        classes = y
    else:
        raise DdflowError(f"{where}: labels of shape {tuple(y.shape)}; need ({len(x)},) or ({len(x)}, {info.classes})")
    counts = torch.bincount(classes, minlength=info.classes)
    if len(x) != info.classes * need or not bool((counts == need).all()):
        raise DdflowError(f"{where}: {len(x)} images, per class {counts.tolist()}; need {need} per class for all "
                          f"{info.classes} classes of {dataset}")
    order = torch.argsort(classes, stable=True)
    if space == "pixels":
        x = x.clamp(0, 1)
    return x[order].contiguous(), y[order].contiguous()


def rtp_rows(raw: RawSet, entry: ImportEntry, info, where: str) -> int:
    """An RTP checkpoint's rows per class, checked against the official budget formula for the import's IPC (RTP's
    float budget: ddflow.ops.rtp.rows_per_class); completes the record's `rtp` extra as the method's result does."""
    from ..ops.rtp import rows_per_class, stored_floats
    rtp = raw.extra["rtp"]
    n_basis, ds, rows = rtp["n_basis"], rtp["downsample"], rtp["rows_per_class"]
    expected = rows_per_class(float(entry.ipc), info.size, info.channels, info.classes, n_basis, ds)
    if rows != expected:
        raise DdflowError(f"{where}: {rows} rows per class with {n_basis} bases at downsample {ds:g}; RTP's budget "
                          f"{entry.ipc} gives {expected} (utils/Img_per_Cls_budget.py): give the budget it was made "
                          "with as the import's ipc")
    rtp.update(budget=entry.ipc, images=rows * info.classes,
               stored_floats=stored_floats(n_basis, rows, info.classes, info.channels, info.size, ds),
               budget_floats=entry.ipc * info.size * info.size * info.channels * info.classes, interventions="none")
    return rows


def _zca_state(entry: ImportEntry, data_path: str | Path | None) -> dict | None:
    if entry.space != "zca":
        return None
    if entry.zca in ZCA_KINDS:
        if data_path is None:
            raise DdflowError(f"import {entry.name}: zca {entry.zca!r} is fitted on the dataset; give its data file")
        _, zca = preprocess(load_real(data_path, get_info(entry.dataset)), entry.zca)
        return zca.state_dict()
    state = load_pt(entry.zca, "ZCA state")
    try:
        return ZCA.from_state_dict(state).state_dict()
    except (DdflowError, TypeError, AttributeError) as e:
        raise DdflowError(f"{entry.zca}: not a ZCA state ({e})") from None


def build_records(entry: ImportEntry, preset: str | None, data_path: str | Path | None = None,
                  seeds: list[int] | None = None) -> list[DistilledSet]:
    """The records of an import (one per seed, or only `seeds`), each checked against every protocol it names."""
    info = normalized_as(get_info(entry.dataset), entry.normalize_as)
    raws = read_sets(entry.format, entry.path, info.channels, entry.classes, info.size, info.classes)
    lr = read_lr(entry.lr, f"import {entry.name}")
    zca = _zca_state(entry, data_path)
    out = []
    for seed in seeds if seeds is not None else entry.seeds:
        index = seed if entry.format == "dc" else 0
        if index >= len(raws):
            raise DdflowError(f"{entry.path}: has {len(raws)} experiment(s), no seed {seed}")
        raw = raws[index]
        where = entry.path if entry.format != "dc" else f"{entry.path} (data[{index}])"
        if raw.space is not None and raw.space != entry.space:
            raise DdflowError(f"{where}: the file states space {raw.space!r}; the import says {entry.space!r}")
        stated = (raw.mean, raw.std)
        if entry.space != "pixels" and None not in stated and not all(
                len(a) == len(b) and all(abs(x - y) <= 1e-6 * max(1.0, abs(y)) for x, y in zip(a, b))
                for a, b in zip(stated, (info.mean, info.std))):
            raise DdflowError(f"{where}: the file states it was normalised with mean {list(raw.mean)}, std "
                              f"{list(raw.std)}; the import normalises as {entry.normalize_as or entry.dataset} "
                              f"(mean {list(info.mean)}): give the dataset whose statistics it used (normalize_as)")
        per_class = rtp_rows(raw, entry, info, where) if entry.format == "rtp" else None
        x, y = check_set(raw, entry.dataset, entry.ipc, entry.space, where, per_class)
        record = DistilledSet(
            images=x, labels=y, method=entry.name, dataset=entry.dataset, ipc=entry.ipc, seed=seed,
            mean=info.mean, std=info.std, preset=preset, space=entry.space, zca=zca,
            lr=raw.lr if raw.lr is not None else lr,
            extra={"eval_as": entry.eval_as, "imported": {"path": entry.path, "format": entry.format,
                                                          "experiment": index, **entry.source}, **raw.extra})
        for p in entry.protocols:
            why = FITS[p](record)
            if why:
                raise DdflowError(f"{where}: protocol {p!r} does not fit this set: {why}")
        out.append(record)
    return out


def settings_method(record: DistilledSet) -> str:
    """The method whose evaluation settings apply to a record (ddflow.settings.settings_method of its eval_as)."""
    from ..settings import settings_method as by_name

    return str(by_name(record.method, record.extra.get("eval_as")))
