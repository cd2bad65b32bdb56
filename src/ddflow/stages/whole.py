"""The whole-dataset bound: ConvNets trained on the full training split by the `dc` protocol's loop (DC's
evaluate_synset: SGD, batch 256, epochs + 1 epochs, lr x0.1 with a fresh optimiser at the middle), tested on the test
split. One cell per dataset (`results/eval/whole/{dataset}.json`), reused by every table that prints the "Whole
dataset" row (DC ICLR 2021 Table 1: MNIST 99.6, FashionMNIST 93.5, SVHN 95.4, CIFAR-10 84.8, CIFAR-100 56.2).

It runs with the settings its rule resolved (ddflow.settings.whole_settings: workflow/hparams/stages/protocols.yaml `dc`
updated by the stage file whole.yaml) and trains through the evaluation cell code (ddflow.protocols.evaluate_cell)
on the training split as a set. The cell has the evaluation cell's fields with `method: whole` and `ipc: 0` (every
IPC column of a table shows it: ddflow.report.tables.build_table) and the number of training images.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..data import get_info, load_real
from ..io import write_json
from ..protocols import evaluate_cell
from ..records import DistilledSet

log = logging.getLogger(__name__)

METHOD = "whole"      # the table rows' method id of the bound (not a registered method; ddflow.settings.WHOLE)
PROTOCOL = "dc"


def run(dataset: str, data_path: str | Path, preset: str, settings: dict[str, Any], device: torch.device,
        out: str | Path) -> dict[str, Any]:
    """Train settings['models'] ConvNets on the whole training split; write and return the cell."""
    info = get_info(dataset)
    data = load_real(data_path, info, device)
    full = DistilledSet(images=data.x_train, labels=data.y_train, method=METHOD, dataset=dataset, ipc=0, seed=0,
                        mean=info.mean, std=info.std, preset=preset)
    # model k draws from generator("eval", "whole", dataset, k): one stream per dataset, whatever the protocol
    cell = evaluate_cell(full, PROTOCOL, settings, data, device, ("eval", METHOD, dataset))
    cell["train_images"] = len(data.x_train)
    write_json(cell, out)
    log.info("whole %s: %.2f +- %.2f over %d models (%.1f s)", dataset, cell["mean"], cell["std"], cell["n_models"],
             cell["seconds"])
    return cell
