"""MTT: dataset distillation by matching training trajectories (Cazenavette et al., CVPR 2022; official
GeorgeCazenavette/mtt-distillation distill.py).

Each iteration takes the next expert (a fixed random order, cycled) and a start epoch drawn from
randint(0, max_start_epoch); theta_0 = expert[start], theta* = expert[start + expert_epochs]. A student starting
at theta_0 takes syn_steps SGD steps, theta <- theta - syn_lr * grad CE(student(DSA(x_batch)), y_batch), on
synthetic mini-batches of batch_syn images (a random permutation split into chunks, a fresh one when used up; DSA
drawn per step, one family per batch, parameters per image), keeping the graph. The loss
    ||theta_N - theta*||^2 / ||theta_0 - theta*||^2
is backpropagated to the images and to the learnable syn_lr (initialised to lr_teacher); both are updated by SGD
with momentum 0.5 (lr_img, lr_lr). Images live in the experts' preprocessing space (raw or kornia ZCA).
A non-finite loss stops the run with an error before any update, so the last resume file stays the last good state.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..augment import DSA
from ..errors import DdflowError
from ..experts import load_expert
from ..nets import build_net, has_batchnorm
from ..runtime import to_device
from ..trajectory_sampling import check_normalization, load_manifest
from .base import Method
from .registry import register


def student_unroll(net: torch.nn.Module, start: dict[str, torch.Tensor], images: torch.Tensor | Callable,
                   labels: torch.Tensor, syn_lr: torch.Tensor, batches: list[torch.Tensor],
                   augment=None) -> dict[str, torch.Tensor]:
    """len(batches) differentiable SGD steps of `net` from parameters `start` on images[batch] (augmented by
    `augment(x)` when given); returns the final parameters, connected to images and syn_lr. `images` may also be a
    function from a batch of indices to its images (HaBa generates them from bases and hallucinators)."""
    params = dict(start)
    for idx in batches:
        x = images(idx) if callable(images) else images[idx]
        if augment is not None:
            x = augment(x)
        loss = F.cross_entropy(functional_call(net, params, (x,)), labels[idx])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {n: p - syn_lr * g for (n, p), g in zip(params.items(), grads)}
    return params


def trajectory_loss(final: dict[str, torch.Tensor], start: dict[str, torch.Tensor],
                    target: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum (theta_N - theta*)^2 / sum (theta_0 - theta*)^2 over all parameters (the official code divides both
    sums by the number of parameters, which cancels)."""
    num = sum(((final[n] - target[n]) ** 2).sum() for n in target)
    den = sum(((start[n] - target[n]) ** 2).sum() for n in target)
    return num / den


@register("mtt")
class MTT(Method):
    protocols = ("mtt",)
    requires = ("trajectories",)
    state = ("images", "syn_lr", "opt_img", "opt_lr", "order")

    def init(self) -> None:
        self.init_trajectories()
        hp = self.hp
        self.images = self.initial_images()
        self.labels = self.class_labels().to(self.device)
        self.syn_lr = torch.tensor(float(hp["lr_teacher"]), device=self.device).requires_grad_(True)
        self.opt_img = torch.optim.SGD([self.images], lr=hp["lr_img"], momentum=hp["momentum"])
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=hp["lr_lr"], momentum=hp["momentum"])
        self.dsa = DSA(self.dsa_strategy()) if hp.get("dsa", True) else None
        self.order = torch.randperm(len(self.manifest["experts"]), generator=self.generator).tolist()

    def init_trajectories(self) -> None:
        """The checkpoint-sampling manifest (checked against the hparams) and the functional student net; draws
        nothing from the generator."""
        hp, info = self.hp, self.data.info
        self.manifest = load_manifest(self.inputs["trajectories"], info.name, hp["prep"], hp["net"])
        check_normalization(self.manifest, info, self.inputs["trajectories"])
        for key in ("expert_epochs", "max_start_epoch"):
            if int(self.manifest[key]) != int(hp[key]):
                raise DdflowError(f"{self.inputs['trajectories']}: manifest {key} {self.manifest[key]} != hparams "
                                  f"{hp[key]}")
        need = int(hp["max_start_epoch"]) - 1 + int(hp["expert_epochs"])
        short = [p for p, e in zip(self.manifest["experts"], self.manifest["epochs"]) if e < need]
        if short:
            raise DdflowError(f"mtt: expert window up to epoch {need} beyond the trained epochs of {short[:3]}")
        self.net = build_net(hp["net"], info.channels, info.classes, info.size).to(self.device)
        if has_batchnorm(self.net):
            raise DdflowError(f"mtt: net {hp['net']!r} has BatchNorm; the functional student does not track it")
        self.net.train()
        self._cache: tuple[int, dict] | None = None

    def expert(self, k: int) -> dict[str, Any]:
        if self._cache is None or self._cache[0] != k:
            path = self.manifest["experts"][k]
            e = load_expert(path, self.data.info.name, self.hp["prep"], self.hp["net"], mmap=True)
            self._cache = (k, e)
        return self._cache[1]

    def next_batches(self, steps: int, n: int | None = None) -> list[torch.Tensor]:
        """The synthetic minibatch of each student step (official distill.py lines 340-348): the chunks of a random
        permutation of n (default: the synthetic images) split by batch_syn, taken from the last
        (indices_chunks.pop()), a new permutation whenever they run out, and a fresh start at every iteration
        (indices_chunks = [] inside the iteration loop)."""
        n = len(self.images) if n is None else n
        size = int(self.hp.get("batch_syn") or n)
        chunks: list[torch.Tensor] = []
        out = []
        for _ in range(steps):
            if not chunks:
                chunks = list(torch.randperm(n, generator=self.generator).split(size))
            out.append(chunks.pop())
        return out

    def window(self, it: int) -> tuple[int, int, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """This iteration's expert k (the fixed order, cycled), its start epoch drawn from randint(0,
        max_start_epoch), and the parameters theta_0 = expert[start], theta* = expert[start + expert_epochs]."""
        k = self.order[it % len(self.order)]
        start_epoch = int(torch.randint(0, int(self.hp["max_start_epoch"]), (1,), generator=self.generator))
        e = self.expert(k)
        target_epoch = start_epoch + int(self.hp["expert_epochs"])
        if target_epoch > e["epochs"]:
            raise DdflowError(f"{self.method_id}: window [{start_epoch}, {target_epoch}] beyond the {e['epochs']} "
                              f"epochs of {self.manifest['experts'][k]}")
        start = {n: to_device(v[start_epoch], self.device) for n, v in e["params"].items()}
        target = {n: to_device(v[target_epoch], self.device) for n, v in e["params"].items()}
        return k, start_epoch, start, target

    def step(self, it: int) -> dict[str, float]:
        hp = self.hp
        k, start_epoch, start, target = self.window(it)
        start_leaf = {n: v.clone().requires_grad_(True) for n, v in start.items()}
        batches = self.next_batches(int(hp["syn_steps"]))
        batches = to_device(torch.cat(batches), self.device).split([len(b) for b in batches])  # one copy
        augment = (lambda x: self.dsa(x, self.generator)) if self.dsa is not None else None
        final = student_unroll(self.net, start_leaf, self.images, self.labels, self.syn_lr, batches, augment)
        loss = trajectory_loss(final, start, target)
        if not torch.isfinite(loss):
            raise DdflowError(f"mtt: non-finite trajectory loss at iteration {it} (expert {k}, start epoch "
                              f"{start_epoch}, syn_lr {self.syn_lr.item():.4g}); the resume file keeps the last "
                              f"good state: lower lr_img / lr_lr and rerun")
        self.opt_img.zero_grad()
        self.opt_lr.zero_grad()
        loss.backward()
        self.opt_img.step()
        self.opt_lr.step()
        return {"loss": loss.detach(), "syn_lr": self.syn_lr.detach().clone(), "start": start_epoch}

    def result(self) -> dict:
        return {"images": self.images.detach().cpu(), "labels": self.class_labels(), "lr": float(self.syn_lr.item())}
