"""Every random draw comes from a generator seeded from the names of what is being computed."""
from __future__ import annotations

import hashlib

import torch


def seed_for(*parts: object) -> int:
    """A stable 63-bit seed from (stage, method, dataset, ipc, seed, ...): same names, same seed, on every machine."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded by seed_for(*parts). Draws happen on the CPU and move to the device, so a
    cell gives the same numbers on every device."""
    g = torch.Generator()
    g.manual_seed(seed_for(*parts))
    return g
