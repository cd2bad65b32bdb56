"""The feature-net stage (rule featnet in rules/distill.smk): a ConvNet trained on the full training split, the
feature extractor herding selects with (checkpoint format and loader: ddflow.records.featnet).

Produced once per dataset x net by its own rule and reused by every method that asks for it."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..data import RealData, get_info, load_real
from ..nets import build_net
from ..records.featnet import save_feature_net
from ..runtime import provenance
from ..seeding import generator
from ..train import NetStack, TrainSettings, accuracy, train_stack

log = logging.getLogger(__name__)


def run(dataset: str, net: str, settings: dict, data_path: str | Path, device: torch.device, out: str | Path) -> dict:
    """Train the feature net `net` on `dataset`'s data file and write its checkpoint to `out`."""
    return train_feature_net(load_real(data_path, get_info(dataset), device), net, settings, device, out)


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
    return save_feature_net(out, net_name, info.name, state, test_accuracy=acc, settings=dict(settings),
                            provenance=provenance(device))
