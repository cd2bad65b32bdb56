"""ddflow's networks by role: `build_net(name, ...)` over one table (registry.py) of every family: DC's ConvNet and
its variants (convnet.py), DC's other evaluation networks (xarch.py), FRePo's Conv (frepo.py); what they share
(base.py: the FeatureClassifier interface, seeded initialisation, chunked features)."""
from .base import FeatureClassifier, embed_chunked, has_batchnorm, init_params_
from .convnet import NET_NAMES, ConvNet, ConvNetSpec, parse_net
from .frepo import FRePoConv, build_frepo_conv, frepo_depth, frepo_init_
from .registry import build_net, net_names, register_nets
from .xarch import XARCH_NETS

__all__ = [
    "NET_NAMES", "XARCH_NETS", "ConvNet", "ConvNetSpec", "FRePoConv", "FeatureClassifier", "build_frepo_conv",
    "build_net", "embed_chunked", "frepo_depth", "frepo_init_", "has_batchnorm", "init_params_", "net_names",
    "parse_net", "register_nets",
]
