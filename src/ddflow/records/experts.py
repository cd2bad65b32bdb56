"""Expert trajectories (`results/experts/{dataset}/{prep}/{net}/e{i}.pt`, written by ddflow.stages.experts): one
file per expert, the parameters after every epoch (epoch 0 = the initialisation) stacked per parameter name as
(epochs + 1, ...), the lr of each epoch, the settings, the data's mean/std and the test accuracy. A block of experts
also writes a receipt (`block{b}.json`) after all its expert files.

A prep with the suffix `-batchstd` (e.g. `kornia-batchstd`) names experts trained with every batch standardised by
its own scalar mean and std (HaBa's buffer.py through its utils.py epoch(), line 409): distinct files, requested by
a method whose `expert_standardize` is `batch` (experts_prep).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import DdflowError
from ..io import load_pt

EXPERT_FORMAT = "ddflow.expert/1"
RECEIPT_FORMAT = "ddflow.expert-block/1"
BATCH_STD = "-batchstd"         # prep suffix: per-batch standardised experts (HaBa's buffer.py / utils.py epoch)
EXPERT_STANDARDIZE = ("none", "batch")


def experts_prep(hp: dict[str, Any]) -> str:
    """The prep of the experts a trajectory method reads: its `prep`, with BATCH_STD when its
    `expert_standardize` is `batch` (HaBa); `none` or absent: the prep itself (MTT's buffer.py)."""
    mode = hp.get("expert_standardize") or "none"
    if mode not in EXPERT_STANDARDIZE:
        raise DdflowError(f"hparams expert_standardize {mode!r}; allowed: {', '.join(EXPERT_STANDARDIZE)}")
    return hp["prep"] + (BATCH_STD if mode == "batch" else "")


def split_prep(prep: str) -> tuple[str, bool]:
    """An experts prep -> (the data's prep, whether batches are standardised)."""
    return (prep[:-len(BATCH_STD)], True) if prep.endswith(BATCH_STD) else (prep, False)


def expert_path(dataset: str, prep: str, net: str, i: int) -> str:
    return f"results/experts/{dataset}/{prep}/{net}/e{i}.pt"


def receipt_path(dataset: str, prep: str, net: str, block: int) -> str:
    """A block's receipt: written after all of the block's expert files, so its existence means they are whole."""
    return f"results/experts/{dataset}/{prep}/{net}/block{block}.json"


def blocks(n_experts: int, block: int) -> list[list[int]]:
    """Expert indices grouped into training blocks of `block` (the last may be shorter); block b has receipt b."""
    if n_experts < 1 or block < 1:
        raise DdflowError(f"experts: need experts >= 1 and block >= 1, got {n_experts}, {block}")
    return [list(range(s, min(s + block, n_experts))) for s in range(0, n_experts, block)]


def load_expert(path: str | Path, dataset: str | None = None, prep: str | None = None,
                net: str | None = None, mmap: bool = False) -> dict[str, Any]:
    """An expert file, checked against the dataset / prep / net the reader expects. With mmap, the tensors are
    memory-mapped: a reader of two epochs (MTT's window) pages in only those, not the whole trajectory."""
    if mmap and Path(path).exists():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # truncated or foreign file
            raise DdflowError(f"{path}: corrupt or not an expert trajectory ({type(e).__name__}: {e})") from None
    else:
        obj = load_pt(path, "expert trajectory")
    if not isinstance(obj, dict) or obj.get("format") != EXPERT_FORMAT:
        raise DdflowError(f"{path}: not a ddflow expert trajectory ({EXPERT_FORMAT})")
    for key, want in (("dataset", dataset), ("prep", prep), ("net", net)):
        if want is not None and obj[key] != want:
            raise DdflowError(f"{path}: expert trajectory of {key} {obj[key]!r}, expected {want!r}")
    return obj
