"""FRePo's Conv (yongchao97/FRePo lib/models/networks.py `Conv`; FRePo, ISA and the `frepo`/`krr` protocols): `depth`
blocks of [norm (every block but the first), Conv 3x3 with bias and width * 2**i channels, ReLU, avg-pool 2x2];
flatten; Dense. A 1-channel input gets padding 3 on the first conv (kernel//2 + 2), so 28 px behaves like 32 px.
Depth by resolution: the smallest depth that pools the (padded) input to 4x4, i.e. 3 at 28/32 px, 4 at 64 px, 5 at
128 px. Sources: FRePo's README runs depth 3 on 32 px data; FRePo issue #3 (the author) advises depth 4 for
TinyImageNet (64 px); 5 at 128 px is ours, the same "pool to 4x4" rule (no official script runs 128 px). BatchNorm
here uses PyTorch momentum 0.9, which is flax's momentum=0.1 (flax keeps `momentum * old + (1 - momentum) *
batch`), eps 1e-5. Initialisation: flax defaults, LeCun normal (truncated at
2 std) weights, zero biases.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import DdflowError
from .base import FeatureClassifier

FREPO_NORMS = ("batch", "none")


def frepo_depth(size: int, channels: int = 3) -> int:
    """Depth that pools the input (1-channel inputs padded by 2 px on each side) to 4x4 feature maps."""
    eff = size + 4 if channels == 1 else size
    depth = 0
    while eff > 4:
        eff //= 2
        depth += 1
    if depth < 1:
        raise DdflowError(f"FRePoConv: {size} px is too small")
    return depth


class FRePoConv(FeatureClassifier):
    def __init__(self, channels: int, classes: int, size: int, width: int = 128, depth: int | None = None,
                 norm: str = "batch"):
        super().__init__()
        if norm not in FREPO_NORMS:
            raise DdflowError(f"FRePoConv norm {norm!r} not in {FREPO_NORMS}")
        depth = frepo_depth(size, channels) if depth in (None, "auto") else int(depth)
        self.depth, self.width, self.norm = depth, width, norm
        layers: list[nn.Module] = []
        c, h = channels, size
        for i in range(depth):
            if i > 0 and norm == "batch":
                layers.append(nn.BatchNorm2d(c, eps=1e-5, momentum=0.9))
            pad = 3 if (i == 0 and channels == 1) else 1
            out = width * 2 ** i
            layers += [nn.Conv2d(c, out, 3, padding=pad), nn.ReLU(), nn.AvgPool2d(2, 2)]
            c, h = out, (h + 2 * pad - 2) // 2
        if h < 1:
            raise DdflowError(f"FRePoConv depth {depth} pools a {size} px input to nothing")
        self.features = nn.Sequential(*layers)
        self.feature_dim = c * h * h
        self.classifier = nn.Linear(self.feature_dim, classes)


@torch.no_grad()
def frepo_init_(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """flax defaults: weights LeCun normal (variance 1/fan_in, truncated at +-2 std, rescaled as in
    jax.nn.initializers.variance_scaling), biases 0; norm weight 1, bias 0. Draws from `generator`, in module order."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
            w = torch.empty(m.weight.shape)
            nn.init.trunc_normal_(w, 0.0, 1.0, -2.0, 2.0, generator=generator)
            m.weight.copy_(w * std)
            m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
            m.reset_running_stats()
    return net


def build_frepo_conv(channels: int, classes: int, size: int, width: int = 128, depth: int | None = None,
                     norm: str = "batch", generator: torch.Generator | None = None) -> FRePoConv:
    """FRePo's Conv; with a generator its initialisation is drawn from it (flax defaults, frepo_init_)."""
    net = FRePoConv(channels, classes, size, width, depth, norm)
    if generator is not None:
        frepo_init_(net, generator)
    return net


# name -> factory(channels, classes, im_size, generator=None, width=, depth=, norm=)
NETS = {"FRePoConv": build_frepo_conv}
