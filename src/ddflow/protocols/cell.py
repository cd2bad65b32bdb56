"""One evaluation cell: the protocol's resolved settings and K fresh networks trained on a distilled set.

Protocol settings = workflow/hparams/stages/protocols.yaml[protocol] (the protocol's fixed optimiser settings)
updated by the method's `eval: {protocol: {...}}` hyperparameters (epochs, augmentation, number of models), as in
the official code, where the evaluation length and augmentation follow the method and the dataset.

Network: a protocol with a `net` setting (dc, mtt, soft, idc) evaluates on the method's own `net` (its resolved
hparams), as the official code evaluates on the model it distils with (e.g. MTT's Tiny ImageNet ConvNetD4), unless
the method's `eval: {protocol: {net: ...}}` names another; protocols.yaml's `net` applies to methods without a `net`
(random, herding). The kernel protocols (frepo, krr) build FRePo's Conv from width/depth and take no `net`. A
cross-architecture protocol (`dc-resnet18`, ddflow.protocols.xarch) takes its base's settings with its own `net`; a
label-regime or augmentation variant (`soft-hard`, `dc-noaug`, ddflow.protocols.regimes) its base's, changed.

Steps: with `steps: auto` (frepo, krr) the method's `step_table` names one of protocols.yaml's `step_tables` (FRePo's
or ISA's script/eval.py step_per_prototpyes); the resolved settings carry it as `steps_by_prototypes`.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .. import hparams as hparams_mod
from ..data import RealData, get_info
from ..errors import DdflowError
from ..io import read_yaml_mapping
from ..records import DistilledSet, cell_record
from ..runtime import peak_memory_mb, provenance, reset_peak
from ..seeding import generator
from . import regimes
from .registry import PROTOCOLS, get_protocol
from .xarch import XARCH

log = logging.getLogger(__name__)


def protocol_settings(method: str, dataset: str, ipc: int, preset: str, name: str,
                      hp_dir: str | Path | None = None) -> dict[str, Any]:
    if name not in PROTOCOLS:
        raise DdflowError(f"unknown evaluation protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    if name in XARCH:  # a base protocol on another network (ddflow.protocols.xarch): the base's settings
        base, net = XARCH[name]
        return {**protocol_settings(method, dataset, ipc, preset, base, hp_dir), "net": net}
    if name in regimes.VARIANT_IDS:  # a label regime or augmentation variant (ddflow.protocols.regimes)
        base, variant = regimes.VARIANT_IDS[name]
        settings = regimes.variant_settings(protocol_settings(method, dataset, ipc, preset, base, hp_dir), variant,
                                            regimes.load_settings(dataset, ipc, preset, hp_dir))
        return with_dsa_strategy(settings, dataset)
    hp_dir = hparams_mod.hparams_dir(hp_dir)
    doc = load_protocols(hp_dir)
    base = doc.get(name, {})
    hp = hparams_mod.resolve(method, dataset, ipc, preset, hp_dir)
    specific = (hp.get("eval") or {}).get(name)
    if specific is None:
        raise DdflowError(f"method {method!r} has no settings for protocol {name!r} in its hparams (eval.{name})")
    settings = hparams_mod.deep_merge(base, specific)
    hparams_mod.check_values(settings, f"{hparams_mod.hparams_file(method, hp_dir)} eval.{name} over protocols.yaml "
                                       f"{name}, resolved for {dataset}, IPC {ipc}, preset {preset}")
    if "net" in base and "net" not in specific and hp.get("net"):
        settings["net"] = hp["net"]
    with_dsa_strategy(settings, dataset)
    if settings.get("steps") == "auto":
        settings["steps_by_prototypes"] = _step_table(doc, settings.get("step_table"), method, name)
    return settings


def with_dsa_strategy(settings: dict[str, Any], dataset: str) -> dict[str, Any]:
    """Settings that augment with DSA carry the strategy the dataset applies (its own for 'auto'), in place."""
    if settings.get("augment") == "dsa":
        settings["strategy"] = get_info(dataset).strategy(settings.get("strategy", "auto"))
    return settings


def load_protocols(hp_dir: str | Path | None = None) -> dict[str, Any]:
    """protocols.yaml of the hyperparameter folder, checked: valid YAML, a mapping of protocol sections whose values
    are in range (hparams.check_values: finite, counts and batches bounded, learning rates > 0, momenta in [0, 1]);
    errors name the file and the key."""
    path = hparams_mod.hparams_file("protocols", hp_dir)
    doc = read_yaml_mapping(path, "missing (the evaluation protocols' fixed settings)",
                            "a mapping of protocol sections expected")
    if not all(isinstance(v, dict) for v in doc.values()):
        raise DdflowError(f"{path}: a mapping of protocol sections ({{dc: {{lr: ..., batch: ...}}, ...}}) expected")
    for name, section in doc.items():
        if name == "step_tables":
            for table, steps in section.items():
                if not isinstance(steps, dict) or not all(
                        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= hparams_mod.MAX_COUNT["steps"]
                        for v in steps.values()):
                    raise DdflowError(f"{path}: step_tables.{table} must map prototype counts to whole numbers of "
                                      f"steps in [1, {hparams_mod.MAX_COUNT['steps']:,}]")
            continue
        hparams_mod.check_values(section, f"{path}: {name}")
    return doc


def _step_table(doc: dict, table: str | None, method: str, name: str) -> dict[int, int]:
    tables = doc.get("step_tables") or {}
    if table not in tables:
        raise DdflowError(f"method {method!r}, protocol {name!r}: steps 'auto' needs eval.{name}.step_table, one of "
                          f"{', '.join(tables) or '(none in protocols.yaml step_tables)'}; got {table!r}")
    return {int(k): int(v) for k, v in tables[table].items()}


def model_stream(protocol_name: str, record: DistilledSet) -> tuple[object, ...]:
    """The names an evaluation cell's model generators are seeded from (the model's index follows): the protocol,
    dataset, IPC and seed, not the method. So model k of every method's cell (Random's, a variant's, an imported
    set's) draws the same initialisation (and, for sets of the same size, the same data order): the paired
    difference to Random is taken per (seed, model) (ddflow.report.paired)."""
    return ("eval", protocol_name, record.dataset, record.ipc, record.seed)


def evaluate_cell(record: DistilledSet, protocol_name: str, settings: dict, data: RealData, device: torch.device,
                  stream: tuple[object, ...], teacher: torch.nn.Module | None = None) -> dict[str, Any]:
    """Train settings['models'] networks under the protocol on the record, model k drawing from
    generator(*stream, k) (model_stream); the cell record (ddflow.records), with `labels_used`: the label regime
    (ddflow.protocols.regimes; a `-teacher` variant's per-image teacher labels, from `teacher`). When `data` carries
    the validation split, the cell also holds `val_accuracies` (each same model on it) and their `val_mean`."""
    fn = get_protocol(protocol_name)
    k = int(settings["models"])
    gens = [generator(*stream, i) for i in range(k)]
    reset_peak(device)
    t0 = time.time()
    if protocol_name in regimes.VARIANT_IDS:
        accs, used = regimes.evaluate(protocol_name, record, record.real_in_space(data), settings, gens, device,
                                      teacher)
    else:
        accs = fn(record, record.real_in_space(data), settings, gens, device)
        used = {"regime": regimes.label_regime(protocol_name, record.soft_labels)}
    out = cell_record(record, protocol_name, settings, [float(a) for a in accs], time.time() - t0,
                      peak_memory_mb(device))
    out["labels_used"] = used
    val = getattr(accs, "val", None)
    if data.x_val is not None and val is None:
        raise DdflowError(f"protocol {protocol_name!r} returned no validation accuracies though the data carry the "
                          "validation split (return registry.scored(...))")
    if val is not None:
        out["val_accuracies"], out["val_mean"] = val, sum(val) / len(val)
    out["provenance"] = provenance(device)
    out["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    log.info("%s: %.2f +- %.2f over %d models (%.1f s)", record.cell, out["mean"], out["std"], k, out["seconds"])
    return out
