"""Herding: per class, greedily pick the real images whose running feature mean tracks the class mean
(Welling 2009; as in DC's Table 1 baseline and IDC's coreset.py herding_select). Features are embed() of a ConvNet
trained on the full training split, produced once per dataset by its own rule (ddflow.stages.featnet)."""
from __future__ import annotations

import torch

from ..nets import embed_chunked
from ..records.featnet import load_feature_net
from .base import RealSelection
from .registry import register


def herding_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (into `features`) of k distinct samples chosen greedily: at step i the sample closest to
    (i + 1) * mean - sum(selected)."""
    mu = features.mean(0)
    chosen: list[int] = []
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    total = torch.zeros_like(mu)
    for i in range(k):
        target = mu * (i + 1) - total
        dist = ((features - target) ** 2).sum(1)
        dist[~available] = float("inf")
        j = int(dist.argmin())
        chosen.append(j)
        available[j] = False
        total = total + features[j]
    return torch.tensor(chosen, dtype=torch.long)


@register("herding")
class Herding(RealSelection):
    requires = ("feature_net",)
    pairing: dict[str, str] = {}  # a deterministic choice by features, not a random draw

    @torch.no_grad()
    def init(self) -> None:
        net = load_feature_net(self.inputs["feature_net"], self.data.info, self.device).eval()
        picks = []
        for idx in self.data.indices_per_class():
            feats = embed_chunked(net, self.data.x_train, idx, 1000, self.device)
            picks.append(idx[herding_select(feats, self.ipc).to(idx.device)])
        self.indices = torch.cat(picks)
