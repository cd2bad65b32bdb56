"""The feature-net checkpoint (`results/nets/{dataset}/{net}-full.pt`, written by ddflow.stages.featnet): a ConvNet
trained on a dataset's full training split, its state dict, test accuracy and settings; herding and the ISA
analyses embed images with it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data import DatasetInfo
from ..errors import DdflowError
from ..io import load_pt, save_pt
from ..nets import build_net

FEATNET_FORMAT = "ddflow.featnet/1"


def save_feature_net(out: str | Path, net: str, dataset: str, state_dict: dict[str, torch.Tensor],
                     **fields: Any) -> dict[str, Any]:
    """Write a feature-net checkpoint (`fields`: test_accuracy, settings, provenance); returns what was written."""
    obj = {"format": FEATNET_FORMAT, "net": net, "dataset": dataset, "state_dict": state_dict, **fields}
    save_pt(obj, out)
    return obj


def load_feature_net(path: str | Path, info: DatasetInfo, device: torch.device) -> torch.nn.Module:
    """The network of a feature-net checkpoint of `info`'s dataset, on `device`."""
    obj = load_pt(path, "feature net")
    if not isinstance(obj, dict) or obj.get("format") != FEATNET_FORMAT:
        raise DdflowError(f"{path}: not a ddflow feature net file ({FEATNET_FORMAT})")
    if obj["dataset"] != info.name:
        raise DdflowError(f"{path}: feature net of dataset {obj['dataset']!r}, expected {info.name!r}")
    net = build_net(obj["net"], info.channels, info.classes, info.size)
    net.load_state_dict(obj["state_dict"])
    return net.to(device)
