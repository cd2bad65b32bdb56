"""DC's other evaluation networks (ddflow.nets.xarch) against the official definitions, counted by hand, and the
cross-architecture protocols (ddflow.protocols.xarch).

Parameter counts below are worked out from VICO-UoE/DatasetCondensation networks.py (commit 53f63a6) by hand:
conv = c_in * c_out * k * k (+ c_out bias), linear = in * out + out, every norm (GroupNorm(C, C) or BatchNorm2d,
affine) 2 * C."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ddflow.errors import DdflowError
from ddflow.nets import XARCH_NETS, build_net
from ddflow.protocols import PROTOCOLS
from ddflow.protocols.xarch import ADMITTED, XARCH, column_protocol, protocol_id
from ddflow.records import DistilledSet
from ddflow.stages.evaluate import evaluate_record as evaluate_cell
from ddflow.train import NetStack

# MLP: fc_1 (28*28 or 32*32*3 -> 128), fc_2 128 -> 128, fc_3 128 -> 10 (networks.py lines 17-30)
MLP_1 = 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
MLP_3 = 3072 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
# LeNet: conv 5x5 c -> 6, conv 5x5 6 -> 16, fc 400 -> 120 -> 84 -> 10
LENET_TAIL = 6 * 16 * 25 + 16 + 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10
LENET_1, LENET_3 = 1 * 6 * 25 + 6 + LENET_TAIL, 3 * 6 * 25 + 6 + LENET_TAIL
# AlexNet: 5x5 c -> 128, 5x5 128 -> 192, 3x3 192 -> 256, 256 -> 192, 192 -> 192, fc 192*4*4 -> 10
ALEX_TAIL = 128 * 192 * 25 + 192 + 192 * 256 * 9 + 256 + 256 * 192 * 9 + 192 + 192 * 192 * 9 + 192 + 3072 * 10 + 10
ALEX_3 = 3 * 128 * 25 + 128 + ALEX_TAIL
ALEXBN_3 = ALEX_3 + 2 * (128 + 192 + 256 + 192 + 192)
# VGG11: 3x3 convs 3->64, 64->128, 128->256, 256->256, 256->512, 3 x 512->512, each + norm (2C); fc 512 -> 10
VGG_CONVS = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
VGG11_3 = sum(a * b * 9 + b + 2 * b for a, b in VGG_CONVS) + 512 * 10 + 10
VGG11_1 = VGG11_3 - 2 * 64 * 9
# ResNet18 (no conv bias): stem 3x3 c -> 64 + norm; BasicBlocks; shortcut 1x1 + norm at each stage change
RES_BODY = (64 * 64 * 9 * 4 + 4 * 128                                       # stage 1: 2 blocks, 4 convs, 4 norms
            + 64 * 128 * 9 + 128 * 128 * 9 * 3 + 4 * 256 + 64 * 128 + 256    # stage 2 + shortcut
            + 128 * 256 * 9 + 256 * 256 * 9 * 3 + 4 * 512 + 128 * 256 + 512
            + 256 * 512 * 9 + 512 * 512 * 9 * 3 + 4 * 1024 + 256 * 512 + 1024)
RES18_3 = 3 * 64 * 9 + 128 + RES_BODY + 512 * 10 + 10          # = 11,173,962, the usual CIFAR ResNet-18
RES18_1 = 1 * 64 * 9 + 128 + RES_BODY + 512 * 10 + 10
RES18AP_3 = 3 * 64 * 9 + 128 + RES_BODY + 512 * 4 * 4 * 10 + 10   # classifier 512*4*4 (channel 3)
RES18AP_1 = 1 * 64 * 9 + 128 + RES_BODY + 512 * 3 * 3 * 10 + 10   # classifier 512*3*3 (channel 1)

COUNTS = {  # name: (params at 1 x 28 x 28, params at 3 x 32 x 32)
    "MLP": (MLP_1, MLP_3), "LeNet": (LENET_1, LENET_3),
    "AlexNet": (ALEX_3 - 2 * 128 * 25, ALEX_3), "AlexNetBN": (ALEXBN_3 - 2 * 128 * 25, ALEXBN_3),
    "VGG11": (VGG11_1, VGG11_3), "VGG11BN": (VGG11_1, VGG11_3),
    "ResNet18": (RES18_1, RES18_3), "ResNet18BN": (RES18_1, RES18_3),
    "ResNet18_AP": (RES18AP_1, RES18AP_3), "ResNet18BN_AP": (RES18AP_1, RES18AP_3),
}


def test_counts_cover_every_net():
    assert set(COUNTS) == set(XARCH_NETS)
    assert RES18_3 == 11_173_962


@pytest.mark.parametrize("name", sorted(XARCH_NETS))
@pytest.mark.parametrize("shape", [(1, 28), (3, 32)])
def test_forward_shape_and_parameter_count_match_the_official_definition(name, shape):
    c, size = shape
    net = build_net(name, c, 10, size, torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in net.parameters()) == COUNTS[name][0 if c == 1 else 1]
    net.eval()
    out = net(torch.randn(2, c, size, size))
    assert out.shape == (2, 10)
    assert net(torch.randn(2, c, size, size), embed=True).shape == (2, net.feature_dim)


def test_norms_as_official():
    """VGG11 / ResNet18 default to instance norm (GroupNorm(C, C)), the BN names to BatchNorm2d; AlexNet and
    LeNet and MLP have none (networks.py VGG(norm='instancenorm'), ResNet(norm='instancenorm'))."""
    def kinds(name):
        return {type(m) for m in build_net(name, 3, 10, 32).modules() if isinstance(m, (nn.GroupNorm,
                                                                                         nn.BatchNorm2d))}
    assert kinds("VGG11") == {nn.GroupNorm} and kinds("ResNet18") == {nn.GroupNorm}
    assert kinds("VGG11BN") == kinds("ResNet18BN") == kinds("AlexNetBN") == kinds("ResNet18BN_AP") == {nn.BatchNorm2d}
    assert kinds("AlexNet") == kinds("LeNet") == kinds("MLP") == set()
    gn = next(m for m in build_net("VGG11", 3, 10, 32).modules() if isinstance(m, nn.GroupNorm))
    assert gn.num_groups == gn.num_channels == 64


@pytest.mark.parametrize("name", ["LeNet", "ResNet18BN_AP"])
def test_initialisation_is_drawn_from_the_generator(name):
    a = build_net(name, 1, 10, 28, torch.Generator().manual_seed(3))
    b = build_net(name, 1, 10, 28, torch.Generator().manual_seed(3))
    c = build_net(name, 1, 10, 28, torch.Generator().manual_seed(4))
    for (n, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        if pa.dim() > 1:  # conv / linear weights: PyTorch's default bound 1/sqrt(fan_in)
            assert not torch.equal(pa, pc)
            assert pa.abs().max() <= 1 / pa[0].numel() ** 0.5


def test_unknown_net_and_bad_size_are_errors():
    with pytest.raises(DdflowError, match="unknown network"):
        build_net("ResNet50", 3, 10, 32)
    with pytest.raises(DdflowError, match="VGG11"):
        build_net("VGG11", 3, 10, 64)


def test_protocol_ids_and_admission():
    assert protocol_id("dc", "ResNet18BN_AP") == "dc-resnet18bn-ap"
    assert XARCH["mtt-vgg11"] == ("mtt", "VGG11")
    assert all(name in PROTOCOLS for name in XARCH)
    assert column_protocol("mtt", "ConvNet") == "mtt" and column_protocol("dc", "AlexNet") == "dc-alexnet"
    assert "idc" not in ADMITTED and "frepo" not in ADMITTED
    with pytest.raises(DdflowError, match="does not admit"):
        column_protocol("idc", "ResNet18")


def test_batchnorm_net_trains_in_train_mode_and_tests_in_eval_mode():
    """utils.py epoch(): net.train() for training, net.eval() for the test; running statistics move in training."""
    stack = NetStack(build_net("AlexNetBN", 1, 10, 28), [torch.Generator().manual_seed(i) for i in range(2)],
                     "cpu")
    assert stack.batching == "loop"
    before = stack.buffers["features.1.running_mean"].clone()
    stack.train(True).forward(torch.randn(2, 8, 1, 28, 28))
    after = stack.buffers["features.1.running_mean"]
    assert not torch.equal(before, after) and not torch.equal(after[0], after[1])
    stack.train(False)
    x = torch.randn(1, 4, 1, 28, 28, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1, -1)
    # eval: no batch statistics, so an image's logits do not depend on its batch (to float round-off of the batch
    # size's kernels)
    assert torch.allclose(stack.forward(x)[:, :1], stack.forward(x[:, :1]), rtol=1e-4, atol=1e-5)


def test_derived_protocol_evaluates_a_record(random_real):
    """`dc-lenet` = `dc` on LeNet: the settings' net is replaced, everything else is dc's."""
    data = random_real(2)
    record = DistilledSet(images=data.x_train, labels=data.y_train, method="random", dataset="mnist5k", ipc=2,
                          seed=0, mean=data.info.mean, std=data.info.std)
    settings = {"net": "ConvNet", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch": 256, "epochs": 2,
                "augment": "none", "models": 2}
    cell = evaluate_cell(record, "dc-lenet", settings, data, torch.device("cpu"))
    assert cell["protocol"] == "dc-lenet" and len(cell["accuracies"]) == 2


@pytest.mark.parametrize("name", ["MLP", "LeNet", "AlexNet", "VGG11", "ResNet18", "ResNet18_AP"])
def test_nets_without_batchnorm_run_batched_by_vmap_as_by_the_loop(name):
    """The GPU path (vmap over K stacked models) computes what the per-model loop computes."""
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    template = build_net(name, 1, 10, 28)
    vm = NetStack(template, gens, "cpu", batching="vmap")
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    lp = NetStack(template, gens, "cpu", batching="loop")
    x = torch.randn(2, 3, 1, 28, 28)
    assert torch.allclose(vm.forward(x), lp.forward(x), atol=1e-5)
