"""DC's evaluation protocol and its two relatives (docs/protocols.md).

- `dc`: DC's evaluate_synset (VICO-UoE/DatasetCondensation utils.py): SGD (lr 0.01, momentum 0.9, wd 5e-4), batch
  256, epochs+1 epochs, lr x0.1 (and a fresh optimiser) after epoch epochs//2 + 1; test accuracy after the last
  epoch; hard labels. A multi-formation set (`factor` > 1: IDM) trains on its decoded images (records.decoded()).
- `mtt`: `dc` with the distillation's learned lr (MTT's evaluate_synset(lr = syn_lr)), on data in the
  distillation's preprocessing space (the record's real_in_space whitens the test split with its ZCA); soft labels
  (TESLA's teacher labels) train with the soft-target cross-entropy (tesla utils.py evaluate_synset: CrossEntropyLoss
  on the label probabilities).
- `soft`: `dc` trained on the distilled soft labels with the soft-target cross-entropy (EAD learns its labels).

Their label regimes and augmentation variants (`mtt-hard`, `soft-teacher`, `dc-noaug`, ...): ddflow.protocols.regimes.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..augment import make_augment
from ..data import RealData
from ..errors import DdflowError
from ..nets import build_net
from ..ops.losses import soft_ce
from ..records import DistilledSet
from ..train import NetStack, TrainSettings, accuracy, hard_ce, train_stack
from .registry import desc, protocol, scored


def train_and_test_dc(record: DistilledSet, data: RealData, settings: dict, generators, device: torch.device,
                      name: str, lr: float | None = None,
                      loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = hard_ce,
                      labels: torch.Tensor | None = None, targets: Callable | None = None) -> list[float]:
    """DC's evaluate_synset on the record's images: `loss_fn` per model on `labels` (default the record's), or on
    `targets(batch)` of each augmented batch when given (a teacher labelling every batch: ddflow.protocols.regimes)."""
    info = data.info
    template = build_net(settings["net"], info.channels, info.classes, info.size)
    stack = NetStack(template, generators, device, settings.get("batching", "auto"))
    epochs = int(settings["epochs"])
    ts = TrainSettings(epochs=epochs + 1, lr=lr if lr is not None else settings["lr"],
                       momentum=settings["momentum"], weight_decay=settings["weight_decay"],
                       batch=settings["batch"], decay_epochs=(epochs // 2 + 1,), decay_factor=0.1,
                       reset_momentum_on_decay=True)
    augment = make_augment(settings.get("augment", "none"), settings.get("strategy", "none"))
    x, y = record.images, record.labels
    if int(record.factor) > 1:  # multi-formation (IDM's partition and expansion): train on the decoded set
        if labels is not None:
            raise DdflowError(f"protocol {name!r}: a multi-formation set with replaced labels is not defined")
        x, y = record.decoded()
    y = y if labels is None else labels
    train_stack(stack.train(True), x.to(device), y.to(device), generators, ts, augment, loss_fn=loss_fn,
                desc=desc(name, record), targets=targets)
    stack.train(False)
    return scored(lambda x, y: accuracy(stack, x.to(device), y.to(device)), data)


@protocol("dc", variants=("teacher", "aug", "noaug"))
def evaluate_dc(record: DistilledSet, data: RealData, settings: dict, generators, device: torch.device) -> list[float]:
    if record.soft_labels:
        raise DdflowError("protocol 'dc' trains on hard labels; this distilled set has soft labels")
    return train_and_test_dc(record, data, settings, generators, device, "dc")


@protocol("mtt", variants=("hard", "teacher", "aug", "noaug"))
def evaluate_mtt(record: DistilledSet, data: RealData, settings: dict, generators,
                 device: torch.device) -> list[float]:
    if record.lr is None:
        raise DdflowError("protocol 'mtt' trains with the distillation's learned lr; this distilled set has none")
    if record.soft_labels:
        return train_and_test_dc(record, data, settings, generators, device, "mtt", lr=float(record.lr),
                                 loss_fn=soft_ce, labels=record.labels.float())
    return train_and_test_dc(record, data, settings, generators, device, "mtt", lr=float(record.lr))


@protocol("soft", variants=("hard", "teacher", "aug", "noaug"))
def evaluate_soft(record: DistilledSet, data: RealData, settings: dict, generators,
                  device: torch.device) -> list[float]:
    """As `dc`, with the soft-target cross-entropy on (N, C) label probabilities (`soft-hard`: one-hot rows of the
    class index, where it is the cross-entropy)."""
    classes = data.info.classes
    if record.labels.dim() != 2 or record.labels.shape[1] != classes:
        raise DdflowError(f"protocol 'soft' needs (N, {classes}) soft labels, got {tuple(record.labels.shape)}")
    return train_and_test_dc(record, data, settings, generators, device, "soft", loss_fn=soft_ce,
                             labels=record.labels.float())
