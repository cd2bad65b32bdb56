"""AdaBelief (Zhuang et al., NeurIPS 2020, Algorithm 2), the optimiser of RFAD's distillation.

RFAD (yolky/RFAD distillation.py lines 59-72) uses `torch_optimizer.AdaBelief` (the PyPI package torch-optimizer
0.3.0, last released 2021) with its defaults betas (0.9, 0.999), no weight decay, no AMSGrad, no rectification, and
eps 1e-16. This is a short implementation of that configuration (no dependency on the unmaintained package), the
paper's update rule, which torch_optimizer/adabelief.py (lines 146-191) computes as follows:

    m_t = b1 m_{t-1} + (1 - b1) g_t
    s_t = b2 s_{t-1} + (1 - b2) (g_t - m_t)^2 + eps          (eps is added to the stored state, in place)
    p_t = p_{t-1} - lr / (1 - b1^t) * m_t / (sqrt(s_t) / sqrt(1 - b2^t) + eps)

A parameter without a gradient is skipped (its step count does not advance).
"""
from __future__ import annotations

import math

import torch


class AdaBelief(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-16):
        if lr <= 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"AdaBelief: lr {lr} > 0, eps {eps} >= 0 and betas {betas} in [0, 1) expected")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_var"] = torch.zeros_like(p)
                st["step"] += 1
                m, s, g = st["exp_avg"], st["exp_avg_var"], p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                r = g - m
                s.mul_(b2).addcmul_(r, r, value=1 - b2).add_(group["eps"])
                denom = (s.sqrt() / math.sqrt(1 - b2 ** st["step"])).add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - b1 ** st["step"]))
        return loss
