"""Kernel ridge regression on network features (FRePo, ISA, the `krr` protocol) and ISA's loss on top of it.

FRePo = yongchao97/FRePo (JAX), ISA = fiona-lxd/ISA (a FRePo fork); facts in docs/methods.md (FRePo, ISA).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import DdflowError
from .losses import mse_half_sum


def krr_lambda(k_ss: torch.Tensor, reg: float = 1e-6) -> torch.Tensor:
    """FRePo's regulariser: |reg| * trace(K_ss) / n (nfr, compute_feat_kpp)."""
    return abs(reg) * torch.diagonal(k_ss, dim1=-2, dim2=-1).sum(-1) / k_ss.shape[-1]


def krr_weights(phi_s: torch.Tensor, y_s: torch.Tensor, reg: float = 1e-6) -> torch.Tensor:
    """W = (K_ss + lambda I)^-1 Y_s with K_ss = phi_s phi_s^T; the prediction at phi_t is phi_t phi_s^T W."""
    k_ss = phi_s @ phi_s.T
    lam = krr_lambda(k_ss, reg)
    a = k_ss + lam * torch.eye(len(k_ss), dtype=k_ss.dtype, device=k_ss.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(y_s, chol)
    return torch.linalg.solve(a, y_s)  # not positive definite in float32: the general solver


def krr_predict(phi_t: torch.Tensor, phi_s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """K_ts W = phi_t (phi_s^T W): the (d, C) projection first, so a large test set costs one matrix product."""
    return phi_t @ (phi_s.T @ w)


def centred_onehot(y: torch.Tensor, classes: int) -> torch.Tensor:
    """FRePo's real-batch targets: one_hot - 1/C."""
    return F.one_hot(y, classes).float() - 1.0 / classes


def krr_targets(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Regression targets of a set's labels: FRePo's centred one-hot for hard labels, learned labels as they are."""
    if labels.dim() == 1:
        return centred_onehot(labels.long(), classes)
    if labels.dim() != 2 or labels.shape[1] != classes:
        raise DdflowError(f"labels of shape {tuple(labels.shape)}: expected (N,) or (N, {classes})")
    return labels.float()


def init_learned_labels(y: torch.Tensor, classes: int) -> torch.Tensor:
    """FRePo's init_proto(scale_y=True): (one_hot - 1/C) / sqrt(C / 10)."""
    return centred_onehot(y, classes) / math.sqrt(classes / 10)


def frepo_kernel_loss(phi_t: torch.Tensor, y_t: torch.Tensor, phi_s: torch.Tensor, y_s: torch.Tensor,
                      reg: float = 1e-6) -> torch.Tensor:
    """FRePo: KRR of the real batch from the support, mean over the batch of 0.5 * sum over classes of the error^2."""
    pred = krr_predict(phi_t, phi_s, krr_weights(phi_s, y_s, reg))
    return mse_half_sum(pred, y_t)


def select_by_error(err: torch.Tensor, keep: float) -> torch.Tensor:
    """Indices of the samples ISA keeps: keep > 0 = the floor(keep * B) largest errors (hardest first, ISA's topk);
    keep < 0 = the floor(|keep| * B) smallest (easiest first, the public code's negative topk)."""
    b = len(err)
    n = int(math.floor(abs(keep) * b + 1e-9))
    if n < 1:
        raise DdflowError(f"ISA keeps {keep} of a batch of {b}: no sample left")
    order = torch.argsort(err, descending=keep > 0, stable=True)
    return order[:n]


def isa_closed_form(a: torch.Tensor, b: torch.Tensor, eps: float, reduce: str = "mean") -> torch.Tensor:
    """Per-sample loss of the segment r(l) = A + l B, l uniform on [0, eps]: A^2 + eps A B + eps^2 B^2 / 3, then
    reduced over classes ('mean' = ISA's code, 'half_sum' = FRePo's 0.5 * sum, 'sum' = DM's). eps = 0 gives A^2."""
    sq = a.square() if eps == 0 else a.square() + eps * a * b + (eps * eps / 3.0) * b.square()
    if reduce == "mean":
        return sq.mean(-1)
    if reduce == "half_sum":
        return 0.5 * sq.sum(-1)
    if reduce == "sum":  # dm-isa: DM's squared distance sums over feature entries
        return sq.sum(-1)
    raise DdflowError(f"ISA reduce {reduce!r} not in ('mean', 'half_sum', 'sum')")


def nearest_other(phi: torch.Tensor) -> torch.Tensor:
    """For each row, the index of the most cosine-similar OTHER row (ISA: the second of the top-2 similarities)."""
    z = F.normalize(phi, dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-float("inf"))
    return sim.argmax(1)


def isa_loss(phi_t: torch.Tensor, y_t: torch.Tensor, phi_s: torch.Tensor, y_s: torch.Tensor, keep: float = 0.8,
             eps: float = 0.5, reduce: str = "mean", reg: float = 1e-6) -> torch.Tensor:
    """ISA's loss (fiona-lxd/ISA isa.py proto_train_step): KRR of the real batch, keep the hardest `keep` fraction
    by per-sample MSE, pair each kept sample i with its most cosine-similar other kept sample j, and integrate the
    squared residual along phi_i + l (phi_i - phi_j), l in [0, eps], in closed form. keep = 1 and eps = 0 with
    reduce 'half_sum' is FRePo's kernel loss, computed by the same operations."""
    w = krr_weights(phi_s, y_s, reg)                      # first, as in frepo_kernel_loss (same autograd order)
    proj = phi_s.T @ w                                    # (d, C): phi -> prediction
    pred = phi_t @ proj
    if abs(keep) < 1:
        kept = select_by_error((pred - y_t).detach().square().mean(-1), keep)
        pred, phi_t, y_t = pred[kept], phi_t[kept], y_t[kept]
    if eps == 0 and reduce == "half_sum":
        return mse_half_sum(pred, y_t)                    # FRePo's kernel loss, the same operations
    a = pred - y_t                                        # residuals (B, C)
    if eps == 0:
        return isa_closed_form(a, a, 0.0, reduce).mean()
    j = nearest_other(phi_t.detach())
    b = (phi_t - phi_t[j]) @ proj - (y_t - y_t[j])
    return isa_closed_form(a, b, eps, reduce).mean()


def flip_support(x: torch.Tensor, y: torch.Tensor, use_flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """FRePo's use_flip: the prototypes and their horizontal flips, with the same labels."""
    if not use_flip:
        return x, y
    return torch.cat([x, x.flip(-1)]), torch.cat([y, y])
