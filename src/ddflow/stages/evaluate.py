"""The evaluation runner: one distilled set under one protocol -> results/eval/{protocol}/.../s{seed}.json.

It runs with the protocol settings its rule resolved (ddflow.settings.eval_settings) and resolves nothing itself:
it loads the set and the real data normalised as the set was, carves the validation split off for a protocol that
chooses on it (and otherwise hands the protocol the validation images and no training image: ddflow.data.validation
held_out), so that every cell given the split also scores its models on it (`val_accuracies`, `validation`: the
split's file and image count; the tables' validation rule, ddflow.report.valrule), seeds the models from the protocol
and the cell, not the method (ddflow.protocols.cell.model_stream: model k of every method's cell starts alike, so
differences to Random are paired) and writes the cell atomically. The whole-dataset bound (ddflow.stages.whole)
evaluates through the same cell code.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from ..data import RealData, get_info, load_real
from ..data.validation import carve, held_out, load_split
from ..errors import DdflowError
from ..io import write_json
from ..protocols import evaluate_cell
from ..protocols.cell import model_stream
from ..protocols.regimes import VARIANT_IDS
from ..protocols.registry import needs_validation
from ..records import DistilledSet, load_distilled
from ..records.featnet import load_feature_net

log = logging.getLogger(__name__)


def evaluate_record(record: DistilledSet, protocol: str, settings: dict[str, Any], real: RealData,
                    device: torch.device, teacher: torch.nn.Module | None = None) -> dict[str, Any]:
    """The cell of a loaded record on loaded real data (ddflow.protocols.evaluate_cell), its models seeded from
    the protocol and the cell (model_stream)."""
    return evaluate_cell(record, protocol, settings, real, device, model_stream(protocol, record), teacher)


def run(distilled: str | Path | DistilledSet, protocol: str, settings: dict[str, Any], data_path: str | Path,
        device: torch.device, out: str | Path | None = None,
        validation: str | Path | None = None, teacher: str | Path | None = None) -> dict[str, Any]:
    """The evaluation cell of one set (a record or its file) under `protocol` with `settings`; written to `out`
    when given. A protocol that chooses on the validation split needs `validation` (the split's file); with it, any
    protocol's cell also holds its models' validation accuracies. A `-teacher` label regime needs its `teacher` (a
    feature-net file, ddflow.records.featnet)."""
    record = distilled if isinstance(distilled, DistilledSet) else load_distilled(distilled)
    # the real data normalised as the distilled set was (a method may normalise with another dataset's statistics)
    info = dataclasses.replace(get_info(record.dataset), mean=tuple(record.mean), std=tuple(record.std))
    real = load_real(data_path, info, device)
    if needs_validation(protocol) and validation is None:
        raise DdflowError(f"protocol {protocol!r} chooses on the validation split: give --validation (the file "
                          f"the validation-split command writes, e.g. results/splits/{record.dataset}.npz)")
    if validation is not None:
        val_idx = load_split(validation, record.dataset, len(real.y_train))
        real = (carve if needs_validation(protocol) else held_out)(real, val_idx)
    if protocol in VARIANT_IDS and VARIANT_IDS[protocol][1] == "teacher" and teacher is None:
        raise DdflowError(f"protocol {protocol!r} labels the set with a teacher network: give --teacher (the feature "
                          f"net, e.g. results/nets/{record.dataset}/ConvNet-full.pt)")
    net = load_feature_net(teacher, get_info(record.dataset), device) if teacher is not None else None
    cell = evaluate_record(record, protocol, settings, real, device, net)
    if validation is not None:
        cell["validation"] = {"split": str(validation), "images": int(len(val_idx))}
    log.info("%s/%s IPC %d under %s: %.2f ± %.2f %% (%d models)", cell["method"], cell["dataset"], cell["ipc"],
             cell["protocol"], cell["mean"], cell["std"], cell["n_models"])
    if out is not None:
        write_json(cell, out)
    return cell
