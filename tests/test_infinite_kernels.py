"""The infinite-width kernels (ddflow.ops.infinite_kernels) without neural-tangents: closed forms, exact identities
of the layer maps, finite networks converging at the 1/sqrt(width) rate, and the empirical NTK of a wide network."""
import math

import pytest
import torch
from torch.func import functional_call, jacrev

from ddflow.nets.kip import build_kip_net
from ddflow.ops.infinite_kernels import KernelNet, avgpool2_pairs, conv3x3_mean, kernels


def test_fc_depth1_closed_form_same_and_orthogonal_inputs():
    """KIP.ipynb FullyConnectedNetwork(depth 1), W_std sqrt(2), b_std 0.1, 'ntk' (cell 9sLlI8URoTGv); the recursions
    of neural-tangents stax/linear.py lines 906-910 (Dense) and stax/elementwise.py lines 441-448 (ABRelu(0, 1))."""
    d = 4
    x = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0]], dtype=torch.float64)   # |x|^2 / d = 1, orthogonal
    net = KernelNet("fc", depth=1)
    nngp, ntk = kernels(x, None, net, "nngp"), kernels(x, None, net, "ntk")
    w2, b2 = 2.0, 0.01
    v = w2 * 1.0 + b2                                   # first Dense, variance
    # same input: theta = 0, relu halves the variance and the ntk
    assert nngp[0, 0].item() == pytest.approx(w2 * v / 2 + b2)
    assert ntk[0, 0].item() == pytest.approx((w2 * v / 2 + b2) + w2 * v / 2)
    # orthogonal inputs: the first layer's covariance is b^2 only
    c = b2
    theta = math.atan2(math.sqrt(v * v - c * c), c)
    relu = (math.sqrt(v * v - c * c) + (math.pi - theta) * c) / (2 * math.pi)
    assert nngp[0, 1].item() == pytest.approx(w2 * relu + b2)
    assert ntk[0, 1].item() == pytest.approx(w2 * relu + b2 + w2 * c * (math.pi - theta) / (2 * math.pi))
    assert d == x.shape[1]


def _patches(f: torch.Tensor) -> torch.Tensor:
    """(P, C, H, W) -> (P, C*9, H, W) 3x3 zero-padded patches."""
    p, c, h, w = f.shape
    return torch.nn.functional.unfold(f, 3, padding=1).reshape(p, c * 9, h, w)


def _pair(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.einsum("pchw,pcHW->phHwW", f, g) / f.shape[1]


def test_conv_and_pool_maps_equal_the_kernels_of_explicit_features():
    """neural-tangents `_conv_kernel_full_spatial_shared` (stax/linear.py line 3115: diagonal filter 1/9, SAME zero
    padding) and `_pool_kernel` (line 3499, AvgPool 2x2 VALID) on a kernel of explicit features: the map equals the
    kernel of the features' 3x3 patches / of the pooled features (exact)."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    h = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    conv = conv3x3_mean(_pair(f, h))
    assert torch.allclose(conv, _pair(_patches(f), _patches(h)))
    pool = avgpool2_pairs(_pair(f, h))
    ap = torch.nn.functional.avg_pool2d
    assert torch.allclose(pool, _pair(ap(f, 2), ap(h, 2)))
    odd = torch.randn(1, 2, 7, 7, generator=g, dtype=torch.float64)   # VALID: the last row/column dropped
    assert torch.allclose(avgpool2_pairs(_pair(odd, odd)), _pair(ap(odd, 2), ap(odd, 2)))


def _feature_kernel(model, x, net):
    with torch.no_grad():
        phi = model.embed(x)
    return net.w_std ** 2 * phi @ phi.T / phi.shape[1] + net.b_std ** 2


@pytest.mark.parametrize("arch,size,depth", [("fc", 4, 2), ("conv", 4, 1)])
def test_finite_networks_converge_at_one_over_sqrt_width(arch, size, depth):
    """A random network's NNGP (readout of its last features) differs from the infinite one by O(1/sqrt(width)):
    quadrupling the width halves the mean relative error (within sampling noise)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 2, size, size, generator=g, dtype=torch.float64)
    net = KernelNet(arch, depth=depth)
    exact = kernels(x, None, net, "nngp")
    widths = (64, 256, 1024)
    errs = []
    for width in widths:
        e = []
        for s in range(6):
            m = build_kip_net(arch, 2, 1, size, width, depth, "ntk", generator=torch.Generator().manual_seed(s))
            e.append(((_feature_kernel(m.double(), x, net) - exact).norm() / exact.norm()).item())
        errs.append(sum(e) / len(e))
    # least-squares slope of log(error) against log(width): -1/2 expected
    lw = torch.tensor(widths, dtype=torch.float64).log()
    le = torch.tensor(errs, dtype=torch.float64).log()
    slope = (((lw - lw.mean()) * (le - le.mean())).sum() / (lw - lw.mean()).square().sum()).item()
    assert -0.75 < slope < -0.3, (errs, slope)
    assert errs[-1] < 0.15


def _empirical_ntk(model, x):
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)).sum(-1))(params)
    flat = torch.cat([j.reshape(len(x), -1) for j in jac.values()], 1)
    return flat @ flat.T


@pytest.mark.parametrize("arch,param,width", [("fc", "ntk", 1024), ("fc", "standard", 512), ("conv", "ntk", 256)])
def test_empirical_ntk_of_a_wide_network_matches(arch, param, width):
    """The empirical NTK (torch.func Jacobians, one output) of wide networks of nets/kip.py agrees with the infinite
    NTK within its Monte-Carlo error; 'standard' as neural-tangents stax/linear.py lines 912-917 (the finite
    network's NTK grows with the width, and so does the formula's)."""
    size, depth = 4, 1
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 1, size, size, generator=g, dtype=torch.float64)
    net = KernelNet(arch, depth=depth, parameterization=param, width=width)
    exact = kernels(x, None, net, "ntk")
    samples = []
    for s in range(8):
        m = build_kip_net(arch, 1, 1, size, width, depth, param, generator=torch.Generator().manual_seed(10 + s))
        samples.append(_empirical_ntk(m.double(), x))
    stack = torch.stack(samples)
    mean, se = stack.mean(0), stack.std(0) / math.sqrt(len(samples))
    assert torch.all((mean - exact).abs() <= 4 * se + 0.02 * exact.abs()), (mean, exact, se)
    assert ((mean - exact).norm() / exact.norm()).item() < 0.1


def test_conv_kernel_blocks_do_not_change_the_result_and_gradients_are_finite():
    """Blocking over image pairs (bounded memory) gives the same kernel; the (x, x) pairs, where sqrt(v v - k^2) = 0,
    have finite gradients (neural-tangents stax/elementwise.py `_sqrt` jvp, lines 1283-1290)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    net = KernelNet("conv", depth=2)
    full = kernels(x, y, net, "ntk")
    small = kernels(x, y, net, "ntk", max_block=256)
    assert torch.allclose(full, small)
    kernels(x, None, net, "ntk").sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_kernel_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    for arch in ("fc", "conv"):
        net = KernelNet(arch, depth=1)
        assert torch.autograd.gradcheck(lambda a: kernels(a, y, net, "ntk"), (x,))


def test_kip_convnet_shapes_and_parameter_count_match_nn_training():
    """nn_training.ipynb ConvNet(depth 3, width, prepend_conv_layer=True): Conv(width, 3x3) + Relu, then 3 x
    [Conv(width, 3x3), Relu, AvgPool 2x2], Flatten, Dense(classes): at 32 px the readout sees width x 4 x 4."""
    from ddflow.nets.kip import NETS
    width = 16
    net = build_kip_net("conv", 3, 10, 32, width, 3, "standard", prepend_conv=True)
    want = (3 * 9 * width + width) + 3 * (width * 9 * width + width) + (width * 16 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == want
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    three = build_kip_net("conv", 1, 10, 28, width, 3, "standard", prepend_conv=False)   # 'ConvNet3': 28->14->7->3
    assert three.classifier.weight.shape == (10, width * 9)
    assert set(NETS) == {"kip-convnet", "kip-convnet3"}
    fc = build_kip_net("fc", 1, 10, 28, width, 1)
    assert sum(p.numel() for p in fc.parameters()) == 784 * width + width + width * 10 + 10
