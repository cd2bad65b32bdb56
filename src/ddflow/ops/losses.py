"""Losses shared by methods and protocols: the soft-target cross-entropy (EAD, the `soft` protocol), the CutMix
cross-entropy (IDC/DREAM training, the `idc` protocol), FRePo's half-sum MSE and its label-margin regulariser."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_c p_c log softmax(logits)_c, averaged over the batch (the last dimension but one): (B, C) -> scalar,
    (K, B, C) -> (K,), one value per model."""
    return -(targets * F.log_softmax(logits, -1)).sum(-1).mean(-1)


def cutmix_loss(logits: torch.Tensor, y: torch.Tensor, draw: dict | None) -> torch.Tensor:
    """keep * CE(logits, y) + (1 - keep) * CE(logits, y[perm]); plain CE without a draw."""
    if draw is None:
        return F.cross_entropy(logits, y)
    keep = draw["keep"]
    return keep * F.cross_entropy(logits, y) + (1 - keep) * F.cross_entropy(logits, y[draw["perm"].to(y.device)])


def margin_loss(y_proto: torch.Tensor) -> torch.Tensor:
    """FRePo's lb_margin_th, averaged over prototypes: mean of -min(top1 - top2, 1/C)."""
    top = y_proto.topk(2, dim=-1).values
    return -torch.clamp(top[:, 0] - top[:, 1], max=1.0 / y_proto.shape[-1]).mean()


def mse_half_sum(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FRePo's mean_squared_loss: mean over the batch of 0.5 * sum over classes of (pred - y)^2. Works on (..., B, C)
    and returns the leading dims."""
    return 0.5 * (pred - y).square().sum(-1).mean(-1)
