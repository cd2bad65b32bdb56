"""RFAD's random-feature approximation of the ConvNet NNGP kernel and its KRR losses (yolky/RFAD distillation.py).

Features: the flattened outputs of `n` freshly drawn Gaussian ConvNets (ddflow.nets.rfad, ConvNet_wide without
head), concatenated and scaled by 1 / sqrt(n * d) (distillation.py line 181, random_features.py line 31), so that
phi(x) . phi(x') is the Monte-Carlo mean of the last layer's activation products: the NNGP covariance of the
flattened features, averaged over positions. The kernel adds RFAD's readout layer, a Dense layer with W_std^2 = 2
and b_std^2 = 0.01 (kernels.py lines 9-10, 31): K(x, x') = 2 phi(x) . phi(x') + 0.01 (distillation.py lines 117,
120, 183, 220).

KRR: W = (K_ss + jit * trace(K_ss) / n * I)^-1 Y_s solved in float64 (lines 184, 219), prediction K_ts W (lines
220-221). With `readout(phi)` = [sqrt(2) phi, 0.1] these are exactly ddflow.ops.krr's krr_weights / krr_predict on
the readout features (krr_lambda with reg = jit), which this module reuses.

Losses (lines 226-229): Platt-scaled cross-entropy CE(exp(k) * preds, class) with a learned log-temperature k, or
0.5 * mean((y - preds)^2) over samples and classes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .krr import isa_closed_form, krr_predict, krr_weights, nearest_other, select_by_error

READOUT_W_STD2 = 2.0   # kernels.py line 9 W_std = sqrt(2): the factor 2 of distillation.py line 183
READOUT_B_STD2 = 0.01  # kernels.py line 10 b_std = 0.1: the + 0.01 of distillation.py line 183


def random_features(nets, x: torch.Tensor) -> torch.Tensor:
    """Concatenated features of the networks, / sqrt(number of networks * features per network)."""
    feats = [net(x) for net in nets]
    return torch.cat(feats, 1) / math.sqrt(len(feats) * feats[0].shape[1])


def readout(phi: torch.Tensor) -> torch.Tensor:
    """[sqrt(2) phi, 0.1]: readout(a) readout(b)^T = 2 a b^T + 0.01, RFAD's kernel."""
    const = torch.full((len(phi), 1), math.sqrt(READOUT_B_STD2), dtype=phi.dtype, device=phi.device)
    return torch.cat([math.sqrt(READOUT_W_STD2) * phi, const], 1)


def rfad_kernel(phi_a: torch.Tensor, phi_b: torch.Tensor) -> torch.Tensor:
    return READOUT_W_STD2 * phi_a @ phi_b.T + READOUT_B_STD2


def rfad_predict(phi_t: torch.Tensor, phi_s: torch.Tensor, y_s: torch.Tensor, jit: float) -> torch.Tensor:
    """K_ts (K_ss + jit trace(K_ss)/n I)^-1 Y_s in float64 (the regulariser is differentiable, as in the official
    code, where the trace is taken of the graph-carrying K_xx)."""
    r_s = readout(phi_s.double())
    return krr_predict(readout(phi_t.double()), r_s, krr_weights(r_s, y_s.double(), jit))


def platt_loss(pred: torch.Tensor, y: torch.Tensor, log_temp: torch.Tensor) -> torch.Tensor:
    """CE(exp(k) * preds, y) with the class indices y."""
    return F.cross_entropy(torch.exp(log_temp) * pred, y)


def rfad_mse(pred: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (y_t - pred).square().mean()


def rfad_isa_loss(phi_t: torch.Tensor, y_t: torch.Tensor, phi_s: torch.Tensor, y_s: torch.Tensor, jit: float,
                  keep: float, eps: float) -> torch.Tensor:
    """ISA's module (fiona-lxd/ISA lib/datadistillation/isa.py proto_train_step) on RFAD's KRR: keep the `keep`
    fraction of the real batch with the largest per-sample squared error, pair each kept sample i with its most
    cosine-similar other kept sample j (on the random features), and integrate the squared residual along
    readout(phi_i) + l (readout(phi_i) - readout(phi_j)), l in [0, eps], in closed form (ops.krr.isa_closed_form,
    mean over classes). Scaled by 0.5, so that keep = 1 and eps = 0 is RFAD's MSE loss exactly."""
    r_s = readout(phi_s.double())
    proj = r_s.T @ krr_weights(r_s, y_s.double(), jit)
    r_t, y_t = readout(phi_t.double()), y_t.double()
    pred = r_t @ proj
    if keep < 1:
        kept = select_by_error((pred - y_t).detach().square().mean(-1), keep)
        pred, phi_t, r_t, y_t = pred[kept], phi_t[kept], r_t[kept], y_t[kept]
    a = pred - y_t
    if eps == 0:
        return 0.5 * isa_closed_form(a, a, 0.0, "mean").mean()
    j = nearest_other(phi_t.detach())
    b = (r_t - r_t[j]) @ proj - (y_t - y_t[j])
    return 0.5 * isa_closed_form(a, b, eps, "mean").mean()
