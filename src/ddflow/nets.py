"""DC's ConvNet (VICO-UoE/DatasetCondensation networks.py) and its named variants.

One block = Conv2d(3x3, bias) -> norm -> activation -> pool(2x2, stride 2), repeated `depth` times, then one
Linear classifier on the flattened features. "instancenorm" is GroupNorm(C, C, affine=True), as in the official
code. Single-channel inputs get padding 3 on the first conv (official rule `channel == 1`), so 28x28 MNIST reaches
the same 4x4x128 = 2048 features as 32x32 CIFAR.

FRePo's Conv (yongchao97/FRePo lib/models/networks.py `Conv`; FRePo, ISA and the `frepo`/`krr` protocols): `depth`
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
from dataclasses import dataclass, replace

import torch
from torch import nn

from .errors import DdflowError

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTS = ("relu", "sigmoid", "leakyrelu", "swish")
POOLS = ("avgpooling", "maxpooling", "none")
FREPO_NORMS = ("batch", "none")


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


class FeatureClassifier(nn.Module):
    """A network made of `self.features` (conv blocks) then one Linear `self.classifier` on the flattened maps;
    the interface every method uses: embed() for features, forward() for logits."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (what DM matches and herding selects on)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor, embed: bool = False) -> torch.Tensor:
        """Logits, or with embed=True the features (lets torch.func.functional_call reach embed())."""
        feats = self.embed(x)
        return feats if embed else self.classifier(feats)


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


def build_net(name: str, channels: int, classes: int, im_size: int, generator: torch.Generator | None = None,
              device: str | torch.device = "cpu") -> ConvNet:
    """Build a named ConvNet; with a generator its initialisation is drawn from it (deterministic), using
    PyTorch's default init distributions."""
    net = ConvNet(channels, classes, im_size, parse_net(name))
    if generator is not None:
        init_params_(net, generator)
    # DM, DC and DSA build a fresh net every iteration: no stream synchronisation per parameter (runtime.to_device)
    return net.to(device, non_blocking=torch.device(device).type == "cuda")


@torch.no_grad()
def init_params_(net: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter from `generator` with PyTorch's default distributions: conv (also transposed) and
    linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (= kaiming_uniform_(a=sqrt(5)); fan_in = the
    size of weight[0], which is PyTorch's fan_in for ConvTranspose2d too), norm weights 1, biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            for p in (m.weight, m.bias):
                if p is not None:
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
        elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm)):
            if m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


# ---- FRePo's Conv --------------------------------------------------------------------------------------------
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
                     norm: str = "batch", generator: torch.Generator | None = None,
                     device: str | torch.device = "cpu") -> FRePoConv:
    net = FRePoConv(channels, classes, size, width, depth, norm)
    if generator is not None:
        frepo_init_(net, generator)
    return net.to(device)
