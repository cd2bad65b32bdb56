"""Optimisers and learning-rate schedules not in torch: LAMB as optax.lamb (FRePo's synthetic-data optimiser) and
optax's cosine / warm-up + cosine schedules (FRePo's evaluation)."""
from __future__ import annotations

import math

import torch


class LAMB(torch.optim.Optimizer):
    """LAMB as optax.lamb (FRePo's synthetic-data optimiser): Adam moments (b1 0.9, b2 0.999, eps 1e-6, bias
    corrected), plus weight decay (0 in FRePo), then the update is scaled per parameter tensor by the trust ratio
    ||p|| / ||u|| (1 when either norm is 0), then by -lr. Own implementation: no maintained PyTorch LAMB matches
    optax's variant exactly (torch-optimizer's Lamb clamps the weight norm at 10 and is unmaintained)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = st["m"] / (1 - b1 ** t)
                v_hat = st["v"] / (1 - b2 ** t)
                u = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    u = u + group["weight_decay"] * p
                p_norm, u_norm = p.norm(), u.norm()
                ratio = torch.where((p_norm > 0) & (u_norm > 0), p_norm / u_norm, torch.ones_like(p_norm))
                p.sub_(group["lr"] * ratio * u)
        return None


def cosine_lr(lr: float, step: int, total: int, alpha: float) -> float:
    """optax.cosine_decay_schedule(lr, total, alpha) at `step`."""
    frac = min(step, total) / max(total, 1)
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * frac)) + alpha)


def warmup_cosine_lr(lr: float, step: int, total: int, warmup: int, alpha: float) -> float:
    """FRePo's evaluation schedule (script/eval.py): linear 0 -> lr over `warmup` steps, then cosine decay to
    alpha * lr over max(total - warmup, 1) steps (optax.join_schedules)."""
    if step < warmup:
        return lr * step / warmup
    return cosine_lr(lr, step - warmup, max(total - warmup, 1), alpha)
