"""The network table (ddflow.nets.registry): every entry builds exactly the network its factory built before the
nets/ package existed. EXPECTED was computed at commit 34680a3 from the old factories (ddflow/nets.py `build_net`,
ddflow/nets_xarch.py `build_eval_net`, `build_frepo_conv`), each with torch.Generator().manual_seed(7), 10 classes,
1-channel 28 px input (ConvNetD6/D7/D8 need 3-channel 64/128/256 px to keep a 1x1 map): the state dict's names,
shapes and dtypes (a digest), a position-weighted sum and the sum of squares of every value (float64). A different
draw order, distribution or layer order changes the sums far beyond the tolerance; the tolerance only absorbs
last-bit differences between CPUs' vectorised kernels (the bit-exact comparison was done when moving)."""
import hashlib

import pytest
import torch
from torch import nn

from ddflow.errors import DdflowError
from ddflow.nets import build_net, net_names, register_nets
from ddflow.nets import registry as net_registry

SIZES = {"ConvNetD6": (3, 64), "ConvNetD7": (3, 128), "ConvNetD8": (3, 256)}
EXPECTED = {
    "ConvNet": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetD1": ("a1e1ecd136bd", 464.68199005631215, 179.81633111881726),
    "ConvNetD2": ("6ec0ad9166d7", 1450.0274717743353, 350.5523462387517),
    "ConvNetD3": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetD4": ("df1151cfb39a", 5079.021770417001, 691.8957675859747),
    "ConvNetD5": ("e1fb25508150", 7447.333283416893, 862.5304290038549),
    "ConvNetD6": ("b7ddb30f9185", 10462.812698403459, 1029.7303938154398),
    "ConvNetD7": ("849d145a9a2f", 13852.777372947616, 1200.3537533935385),
    "ConvNetD8": ("ed8c85bdfd66", 17909.779278429945, 1370.9864211967326),
    "ConvNetW32": ("8a2babae2540", 721.62374449569, 132.30739585822064),
    "ConvNetW64": ("d9a3192691cc", 1406.9131766423682, 261.58846171783927),
    "ConvNetW128": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetW256": ("4d66f0185c4b", 5787.142407991891, 1037.8070791929829),
    "ConvNetW512": ("7fa12230846b", 11620.72002302006, 2073.4905201067663),
    "ConvNetW1024": ("8562734f4bbf", 23088.745091292803, 4144.301379017338),
    "ConvNetAS": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetAR": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetAL": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetASwish": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetASwishBN": ("91e80d1f2040", 9330.725073047126, 905.2972831073045),
    "ConvNetNN": ("16a599856551", 51.01439096420504, 137.29728310730434),
    "ConvNetBN": ("91e80d1f2040", 9330.725073047126, 905.2972831073045),
    "ConvNetLN": ("ef99da6c80e2", 798796.1986637972, 172169.29728310736),
    "ConvNetIN": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetGN": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetNP": ("7e9ac1fddf8c", 2951.0032774938854, 521.2675315319528),
    "ConvNetMP": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetAP": ("408e512206b5", 2956.1986637973732, 521.2972831073045),
    "ConvNetKIP": ("9b53947fdebc", 14.604148205166988, 1072.3013790173384),
    "MLP": ("24fba6c5cb5e", -20.965788243348893, 89.05296862535258),
    "LeNet": ("cc002b1e156a", -18.92220043287845, 79.14291534342041),
    "AlexNet": ("b2c61fe80eb4", -13.832443361928553, 325.9163871096407),
    "AlexNetBN": ("497b34624bcc", 38182.22770997061, 2245.916387109641),
    "VGG11": ("e50596635d11", 60599.89528488572, 3675.040237641238),
    "VGG11BN": ("e851b58e2859", 205400.31708071078, 6427.040237641238),
    "ResNet18": ("d7d4bd2555c1", 205209.43781359922, 6403.404335112271),
    "ResNet18BN": ("69a4a8d2472f", 808773.7883566031, 11203.404335112271),
    "ResNet18_AP": ("1a071a4e927f", 205077.43333440204, 6403.393091114087),
    "ResNet18BN_AP": ("3433ddbeb0e9", 808513.6194962728, 11203.393091114087),
    "FRePoConv": ("2fcfea8b60ae", 7108.465191619507, 1677.4254190992951),
}


def fingerprint(net: nn.Module) -> tuple[str, float, float]:
    arch = hashlib.sha256()
    s1 = s2 = 0.0
    for t, (k, v) in enumerate(net.state_dict().items()):
        arch.update(f"{k}{tuple(v.shape)}{v.dtype};".encode())
        x = v.detach().double().flatten()
        w = (t + 1) + torch.arange(x.numel(), dtype=torch.float64) / max(x.numel(), 1)
        s1 += float((x * w).sum())
        s2 += float((x * x).sum())
    return arch.hexdigest()[:12], s1, s2


def test_the_table_holds_the_three_old_families_and_the_bilevel_one():
    from ddflow.nets import bilevel, kip, rfad
    # DD's and LD's (pinned in test_dd.py), RFAD's (test_rfad.py), KIP's (test_infinite_kernels.py)
    assert set(net_names()) == set(EXPECTED) | set(bilevel.NETS) | set(rfad.NETS) | set(kip.NETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_table_entry_draws_the_same_network_as_its_old_factory(name):
    channels, size = SIZES.get(name, (1, 28))
    arch, s1, s2 = fingerprint(build_net(name, channels, 10, size, torch.Generator().manual_seed(7)))
    want_arch, want_s1, want_s2 = EXPECTED[name]
    assert arch == want_arch
    assert s1 == pytest.approx(want_s1, rel=1e-9, abs=1e-9) and s2 == pytest.approx(want_s2, rel=1e-9, abs=1e-9)


def test_a_family_joins_the_table_in_one_call_and_names_stay_unique(monkeypatch):
    monkeypatch.setattr(net_registry, "TABLE", dict(net_registry.TABLE))

    def tiny(channels, classes, im_size, generator=None):
        net = nn.Sequential(nn.Flatten(), nn.Linear(channels * im_size * im_size, classes))
        if generator is not None:
            with torch.no_grad():
                net[1].weight.copy_(torch.rand(net[1].weight.shape, generator=generator))
        return net

    register_nets({"Tiny": tiny})
    a = build_net("Tiny", 1, 3, 4, torch.Generator().manual_seed(0))
    b = build_net("Tiny", 1, 3, 4, torch.Generator().manual_seed(0))
    assert torch.equal(a[1].weight, b[1].weight) and a(torch.zeros(2, 1, 4, 4)).shape == (2, 3)
    with pytest.raises(DdflowError, match="Tiny already registered"):
        register_nets({"Tiny": tiny})
    with pytest.raises(DdflowError, match="ConvNet already registered"):
        register_nets({"ConvNet": tiny})


def test_unknown_name_lists_the_table():
    with pytest.raises(DdflowError, match="unknown network 'ConvNetXYZ'; known: ConvNet, .*ResNet18.*FRePoConv"):
        build_net("ConvNetXYZ", 3, 10, 32)


def test_frepo_conv_options_reach_its_factory():
    net = build_net("FRePoConv", 3, 10, 32, width=4, depth=2, norm="none")
    assert (net.depth, net.width, net.norm) == (2, 4, "none")
