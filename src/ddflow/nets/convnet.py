"""DC's ConvNet (VICO-UoE/DatasetCondensation networks.py) and its named variants.

One block = Conv2d(3x3, bias) -> norm -> activation -> pool(2x2, stride 2), repeated `depth` times, then one
Linear classifier on the flattened features. "instancenorm" is GroupNorm(C, C, affine=True), as in the official
code. Single-channel inputs get padding 3 on the first conv (official rule `channel == 1`), so 28x28 MNIST reaches
the same 4x4x128 = 2048 features as 32x32 CIFAR.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from ..errors import DdflowError
from .base import FeatureClassifier, init_params_

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTS = ("relu", "sigmoid", "leakyrelu", "swish")
POOLS = ("avgpooling", "maxpooling", "none")


@dataclass(frozen=True)
class ConvNetSpec:
    width: int = 128
    depth: int = 3
    act: str = "relu"
    norm: str = "instancenorm"
    pool: str = "avgpooling"


# Named variants (official utils.py get_network; MTT's copy adds D5-D8, W512, W1024 and ConvNetKIP).
_DEFAULT = ConvNetSpec()
_VARIANTS: dict[str, ConvNetSpec] = {"ConvNet": _DEFAULT}
for _d in range(1, 9):
    _VARIANTS[f"ConvNetD{_d}"] = replace(_DEFAULT, depth=_d)
for _w in (32, 64, 128, 256, 512, 1024):
    _VARIANTS[f"ConvNetW{_w}"] = replace(_DEFAULT, width=_w)
_VARIANTS.update({
    "ConvNetAS": replace(_DEFAULT, act="sigmoid"),
    "ConvNetAR": replace(_DEFAULT, act="relu"),
    "ConvNetAL": replace(_DEFAULT, act="leakyrelu"),
    "ConvNetASwish": replace(_DEFAULT, act="swish"),
    "ConvNetASwishBN": replace(_DEFAULT, act="swish", norm="batchnorm"),
    "ConvNetNN": replace(_DEFAULT, norm="none"),
    "ConvNetBN": replace(_DEFAULT, norm="batchnorm"),
    "ConvNetLN": replace(_DEFAULT, norm="layernorm"),
    "ConvNetIN": replace(_DEFAULT, norm="instancenorm"),
    "ConvNetGN": replace(_DEFAULT, norm="groupnorm"),
    "ConvNetNP": replace(_DEFAULT, pool="none"),
    "ConvNetMP": replace(_DEFAULT, pool="maxpooling"),
    "ConvNetAP": replace(_DEFAULT, pool="avgpooling"),
    "ConvNetKIP": replace(_DEFAULT, width=1024, norm="none"),
})
NET_NAMES = tuple(_VARIANTS)


def _norm(kind: str, c: int, h: int, w: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(c, c, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(c)
    if kind == "layernorm":
        return nn.LayerNorm([c, h, w], elementwise_affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(4, c, affine=True)
    raise DdflowError(f"unknown norm {kind!r}; allowed: {', '.join(NORMS)}")


def _act(kind: str) -> nn.Module:
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "swish": nn.SiLU}.get(kind, lambda: nn.LeakyReLU(0.01))()


class ConvNet(FeatureClassifier):
    def __init__(self, channels: int, classes: int, im_size: int, spec: ConvNetSpec = _DEFAULT):
        super().__init__()
        for value, allowed in ((spec.norm, NORMS), (spec.act, ACTS), (spec.pool, POOLS)):
            if value not in allowed:
                raise DdflowError(f"ConvNet option {value!r} not in {allowed}")
        self.spec = spec
        layers: list[nn.Module] = []
        c, h, w = channels, im_size, im_size
        for d in range(spec.depth):
            pad = 3 if channels == 1 and d == 0 else 1
            layers.append(nn.Conv2d(c, spec.width, kernel_size=3, padding=pad))
            c, h, w = spec.width, h + 2 * pad - 2, w + 2 * pad - 2
            if spec.norm != "none":
                layers.append(_norm(spec.norm, c, h, w))
            layers.append(_act(spec.act))
            if spec.pool != "none":
                layers.append(nn.AvgPool2d(2, 2) if spec.pool == "avgpooling" else nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise DdflowError(f"ConvNet depth {spec.depth} pools a {im_size}x{im_size} input to nothing")
        self.features = nn.Sequential(*layers)
        self.feature_dim = c * h * w
        self.classifier = nn.Linear(self.feature_dim, classes)


def parse_net(name: str) -> ConvNetSpec:
    if name in _VARIANTS:
        return _VARIANTS[name]
    raise DdflowError(f"unknown network {name!r}; known: {', '.join(NET_NAMES)}")


def build_convnet(channels: int, classes: int, im_size: int, generator: torch.Generator | None = None,
                  spec: ConvNetSpec = _DEFAULT) -> ConvNet:
    """A ConvNet; with a generator its initialisation is drawn from it (deterministic), using PyTorch's default
    init distributions (ddflow.nets.base.init_params_)."""
    net = ConvNet(channels, classes, im_size, spec)
    if generator is not None:
        init_params_(net, generator)
    return net


# name -> factory(channels, classes, im_size, generator=None): the official get_network names
NETS = {name: partial(build_convnet, spec=spec) for name, spec in _VARIANTS.items()}
