"""RFAD's networks (yolky/RFAD models.py): ConvNets without normalisation whose every weight is Gaussian.

- `ConvNet_wide(channel, k=2, net_norm='none', chopped_head=True)` (run_distillation.py line 140), the random-feature
  network of the distillation: `depth` blocks of [Conv 3x3 (padding 1, bias) with k x 128 = 256 channels, ReLU,
  AvgPool 2x2], flattened, no head (models.py lines 77-151). Its features are the random features of RFAD's NNGP
  approximation (ddflow.ops.rfad).
- `ConvNet(channel, n_classes, net_width=1024, net_norm='none')` (training.py line 24, eval_distilled_set.py line
  37), the network of RFAD's finite-network results (protocol rfad-nn): the same blocks at width 1024, then a
  Gaussian linear head (models.py lines 6-75, 171-205).

Initialisation (models.py lines 153-169, 191-202): conv weights N(0, 2 / fan_in) with fan_in = in_channels x 3 x 3,
linear weights N(0, 2 / in_features), every bias N(0, 0.1^2): the W_std = sqrt(2), b_std = 0.1 of RFAD's
neural-tangents kernel (kernels.py lines 6-13). Every conv pads by 1, also on 1-channel data (models.py line 63 and
140: unlike DC's ConvNet, 28 px MNIST pools to 14, 7, 3).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import DdflowError
from .base import FeatureClassifier

RFAD_W_STD2 = 2.0    # models.py line 161 / 196: weight variance 2 / fan_in
RFAD_B_STD = 0.1     # models.py line 169 / 202: bias std 0.1


class RFADConvNet(FeatureClassifier):
    """`depth` x [Conv3x3(pad 1) -> ReLU -> AvgPool2], flatten; a Gaussian linear head unless `classes` is None
    (ConvNet_wide with chopped_head=True: forward() returns the flattened features)."""

    def __init__(self, channels: int, classes: int | None, im_size: int, width: int, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c, h = channels, im_size
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2, 2)]
            c, h = width, h // 2
        if h < 1:
            raise DdflowError(f"RFAD ConvNet depth {depth} pools a {im_size} px input to nothing")
        self.features = nn.Sequential(*layers)
        self.feature_dim = c * h * h
        self.classifier = nn.Linear(self.feature_dim, classes) if classes is not None else None

    def forward(self, x: torch.Tensor, embed: bool = False) -> torch.Tensor:
        feats = self.embed(x)
        return feats if embed or self.classifier is None else self.classifier(feats)


@torch.no_grad()
def rfad_init_(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """RFAD's Gaussian initialisation drawn from `generator` in module order (weight, then bias, per layer)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * math.sqrt(RFAD_W_STD2 / fan_in))
            m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * RFAD_B_STD)
    return net


def build_rfad_net(channels: int, classes: int | None, im_size: int, width: int, depth: int = 3,
                   generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> RFADConvNet:
    net = RFADConvNet(channels, classes, im_size, width, depth)
    if generator is not None:
        rfad_init_(net, generator)
    return net.to(device)


def _eval_net(channels: int, classes: int, im_size: int, generator: torch.Generator | None = None) -> RFADConvNet:
    return build_rfad_net(channels, classes, im_size, 1024, 3, generator)


def _feature_net(channels: int, classes: int, im_size: int, generator: torch.Generator | None = None) -> RFADConvNet:
    return build_rfad_net(channels, None, im_size, 256, 3, generator)


#: RFAD's two networks at the official sizes: the finite evaluation ConvNet (width 1024, Gaussian head) and the
#: random-feature ConvNet_wide (k = 2: width 256, no head)
NETS = {"RFADConvNet": _eval_net, "RFADConvNetWide": _feature_net}
