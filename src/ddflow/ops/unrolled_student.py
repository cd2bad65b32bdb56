"""Trajectory matching's shared blocks (MTT, TESLA, MTT + ISA): the student's SGD steps on synthetic mini-batches,
the normalised parameter distance, TESLA's constant-memory meta-gradient and ISA's module on a student step.

A student step is theta_{i+1} = theta_i - syn_lr * grad_theta step_loss(theta_i; x_i, y_i) with x_i the i-th
synthetic mini-batch (augmented), and the matching loss is L = ||theta_N - theta*||^2 / ||theta_0 - theta*||^2.
`student_unroll` keeps the whole unrolled graph (MTT: memory grows with syn_steps x batch activations);
`constant_memory_grads` computes the gradient of the same L by a forward pass that keeps only the student parameters
of every step, then a backward sweep that rebuilds one step's graph at a time (TESLA, Cui et al. ICML 2023).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..errors import DdflowError
from .krr import nearest_other, select_by_error
from .losses import soft_ce

Params = dict[str, torch.Tensor]
#: step_loss(net, params, x, y) -> scalar: the loss a student step descends (MTT: cross-entropy)
StepLoss = Callable[[torch.nn.Module, Params, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_step(net: torch.nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MTT's student loss: mean cross-entropy; `y` hard (N,) labels or (N, C) probabilities (TESLA's soft labels:
    nn.CrossEntropyLoss with probability targets, tesla distill.py line 394)."""
    return F.cross_entropy(functional_call(net, params, (x,)), y)


def student_unroll(net: torch.nn.Module, start: Params, images: torch.Tensor | Callable, labels: torch.Tensor,
                   syn_lr: torch.Tensor, batches: list[torch.Tensor], augment=None,
                   step_loss: StepLoss = cross_entropy_step) -> Params:
    """len(batches) differentiable SGD steps of `net` from parameters `start` on images[batch] (augmented by
    `augment(x)` when given); returns the final parameters, connected to images and syn_lr. `images` may also be a
    function from a batch of indices to its images (HaBa generates them from bases and hallucinators)."""
    params = dict(start)
    for idx in batches:
        x = images(idx) if callable(images) else images[idx]
        if augment is not None:
            x = augment(x)
        loss = step_loss(net, params, x, labels[idx])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {n: p - syn_lr * g for (n, p), g in zip(params.items(), grads)}
    return params


def trajectory_loss(final: Params, start: Params, target: Params) -> torch.Tensor:
    """sum (theta_N - theta*)^2 / sum (theta_0 - theta*)^2 over all parameters (the official code divides both
    sums by the number of parameters, which cancels)."""
    num = sum(((final[n] - target[n]) ** 2).sum() for n in target)
    den = sum(((start[n] - target[n]) ** 2).sum() for n in target)
    return num / den


def constant_memory_grads(net: torch.nn.Module, start: Params, target: Params, images: torch.Tensor,
                          labels: torch.Tensor, syn_lr: torch.Tensor, batches: list[torch.Tensor],
                          augment: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
                          step_loss: StepLoss = cross_entropy_step,
                          exact: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L, dL/dimages, dL/dsyn_lr) of the trajectory loss of len(batches) student steps, with the memory of one
    step's graph whatever the number of steps.

    Forward: the steps without a graph, keeping theta_0..theta_{N-1} (parameters, not activations). With
    lam = dL/dtheta_N = 2 (theta_N - theta*) / ||theta_0 - theta*||^2, the sweep i = N-1..0 rebuilds step i's graph
    (same batch, same augmentation: `augment(x, i)` must return the i-th step's augmentation again) and uses
        dL/dx_i      = -syn_lr * d<lam_{i+1}, g_i>/dx_i
        dL/dsyn_lr  += -<lam_{i+1}, g_i>
        lam_i        = lam_{i+1} - syn_lr * H_i lam_{i+1}     (the Hessian-vector product of step i)
    exact=True is the gradient of the unrolled graph (`student_unroll`, MTT) to float rounding. exact=False is
    the first-order surrogate of TESLA's formula (justincui03/tesla distill.py lines 404-429): lam_i = lam_N for
    every step (no Hessian-vector products), i.e. the image gradient of step i ignores how x_i moves the later
    student parameters, and the lr gradient is that of ||theta_0 - syn_lr * sum_i g_i - theta*||^2 with the g_i
    held fixed. Its image gradient carries the factor 2 of line 418, which the official code loses (methods/tesla.py
    halves it for `meta_gradient: official`)."""
    lr = syn_lr.detach()
    names = list(start)
    theta = {n: v.detach() for n, v in start.items()}
    thetas = []
    for i, idx in enumerate(batches):
        thetas.append(theta)
        leaf = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
        x = images.detach()[idx]
        if augment is not None:
            x = augment(x, i)
        g = torch.autograd.grad(step_loss(net, leaf, x, labels[idx]), [leaf[n] for n in names])
        theta = {n: theta[n] - lr * gn for n, gn in zip(names, g)}
    den = sum(((start[n] - target[n]) ** 2).sum() for n in names).detach()
    loss = sum(((theta[n] - target[n]) ** 2).sum() for n in names) / den
    lam = {n: 2 * (theta[n] - target[n]) / den for n in names}
    image_grad = torch.zeros_like(images)
    lr_grad = torch.zeros((), dtype=lr.dtype, device=lr.device)
    for i in range(len(batches) - 1, -1, -1):
        idx = batches[i]
        leaf = {n: v.clone().requires_grad_(True) for n, v in thetas[i].items()}
        x_leaf = images.detach()[idx].requires_grad_(True)
        x = augment(x_leaf, i) if augment is not None else x_leaf
        g = torch.autograd.grad(step_loss(net, leaf, x, labels[idx]), [leaf[n] for n in names], create_graph=True)
        dot = sum((gn * lam[n]).sum() for n, gn in zip(names, g))
        wrt = [x_leaf] + ([leaf[n] for n in names] if exact else [])
        out = torch.autograd.grad(dot, wrt)
        image_grad.index_add_(0, idx, -lr * out[0])
        lr_grad = lr_grad - dot.detach()
        if exact:
            lam = {n: lam[n] - lr * h for n, h in zip(names, out[1:])}
    return loss.detach(), image_grad, lr_grad


#: mtt-isa's segments: `away` = the direction of ISA's public code for the features, the label held (an
#: extrapolated label leaves the simplex); `toward` = ISA's interpolation between two feature vectors, labels alike
ISA_SEGMENTS = ("away", "toward")


def isa_cross_entropy(feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, y: torch.Tensor,
                      keep: float, eps: float, points: int, segment: str = "away") -> torch.Tensor:
    """ISA's module on a cross-entropy step (ddflow's MTT + ISA; ISA's KRR form is ops.krr.isa_loss): keep the
    `keep` fraction of the batch with the largest per-sample cross-entropy (ISA's topk, hardest first), pair each
    kept sample i with its most cosine-similar other kept sample j in the features `feats` (the inputs of the linear
    classifier `weight`, `bias`), and average the cross-entropy over l uniform on [0, eps] along
        toward: phi_i + l (phi_j - phi_i) with target (1 - l) y_i + l y_j   (eps <= 1: a convex combination)
        away:   phi_i + l (phi_i - phi_j) with target y_i
    by Gauss-Legendre quadrature with `points` nodes (the integrand has no closed form for cross-entropy; ISA's
    A^2 + eps AB + eps^2 B^2 / 3 is this mean for a squared loss). Every target is a probability vector, so every
    term is a cross-entropy against a distribution, >= 0: the loss is bounded below. (ISA's code moves the label
    with the features away from j, y_i + l (y_i - y_j); for a pair of different classes that target has a negative
    entry, harmless for ISA's squared loss but unbounded below for cross-entropy.) The linear head makes
    interpolated features and interpolated logits the same thing. y: (B,) labels or (B, C) probabilities."""
    if segment not in ISA_SEGMENTS:
        raise DdflowError(f"ISA segment {segment!r} not in {ISA_SEGMENTS}")
    if segment == "toward" and not 0 <= eps <= 1:
        raise DdflowError(f"ISA segment 'toward' needs 0 <= eps <= 1 (beyond, the target leaves the simplex); "
                          f"got {eps}")
    logits = F.linear(feats, weight, bias)
    y = F.one_hot(y, logits.shape[-1]).to(logits.dtype) if y.dim() == 1 else y
    if keep < 1:
        per_sample = -(y * F.log_softmax(logits, -1)).sum(-1)
        kept = select_by_error(per_sample.detach(), keep)
        feats, logits, y = feats[kept], logits[kept], y[kept]
    if eps == 0:
        return soft_ce(logits, y)
    j = nearest_other(feats.detach())
    if segment == "toward":
        dz, dy = logits[j] - logits, y[j] - y
    else:
        dz, dy = logits - logits[j], torch.zeros_like(y)
    nodes, weights = _legendre(points, logits.dtype, logits.device)
    lam = eps * (nodes + 1) / 2                      # nodes on [0, eps]; weights / 2 = the mean over the segment
    return sum(w / 2 * soft_ce(logits + t * dz, y + t * dy) for t, w in zip(lam, weights))


def _legendre(points: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    nodes, weights = np.polynomial.legendre.leggauss(int(points))
    return torch.tensor(nodes, dtype=dtype, device=device), torch.tensor(weights, dtype=dtype, device=device)
