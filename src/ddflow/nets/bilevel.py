"""The networks of the bilevel family (DD, LD): LeNet for MNIST-like data and AlexCifarNet for CIFAR.

Both follow the official definitions (ssnl/dataset-distillation networks/networks.py lines 7-60; LD's
ondrejbohdal/label-distillation model_architectures.py LeNetMeta lines 75-120 and AlexCifarNetMeta lines 122-174 are
the same layers with fast weights):
- LeNet: Conv 5x5 -> 6 (padding 2 on 28 px input, else 0), ReLU, max-pool 2; Conv 5x5 -> 16, ReLU, max-pool 2;
  Linear 400 -> 120 -> 84 (ReLU) -> classes. No normalisation. (DD pads by input size; DC's LeNet in nets/xarch.py pads
  by channel count: the same on MNIST.)
- AlexCifarNet (the cuda-convnet layout; not DC's AlexNet): Conv 5x5 -> 64 (padding 2), ReLU, max-pool 3 stride 2
  padding 1, LocalResponseNorm(4, alpha 0.001/9, beta 0.75, k 1); Conv 5x5 -> 64, ReLU, LRN, max-pool 3/2/1 (8x8
  maps at 32 px); Linear 4096 -> 384 -> 192 (ReLU) -> classes.

Initialisation: `init="xavier"` is DD's default `init_weights` (networks/utils.py lines 23-52 with base_options.py
`--init xavier --init_param 1`): xavier-normal weights with gain 1, zero biases. `init="default"` is PyTorch's
default (LD builds its models without an init function), drawn by ddflow.nets.init_params_. Every draw comes from
the generator passed in.

`NETS` joins the table of every network (ddflow.nets.build_net; PyTorch's default init from a generator);
`build(name, ..., init=...)` builds by the hparams' name and chooses the initialisation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import DdflowError
from .base import FeatureClassifier, init_params_


class LeNet(FeatureClassifier):
    def __init__(self, channels: int, classes: int, im_size: int):
        super().__init__()
        pad = 2 if im_size == 28 else 0
        side = ((im_size + 2 * pad - 4) // 2 - 4) // 2
        if side < 1:
            raise DdflowError(f"LeNet needs 28 or 32 px input (got {im_size})")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.feature_dim = 84
        self.classifier = nn.Linear(84, classes)


class AlexCifarNet(FeatureClassifier):
    def __init__(self, channels: int, classes: int, im_size: int):
        super().__init__()
        if im_size != 32:
            raise DdflowError(f"AlexCifarNet is defined for 32 px input (got {im_size})")
        lrn = dict(size=4, alpha=0.001 / 9.0, beta=0.75, k=1.0)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.LocalResponseNorm(**lrn),
            nn.Conv2d(64, 64, 5, padding=2), nn.ReLU(), nn.LocalResponseNorm(**lrn), nn.MaxPool2d(3, 2, 1),
            nn.Flatten(), nn.Linear(4096, 384), nn.ReLU(), nn.Linear(384, 192), nn.ReLU())
        self.feature_dim = 192
        self.classifier = nn.Linear(192, classes)


@torch.no_grad()
def xavier_init_(net: nn.Module, generator: torch.Generator, gain: float = 1.0) -> None:
    """DD's `init_weights(init='xavier')`: conv and linear weights ~ N(0, gain^2 * 2 / (fan_in + fan_out)) (xavier
    normal: fan_in = in_channels * receptive field, fan_out = out_channels * receptive field), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            receptive = w[0][0].numel() if w.dim() > 2 else 1
            fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
            std = gain * math.sqrt(2.0 / (fan_in + fan_out))
            w.copy_(torch.randn(w.shape, generator=generator) * std)
            if m.bias is not None:
                m.bias.zero_()


def _factory(cls):
    def make(channels: int, classes: int, im_size: int, generator: torch.Generator | None = None) -> nn.Module:
        net = cls(channels, classes, im_size)
        if generator is not None:
            init_params_(net, generator)
        return net
    return make


CLASSES = {"LeNet": LeNet, "AlexCifarNet": AlexCifarNet}   # the names DD's and LD's hparams use (`net`)
# in the table of every network (ddflow.nets.build_net): DD's LeNet pads by input size where DC's LeNet (xarch)
# pads by channel count, so it joins under its own name
NETS = {"LeNetDD": _factory(LeNet), "AlexCifarNet": _factory(AlexCifarNet)}
INITS = ("xavier", "default")


def build(name: str, channels: int, classes: int, im_size: int, generator: torch.Generator,
          init: str = "default", gain: float = 1.0, device: str | torch.device = "cpu") -> nn.Module:
    """A bilevel-family network, initialised from `generator` by `init` ('xavier': DD's; 'default': PyTorch's)."""
    if name not in CLASSES:
        raise DdflowError(f"unknown bilevel network {name!r}; known: {', '.join(CLASSES)}")
    if init not in INITS:
        raise DdflowError(f"unknown init {init!r} for {name}; allowed: {', '.join(INITS)}")
    net = _factory(CLASSES[name])(channels, classes, im_size)
    if init == "xavier":
        xavier_init_(net, generator, gain)
    else:
        init_params_(net, generator)
    return net.to(device)
