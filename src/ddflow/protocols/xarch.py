"""Cross-architecture protocols: `{base}-{arch}` (e.g. `dc-resnet18`, `mtt-vgg11`, `dc-resnet18bn-ap`) is protocol
`base` with its network replaced by one of DC's other networks (ddflow.nets.xarch), so its cells stay
results/eval/{protocol}/... beside the ConvNet cells of `base`.

Which protocols admit which nets (ADMITTED): the three protocols that train by DC's evaluate_synset loop
(ddflow.protocols.dc: `dc`, `mtt`, `soft`) admit every net of ddflow.nets.xarch, as the official main.py / distill.py
evaluate their `model_eval_pool` (utils.py get_eval_pool 'M' and 'B') with that same loop and settings. `idc`
(multi-formation, IDC's own loop and models) and the kernel protocols `frepo` / `krr` (FRePo's Conv, KRR on its
features) admit none.

Settings: those of `base` for the method (protocols.yaml and the method's eval.<base>: epochs, augmentation, number
of models, learned lr for mtt), with `net` set to the architecture (ddflow.protocols.cell.protocol_settings). The
official code does the same: main.py takes epoch_eval_train and the augmentation from the method and dataset, not
from model_eval (get_daparam only changes the DC augmentation for ConvNetBN, which is not one of these nets).

BatchNorm nets (AlexNetBN, VGG11BN, ResNet18BN, ResNet18BN_AP): trained in train mode (batch statistics, running
averages updated per minibatch) and tested in eval mode (running averages), as utils.py epoch() sets net.train() /
net.eval(); they train by NetStack's loop (vmap cannot batch in-place running statistics).
"""
from __future__ import annotations

import torch

from ..data import RealData
from ..errors import DdflowError
from ..nets import XARCH_NETS
from ..records import DistilledSet
from .registry import PROTOCOLS, protocol

ADMITTED: dict[str, tuple[str, ...]] = {base: tuple(XARCH_NETS) for base in ("dc", "mtt", "soft")}


def protocol_id(base: str, net: str) -> str:
    """`dc` + `ResNet18BN_AP` -> `dc-resnet18bn-ap` (the wildcard allows lower case, digits and dashes)."""
    return f"{base}-{net.lower().replace('_', '-')}"


XARCH: dict[str, tuple[str, str]] = {protocol_id(b, n): (b, n) for b, nets in ADMITTED.items() for n in nets}


def column_protocol(base: str, net: str) -> str:
    """The protocol of one cross-architecture column: `base` itself for ConvNet (its own network), else the
    derived id; a net the base does not admit is an error."""
    if net == "ConvNet":
        return base
    if net not in ADMITTED.get(base, ()):
        raise DdflowError(f"protocol {base!r} does not admit network {net!r}; admitted: "
                          f"{', '.join(('ConvNet',) + ADMITTED.get(base, ()))}")
    return protocol_id(base, net)


def _derived(name: str, base: str, net: str):
    def evaluate(record: DistilledSet, data: RealData, settings: dict, generators,
                 device: torch.device) -> list[float]:
        return PROTOCOLS[base](record, data, {**settings, "net": net}, generators, device)
    evaluate.__name__ = f"evaluate_{name.replace('-', '_')}"
    evaluate.__doc__ = f"Protocol {base!r} on {net} (DC networks.py)."
    return evaluate


for _name, (_base, _net) in XARCH.items():
    protocol(_name)(_derived(_name, _base, _net))
