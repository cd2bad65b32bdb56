"""Losses shared by methods and protocols: the soft-target cross-entropy (EAD, the `soft` protocol), the CutMix
cross-entropy (IDC/DREAM training, the `idc` protocol), FRePo's half-sum MSE and its label-margin regulariser, the
supervised contrastive loss (HaBa's feature extractor)."""
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


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
                           base_temperature: float = 0.07) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020; the form HaBa's contrastive_loss.py SupConLoss computes,
    every view an anchor): features (B, V, D), labels (B,). With the B*V views z_a, positives P(a) = the other views of
    a's class, A(a) = every view but a:
        mean over a of  -(temperature / base_temperature) * mean_{p in P(a)} log( exp(z_a.z_p / t) /
                                                                                 sum_{b in A(a)} exp(z_a.z_b / t) )
    An anchor with no positive gives NaN, as in the official code (every image here has a second view)."""
    b, v = features.shape[:2]
    z = features.reshape(b, v, -1).transpose(0, 1).reshape(b * v, -1)   # view-major, as torch.cat(unbind(dim=1))
    y = labels.reshape(-1).repeat(v)
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()    # stability; cancels in the log-ratio
    self_mask = torch.eye(b * v, dtype=torch.bool, device=z.device)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    mean_pos = (log_prob * positives).sum(1) / positives.sum(1)
    return -(temperature / base_temperature) * mean_pos.mean()
