"""RTP's addressable memories and its backpropagation through momentum SGD (Deng & Russakovsky, NeurIPS 2022;
official princetonvisualai/RememberThePast-DatasetDistillation, read at commit f49e631).

Memories: `basis` (n_basis, C * h * w) with h = w = size / ds, and addressing coefficients (rows, n_basis); an image
is coeffs @ basis reshaped to (C, h, w), bilinearly upsampled by ds (align_corners False) when ds > 1
(compressors/imgs_embedding_basis_minibatch.py lines 34-35, 67-70, 130-131; models/compressor_bptt_standard.py
lines 206-215).

Budget: RTP's "IPC" under --fixed_budget is a number of floats per class in images' worth; the rows per class are
floor((budget H W C K - n_basis H W C / ds^2) / (K n_basis)) (utils/Img_per_Cls_budget.py line 5, floored and
required >= 1 in utils/merge_args.py lines 24-35).

Unroll: a fresh network takes `steps` momentum-SGD steps (torch.optim.SGD, no dampening: v <- m v + g,
w <- w - lr v) on minibatches of decoded images; the weights before every step are kept (the official code
deep-copies the network to the CPU, lines 197-225), and the reverse pass (bptt_efficient_backward, lines 236-338)
walks the steps backwards with one Hessian-vector product per step:
    dL/dv += -lr dL/dw;  [dL/dmemories, dL/dw] += d(g(w_t, x_t) . dL/dv) / d[memories, w_t];  dL/dv *= m
so the memory is the stored weights (steps x parameters) plus one step's graph, not the whole unrolled graph.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..augment import DSA
from ..errors import DdflowError


def rows_per_class(budget: float, size: int, channels: int, classes: int, n_basis: int, ds: float) -> int:
    """Addressing rows (decoded images) per class for a float budget of `budget` images per class
    (utils/Img_per_Cls_budget.py line 5, floored in utils/merge_args.py line 34)."""
    free = budget * size * size * channels * classes - n_basis * size * size * channels / (ds * ds)
    rows = math.floor(free / (classes * n_basis))
    if rows < 1:  # the official code asserts ipc >= 1 (merge_args.py line 35)
        raise DdflowError(f"rtp: a budget of {budget} images per class with {n_basis} bases (downsample {ds}) leaves "
                          f"{free / (classes * n_basis):.2f} addressing rows per class; at least 1 is needed (lower "
                          f"n_basis or raise the budget)")
    return rows


def stored_floats(n_basis: int, rows: int, classes: int, channels: int, size: int, ds: float) -> int:
    """The floats actually stored: the bases plus every class's addressing rows (the official `total_alloc`,
    utils/Img_per_Cls_budget.py line 6)."""
    side = int(size / ds)
    return n_basis * channels * side * side + rows * classes * n_basis


def xavier_uniform_(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """torch.nn.init.xavier_uniform_ on a 2-D tensor (fan_in = size(1), fan_out = size(0)), from `generator`."""
    bound = math.sqrt(6.0 / (t.shape[0] + t.shape[1]))
    with torch.no_grad():
        return t.uniform_(-bound, bound, generator=generator)


def decode(basis: torch.Tensor, coeffs: torch.Tensor, channels: int, ds: float) -> torch.Tensor:
    """Images from memories: (coeffs @ basis) as (N, C, h, w), bilinearly upsampled by ds when ds > 1."""
    side = int(round(math.sqrt(basis.shape[1] / channels)))
    imgs = (coeffs @ basis).view(len(coeffs), channels, side, side)
    if ds > 1:
        imgs = F.interpolate(imgs, scale_factor=ds, mode="bilinear", align_corners=False)
    return imgs


def coeff_regulariser(coeffs: torch.Tensor, kind: str, alpha: float) -> torch.Tensor:
    """The official coefficient regulariser (compressor_bptt_standard.py lines 283-290): alpha * ||c||_1 or
    alpha * ||c||_2 (the Frobenius norm of the minibatch's coefficients, not squared)."""
    if kind == "l1":
        return alpha * coeffs.abs().sum()
    if kind == "l2":
        return alpha * torch.linalg.vector_norm(coeffs)
    raise DdflowError(f"rtp: coeff_reg {kind!r} unknown; allowed: l1, l2 (the official code raises on others)")


Batch = tuple[torch.Tensor, torch.Tensor]   # (coefficient row indices, labels)


def unroll_forward(net: nn.Module, params: list[torch.Tensor], basis: torch.Tensor, coeffs: torch.Tensor,
                   batches: list[Batch], channels: int, ds: float, lr: float, momentum: float,
                   keep_on: torch.device | None = None, aug: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Momentum SGD on the decoded minibatches (no graph kept): the final weights and the weights before every step
    (stored on `keep_on`, the official code's CPU copies; default: where they are). `aug`, when given, transforms
    every decoded minibatch (the official train intervention, lines 216-217)."""
    names = [n for n, _ in net.named_parameters()]
    w = [p.detach().clone() for p in params]
    v = [torch.zeros_like(p) for p in w]
    with torch.no_grad():
        b = basis.detach()
        c = coeffs.detach()
    stored = []
    for rows, labels in batches:
        stored.append([p.detach().to(keep_on, copy=True) if keep_on is not None else p.detach().clone() for p in w])
        x = decode(b, c[rows], channels, ds)
        x = aug(x) if aug is not None else x
        ws = [p.requires_grad_(True) for p in w]
        loss = F.cross_entropy(functional_call(net, dict(zip(names, ws)), (x,)), labels)
        g = torch.autograd.grad(loss, ws)
        with torch.no_grad():
            v = [momentum * vi + gi for vi, gi in zip(v, g)]
            w = [wi.detach() - lr * vi for wi, vi in zip(w, v)]
    return w, stored


def unroll_backward(net: nn.Module, stored: list[list[torch.Tensor]], dl_dw: list[torch.Tensor],
                    basis: torch.Tensor, coeffs: torch.Tensor, batches: list[Batch], channels: int, ds: float,
                    lr: float, momentum: float, reg: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    aug: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The official reverse pass (bptt_efficient_backward): gradients of the outer loss for the bases, the full
    coefficient table (rows never sampled get 0) and the initial weights. `reg(coeffs_of_batch)` is added to each
    step's inner loss as the official code adds its regulariser (line 283-290); it does not depend on the weights,
    so it drops out of g = dloss/dw and contributes nothing (as in the official code). `aug` as in unroll_forward, the
    same transform (lines 277-279)."""
    names = [n for n, _ in net.named_parameters()]
    device = basis.device
    dl_dw = [d.detach().clone() for d in dl_dw]
    dl_dv = [torch.zeros_like(d) for d in dl_dw]
    g_basis = torch.zeros_like(basis)
    g_coeffs = torch.zeros_like(coeffs)
    for (rows, labels), w in zip(reversed(batches), reversed(stored)):
        dl_dv = [dv - lr * dw for dv, dw in zip(dl_dv, dl_dw)]
        b = basis.detach().clone().requires_grad_(True)
        c = coeffs.detach()[rows].clone().requires_grad_(True)
        ws = [p.to(device).detach().requires_grad_(True) for p in w]
        x = decode(b, c, channels, ds)
        x = aug(x) if aug is not None else x
        loss = F.cross_entropy(functional_call(net, dict(zip(names, ws)), (x,)), labels)
        if reg is not None:
            loss = loss + reg(c)
        g = torch.autograd.grad(loss, ws, create_graph=True)
        hv = torch.autograd.grad(g, [b, c, *ws], grad_outputs=dl_dv, allow_unused=True)
        with torch.no_grad():
            if hv[0] is not None:
                g_basis += hv[0]
            if hv[1] is not None:
                g_coeffs[rows] += hv[1]
            for d, h in zip(dl_dw, hv[2:]):
                if h is not None:
                    d.add_(h)
        dl_dv = [dv * momentum for dv in dl_dv]
    return g_basis, g_coeffs, dl_dw


# RTP's interventions (tools/intervention.py ImageIntervention, used as 'pair_aug' in both phases: utils/merge_args.py
# lines 42-50; prob 1.0: runners/sgld_runner_standard.py lines 24-43) are DSA's transforms with DSA's ranges (lines
# 21-29: flip 0.5, scale 1.2, rotate 15 degrees, crop 0.125, cutout 0.5), one transform drawn per call (lines 64-77).
# `color` is left out: RTP applies one of brightness / saturation / contrast (lines 68-70) where DSA applies all three;
# `mixup` is left out: the official function takes labels it is never given (lines 110-125) and cannot run.
INTERVENTIONS = ("flip", "rotate", "scale", "crop", "cutout")


def interventions(strategy: str) -> DSA | None:
    """The augmenter of an RTP `interventions` setting ('none', or transforms joined by '_', e.g. the README's
    'flip_rotate'), or None for 'none'."""
    strategy = str(strategy)
    if strategy == "none":
        return None
    keys = strategy.split("_")
    bad = [k for k in keys if k not in INTERVENTIONS]
    if bad or not strategy:
        raise DdflowError(f"rtp: interventions {strategy!r}: unknown {', '.join(bad) or 'empty'}; allowed: none, or "
                          f"'_'-joined {', '.join(INTERVENTIONS)} (workflow/hparams/methods/rtp.yaml)")
    return DSA(strategy)
