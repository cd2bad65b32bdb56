"""Every network by name: one table (name -> factory) and `build_net` over it.

A factory is `factory(channels, classes, im_size, generator=None, **options) -> nn.Module`; with a generator it draws
the network's initialisation from it (deterministic), without one PyTorch's default initialisation applies. Each
family module exports its own `NETS = {name: factory}` dict; a family joins the table with one line in FAMILIES
below (or `register_nets(NETS)` at run time, e.g. from a test). Names are the official code's (get_network's names
for DC's networks, FRePoConv for FRePo's Conv), and one name belongs to one family.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..errors import DdflowError
from . import bilevel, convnet, frepo, kip, rfad, xarch

Factory = Callable[..., nn.Module]
TABLE: dict[str, Factory] = {}


def register_nets(nets: dict[str, Factory]) -> None:
    """Add a family's `{name: factory}` to the table; a name already taken is an error (names stay unique)."""
    taken = sorted(set(nets) & set(TABLE))
    if taken:
        raise DdflowError(f"network name(s) {', '.join(taken)} already registered")
    TABLE.update(nets)


FAMILIES = (
    convnet.NETS,  # DC's ConvNet and its named variants
    xarch.NETS,    # DC's other evaluation networks (cross-architecture)
    frepo.NETS,    # FRePo's Conv
    bilevel.NETS,  # DD's and LD's LeNet (as LeNetDD) and AlexCifarNet (LRN)
    rfad.NETS,     # RFAD's Gaussian-initialised ConvNets (they draw their own initialisation)
    kip.NETS,      # KIP's finite ConvNets (standard or NTK parameterisation; their own initialisation)
)
for _family in FAMILIES:
    register_nets(_family)


def net_names() -> tuple[str, ...]:
    return tuple(TABLE)


def build_net(name: str, channels: int, classes: int, im_size: int, generator: torch.Generator | None = None,
              device: str | torch.device = "cpu", **options: Any) -> nn.Module:
    """The network `name` for `channels` x `im_size` x `im_size` inputs and `classes` outputs, on `device`;
    `options` go to its factory (e.g. FRePoConv's width, depth, norm)."""
    if name not in TABLE:
        raise DdflowError(f"unknown network {name!r}; known: {', '.join(TABLE)}")
    net = TABLE[name](channels, classes, im_size, generator=generator, **options)
    # DM, DC and DSA build a fresh net every iteration: no stream synchronisation per parameter (runtime.to_device)
    return net.to(device, non_blocking=torch.device(device).type == "cuda")
