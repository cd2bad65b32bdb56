import pytest
import torch
from torch import nn

from ddflow.errors import DdflowError
from ddflow.nets import NET_NAMES, build_net, parse_net


@pytest.mark.parametrize("channels,size,feat", [(1, 28, 2048), (3, 32, 2048), (3, 64, 8192)])
def test_convnet_feature_and_logit_shapes(channels, size, feat):
    net = build_net("ConvNet", channels, 10, size)
    x = torch.randn(2, channels, size, size)
    assert net.embed(x).shape == (2, feat)
    assert net(x).shape == (2, 10)
    assert net.classifier.in_features == feat


def test_first_conv_pads_3_only_for_single_channel_inputs():
    mnist = build_net("ConvNet", 1, 10, 28)
    cifar = build_net("ConvNet", 3, 10, 32)
    convs = [m for m in mnist.modules() if isinstance(m, nn.Conv2d)]
    assert [c.padding for c in convs] == [(3, 3), (1, 1), (1, 1)]
    assert all(c.padding == (1, 1) for c in cifar.modules() if isinstance(c, nn.Conv2d))
    # 28 + 2*3 - 2 = 32 after the first conv: after three 2x2 pools, 4x4
    assert mnist.features(torch.randn(1, 1, 28, 28)).shape == (1, 128, 4, 4)


def test_default_convnet_is_width128_depth3_instancenorm_as_groupnorm_relu_avgpool():
    net = build_net("ConvNet", 3, 10, 32)
    kinds = [type(m) for m in net.features]
    assert kinds == [nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.AvgPool2d] * 3
    norms = [m for m in net.features if isinstance(m, nn.GroupNorm)]
    assert all(n.num_groups == 128 and n.num_channels == 128 and n.affine for n in norms)
    assert all(m.out_channels == 128 and m.bias is not None for m in net.features if isinstance(m, nn.Conv2d))


def test_named_variants_change_one_thing():
    assert parse_net("ConvNetD4").depth == 4
    assert parse_net("ConvNetW64").width == 64
    assert parse_net("ConvNetBN").norm == "batchnorm"
    assert parse_net("ConvNetNN").norm == "none"
    assert parse_net("ConvNetMP").pool == "maxpooling"
    assert parse_net("ConvNetAS").act == "sigmoid"
    assert parse_net("ConvNetKIP").width == 1024 and parse_net("ConvNetKIP").norm == "none"
    d4 = build_net("ConvNetD4", 3, 10, 32)
    assert d4.embed(torch.randn(1, 3, 32, 32)).shape == (1, 128 * 2 * 2)
    bn = build_net("ConvNetBN", 3, 10, 32)
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    ln = build_net("ConvNetLN", 1, 10, 28)
    assert ln(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    for name in NET_NAMES:  # every registered name builds (D6-D8 pool 32x32 to nothing: a clear error)
        if name in ("ConvNetD6", "ConvNetD7", "ConvNetD8"):
            with pytest.raises(DdflowError, match="pools"):
                build_net(name, 3, 10, 32)
            build_net(name, 3, 10, 256)
        else:
            build_net(name, 3, 10, 32)


def test_unknown_network_name_is_a_clear_error():
    with pytest.raises(DdflowError, match="ConvNetXYZ"):
        parse_net("ConvNetXYZ")


def test_generator_initialisation_is_deterministic_and_uses_default_bounds():
    a = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(3))
    b = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(3))
    c = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(4))
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    conv = a.features[0]
    bound = 1 / (1 * 9) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert torch.equal(a.features[1].weight, torch.ones(128))


def test_embed_chunked_is_embed_of_the_indexed_images_chunk_by_chunk():
    from ddflow.nets import embed_chunked
    net = build_net("ConvNetW32", 1, 10, 28, torch.Generator().manual_seed(0)).eval()
    x, index = torch.rand(13, 1, 28, 28), torch.tensor([12, 0, 5, 5, 7, 3, 1])
    with torch.no_grad():
        assert torch.allclose(embed_chunked(net, x, index, chunk=3), net.embed(x[index]), atol=1e-6)
        assert torch.allclose(embed_chunked(net, x, chunk=4, device="cpu"), net.embed(x), atol=1e-6)
    with pytest.raises(DdflowError, match="chunk must be >= 1"):
        embed_chunked(net, x, chunk=0)
