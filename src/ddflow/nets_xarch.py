"""The other evaluation networks of DC's networks.py (VICO-UoE/DatasetCondensation networks.py, commit 53f63a6;
GeorgeCazenavette/mtt-distillation networks.py is the same code): MLP, LeNet, AlexNet(BN), VGG11(BN),
ResNet18(BN) and the avg-pool ResNets ResNet18_AP / ResNet18BN_AP, for cross-architecture evaluation.

What the official definitions fix, restated (sizes for 28 px 1-channel and 32 px 3-channel data):
- MLP: flatten -> Linear(28*28 or 32*32*3, 128) -> ReLU -> Linear(128, 128) -> ReLU -> Linear(128, classes).
- LeNet: Conv 5x5 -> 6 (padding 2 on 1-channel input, else 0), ReLU, max-pool 2; Conv 5x5 -> 16, ReLU, max-pool 2
  (5x5 maps); Linear 400 -> 120 -> 84 (ReLU) -> classes. No normalisation.
- AlexNet: Conv 5x5 -> 128 (padding 4 on 1-channel input, else 2), max-pool; Conv 5x5 -> 192, max-pool; Conv 3x3
  -> 256, -> 192, -> 192, max-pool (4x4 maps); Linear 3072 -> classes. ReLU after every conv. AlexNetBN adds
  BatchNorm2d after every conv.
- VGG11: [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M], every conv 3x3 (padding 3 for the first conv of
  1-channel input, else 1) followed by instance norm (GroupNorm(C, C)) or, for VGG11BN, BatchNorm2d, then ReLU;
  max-pool 2 at M; Linear 512 -> classes.
- ResNet18: CIFAR-style ResNet, stem Conv 3x3 stride 1 -> 64 without bias (padding 1, also on 1-channel input),
  BasicBlocks [2, 2, 2, 2] with widths 64/128/256/512, stride 2 at the first block of stages 2-4, 1x1 conv + norm
  shortcut where the shape changes, convs without bias; instance norm (ResNet18) or BatchNorm2d (ResNet18BN);
  avg-pool 4 (1x1 maps at 28 and 32 px) and Linear 512 -> classes.
- ResNet18_AP / ResNet18BN_AP: as ResNet18 but every stride-2 conv is a stride-1 conv followed by avg-pool 2 (also
  in the shortcut, between its 1x1 conv and its norm), no final pooling, Linear 512*h*w -> classes (3x3 maps from
  28 px, 4x4 from 32 px: the official 512*3*3 if channel == 1 else 512*4*4, computed here from the input size).

Initialisation: ddflow.nets.init_params_ (PyTorch's default bounds) from the model's own generator; BatchNorm
running statistics start at 0 / 1 as in PyTorch. Every net is a FeatureClassifier (features, then classifier), so
NetStack can train K of them; nets with BatchNorm train by NetStack's loop, the others by vmap on a GPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DdflowError
from .nets import NET_NAMES, FeatureClassifier, build_net, init_params_
from .nets_rfad import NETS as RFAD_NETS

VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _norm(kind: str, c: int) -> nn.Module:
    return nn.BatchNorm2d(c) if kind == "batchnorm" else nn.GroupNorm(c, c, affine=True)


class MLP(FeatureClassifier):
    def __init__(self, channels: int, classes: int, im_size: int):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(channels * im_size * im_size, 128), nn.ReLU(),
                                      nn.Linear(128, 128), nn.ReLU())
        self.feature_dim = 128
        self.classifier = nn.Linear(128, classes)


class LeNet(FeatureClassifier):
    def __init__(self, channels: int, classes: int, im_size: int):
        super().__init__()
        pad = 2 if channels == 1 else 0
        side = ((im_size + 2 * pad - 4) // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.feature_dim = 84
        self.classifier = nn.Linear(84, classes)


class AlexNet(FeatureClassifier):
    def __init__(self, channels: int, classes: int, im_size: int, norm: str = "none"):
        super().__init__()
        pad = 4 if channels == 1 else 2
        layers: list[nn.Module] = []
        c = channels
        for out, k, p, pool in ((128, 5, pad, True), (192, 5, 2, True), (256, 3, 1, False), (192, 3, 1, False),
                                (192, 3, 1, True)):
            layers.append(nn.Conv2d(c, out, k, padding=p))
            if norm == "batchnorm":
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
            c = out
        side = (im_size + 2 * pad - 4) // 8
        self.features = nn.Sequential(*layers)
        self.feature_dim = 192 * side * side
        self.classifier = nn.Linear(self.feature_dim, classes)


class VGG11(FeatureClassifier):
    def __init__(self, channels: int, classes: int, im_size: int, norm: str = "instancenorm"):
        super().__init__()
        layers: list[nn.Module] = []
        c, side = channels, im_size
        for i, v in enumerate(VGG11_CFG):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                side //= 2
                continue
            pad = 3 if channels == 1 and i == 0 else 1
            layers += [nn.Conv2d(c, v, 3, padding=pad), _norm(norm, v), nn.ReLU()]
            side += 2 * pad - 2
            c = v
        if side != 1:
            raise DdflowError(f"VGG11 needs 32 px inputs (28 px on 1 channel); got {im_size} px")
        self.features = nn.Sequential(*layers)
        self.feature_dim = 512
        self.classifier = nn.Linear(512, classes)


class BasicBlock(nn.Module):
    """Two 3x3 convs with norms and a residual; `avgpool` (the _AP variant) downsamples by avg-pool after a
    stride-1 conv (main path: after the first conv's ReLU; shortcut: between its 1x1 conv and its norm)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, avgpool: bool):
        super().__init__()
        self.pool = avgpool and stride != 1
        conv_stride = 1 if avgpool else stride
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = _norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            parts: list[nn.Module] = [nn.Conv2d(c_in, c_out, 1, stride=conv_stride, bias=False)]
            if avgpool:
                parts.append(nn.AvgPool2d(2, 2))
            self.shortcut = nn.Sequential(*parts, _norm(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.pool:
            out = F.avg_pool2d(out, 2, 2)
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out)


class ResNet18(FeatureClassifier):
    def __init__(self, channels: int, classes: int, im_size: int, norm: str = "instancenorm",
                 avgpool: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, 64, 3, padding=1, bias=False), _norm(norm, 64), nn.ReLU()]
        c, side = 64, im_size
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for s in (stride, 1):
                layers.append(BasicBlock(c, width, s, norm, avgpool))
                c = width
                if s == 2:
                    side = side // 2 if avgpool else (side - 1) // 2 + 1
        if not avgpool:
            if side != 4:
                raise DdflowError(f"ResNet18 pools 4x4 maps (32 or 28 px inputs); got {im_size} px")
            layers.append(nn.AvgPool2d(4))
            side = 1
        self.features = nn.Sequential(*layers)
        self.feature_dim = 512 * side * side
        self.classifier = nn.Linear(self.feature_dim, classes)


# name -> constructor(channels, classes, im_size); the official get_network names
XARCH_NETS = {
    "MLP": MLP,
    "LeNet": LeNet,
    "AlexNet": AlexNet,
    "AlexNetBN": lambda c, k, s: AlexNet(c, k, s, "batchnorm"),
    "VGG11": VGG11,
    "VGG11BN": lambda c, k, s: VGG11(c, k, s, "batchnorm"),
    "ResNet18": ResNet18,
    "ResNet18BN": lambda c, k, s: ResNet18(c, k, s, "batchnorm"),
    "ResNet18_AP": lambda c, k, s: ResNet18(c, k, s, "instancenorm", avgpool=True),
    "ResNet18BN_AP": lambda c, k, s: ResNet18(c, k, s, "batchnorm", avgpool=True),
}


def build_eval_net(name: str, channels: int, classes: int, im_size: int, generator: torch.Generator | None = None,
                   device: str | torch.device = "cpu") -> nn.Module:
    """Any evaluation network by its official name: a ConvNet variant (ddflow.nets) or one of XARCH_NETS; with a
    generator its initialisation is drawn from it (PyTorch's default bounds, ddflow.nets.init_params_)."""
    if name in NET_NAMES:
        return build_net(name, channels, classes, im_size, generator, device)
    if name in RFAD_NETS:   # RFAD's ConvNets draw their own (Gaussian) initialisation
        return RFAD_NETS[name](channels, classes, im_size, generator).to(device)
    if name not in XARCH_NETS:
        known = NET_NAMES + tuple(XARCH_NETS) + tuple(RFAD_NETS)
        raise DdflowError(f"unknown network {name!r}; known: {', '.join(known)}")
    net = XARCH_NETS[name](channels, classes, im_size)
    if generator is not None:
        init_params_(net, generator)
    return net.to(device)
