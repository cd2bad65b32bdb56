"""Infinite-width NNGP and NTK kernels of ReLU networks, written in PyTorch after google/neural-tangents' stax
recursions (commit c17e770; files under neural_tangents/_src/):

- inputs (stax/requirements.py `_cov`, line 631): K0(x, x') = <x, x'> / C summed over the channel axis only, one
  entry per pair of spatial positions (the full spatial covariance); the NTK starts at 0 (line 807);
- Dense / Conv with parameterisation 'ntk' (stax/linear.py lines 906-910 and 1395-1398): nngp <- W_std^2 A(nngp) +
  b_std^2, ntk <- W_std^2 A(ntk) + nngp_new, where A is the identity for Dense and, for a 3x3 SAME convolution on the
  full spatial covariance, the mean over the 9 shifted position pairs (i+d, j+d) with zeros outside the image
  (`_conv_kernel_full_spatial_shared`, line 3115: a diagonal filter of 1/filter_size); parameterisation 'standard'
  (lines 912-917 and 1400-1406): ntk <- fan_in A(nngp) + W_std^2 A(ntk) + 1 (the 1 when there is a bias), then
  nngp <- W_std^2 A(nngp) + b_std^2;
- Relu (stax/elementwise.py ABRelu(0, 1), lines 441-452): with theta = angle between the pair's variances,
  nngp <- (sqrt(v v' - nngp^2) + (pi - theta) nngp) / (2 pi), ntk <- ntk (pi - theta) / (2 pi) (the arc-cosine
  kernel of degree 1);
- AvgPool((2, 2), strides (2, 2), VALID) (stax/linear.py `_pool_kernel`, line 3499): the mean over the 2x2x2x2 block
  of position pairs; Flatten (line 1868): the mean over the diagonal position pairs (i, i).

The networks are KIP's (google-research kip/KIP.ipynb `FullyConnectedNetwork`: Flatten, DEPTH x [Dense, Relu],
Dense; kip/nn_training.ipynb `ConvNet`: optional prepended [Conv, Relu], DEPTH x [Conv 3x3 SAME, Relu, AvgPool 2],
Flatten, Dense), W_std sqrt(2), b_std 0.1. The kernel between two image sets is computed block by block over image
pairs so that a block's full spatial covariance holds at most `max_block` numbers; a pair's variances come from the
same recursion on the image with itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import DdflowError

ARCHS = ("fc", "conv")
PARAMETERIZATIONS = ("ntk", "standard")


@dataclass(frozen=True)
class KernelNet:
    """An infinitely wide network: `arch` 'fc' (KIP.ipynb FullyConnectedNetwork) or 'conv' (nn_training.ipynb
    ConvNet; `prepend_conv` = KIP's 'ConvNet', without = 'ConvNet3'). `width` only matters for 'standard'."""

    arch: str = "fc"
    depth: int = 1
    w_std: float = math.sqrt(2.0)
    b_std: float = 0.1
    parameterization: str = "ntk"
    prepend_conv: bool = True
    width: int = 1024

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise DdflowError(f"kernel arch {self.arch!r} unknown; allowed: {', '.join(ARCHS)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise DdflowError(f"kernel parameterization {self.parameterization!r} unknown; allowed: "
                              f"{', '.join(PARAMETERIZATIONS)}")
        if int(self.depth) < 0 or (self.arch == "conv" and int(self.depth) < 1 and not self.prepend_conv):
            raise DdflowError(f"kernel depth {self.depth} is not allowed for arch {self.arch!r}")

    @classmethod
    def from_settings(cls, s: dict) -> "KernelNet":
        return cls(str(s.get("arch", "fc")), int(s.get("depth", 1)), float(s.get("w_std", math.sqrt(2.0))),
                   float(s.get("b_std", 0.1)), str(s.get("parameterization", "ntk")),
                   bool(s.get("prepend_conv", True)), int(s.get("width", 1024)))


# -- the elementwise pieces -------------------------------------------------------------------------------------
class SafeSqrt(torch.autograd.Function):
    """sqrt(max(x, 0)) whose derivative is 0 where x <= 1e-30 (neural-tangents stax/elementwise.py `_sqrt` and its
    jvp, lines 1279-1290): the pair (x, x) has sqrt(v v - nngp^2) = 0, where the plain derivative is infinite."""

    @staticmethod
    def forward(ctx, x):
        out = x.clamp_min(0.0).sqrt()
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, out = ctx.saved_tensors
        return torch.where(x > 1e-30, grad / (2 * out.clamp_min(1e-300)), torch.zeros_like(grad))


def relu_step(nngp: torch.Tensor, prod: torch.Tensor, ntk: torch.Tensor | None):
    """ABRelu(0, 1) on a pair kernel: `prod` = the product of the pair's variances at the same entries."""
    root = SafeSqrt.apply(prod - nngp * nngp)
    theta = torch.atan2(root, nngp)
    dot_sigma = 0.5 - theta / (2 * math.pi)
    new = root / (2 * math.pi) + dot_sigma * nngp
    return new, (None if ntk is None else ntk * dot_sigma)


def _affine(net: KernelNet, nngp, ntk, agg, fan_in: float, bias: bool = True):
    """Dense or Conv (agg = how the layer mixes the pair kernel: identity, or the 3x3 conv mean)."""
    w2, b2 = net.w_std ** 2, net.b_std ** 2
    a_nngp = agg(nngp)
    a_ntk = None if ntk is None else agg(ntk)
    new = w2 * a_nngp + b2
    if ntk is None:
        return new, None
    if net.parameterization == "ntk":
        return new, new + w2 * a_ntk
    return new, fan_in * a_nngp + w2 * a_ntk + 1.0


# -- fully connected ----------------------------------------------------------------------------------------------
def fc_kernels(x1: torch.Tensor, x2: torch.Tensor, net: KernelNet, ntk: bool = True):
    """(nngp, ntk or None) of shape (n1, n2) for KIP's fully connected network (outputs flattened)."""
    a, b = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    d = a.shape[1]
    k = a @ b.T / d
    v1, v2 = a.square().sum(1) / d, b.square().sum(1) / d
    t = torch.zeros_like(k) if ntk else None
    t1 = t2 = None
    ident = lambda z: z  # noqa: E731
    width = float(d)
    for _ in range(net.depth):
        k, t = _affine(net, k, t, ident, width)
        v1, t1 = _affine(net, v1, t1, ident, width)
        v2, t2 = _affine(net, v2, t2, ident, width)
        k, t = relu_step(k, v1[:, None] * v2[None, :], t)
        v1, v2 = v1 / 2, v2 / 2
        width = float(net.width)
    return _affine(net, k, t, ident, width)


# -- the ConvNet on full spatial covariances ------------------------------------------------------------------------
def conv3x3_mean(k: torch.Tensor) -> torch.Tensor:
    """A 3x3 SAME convolution on a pair kernel (P, H, H', W, W'): the mean over the 9 shifts (i+d, j+d) along each
    spatial axis pair, zeros outside the image (neural-tangents `_conv_kernel_full_spatial_shared`)."""
    p = torch.nn.functional.pad(k, (1, 1, 1, 1, 0, 0, 0, 0))         # pads W', W
    h, w = k.shape[1], k.shape[3]
    k = (p[..., 0:w, 0:w] + p[..., 1:w + 1, 1:w + 1] + p[..., 2:w + 2, 2:w + 2]) / 3.0
    p = torch.nn.functional.pad(k.permute(0, 3, 4, 1, 2), (1, 1, 1, 1))  # (P, W, W', H, H') padded on H', H
    k = (p[..., 0:h, 0:h] + p[..., 1:h + 1, 1:h + 1] + p[..., 2:h + 2, 2:h + 2]) / 3.0
    return k.permute(0, 3, 4, 1, 2)


def avgpool2_pairs(k: torch.Tensor) -> torch.Tensor:
    """AvgPool 2x2 stride 2 VALID on both images of a pair kernel (P, H, H', W, W')."""
    pn, h, _, w, _ = k.shape
    h2, w2 = h // 2, w // 2
    k = k[:, :2 * h2, :2 * h2, :2 * w2, :2 * w2]
    return k.reshape(pn, h2, 2, h2, 2, w2, 2, w2, 2).mean(dim=(2, 4, 6, 8))


def _diag(k: torch.Tensor) -> torch.Tensor:
    """(P, H, H, W, W) -> (P, H, W): the entries (i, i, j, j)."""
    return torch.diagonal(torch.diagonal(k, dim1=1, dim2=2), dim1=1, dim2=2)


def _input_pairs(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """(a, C, H, W), (b, C, H, W) -> (a*b, H, H', W, W'): <x1[:, :, i, j], x2[:, :, i', j']> / C."""
    k = torch.einsum("achw,bcHW->abhHwW", x1, x2) / x1.shape[1]
    return k.reshape(-1, *k.shape[2:])


def conv_pair_kernels(x1: torch.Tensor, x2: torch.Tensor, net: KernelNet, var1: list[torch.Tensor],
                      var2: list[torch.Tensor], ntk: bool = True):
    """(nngp, ntk or None) of shape (a*b,) for every pair of x1 (a images) and x2 (b images). var1 / var2 = the
    images' variances (a, H, W) / (b, H, W) before each Relu (`self_variances`)."""
    a, b = len(x1), len(x2)
    k = _input_pairs(x1, x2)
    t = torch.zeros_like(k) if ntk else None
    fan_in = float(x1.shape[1] * 9)
    n_conv = int(net.depth) + (1 if net.prepend_conv else 0)
    for layer in range(n_conv):
        k, t = _affine(net, k, t, conv3x3_mean, fan_in)
        v1 = var1[layer].repeat_interleave(b, 0)
        v2 = var2[layer].repeat(a, 1, 1)
        k, t = relu_step(k, v1[:, :, None, :, None] * v2[:, None, :, None, :], t)
        if layer >= n_conv - int(net.depth):     # the blocks pool; the prepended layer does not
            k = avgpool2_pairs(k)
            t = None if t is None else avgpool2_pairs(t)
        fan_in = float(net.width * 9)
    h, w = k.shape[1], k.shape[3]
    flat = lambda z: _diag(z).mean(dim=(1, 2))  # noqa: E731
    k, t = flat(k), (None if t is None else flat(t))
    return _affine(net, k, t, lambda z: z, float(net.width * h * w))


def kernels(x1: torch.Tensor, x2: torch.Tensor | None, net: KernelNet, get: str = "ntk",
            max_block: int = 2 ** 24) -> torch.Tensor:
    """The infinite-width kernel `get` ('ntk' or 'nngp') between x1 (n1, C, H, W) and x2 (n2, ...) (x2 None = x1),
    shape (n1, n2), in x1's dtype (KIP enables float64: pass float64 images). Differentiable in both inputs."""
    if get not in ("ntk", "nngp"):
        raise DdflowError(f"kernel get={get!r}; allowed: ntk, nngp")
    x2 = x1 if x2 is None else x2
    if net.arch == "fc":
        k, t = fc_kernels(x1, x2, net, ntk=get == "ntk")
        return t if get == "ntk" else k
    if x1.dim() != 4 or x2.dim() != 4:
        raise DdflowError(f"the conv kernel needs (N, C, H, W) images, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    var1 = self_variances(x1, net, max_block)
    var2 = var1 if x2 is x1 else self_variances(x2, net, max_block)
    per = (x1.shape[2] * x1.shape[3]) ** 2
    rows = []
    b_step = max(1, min(len(x2), max_block // per))
    a_step = max(1, max_block // (per * b_step))
    for i in range(0, len(x1), a_step):
        cols = []
        for j in range(0, len(x2), b_step):
            xa, xb = x1[i:i + a_step], x2[j:j + b_step]
            k, t = conv_pair_kernels(xa, xb, net, [v[i:i + a_step] for v in var1],
                                     [v[j:j + b_step] for v in var2], ntk=get == "ntk")
            cols.append((t if get == "ntk" else k).reshape(len(xa), len(xb)))
        rows.append(torch.cat(cols, 1))
    return torch.cat(rows, 0)


def self_variances(x: torch.Tensor, net: KernelNet, max_block: int) -> list[torch.Tensor]:
    """Variances before each Relu for every image of x, the self pairs taken `max_block` numbers at a time."""
    per = (x.shape[2] * x.shape[3]) ** 2
    step = max(1, max_block // per)
    blocks = []
    for i in range(0, len(x), step):
        xi = x[i:i + step]
        r: list[torch.Tensor] = []
        _self_pairs(xi, net, r)
        blocks.append(r)
    return [torch.cat([blk[layer] for blk in blocks]) for layer in range(len(blocks[0]))]


def _self_pairs(x: torch.Tensor, net: KernelNet, record: list) -> None:
    """The recursion on the pairs (x_i, x_i) of a block, recording each image's variances before every Relu."""
    k = torch.einsum("nchw,ncHW->nhHwW", x, x) / x.shape[1]
    n_conv = int(net.depth) + (1 if net.prepend_conv else 0)
    for layer in range(n_conv):
        k, _ = _affine(net, k, None, conv3x3_mean, 0.0)
        v = _diag(k)
        record.append(v)
        k, _ = relu_step(k, v[:, :, None, :, None] * v[:, None, :, None, :], None)
        if layer >= n_conv - int(net.depth):
            k = avgpool2_pairs(k)
