"""Gradient matching pieces shared by DC, DSA, IDC and DREAM: the official per-layer distance and per-class
gradients of a network computed for all classes at once (VICO-UoE/DatasetCondensation utils.py `distance_wb` /
`match_loss`), and IDC's distance over conv weights only (snu-mllab/Efficient-Dataset-Condensation condense.py).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..errors import DdflowError

METRICS = ("ours", "mse", "cos")
IDC_METRICS = ("mse", "l1")


def distance_wb(g_syn: torch.Tensor, g_real: torch.Tensor) -> torch.Tensor:
    """DC's layer distance: rows = output units (a conv weight (out, in, h, w) becomes (out, in*h*w)); the sum
    over rows of 1 - cos(row_syn, row_real), with 1e-6 added to the norm product. 1-D tensors (biases, norm
    weights) contribute 0, as in the official code."""
    if g_syn.dim() == 1:
        return g_syn.new_zeros(())
    a = g_syn.reshape(g_syn.shape[0], -1)
    b = g_real.reshape(g_real.shape[0], -1)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)
    return (1 - cos).sum()


def match_distance(g_syn: list[torch.Tensor], g_real: list[torch.Tensor], metric: str = "ours") -> torch.Tensor:
    """Distance between two lists of parameter gradients. 'ours' = sum of distance_wb over tensors;
    'mse' = sum of squared differences of the concatenation; 'cos' = 1 - cosine of the concatenations."""
    if metric == "ours":
        return sum(distance_wb(s, r) for s, r in zip(g_syn, g_real))
    s = torch.cat([t.reshape(-1) for t in g_syn])
    r = torch.cat([t.reshape(-1) for t in g_real])
    if metric == "mse":
        return ((s - r) ** 2).sum()
    if metric == "cos":
        return 1 - (s * r).sum() / (s.norm() * r.norm() + 1e-6)
    raise DdflowError(f"unknown match distance {metric!r}; allowed: {', '.join(METRICS)}")


def loops_for(ipc: int, schedule: dict) -> tuple[int, int]:
    """(outer_loop, inner_loop) for an IPC from the hparams' schedule (official utils.py get_loops)."""
    key = ipc if ipc in schedule else str(ipc)
    if key not in schedule:
        raise DdflowError(f"no (outer, inner) loop schedule for IPC {ipc}; the official get_loops defines IPC "
                          f"{', '.join(map(str, sorted(int(k) for k in schedule)))}: add one to the method's hparams "
                          f"'loops'")
    outer, inner = schedule[key]
    return int(outer), int(inner)


def per_class_grads(net: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    x: torch.Tensor, y: torch.Tensor, loss_fn: Callable = F.cross_entropy,
                    batching: str = "auto") -> dict[str, torch.Tensor]:
    """Gradient of the mean loss of each class batch w.r.t. the network parameters:
    x (C, B, ...), y (C, B) -> {name: (C, *param.shape)}. Differentiable w.r.t. x (create_graph semantics), which
    is what matching needs for the synthetic images. batching 'vmap' computes all classes in one batched call
    (the CUDA default: one launch sequence instead of C); 'loop' goes class by class like the official code
    (the CPU default: vmap's per-class weight gradients become grouped convolutions, slower on a CPU)."""
    if _batching(batching, x) == "vmap":
        return vmap(grad(_loss_of(net, buffers, loss_fn)), in_dims=(None, 0, 0))(params, x, y)
    per_class = class_grads(net, params, buffers, x, y, loss_fn, "loop")
    return {n: torch.stack([g[i] for g in per_class]) for i, n in enumerate(params)}


def class_grads(net: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                x: torch.Tensor, y: torch.Tensor, loss_fn: Callable = F.cross_entropy,
                batching: str = "auto") -> list[list[torch.Tensor]]:
    """per_class_grads as one list per class of the parameter gradients (in `params` order). The 'loop' way (the
    CPU's) builds these lists directly, as the official code does: stacking the classes and indexing them back
    costs a full-size gradient buffer per class and tensor in the backward pass of the synthetic images. Where the
    parameters are constants it calls torch.autograd.grad, as the official code (cheaper on the CPU than
    torch.func.grad; the same gradient up to summation order)."""
    batching = _batching(batching, x)
    if batching == "vmap":
        g = per_class_grads(net, params, buffers, x, y, loss_fn, "vmap")
        return [[g[n][c] for n in params] for c in range(len(x))]
    loss = _loss_of(net, buffers, loss_fn)
    if any(p.requires_grad for p in params.values()):  # gradients that stay differentiable w.r.t. the parameters
        return [list(grad(loss)(params, x[c], y[c]).values()) for c in range(len(x))]
    leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
    create_graph = x.requires_grad and torch.is_grad_enabled()
    out = []
    with torch.enable_grad():
        for c in range(len(x)):
            g = torch.autograd.grad(loss(leaves, x[c], y[c]), list(leaves.values()), create_graph=create_graph)
            out.append(list(g) if create_graph else [t.detach() for t in g])
    return out


def _loss_of(net: nn.Module, buffers: dict[str, torch.Tensor], loss_fn: Callable) -> Callable:
    def loss(p, xb, yb):
        return loss_fn(functional_call(net, (p, buffers), (xb,)), yb)
    return loss


def _batching(batching: str, x: torch.Tensor) -> str:
    if batching == "auto":
        return "vmap" if x.is_cuda else "loop"
    if batching not in ("vmap", "loop"):
        raise ValueError(f"batching {batching!r} not in ('auto', 'vmap', 'loop')")
    return batching


def conv_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    """The parameters IDC matches with bias=False, fc=False: the 4-D (conv) weights."""
    return [p for p in net.parameters() if p.dim() == 4]


def conv_grad_distance(g_syn: list[torch.Tensor], g_real: list[torch.Tensor], metric: str) -> torch.Tensor:
    """Sum over the tensors of 'mse' = sum (a - b)^2 or 'l1' = sum |a - b| (official condense.py dist)."""
    if metric not in IDC_METRICS:
        raise DdflowError(f"unknown IDC matching metric {metric!r}; allowed: {', '.join(IDC_METRICS)}")
    if metric == "mse":
        return sum(((s - r) ** 2).sum() for s, r in zip(g_syn, g_real))
    return sum((s - r).abs().sum() for s, r in zip(g_syn, g_real))
