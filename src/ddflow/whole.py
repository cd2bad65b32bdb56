"""The whole-dataset bound: ConvNets trained on the full training split by the `dc` protocol's loop (DC's
evaluate_synset: SGD, batch 256, epochs + 1 epochs, lr x0.1 with a fresh optimiser at the middle), tested on the test
split. One cell per dataset (`results/eval/whole/{dataset}.json`), reused by every table that prints the "Whole
dataset" row (DC ICLR 2021 Table 1: MNIST 99.6, FashionMNIST 93.5, SVHN 95.4, CIFAR-10 84.8, CIFAR-100 56.2).

Settings = workflow/hparams/protocols.yaml `dc` updated by workflow/hparams/whole.yaml (epochs, models,
augmentation, net) at the preset. The cell has the evaluation cell's fields with `method: whole` and `ipc: 0`
(every IPC column of a table shows it: ddflow.report.tables.build_table).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import torch

from . import hparams as hparams_mod
from .data import get_info, load_real
from .io import write_json
from .protocols.cell import load_protocols
from .protocols.dc import train_and_test_dc
from .records import DistilledSet, cell_record
from .runtime import peak_memory_mb, provenance, reset_peak
from .seeding import generator

log = logging.getLogger(__name__)

METHOD = "whole"      # the table rows' method id of the bound (not a registered method)
PROTOCOL = "dc"


def whole_settings(dataset: str, preset: str, hp_dir: str | Path | None = None) -> dict[str, Any]:
    folder = hparams_mod.hparams_dir(hp_dir)
    base = load_protocols(folder)[PROTOCOL]
    hparams_mod.check_file(METHOD, folder)
    settings = hparams_mod.deep_merge(base, hparams_mod.resolve(METHOD, dataset, 0, preset, folder))
    hparams_mod.check_values(settings, f"{folder / METHOD}.yaml resolved for {dataset}, preset {preset}")
    if settings.get("augment") == "dsa" and settings.get("strategy", "auto") == "auto":
        settings["strategy"] = get_info(dataset).dsa_strategy
    return settings


def train_whole(dataset: str, data_path: str | Path, preset: str, device: torch.device, out: str | Path,
                hp_dir: str | Path | None = None) -> dict[str, Any]:
    """Train settings['models'] ConvNets on the whole training split; write and return the cell."""
    info = get_info(dataset)
    settings = whole_settings(dataset, preset, hp_dir)
    data = load_real(data_path, info, device)
    full = DistilledSet(images=data.x_train, labels=data.y_train, method=METHOD, dataset=dataset, ipc=0, seed=0,
                        mean=info.mean, std=info.std, preset=preset)
    gens = [generator("eval", METHOD, dataset, i) for i in range(int(settings["models"]))]
    reset_peak(device)
    t0 = time.time()
    accs = train_and_test_dc(full, data, settings, gens, device, METHOD)
    cell = cell_record(full, PROTOCOL, settings, accs, time.time() - t0, peak_memory_mb(device))
    cell.update(train_images=len(data.x_train), provenance=provenance(device),
                date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    write_json(cell, out)
    log.info("whole %s: %.2f +- %.2f over %d models (%.1f s)", dataset, cell["mean"], cell["std"], len(accs),
             cell["seconds"])
    return cell
