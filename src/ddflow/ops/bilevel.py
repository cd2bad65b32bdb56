"""Blocks of the bilevel family (DD, LD): functional SGD steps through a network, DD's unrolled meta-loss and its
replay, LD's second-order label meta-gradient, LD's model-reset rule and its step-count choice.

All networks are called functionally (torch.func.functional_call on a dict of parameters), so a step's result keeps
its graph to whatever the step read (images, labels, learning rates) when asked to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .losses import soft_ce

Params = dict[str, torch.Tensor]
Steps = Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def epoch_batch(perm: torch.Tensor, it: int, per_epoch: int, batch: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(the permutation, the indices of the it-th batch) of a training split shuffled every epoch, as DD's and LD's
    data loaders (shuffle=True, the last batch of an epoch short): a new permutation of the same length is drawn at
    the first batch of every epoch after the first."""
    pos = it % per_epoch
    if pos == 0 and it > 0:
        perm = torch.randperm(len(perm), generator=generator)
    return perm, perm[pos * batch:(pos + 1) * batch]


def params_of(net: nn.Module) -> Params:
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def sgd_step(net: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor | float,
             create_graph: bool) -> Params:
    """w - lr * grad_w CE(f(x; w), y) (hard labels (B,) or soft labels (B, C): LD's soft cross-entropy). With
    create_graph the new weights keep their graph to w, x, y and lr (second-order); without it they are detached."""
    names = list(params)
    logits = functional_call(net, params, (x,))
    loss = soft_ce(logits, y) if y.dim() == 2 else F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
    if create_graph:
        return {n: params[n] - lr * g for n, g in zip(names, grads)}
    with torch.no_grad():
        return {n: (params[n] - lr * g).requires_grad_(True) for n, g in zip(names, grads)}


def dd_unrolled_loss(net: nn.Module, params: Params, steps: Steps, x_real: torch.Tensor,
                     y_real: torch.Tensor) -> torch.Tensor:
    """DD's meta-loss (ssnl/dataset-distillation train_distilled_image.py Trainer.forward, lines 82-107): from the
    initial weights w_0 take every step t, w_{t+1} = w_t - lr_t grad CE(f(x_t; w_t), y_t), keeping the graph, and
    return CE(f(x_real; w_T), y_real). Its autograd gradient to the images and the step lrs is the exact
    back-propagation through the steps that the official hand-written reverse pass (lines 109-167) computes."""
    w = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    for x, y, lr in steps:
        w = sgd_step(net, w, x, y, lr, create_graph=True)
    return F.cross_entropy(functional_call(net, w, (x_real,)), y_real)


@torch.no_grad()
def dd_replay(net: nn.Module, params: Params, steps: Steps) -> Params:
    """DD's evaluation (basics.py train_steps_inplace, lines 57-83): apply the stored steps in order to fresh weights,
    each w <- w - lr * grad CE(f(x; w), y), nothing learned."""
    w = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    for x, y, lr in steps:
        with torch.enable_grad():
            w = sgd_step(net, w, x.detach(), y, lr.detach(), create_graph=False)
    return w


def ld_label_meta_loss(net: nn.Module, params: Params, x_base: torch.Tensor, labels: torch.Tensor,
                       x_target: torch.Tensor, y_target: torch.Tensor, inner_lr: float
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LD's second-order step (ondrejbohdal/label-distillation label_distillation_or2.py train, lines 565-591): the
    inner soft cross-entropy of the base minibatch under the current weights, one SGD step with fast weights
    w' = w - inner_lr * grad (graph kept), and the outer CE of the target batch under w'. Returns (outer loss, inner
    loss, outer logits); the caller back-propagates the outer loss to the labels and the inner loss to the model."""
    names = list(params)
    inner = soft_ce(functional_call(net, params, (x_base,)), labels)
    grads = torch.autograd.grad(inner, [params[n] for n in names], create_graph=True)
    fast = {n: params[n] - inner_lr * g for n, g in zip(names, grads)}
    logits = functional_call(net, fast, (x_target,))
    return F.cross_entropy(logits, y_target), inner, logits


def stats_gap(dataset_classes: int, base_examples: int) -> int:
    """LD's window of the reset rule (label_distillation_or2.py lines 549-554): 100 steps for CIFAR-100 and K49
    (100 or more classes here), 200 with more than 100 base examples, else 50."""
    if dataset_classes >= 100:
        return 100
    return 200 if base_examples > 100 else 50


@dataclass
class ResetRule:
    """LD's model-reset rule (label_distillation_or2.py lines 614-660), fed the training error (%) of every step: a
    moving average over the last `gap` errors; once it has not reached a new low for `gap` further steps, the
    model is reset and the step count of its lowest moving average (steps - steps since the low - 1) is recorded."""
    gap: int
    window: list[float] = field(default_factory=list)
    total: float = 0.0
    lowest: float = 999999999.0
    steps: int = 0
    since_low: int = 0
    reset_steps: list[int] = field(default_factory=list)

    def update(self, err: float) -> bool:
        """Add one step's error; True when the model must be reset now."""
        self.steps += 1
        if len(self.window) < self.gap:
            self.window.append(err)
            self.total += err
            if self.steps == self.gap:
                self.lowest, self.since_low = self.total, 0
            return False
        self.total = self.total - self.window[0] + err
        self.window = self.window[1:] + [err]
        if self.total < self.lowest:
            self.lowest, self.since_low = self.total, 0
        elif self.since_low < self.gap:
            self.since_low += 1
        else:
            self.reset_steps.append(self.steps - self.since_low - 1)
            self.window, self.total, self.lowest, self.steps, self.since_low = [], 0.0, 999999999.0, 0, 0
            return True
        return False

    def num_steps(self) -> int:
        """The step count a validation run uses (lines 390-394): the mean of the last three reset counts (int), or
        the current model's step count before the first reset."""
        if not self.reset_steps:
            return self.steps
        last = self.reset_steps[-3:]
        return int(sum(last) / len(last))

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("gap", "window", "total", "lowest", "steps", "since_low", "reset_steps")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, list(v) if isinstance(v, list) else v)


def baseline_checkpoints(base_examples: int) -> tuple[int, set[int]]:
    """LD's step search for sets without a learned step count (find_best_num_steps, label_distillation_or2.py lines
    819-861): at most 1701 steps with more than 100 base examples, else 1000; validated after the (0-based) steps
    {9, 24, 74, 100, 200, 300, 500, 700, 1000, 1200, 1500, 1700} or, with 100 or fewer, {9, 24, 74} and every 50th."""
    if base_examples > 100:
        return 1701, {9, 24, 74, 100, 200, 300, 500, 700, 1000, 1200, 1500, 1700}
    return 1000, {9, 24, 74} | {i for i in range(1000) if i % 50 == 49}


@torch.no_grad()
def accuracy(net: torch.nn.Module, params: dict | None, x, y: torch.Tensor, device: torch.device,
             chunk: int = 1024) -> float:
    """Test accuracy (percent) of one network (its own weights, or `params` functionally) on (x, y)."""
    correct = 0
    for start in range(0, len(y), chunk):
        xb = x[start:start + chunk].to(device)
        logits = net(xb) if params is None else functional_call(net, params, (xb,))
        correct += int((logits.argmax(1) == y[start:start + chunk].to(device)).sum())
    return 100.0 * correct / max(1, len(y))


def base_steps(x: torch.Tensor, labels: torch.Tensor, steps: int, batch: int, generator: torch.Generator,
               step, on_step=None) -> None:
    """LD's loop over the base examples (test / validate / find_best_num_steps of both variants): `steps` calls of
    step(x_batch, labels_batch), each batch the first `batch` of a new random permutation of the base examples.
    `on_step(i)` is called after step i (0-based)."""
    for i in range(steps):
        idx = torch.randperm(len(x), generator=generator)[:batch].to(x.device)
        step(x[idx], labels[idx])
        if on_step is not None:
            on_step(i)


def train_on_base(net: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, steps: int, batch: int,
                  generator: torch.Generator, lr: float, on_step=None) -> None:
    """LD's training of a fresh model on the base examples (or2): Adam steps of soft cross-entropy on the labels over
    base_steps' batches."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        loss = soft_ce(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    base_steps(x, labels, steps, batch, generator, step, on_step)
