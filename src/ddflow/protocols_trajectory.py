"""Evaluation protocols of the trajectory family (DESIGN.md section 4).

- `mtt`: the `dc` protocol with the distillation's learned lr (MTT's evaluate_synset(lr = syn_lr)), on data in the
  distillation's preprocessing space (evaluate_cell whitens the test split with the record's ZCA).
- `soft`: the `dc` protocol trained on the distilled soft labels with the soft-target cross-entropy
  -sum_c p_c log softmax(z)_c (EAD learns its labels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment import make_augment
from .data import RealData
from .errors import DdflowError
from .evaluate import evaluate_dc, protocol
from .nets import build_net
from .train import NetStack, TrainSettings, accuracy, train_stack


@protocol("mtt")
def evaluate_mtt(images: torch.Tensor, labels: torch.Tensor, data: RealData, settings: dict, generators,
                 device: torch.device, desc: str = "eval", lr: float | None = None, **kw) -> list[float]:
    if lr is None:
        raise DdflowError("protocol 'mtt' trains with the distillation's learned lr; this distilled set has none")
    return evaluate_dc(images, labels, data, settings, generators, device, desc=desc, lr=float(lr), **kw)


def soft_ce_per_model(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (K, B, C), targets (K, B, C) probabilities -> (K,) mean soft-target cross-entropy per model."""
    return -(targets * F.log_softmax(logits, -1)).sum(-1).mean(1)


@protocol("soft")
def evaluate_soft(images: torch.Tensor, labels: torch.Tensor, data: RealData, settings: dict, generators,
                  device: torch.device, desc: str = "eval", **_) -> list[float]:
    """As `dc` (SGD 0.01, momentum 0.9, wd 5e-4, batch 256, epochs+1 epochs, x0.1 after epochs//2 + 1), with
    the soft-target cross-entropy on (N, C) label probabilities."""
    info = data.info
    if labels.dim() != 2 or labels.shape[1] != info.classes:
        raise DdflowError(f"protocol 'soft' needs (N, {info.classes}) soft labels, got {tuple(labels.shape)}")
    template = build_net(settings["net"], info.channels, info.classes, info.size)
    stack = NetStack(template, generators, device, settings.get("batching", "auto"))
    epochs = int(settings["epochs"])
    ts = TrainSettings(epochs=epochs + 1, lr=settings["lr"], momentum=settings["momentum"],
                       weight_decay=settings["weight_decay"], batch=settings["batch"],
                       decay_epochs=(epochs // 2 + 1,), decay_factor=0.1, reset_momentum_on_decay=True)
    augment = make_augment(settings.get("augment", "none"), settings.get("strategy", "none"))
    train_stack(stack.train(True), images.to(device), labels.float().to(device), generators, ts, augment,
                loss_fn=soft_ce_per_model, desc=desc)
    return accuracy(stack.train(False), data.x_test.to(device), data.y_test.to(device))
