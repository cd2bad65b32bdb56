"""KIP's finite networks (google-research kip/): the fully connected network of KIP.ipynb (`FullyConnectedNetwork`:
Flatten, depth x [Dense(width), Relu], Dense(classes)) and the ConvNet of nn_training.ipynb (`ConvNet`: an optional
prepended [Conv 3x3 SAME, Relu], depth x [Conv 3x3 SAME, Relu, AvgPool 2x2 stride 2], Flatten, Dense(classes); no
normalisation), with neural-tangents' two parameterisations (stax/linear.py Dense lines 864-895, Conv the same):

- 'ntk': weights and biases drawn N(0, 1); a layer computes W_std / sqrt(fan_in) * (x . W) + b_std * b;
- 'standard': weights drawn N(0, W_std^2 / fan_in), biases N(0, b_std^2); a layer computes x . W + b.

fan_in = input channels x 9 for a convolution, input features for a dense layer. W_std sqrt(2), b_std 0.1 (the
notebooks' defaults). Their infinite-width kernels are ddflow.ops.infinite_kernels.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class ScaledLinear(nn.Module):
    def __init__(self, fan_in: int, out: int, w_std: float, b_std: float, parameterization: str,
                 generator: torch.Generator | None = None):
        super().__init__()
        ntk = parameterization == "ntk"
        self.scale, self.bias_scale = (w_std / math.sqrt(fan_in), b_std) if ntk else (1.0, 1.0)
        w_init, b_init = (1.0, 1.0) if ntk else (w_std / math.sqrt(fan_in), b_std)
        self.weight = nn.Parameter(torch.randn(out, fan_in, generator=generator) * w_init)
        self.bias = nn.Parameter(torch.randn(out, generator=generator) * b_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x @ self.weight.T) + self.bias_scale * self.bias


class ScaledConv(nn.Module):
    def __init__(self, cin: int, out: int, w_std: float, b_std: float, parameterization: str,
                 generator: torch.Generator | None = None):
        super().__init__()
        ntk = parameterization == "ntk"
        fan_in = cin * 9
        self.scale, self.bias_scale = (w_std / math.sqrt(fan_in), b_std) if ntk else (1.0, 1.0)
        w_init, b_init = (1.0, 1.0) if ntk else (w_std / math.sqrt(fan_in), b_std)
        self.weight = nn.Parameter(torch.randn(out, cin, 3, 3, generator=generator) * w_init)
        self.bias = nn.Parameter(torch.randn(out, generator=generator) * b_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.conv2d(x, self.weight, padding=1)
        return self.scale * y + self.bias_scale * self.bias.view(1, -1, 1, 1)


class KipFC(nn.Module):
    def __init__(self, in_features: int, classes: int, width: int = 1024, depth: int = 1,
                 w_std: float = math.sqrt(2), b_std: float = 0.1, parameterization: str = "standard",
                 generator: torch.Generator | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        fan_in = in_features
        for _ in range(depth):
            layers += [ScaledLinear(fan_in, width, w_std, b_std, parameterization, generator), nn.ReLU()]
            fan_in = width
        self.features = nn.Sequential(*layers)
        self.classifier = ScaledLinear(fan_in, classes, w_std, b_std, parameterization, generator)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class KipConvNet(nn.Module):
    def __init__(self, channels: int, classes: int, im_size: int, width: int = 1024, depth: int = 3,
                 prepend_conv: bool = True, w_std: float = math.sqrt(2), b_std: float = 0.1,
                 parameterization: str = "standard", generator: torch.Generator | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = channels, im_size
        if prepend_conv:
            layers += [ScaledConv(cin, width, w_std, b_std, parameterization, generator), nn.ReLU()]
            cin = width
        for _ in range(depth):
            layers += [ScaledConv(cin, width, w_std, b_std, parameterization, generator), nn.ReLU(),
                       nn.AvgPool2d(2, 2)]
            cin, size = width, size // 2
        self.features = nn.Sequential(*layers)
        self.classifier = ScaledLinear(cin * size * size, classes, w_std, b_std, parameterization, generator)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def build_kip_net(arch: str, channels: int, classes: int, im_size: int, width: int, depth: int,
                  parameterization: str = "standard", prepend_conv: bool = True, w_std: float = math.sqrt(2),
                  b_std: float = 0.1, generator: torch.Generator | None = None) -> nn.Module:
    if arch == "fc":
        return KipFC(channels * im_size * im_size, classes, width, depth, w_std, b_std, parameterization, generator)
    return KipConvNet(channels, classes, im_size, width, depth, prepend_conv, w_std, b_std, parameterization,
                      generator)


NETS = {
    "kip-convnet": lambda channels, classes, im_size, generator=None: KipConvNet(
        channels, classes, im_size, generator=generator),
    "kip-convnet3": lambda channels, classes, im_size, generator=None: KipConvNet(
        channels, classes, im_size, prepend_conv=False, generator=generator),
}
