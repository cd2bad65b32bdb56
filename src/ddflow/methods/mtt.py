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

from typing import Any

import torch

from ..augment import DSA
from ..errors import DdflowError
from ..nets import build_net, has_batchnorm
from ..ops.unrolled_student import cross_entropy_step, student_unroll, trajectory_loss
from ..records.experts import experts_prep, load_expert
from ..records.trajectories import check_manifest, check_normalization, load_manifest
from ..runtime import to_device
from .base import Method
from .registry import register


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
        self.manifest = load_manifest(self.inputs["trajectories"], info.name, experts_prep(hp), hp["net"])
        check_normalization(self.manifest, info, self.inputs["trajectories"])
        check_manifest(self.manifest, hp, self.inputs["trajectories"])
        self.net = build_net(hp["net"], info.channels, info.classes, info.size).to(self.device)
        if has_batchnorm(self.net):
            raise DdflowError(f"mtt: net {hp['net']!r} has BatchNorm; the functional student does not track it")
        self.net.train()
        self._cache: tuple[int, dict] | None = None

    def expert(self, k: int) -> dict[str, Any]:
        if self._cache is None or self._cache[0] != k:
            path = self.manifest["experts"][k]
            e = load_expert(path, self.data.info.name, experts_prep(self.hp), self.hp["net"], mmap=True)
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

    def step_loss(self, net: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                  y: torch.Tensor) -> torch.Tensor:
        """The loss of one student step (MTT: cross-entropy; variants replace it)."""
        return cross_entropy_step(net, params, x, y)

    def meta_gradient(self, start: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                      batches: list[torch.Tensor]) -> torch.Tensor:
        """The trajectory loss of the window, its gradients left in images.grad and syn_lr.grad (when finite). MTT:
        the student unrolled with its whole graph, then one backward."""
        start_leaf = {n: v.clone().requires_grad_(True) for n, v in start.items()}
        augment = (lambda x: self.dsa(x, self.generator)) if self.dsa is not None else None
        final = student_unroll(self.net, start_leaf, self.images, self.labels, self.syn_lr, batches, augment,
                               self.step_loss)
        loss = trajectory_loss(final, start, target)
        if torch.isfinite(loss):
            loss.backward()
        return loss

    def step(self, it: int) -> dict[str, float]:
        k, start_epoch, start, target = self.window(it)
        batches = self.next_batches(int(self.hp["syn_steps"]))
        batches = to_device(torch.cat(batches), self.device).split([len(b) for b in batches])  # one copy
        self.opt_img.zero_grad()
        self.opt_lr.zero_grad()
        loss = self.meta_gradient(start, target, list(batches))
        if not torch.isfinite(loss):
            raise DdflowError(f"{self.method_id}: non-finite trajectory loss at iteration {it} (expert {k}, start "
                              f"epoch {start_epoch}, syn_lr {self.syn_lr.item():.4g}); the resume file keeps the last "
                              f"good state: lower lr_img / lr_lr and rerun")
        self.opt_img.step()
        self.opt_lr.step()
        return {"loss": loss.detach(), "syn_lr": self.syn_lr.detach().clone(), "start": start_epoch}

    def result(self) -> dict:
        return {"images": self.images.detach().cpu(), "labels": self.class_labels(), "lr": float(self.syn_lr.item())}
