"""Evaluation protocols of the trajectory family (DESIGN.md section 4).

- `mtt`: the `dc` protocol with the distillation's learned lr (MTT's evaluate_synset(lr = syn_lr)), on data in the
  distillation's preprocessing space (evaluate_cell whitens the test split with the record's ZCA).
- `soft`: the `dc` protocol trained on the distilled soft labels with the soft-target cross-entropy
  -sum_c p_c log softmax(z)_c (EAD learns its labels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import RealData
from .errors import DdflowError
from .evaluate import evaluate_dc, protocol, train_and_test_dc


@protocol("mtt")
def evaluate_mtt(images: torch.Tensor, labels: torch.Tensor, data: RealData, settings: dict, generators,
                 device: torch.device, desc: str = "eval", lr: float | None = None, **kw) -> list[float]:
    if lr is None:
        raise DdflowError("protocol 'mtt' trains with the distillation's learned lr; this distilled set has none")
    return evaluate_dc(images, labels, data, settings, generators, device, desc=desc, lr=float(lr), **kw)


def soft_ce_per_model(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (K, B, C), targets (K, B, C) probabilities -> (K,) mean soft-target cross-entropy per model."""
    return -(targets * F.log_softmax(logits, -1)).sum(-1).mean(1)


@protocol("soft")
def evaluate_soft(images: torch.Tensor, labels: torch.Tensor, data: RealData, settings: dict, generators,
                  device: torch.device, desc: str = "eval", **_) -> list[float]:
    """As `dc` (SGD 0.01, momentum 0.9, wd 5e-4, batch 256, epochs+1 epochs, x0.1 after epochs//2 + 1), with
    the soft-target cross-entropy on (N, C) label probabilities."""
    info = data.info
    if labels.dim() != 2 or labels.shape[1] != info.classes:
        raise DdflowError(f"protocol 'soft' needs (N, {info.classes}) soft labels, got {tuple(labels.shape)}")
    return train_and_test_dc(images, labels.float(), data, settings, generators, device, desc=desc,
                             loss_fn=soft_ce_per_model)
