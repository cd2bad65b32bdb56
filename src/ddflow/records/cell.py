"""The evaluation cell (`results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/s{seed}.json`): every model's test
accuracy of one distilled set under one protocol, their mean and population std, the protocol settings, time and
peak memory. The file carries no format key (cells written before this package read the same); its loader checks
the keys every reader relies on."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DdflowError
from ..io import read_json

if TYPE_CHECKING:
    from .distilled import DistilledSet

CELL_KEYS = ("protocol", "method", "dataset", "ipc", "seed", "accuracies")


def cell_record(record: DistilledSet, protocol: str, settings: dict[str, Any], accuracies: list[float],
                seconds: float, memory: dict[str, float]) -> dict[str, Any]:
    """The cell of `record` evaluated under `protocol` (written by the evaluation runner as JSON)."""
    import torch  # here, not at the top: the tables read cells (load_cell) without torch
    t = torch.tensor(accuracies, dtype=torch.float64)
    k = len(accuracies)
    return {
        "protocol": protocol, "method": record.method, "dataset": record.dataset, "ipc": record.ipc,
        "seed": record.seed, "preset": record.preset, "iterations": record.iterations, "accuracies": accuracies,
        "mean": float(t.mean()), "std": float(t.std(unbiased=False)) if k > 1 else 0.0, "n_models": k,
        "settings": settings, "seconds": seconds, **memory,
        # the initial set against Random's (ddflow.data.paired), for the tables' paired difference
        **{k: record.extra[k] for k in ("paired_init", "init_replaced") if k in (record.extra or {})},
    }


def load_cell(path: str | Path) -> dict[str, Any]:
    """An evaluation cell; a missing or corrupt file, or one without the keys of CELL_KEYS or with no accuracy, is
    a DdflowError naming the path."""
    c = read_json(path, "evaluation cell")
    if not isinstance(c, dict):
        raise DdflowError(f"{path}: an evaluation cell is a JSON object, got {type(c).__name__}")
    for key in CELL_KEYS:
        if key not in c:
            raise DdflowError(f"{path}: evaluation cell lacks {key!r}")
    if not isinstance(c["accuracies"], list) or not c["accuracies"]:
        raise DdflowError(f"{path}: evaluation cell holds no accuracies (a list of one per model)")
    return c
