"""RCIG's building blocks (Loo, Hasani, Lechner & Rus, ICML 2023; official yolky/RCIG, JAX/Flax/optax, commit a9fb1fa):
the linearised Conv, the inner problem with its analytic last layer, the outer KRR loss, the Hessian-inverse-vector
product, the implicit gradient and its clipping, and the optimisers (optax's AdaBelief and Adam as RCIG uses them).

Parameters are flat lists in module order [conv0.w, conv0.b, ..., dense.w, dense.b] of a FRePoConv without
normalisation (ddflow.nets; RCIG models.py `Conv` has the same layers). `tangent` is a list of the same shapes.

The linearised network (algorithms.py get_linear_forward, lines 897-952): at base parameters theta (no gradient:
`jax.lax.stop_gradient`) and tangent delta, one forward gives theta's features phi(x) (the primal's `feat_fc`) and
the tangent output J(x) delta (the dual of the logits). RCIG's model of an image is
    f(x) = J(x) delta + phi(x) W,
W the last layer solved in closed form by kernel ridge regression on phi (the primal logits never enter).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DdflowError

#: optax.adabelief defaults (b1, b2, eps, eps_root) and optax.adam's (b1, b2, eps)
ADABELIEF = (0.9, 0.999, 1e-16, 1e-16)
ADAM = (0.9, 0.999, 1e-8)


# ---- the network, its linearisation -------------------------------------------------------------------------
def conv_params(net: nn.Module) -> tuple[list[torch.Tensor], list[int]]:
    """The parameters of a FRePoConv (norm 'none') as a detached list in module order, and each conv's padding."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in net.modules()):
        raise DdflowError("RCIG's linearised Conv has no normalisation (configs_final depth_3.txt has_bn false)")
    params = []
    for m in convs:
        params += [m.weight.detach().clone(), m.bias.detach().clone()]
    params += [net.classifier.weight.detach().clone(), net.classifier.bias.detach().clone()]
    return params, [int(m.padding[0]) for m in convs]


def _act(z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RCIG Conv's activation and its derivative: softplus(beta z) / beta while distilling (use_softplus,
    softplus_temp 60), ReLU when beta = 0 (models.py lines 153-156)."""
    if beta:  # flax nn.softplus = logaddexp(x, 0): its derivative at 0 is 1/2 (torch's softplus is slow on CPU)
        return torch.logaddexp(beta * z, torch.zeros((), dtype=z.dtype, device=z.device)) / beta, \
            torch.sigmoid(beta * z)
    return F.relu(z), (z > 0).to(z.dtype)


def forward(params: list[torch.Tensor], x: torch.Tensor, pads: list[int],
            beta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and features of the Conv: [conv 3x3 -> act -> avg-pool 2] * depth, flatten, dense."""
    a = x
    for i, pad in enumerate(pads):
        a = F.avg_pool2d(_act(F.conv2d(a, params[2 * i], params[2 * i + 1], padding=pad), beta)[0], 2)
    feat = a.flatten(1)
    return feat @ params[-2].T + params[-1], feat


def forward_linear(params: list[torch.Tensor], tangent: list[torch.Tensor], x: torch.Tensor, pads: list[int],
                   beta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features phi(x) at `params` and the tangent output J(x) tangent (the jvp of the logits, written out layer by
    layer so that plain autograd reaches the tangent and the images; tests compare it with torch.func.jvp)."""
    a, da = x, None
    for i, pad in enumerate(pads):
        w, b, dw, db = params[2 * i], params[2 * i + 1], tangent[2 * i], tangent[2 * i + 1]
        z = F.conv2d(a, w, b, padding=pad)
        dz = F.conv2d(a, dw, db, padding=pad)
        if da is not None:
            dz = dz + F.conv2d(da, w, None, padding=pad)
        act, slope = _act(z, beta)
        a, da = F.avg_pool2d(act, 2), F.avg_pool2d(slope * dz, 2)
    feat, dfeat = a.flatten(1), da.flatten(1)
    dout = dfeat @ params[-2].T + feat @ tangent[-2].T + tangent[-1]
    return feat, dout


# ---- the inner problem and the outer loss ---------------------------------------------------------------------
def _solve(k: torch.Tensor, l2: float, rhs: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(k + l2 * torch.eye(len(k), dtype=k.dtype, device=k.device), rhs)


def inner_loss(tangent: list[torch.Tensor], params: list[torch.Tensor], x_s: torch.Tensor, y_s: torch.Tensor,
               l2: float, pads: list[int], beta: float) -> torch.Tensor:
    """RCIG's inner objective (algorithms.py get_krr_loss_gd with self_loss, lines 603-670): with the last layer
    solved in closed form, w = (K_ss + l2 I)^-1 (y - J delta), prediction J delta + K_ss w, the loss
    [0.5 ||y - pred||^2 + 0.5 l2 (tr(w^T K_ss w) + ||delta||^2)] / (N C). Quadratic in delta."""
    feat, dout = forward_linear(params, tangent, x_s, pads, beta)
    k = feat @ feat.T
    w = _solve(k, l2, y_s - dout)
    err = y_s - (dout + k @ w)
    reg = torch.trace(w.T @ k @ w) + sum((t * t).sum() for t in tangent)
    return (0.5 * (err * err).sum() + 0.5 * l2 * reg) / y_s.numel()


def krr_predict(tangent: list[torch.Tensor], params: list[torch.Tensor], x_s: torch.Tensor, y_s: torch.Tensor,
                x_t: torch.Tensor, l2: float, pads: list[int], beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RCIG's prediction of a real batch (get_krr_loss, lines 549-557): J_t delta + K_ts (K_ss + l2 I)^-1
    (y_s - J_s delta); returns it and the real batch's features phi_t."""
    feat_s, dout_s = forward_linear(params, tangent, x_s, pads, beta)
    feat_t, dout_t = forward_linear(params, tangent, x_t, pads, beta)
    return dout_t + (feat_t @ feat_s.T) @ _solve(feat_s @ feat_s.T, l2, y_s - dout_s), feat_t


def label_margin(labels: torch.Tensor) -> torch.Tensor:
    """get_krr_loss lines 567-569: mean over prototypes of min(top1 - top2, 1 / (2 C)); subtracted from the loss."""
    top = labels.topk(2, dim=1).values
    return torch.clamp(top[:, 0] - top[:, 1], max=1.0 / (2 * labels.shape[1])).mean()


def platt_loss(preds: torch.Tensor, y_t: torch.Tensor, log_temp: torch.Tensor) -> torch.Tensor:
    """get_krr_loss lines 563-565: softmax cross-entropy of preds * exp(log_temp) against y_t - min(y_t) (the
    centred one-hot made one-hot), mean over the batch (the MSE computed before it is overwritten, unused)."""
    target = y_t - y_t.min()
    return -(target * F.log_softmax(preds * log_temp.exp(), dim=1)).sum(1).mean()


# ---- optimisers -----------------------------------------------------------------------------------------------
class AdaBelief(torch.optim.Optimizer):
    """optax.adabelief (the optax of 2023 RCIG ran): mu = b1 mu + (1 - b1) g; nu = b2 nu + (1 - b2) (g - mu_old)^2
    + eps_root (the prediction error against the PREVIOUS first moment); bias-corrected; update -lr mu_hat /
    (sqrt(nu_hat) + eps). Defaults b1 0.9, b2 0.999, eps 1e-16, eps_root 1e-16. Own implementation: no
    maintained PyTorch package reproduces optax's variant (adabelief-pytorch adds eps inside the moment and
    rectifies by default)."""

    def __init__(self, params, lr: float = 1e-3):
        b1, b2, eps, eps_root = ADABELIEF
        super().__init__(params, dict(lr=lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["b1"], group["b2"]
            for p in group["params"]:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                st = self.state[p]
                if not st:
                    st["step"], st["mu"], st["nu"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                err = g - st["mu"]
                st["mu"].mul_(b1).add_(g, alpha=1 - b1)
                st["nu"].mul_(b2).addcmul_(err, err, value=1 - b2).add_(group["eps_root"])
                mu_hat, nu_hat = st["mu"] / (1 - b1 ** t), st["nu"] / (1 - b2 ** t)
                p.sub_(group["lr"] * mu_hat / (nu_hat.sqrt() + group["eps"]))
        return None


def adam_step(params: list[torch.Tensor], grads: list[torch.Tensor], m: list[torch.Tensor], v: list[torch.Tensor],
              count: int, lr: float) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """One optax.adam step (b1 0.9, b2 0.999, eps 1e-8 outside the root) at step number `count` (1-based, the bias
    correction's); returns new params, m, v (no in-place change)."""
    b1, b2, eps = ADAM
    new_p, new_m, new_v = [], [], []
    for p, g, mi, vi in zip(params, grads, m, v):
        mi = b1 * mi + (1 - b1) * g
        vi = b2 * vi + (1 - b2) * g * g
        new_p.append(p - lr * (mi / (1 - b1 ** count)) / ((vi / (1 - b2 ** count)).sqrt() + eps))
        new_m.append(mi)
        new_v.append(vi)
    return new_p, new_m, new_v


def lr_stat(losses: list[float]) -> int:
    """run_rcig's reading of a solve's losses (lines 152-164 inner, 205-217 Hessian inverse): 1 if they decrease
    strictly at every step, -1 if the last is above the first (diverged), else 0."""
    if len(losses) < 2:
        return 0
    if all(a > b for a, b in zip(losses[:-1], losses[1:])):
        return 1
    return -1 if losses[-1] > losses[0] else 0


def clip_to(implicit: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
    """do_meta_train_step lines 401-410: the implicit gradient rescaled to at most the direct gradient's norm (per
    parameter array), 0/0 (a zero implicit gradient) mapped to 0 as jnp.nan_to_num does."""
    inorm, dnorm = implicit.norm(), direct.norm()
    out = implicit / inorm * torch.minimum(dnorm, inorm)
    return torch.nan_to_num(out)


def ema_update(hidden: torch.Tensor, value: torch.Tensor, count: int,
               decay: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """get_updated_ema (lines 967-985), called with decay 0.99 after each coreset step (line 419): hidden = decay
    hidden + (1 - decay) value, average = hidden / (1 - decay ** count)."""
    hidden = decay * hidden + (1 - decay) * value
    return hidden, hidden / (1 - decay ** count)


def dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def hvp(tangent: list[torch.Tensor], params: list[torch.Tensor], x_s: torch.Tensor, y_s: torch.Tensor, l2: float,
        pads: list[int], beta: float, vec: list[torch.Tensor]) -> list[torch.Tensor]:
    """H vec, H the Hessian of the inner objective in the tangent (get_training_loss_hvp_krr, lines 960-964)."""
    d = [t.detach().requires_grad_(True) for t in tangent]
    with torch.enable_grad():
        g = torch.autograd.grad(inner_loss(d, params, x_s, y_s, l2, pads, beta), d, create_graph=True)
        return list(torch.autograd.grad(dot(g, vec), d))


def h_inv_vp(tangent, params, x_s, y_s, l2, pads, beta, g_t: list[torch.Tensor], steps: int,
             lr: float) -> tuple[list[torch.Tensor], list[float]]:
    """get_h_inv_vp (lines 426-466): x from 0, `steps` optax.adam(lr) steps on the gradient H x - g_t (i.e. on
    0.5 x^T H x - x^T g_t); residual_i = x_i . (H x_i - 2 g_t) before step i. Returns x and the residuals."""
    x = [torch.zeros_like(g) for g in g_t]
    m = [torch.zeros_like(g) for g in g_t]
    v = [torch.zeros_like(g) for g in g_t]
    residuals = []
    for i in range(steps):
        hx = hvp(tangent, params, x_s, y_s, l2, pads, beta, x)
        residuals.append(float(dot(x, [h - 2 * g for h, g in zip(hx, g_t)])))
        x, m, v = adam_step(x, [h - g for h, g in zip(hx, g_t)], m, v, i + 1, lr)
    return x, residuals


def pool_count(generator: torch.Generator, n_max: int) -> int:
    """jax.random.randint(key, (), 1, n_max_steps_pool) (line 242): uniform on 1 .. n_max - 1 (maxval exclusive)."""
    if n_max < 2:
        raise DdflowError(f"rcig: n_max_steps_pool {n_max} must be >= 2 (randint(1, n) draws from 1 .. n - 1)")
    return int(torch.randint(1, n_max, (1,), generator=generator))


def log_temp_init() -> torch.Tensor:
    """ProtoHolder's temp_init 0.0 (run_rcig line 93): exp(log_temp) = 1 at the start."""
    return torch.zeros(())


def finite_or_raise(value: torch.Tensor, what: str) -> None:
    if not math.isfinite(float(value.detach())):
        raise DdflowError(f"rcig: {what} is not finite ({float(value.detach())}); lower proto_lr or check the lr "
                          "search")
