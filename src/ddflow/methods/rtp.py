"""RTP: remember the past, dataset distillation into addressable memories (Deng & Russakovsky, NeurIPS 2022;
official princetonvisualai/RememberThePast-DatasetDistillation, commit f49e631; the math in ddflow.ops.rtp).

The stored set is `n_basis` memories (bases of size/ds pixels) and, per class, `rows` addressing rows (coefficients
over the bases); the IPC of a cell is RTP's float budget (--fixed_budget 1), converted to rows per class by the
official formula (ops.rtp.rows_per_class). Every row decodes into one image (coeffs @ bases, bilinear x ds), labelled
by its class.

One iteration (runners/sgld_runner_standard.py lines 198-217; models/compressor_bptt_standard.py):
1. `task_classes` classes drawn at random and sorted (get_task_indices, lines 49-55; all when it is the class count);
   a real batch of `batch_real` images per drawn class (get_generalization, n_queries 64, line 78).
2. A fresh ConvNet (get_network: a new random init, utils/model_utils.py line 26) takes `inner_steps` momentum-SGD
   steps (lr_inner, momentum_inner: the bptt_optim section), each on `batch_syn` random addressing rows of every drawn
   class (sorted, a fresh draw per step: imgs_embedding_basis_minibatch.py lines 110-115), decoded.
3. The cross-entropy of the real batch at the final weights, backpropagated through the steps by the official
   reverse pass (ops.rtp.unroll_backward) to the bases and the coefficient table; the regulariser is added there as
   the official code adds it (it drops out: see ops.rtp).
4. The gradients' joint norm clipped at `clip` (clip_grad_norm_ max_norm 2, line 216), one SGD step (lr, momentum:
   compressor_optim) on bases and coefficients.
Labels are the classes (not learned) and no lr is learned: the official code learns neither.
`interventions` (default none, as the README's commands) augments as the official `--interventions` (tools/
intervention.py; ddflow.ops.rtp.interventions): one DSA transform per iteration, shared by the whole real batch and
every inner step's decoded batch, differentiated through; protocol rtp then augments every training batch.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..errors import DdflowError
from ..nets import build_net, has_batchnorm
from ..ops.rtp import (
    coeff_regulariser,
    decode,
    interventions,
    rows_per_class,
    stored_floats,
    unroll_backward,
    unroll_forward,
    xavier_uniform_,
)
from ..runtime import to_device
from .base import Method
from .registry import register


@register("rtp")
class RTP(Method):
    protocols = ("rtp",)
    state = ("basis", "coeffs", "opt")
    inits = ("xavier",)

    def init(self) -> None:
        hp, info = self.hp, self.data.info
        self.ds = float(hp["downsample"])
        if info.size % self.ds:
            raise DdflowError(f"rtp: downsample {hp['downsample']} does not divide {info.name}'s {info.size} px")
        self.n_basis = int(hp["n_basis"])
        self.interventions = str(hp.get("interventions", "none"))
        self.aug = interventions(self.interventions)
        self.rows = rows_per_class(float(self.ipc), info.size, info.channels, self.classes, self.n_basis, self.ds)
        side = int(info.size / self.ds)
        # nn.Embedding tables, xavier_uniform (imgs_embedding_basis_minibatch.py lines 34-35, 42-43)
        self.basis = torch.empty(self.n_basis, info.channels * side * side)
        self.coeffs = torch.empty(self.rows * self.classes, self.n_basis)
        xavier_uniform_(self.coeffs, self.generator), xavier_uniform_(self.basis, self.generator)
        self.basis = self.basis.to(self.device).requires_grad_(True)
        self.coeffs = self.coeffs.to(self.device).requires_grad_(True)
        self.opt = torch.optim.SGD([self.basis, self.coeffs], lr=float(hp["lr"]), momentum=float(hp["momentum"]))
        net = self._fresh_net()
        if has_batchnorm(net):
            raise DdflowError(f"rtp: net {hp['net']!r} has BatchNorm; the functional unroll does not track it")

    def _fresh_net(self) -> torch.nn.Module:
        info = self.data.info
        return build_net(self.hp["net"], info.channels, self.classes, info.size, self.generator, self.device).train()

    def _task_classes(self) -> list[int]:
        k = min(int(self.hp["task_classes"]), self.classes)
        return sorted(torch.randperm(self.classes, generator=self.generator)[:k].tolist())

    def _batches(self, classes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n = int(self.hp["batch_syn"])
        out = []
        for _ in range(int(self.hp["inner_steps"])):
            rows = [torch.randperm(self.rows, generator=self.generator)[:n].sort().values + self.rows * c
                    for c in classes]
            labels = torch.cat([torch.full((len(r),), c, dtype=torch.long) for r, c in zip(rows, classes)])
            out.append((to_device(torch.cat(rows), self.device), to_device(labels, self.device)))
        return out

    def _real_batch(self, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        per_class = self.data.indices_per_class()
        n = int(self.hp["batch_real"])
        idx = torch.cat([per_class[c][torch.randperm(len(per_class[c]), generator=self.generator)[:n]]
                         for c in classes])
        idx = to_device(idx, self.data.x_train.device)
        return self.data.x_train[idx].to(self.device), self.data.y_train[idx].to(self.device)

    def meta_gradient(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-3: the outer loss and its gradients for the bases and the coefficient table."""
        hp, channels = self.hp, self.data.info.channels
        classes = self._task_classes()
        x_real, y_real = self._real_batch(classes)
        net = self._fresh_net()
        batches = self._batches(classes)
        aug = None
        if self.aug is not None:
            # the interventions: one transform for every inner batch and the real batch of this iteration (pair_aug in
            # its train phase: one seed per iteration, sgld_runner_standard.py line 207; one draw for the whole batch)
            aug = partial(self.aug.apply, draw=self.aug.siamese(self.generator))
            x_real = aug(x_real)
        lr, m = float(hp["lr_inner"]), float(hp["momentum_inner"])
        keep = torch.device("cpu") if hp.get("offload", True) else None
        w, stored = unroll_forward(net, list(net.parameters()), self.basis, self.coeffs, batches, channels,
                                   self.ds, lr, m, keep_on=keep, aug=aug)
        names = [n for n, _ in net.named_parameters()]
        ws = [p.requires_grad_(True) for p in w]
        loss = F.cross_entropy(functional_call(net, dict(zip(names, ws)), (x_real,)), y_real)
        dl_dw = torch.autograd.grad(loss, ws)
        kind, alpha = hp["coeff_reg"], float(hp["coeff_reg_alpha"])
        g_basis, g_coeffs, _ = unroll_backward(net, stored, list(dl_dw), self.basis, self.coeffs, batches, channels,
                                               self.ds, lr, m, reg=lambda c: coeff_regulariser(c, kind, alpha), aug=aug)
        return loss.detach(), g_basis, g_coeffs

    def step(self, it: int) -> dict[str, float]:
        loss, g_basis, g_coeffs = self.meta_gradient()
        if not torch.isfinite(loss):
            raise DdflowError(f"rtp: the outer loss is {float(loss)} at iteration {it} (diverged); lower lr")
        self.opt.zero_grad()
        self.basis.grad, self.coeffs.grad = g_basis, g_coeffs
        norm = torch.nn.utils.clip_grad_norm_([self.basis, self.coeffs], max_norm=float(self.hp["clip"]))
        self.opt.step()
        return {"loss": loss, "grad_norm": norm.detach()}

    def images(self) -> torch.Tensor:
        with torch.no_grad():
            return decode(self.basis, self.coeffs, self.data.info.channels, self.ds)

    def result(self) -> dict[str, Any]:
        info = self.data.info
        floats = stored_floats(self.n_basis, self.rows, self.classes, info.channels, info.size, self.ds)
        return {"images": self.images().cpu(), "labels": torch.arange(self.classes).repeat_interleave(self.rows),
                "rtp_basis": self.basis.detach().cpu().clone(), "rtp_coeffs": self.coeffs.detach().cpu().clone(),
                "rtp": {"budget": self.ipc, "rows_per_class": self.rows, "images": self.rows * self.classes,
                        "n_basis": self.n_basis, "downsample": self.ds, "stored_floats": floats,
                        "interventions": self.interventions,
                        "budget_floats": self.ipc * info.size * info.size * info.channels * self.classes}}
