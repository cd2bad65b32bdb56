"""EAD: effect alignment ("Learn to synthesize compact datasets by matching effects"; no public code, the algorithm
as docs/methods.md states it).

Synthetic images are initialised from real images per class, soft labels (logits, learned) from the final expert's
predictions on them. Each iteration draws a synthetic minibatch S_t, two disjoint real minibatches D_p and D_t from
the training split (once per iteration, shared by its checkpoints: the paper's Algorithm 1), and t_m checkpoints
theta^t from the lr-weighted pool (drawn by ddflow.stages.sampling), and minimises

    | sum_t  c * <g_P(theta^t), grad L(D_t, theta^t)>  -  <g_P(theta^t), grad L(S_t, theta^t)> |,
    g_P = grad L(D_p, theta^t)  (mean losses; soft-target cross-entropy on S_t)

with c = 1 (`ead`, the consistent form: mean-loss gradients make the paper's (1 - alpha) factor exactly 1) or
c = 1 - alpha, alpha = (|D| - |S|) / |S| (`ead-literal`: the paper's alpha = (|G|-|A|)/(|D|-|G|+|A|) with G = D,
A = S, from the full sizes). The synthetic term <g_P, grad_theta L(S_t, theta)> is a forward-mode directional
derivative (torch.func.jvp of theta -> L(S_t, theta) along g_P), backpropagated to the images and the labels:
no double backward through the parameter vector. Images and label logits are updated by Adam.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp

from ..errors import DdflowError
from ..nets import build_net, has_batchnorm
from ..ops.losses import soft_ce
from ..records.trajectories import check_normalization, load_pool
from ..runtime import to_device
from .base import Method
from .registry import register


def literal_coefficient(n_real: int, n_syn: int) -> float:
    """The paper's (1 - alpha) with alpha = (|G| - |A|) / (|D| - |G| + |A|), G = D (all real data), A = S."""
    alpha = (n_real - n_syn) / (n_real - n_real + n_syn)
    return 1.0 - alpha


def effect_terms(net: torch.nn.Module, params: dict[str, torch.Tensor], x_p, y_p, x_t, y_t, x_s,
                 p_s) -> tuple[torch.Tensor, torch.Tensor]:
    """(<g_P, grad L(D_t)>, <g_P, grad L(S_t)>) at `params`; the second is differentiable in x_s and p_s."""
    def real_loss(q, x, y):
        return F.cross_entropy(functional_call(net, q, (x,)), y)

    g_p = {n: v.detach() for n, v in grad(real_loss)(params, x_p, y_p).items()}
    g_t = grad(real_loss)(params, x_t, y_t)
    real_term = sum((g_p[n] * g_t[n]).sum() for n in g_p).detach()
    _, syn_term = jvp(lambda q: soft_ce(functional_call(net, q, (x_s,)), p_s), (params,), (g_p,))
    return real_term, syn_term


def ead_loss(net, pool_params: list[dict[str, torch.Tensor]], batches, x_s, p_s, coef: float) -> torch.Tensor:
    """|sum_t coef * real_t - syn_t| over the checkpoints; batches[t] = (x_p, y_p, x_t, y_t)."""
    total = x_s.new_zeros(())
    for params, (x_p, y_p, x_t, y_t) in zip(pool_params, batches):
        real_term, syn_term = effect_terms(net, params, x_p, y_p, x_t, y_t, x_s, p_s)
        total = total + coef * real_term - syn_term
    return total.abs()


@register("ead")
class EAD(Method):
    protocols = ("soft",)
    learned_labels = True
    requires = ("trajectories",)
    state = ("images", "label_logits", "opt")
    literal = False

    def init(self) -> None:
        hp, info = self.hp, self.data.info
        self.pool = load_pool(self.inputs["trajectories"], info.name, hp["prep"], hp["net"])
        check_normalization(self.pool, info, self.inputs["trajectories"])
        self.pool_size = len(self.pool["refs"])
        if int(hp["t_m"]) > self.pool_size:
            raise DdflowError(f"ead: t_m = {hp['t_m']} checkpoints per iteration, the pool holds {self.pool_size}")
        self.net = build_net(hp["net"], info.channels, info.classes, info.size).to(self.device)
        if has_batchnorm(self.net):
            raise DdflowError(f"ead: net {hp['net']!r} has BatchNorm; not supported")
        self.net.train()
        self.images = self.initial_images()
        with torch.no_grad():
            final = {n: v.to(self.device) for n, v in self.pool["final"].items()}
            logits = functional_call(self.net, final, (self.images,)) / float(hp.get("label_temperature", 1.0))
        self.label_logits = logits.detach().clone().requires_grad_(True)
        self.opt = torch.optim.Adam([{"params": [self.images], "lr": hp["lr_img"]},
                                     {"params": [self.label_logits], "lr": hp["lr_label"]}])
        n_real, n_syn = len(self.data.x_train), len(self.images)
        self.coef = literal_coefficient(n_real, n_syn) if self.literal else 1.0

    def step(self, it: int) -> dict[str, float]:
        hp, g = self.hp, self.generator
        n_syn, n_real = len(self.images), len(self.data.x_train)
        s_idx = torch.randperm(n_syn, generator=g)[:int(hp["batch_syn"] or n_syn)].to(self.device)
        picks = torch.randperm(self.pool_size, generator=g)[:int(hp["t_m"])].tolist()
        b = int(hp["batch_real"])
        # EAD Algorithm 1: D_p and D_t (disjoint) are drawn once per iteration and shared by its t_m checkpoints
        idx = to_device(torch.randperm(n_real, generator=g)[:2 * b], self.device)
        xr, yr = self.data.x_train[idx], self.data.y_train[idx]
        pair = (xr[:b], yr[:b], xr[b:], yr[b:])
        batches = [pair] * len(picks)
        params = [{n: to_device(v[t], self.device) for n, v in self.pool["params"].items()} for t in picks]
        probs = F.softmax(self.label_logits, -1)
        loss = ead_loss(self.net, params, batches, self.images[s_idx], probs[s_idx], self.coef)
        if not torch.isfinite(loss):
            raise DdflowError(f"ead: non-finite loss at iteration {it}; the resume file keeps the last good state")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def result(self) -> dict:
        return {"images": self.images.detach().cpu(), "labels": F.softmax(self.label_logits.detach(), -1).cpu(),
                "hard_labels": self.class_labels(), "coefficient": self.coef}


@register("ead-literal")
class EADLiteral(EAD):
    """EAD with the paper's literal (1 - alpha) coefficient on the real-data term."""
    paired_with = "ead"
    literal = True
