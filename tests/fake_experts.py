"""Small generated expert trajectories (ConvNetW32 on mnist5k's shape) and their MTT manifest, for the trajectory
methods' tests: two experts of 4 epochs whose parameters drift by 1 % per epoch from a seeded ConvNet."""
from pathlib import Path

import torch

from ddflow.io import save_pt
from ddflow.nets import build_net
from ddflow.records.experts import EXPERT_FORMAT
from ddflow.stages.sampling import write_mtt_manifest


def write_fake_experts(folder: Path, seed: int) -> Path:
    """Two expert files under `folder` (seeds seed, seed + 1) and their manifest; returns the manifest's path."""
    paths = []
    for k in range(2):
        g = torch.Generator().manual_seed(seed + k)
        base = build_net("ConvNetW32", 1, 10, 28, g)
        params = {n: torch.stack([p.detach() + 0.01 * e * torch.randn(p.shape, generator=g) for e in range(5)])
                  for n, p in base.named_parameters()}
        save_pt({"format": EXPERT_FORMAT, "dataset": "mnist5k", "prep": "raw", "net": "ConvNetW32", "index": k,
                 "epochs": 4, "lr": [0.01] * 4, "settings": {}, "params": params}, folder / f"e{k}.pt")
        paths.append(str(folder / f"e{k}.pt"))
    write_mtt_manifest("mtt-m2-t2", "mnist5k", "raw", "ConvNetW32", paths, folder / "man.json")
    return folder / "man.json"
