"""DD: Dataset Distillation (Wang, Zhu, Torralba & Efros, 2018; official ssnl/dataset-distillation
train_distilled_image.py, basics.py, base_options.py).

What is learned (train_distilled_image.py init_data_optim, lines 29-70): `distill_steps` batches of images, each
`classes x images_per_class_per_step` N(0, 1) images in the normalised space with the fixed labels 0,0,..,1,1,..
(class after class), and one learning rate per *unrolled* step: T = distill_steps x distill_epochs steps visit the
batches in order, distill_epochs times (get_steps, lines 72-80). A step lr is stored raw and used through softplus,
raw = log(expm1(distill_lr)) (lines 53-56). Adam (betas 0.5, 0.999, lr `lr`) updates images and raw lrs; StepLR
halves the lr every `decay_epochs` epochs of the real data, stepped at the first iteration of every epoch (line 215),
so epoch e runs at lr * decay_factor^((e + 1) // decay_epochs).

Per iteration (train, lines 201-264): one real batch (`batch` images of the shuffled training split, the last batch
of an epoch short); for each of `n_nets` networks a fresh random initialisation (`unknown_init`: model.reset, the
xavier init of base_options.py `--init xavier --init_param 1`), the meta-loss CE(f(x_real; w_T), y_real) after the T
steps w <- w - lr_t grad CE(f(x_t; w), y_t) back-propagated exactly to the images and the raw lrs; the gradients are
summed over the networks, divided by n_nets, and Adam steps once.

ddflow's IPC is images per class in all: distill_steps = IPC / images_per_class_per_step (the paper's IPC 10 = 10
steps of 1 image per class, repeated for 3 epochs = 30 steps). The record stores the images step after step, the
labels, and in its extras the T step lrs and the step order, which protocol `dd` replays (ddflow.protocols.bilevel).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import DdflowError
from ..nets.bilevel import build
from ..ops.bilevel import dd_unrolled_loss, epoch_batch, params_of
from .base import Method
from .registry import register


def dd_net(hp: dict[str, Any], channels: int) -> str:
    """The paper's network: LeNet on 1-channel data, AlexCifarNet on colour (README: --arch LeNet for MNIST,
    --arch AlexCifarNet for CIFAR-10), unless hp['net'] names one."""
    net = hp.get("net") or "auto"
    return ("LeNet" if channels == 1 else "AlexCifarNet") if net == "auto" else net


def raw_lr(lr: float) -> float:
    """The inverse of softplus (train_distilled_image.py line 56: expm1 then log)."""
    return math.log(math.expm1(lr))


def step_order(distill_steps: int, distill_epochs: int) -> list[int]:
    """The batch each unrolled step uses: 0..distill_steps-1, repeated distill_epochs times (get_steps line 73)."""
    return [s for _ in range(distill_epochs) for s in range(distill_steps)]


def epoch_lr(lr: float, epoch: int, decay_epochs: int, decay_factor: float) -> float:
    """The Adam lr during (0-based) epoch `epoch`: StepLR(step_size=decay_epochs, gamma=decay_factor) stepped at the
    first iteration of every epoch, before the optimiser (train_distilled_image.py lines 67-68, 214-215)."""
    return lr * decay_factor ** ((epoch + 1) // decay_epochs)


@register("dd")
class DD(Method):
    protocols = ("dd", "dc")
    inits = ("noise",)
    state = ("images", "raw_lrs", "opt", "perm")

    def setup(self) -> None:
        hp, info = self.hp, self.data.info
        per_step = int(hp["images_per_class_per_step"])
        if self.ipc % per_step:
            raise DdflowError(f"dd: IPC {self.ipc} is not a multiple of images_per_class_per_step {per_step} "
                              f"(workflow/hparams/methods/dd.yaml)")
        self.per_step, self.distill_steps = per_step, self.ipc // per_step
        self.distill_epochs = int(hp["distill_epochs"])
        self.order = step_order(self.distill_steps, self.distill_epochs)
        self.net_name = dd_net(hp, info.channels)
        self.batch = int(hp["batch"])
        self.per_epoch = math.ceil(len(self.data.y_train) / self.batch)

    @property
    def iterations(self) -> int:
        """epochs x ceil(training images / batch): the official loop visits every batch of every epoch."""
        return int(self.hp["epochs"]) * math.ceil(len(self.data.y_train) / int(self.hp["batch"]))

    def init(self) -> None:
        self.setup()
        if self.hp.get("init", "noise") != "noise":
            raise DdflowError(f"dd: init {self.hp['init']!r}; allowed: noise (train_distilled_image.py line 46)")
        info = self.data.info
        n = self.distill_steps * self.classes * self.per_step
        self.images = torch.randn((n, info.channels, info.size, info.size), generator=self.generator
                                  ).to(self.device).requires_grad_(True)
        self.raw_lrs = torch.full((len(self.order),), raw_lr(float(self.hp["distill_lr"])),
                                  device=self.device).requires_grad_(True)
        self.opt = torch.optim.Adam([self.images, self.raw_lrs], lr=float(self.hp["lr"]),
                                    betas=tuple(self.hp["betas"]))
        self.step_labels = torch.arange(self.classes, device=self.device).repeat_interleave(self.per_step)
        self.perm = torch.randperm(len(self.data.y_train), generator=self.generator)   # epoch 0's order

    def steps(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(images, labels, lr) of every unrolled step, the lr through softplus (get_steps, lines 72-80)."""
        batches = self.images.split(self.classes * self.per_step)
        lrs = F.softplus(self.raw_lrs)
        return [(batches[s], self.step_labels, lrs[t]) for t, s in enumerate(self.order)]

    def real_batch(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The it-th batch of the shuffled training split: a new permutation at the first batch of every epoch."""
        self.perm, idx = epoch_batch(self.perm, it, self.per_epoch, self.batch, self.generator)
        return self.data.x_train[idx].to(self.device), self.data.y_train[idx].to(self.device)

    def step(self, it: int) -> dict[str, float]:
        hp = self.hp
        epoch = it // self.per_epoch
        for group in self.opt.param_groups:
            group["lr"] = epoch_lr(float(hp["lr"]), epoch, int(hp["decay_epochs"]), float(hp["decay_factor"]))
        x_real, y_real = self.real_batch(it)
        info = self.data.info
        n_nets = int(hp["n_nets"])
        self.opt.zero_grad()
        total = 0.0
        for _ in range(n_nets):   # unknown_init: a fresh random initialisation per network and iteration
            net = build(self.net_name, info.channels, self.classes, info.size, self.generator, "xavier",
                        float(hp["init_gain"]), self.device)
            loss = dd_unrolled_loss(net, params_of(net), self.steps(), x_real, y_real)
            if not torch.isfinite(loss):
                raise DdflowError(f"dd: non-finite meta-loss at iteration {it}; the resume file keeps the last good "
                                  "state (train_distilled_image.py line 276 stops likewise)")
            (loss / n_nets).backward()
            total += float(loss.detach())
        self.opt.step()
        lrs = F.softplus(self.raw_lrs.detach())
        return {"loss": total / n_nets, "lr_mean": float(lrs.mean())}

    def result(self) -> dict[str, Any]:
        if not hasattr(self, "order"):
            self.setup()
        labels = self.step_labels.cpu().repeat(self.distill_steps)
        return {"images": self.images.detach().cpu(), "labels": labels,
                "dd": {"step_lrs": F.softplus(self.raw_lrs.detach()).cpu().tolist(), "order": self.order,
                       "distill_steps": self.distill_steps, "distill_epochs": self.distill_epochs,
                       "images_per_class_per_step": self.per_step, "net": self.net_name,
                       "init": "xavier", "init_gain": float(self.hp["init_gain"])}}
