"""Per-batch standardisation: a batch minus its own mean, divided by its own standard deviation, one scalar of each
over the whole batch (every image, channel and pixel; the std unbiased, as torch.Tensor.std).

HaBa's utils.py epoch() (Huage001/DatasetFactorization, line 409) does this to every batch it trains or tests on,
before any augmentation: its experts (buffer.py) and its evaluation (evaluate_synset) see standardised batches.
"""
from __future__ import annotations

import torch


def standardize(x: torch.Tensor) -> torch.Tensor:
    """x minus its mean over all elements, divided by their (unbiased) std."""
    return (x - x.mean()) / x.std()


def standardize_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """x (groups * b, ...): each of `groups` consecutive blocks of b rows standardised on its own (the K models of a
    ddflow.train.NetStack step, each on its own batch)."""
    flat = x.reshape(groups, -1)
    mean = flat.mean(1, keepdim=True)
    std = flat.std(1, keepdim=True)
    return ((flat - mean) / std).view(x.shape)


def standardize_chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """x standardised chunk by chunk, in order (a test loader's batches: utils.py testloader, batch 128, no
    shuffle); `x` may be any indexable image store (ddflow.data.images.Images)."""
    if chunk < 1:
        raise ValueError(f"standardize_chunks: chunk {chunk} < 1")
    return torch.cat([standardize(x[s:s + chunk]) for s in range(0, len(x), chunk)])
