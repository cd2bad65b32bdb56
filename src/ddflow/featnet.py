"""A ConvNet trained on the full training split: the feature extractor herding selects with.

Produced once per dataset x net by its own rule and reused by every method that asks for it."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .data import DatasetInfo, RealData
from .errors import DdflowError
from .io import load_pt, save_pt
from .nets import build_net
from .runtime import provenance
from .seeding import generator
from .train import NetStack, TrainSettings, accuracy, train_stack

log = logging.getLogger(__name__)


def train_feature_net(data: RealData, net_name: str, settings: dict, device: torch.device, out: str | Path) -> dict:
    info = data.info
    g = generator("featnet", info.name, net_name)
    template = build_net(net_name, info.channels, info.classes, info.size)
    stack = NetStack(template, [g], device)
    epochs = int(settings["epochs"])
    ts = TrainSettings(epochs=epochs, lr=settings["lr"], momentum=settings["momentum"],
                       weight_decay=settings["weight_decay"], batch=settings["batch"],
                       decay_epochs=(epochs // 2,) if settings.get("decay", True) else ())
    train_stack(stack, data.x_train.to(device), data.y_train.to(device), [g], ts, desc=f"featnet {info.name}")
    acc = accuracy(stack.train(False), data.x_test.to(device), data.y_test.to(device))[0]
    log.info("feature net %s on %s: test accuracy %.2f%%", net_name, info.name, acc)
    state = {k: v[0].detach().cpu() for k, v in {**stack.params, **stack.buffers}.items()}
    obj = {"format": "ddflow.featnet/1", "net": net_name, "dataset": info.name, "state_dict": state,
           "test_accuracy": acc, "settings": dict(settings), "provenance": provenance(device)}
    save_pt(obj, out)
    return obj


def load_feature_net(path: str | Path, info: DatasetInfo, device: torch.device) -> torch.nn.Module:
    obj = load_pt(path, "feature net")
    if not isinstance(obj, dict) or obj.get("format") != "ddflow.featnet/1":
        raise DdflowError(f"{path}: not a ddflow feature net file")
    if obj["dataset"] != info.name:
        raise DdflowError(f"{path}: feature net of dataset {obj['dataset']!r}, expected {info.name!r}")
    net = build_net(obj["net"], info.channels, info.classes, info.size)
    net.load_state_dict(obj["state_dict"])
    return net.to(device)
