"""The paired initial draw: one order of every class's training images per (dataset, seed), shared by Random and every
method that starts from real images.

"Method minus Random" should measure the method, not the luck of its initial images. So the runner hands each method
the order of the cell's dataset and seed (ddflow.stages.distill) and a method starting from n real images per class
takes the first n of each class's order (`InitOrder.first`): Random's set at IPC n is exactly the initial set of
DM, DSA, MTT, ... at IPC n and the same seed. The order does not depend on the IPC, so the draws are nested: Random
at IPC 10 contains Random at IPC 1. Class c's order is a uniform random permutation of its training images (the
official codes' `np.random.permutation(indices_class[c])[:n]` draws from the same distribution), from the generator
seeded by ("init", dataset, seed, c): it does not depend on the method or on the other classes.

A method that holds the validation split out (ddflow.data.validation.carve) sees the same order with the held-out
images removed: its first n are Random's first n except where one of those is a validation image, which is replaced
by the next image of the order that it can see (`InitOrder.replaced` counts them; the record keeps the count).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..errors import DdflowError
from ..seeding import generator
from .real import RealData


@dataclasses.dataclass(frozen=True)
class InitOrder:
    """Per class: `rows[c]` = indices into the x_train the order was made for, class c's images in the paired order;
    `positions[c]` = each one's position in the order of the full training split (0, 1, 2, ... when nothing is held
    out)."""
    dataset: str
    seed: int
    rows: tuple[torch.Tensor, ...]
    positions: tuple[torch.Tensor, ...]

    def first(self, n: int) -> torch.Tensor:
        """The first n images of every class's order, class after class: (classes * n,) indices into x_train."""
        short = [c for c, r in enumerate(self.rows) if len(r) < n]
        if short:
            raise DdflowError(f"paired draw of {self.dataset}: {n} images per class asked, class {short[0]} has "
                              f"{len(self.rows[short[0]])} to draw from")
        return torch.cat([r[:n] for r in self.rows])

    def replaced(self, n: int) -> int:
        """How many of the full split's first n per class (Random's images) are held out of this order, i.e. how many
        images of first(n) differ from Random's."""
        return int(sum(n - int((p[:n] < n).sum()) for p in self.positions))


def class_order(labels: torch.Tensor, c: int, dataset: str, seed: int) -> torch.Tensor:
    """Indices of class c's images in the full training split (labels = its labels), in the paired order."""
    idx = torch.nonzero(labels == c).flatten()
    return idx[torch.randperm(len(idx), generator=generator("init", dataset, seed, c))]


def init_order(data: RealData, dataset: str, seed: int) -> InitOrder:
    """The paired order of `data`'s training images for (dataset, seed). `data` is the full training split, or one
    carved by ddflow.data.validation.carve (its `train_rows` say where its rows sit in the full split)."""
    y = data.y_train.detach().cpu().long()
    if data.train_rows is None:
        full, where = y, torch.arange(len(y))
    else:
        rows = torch.as_tensor(np.asarray(data.train_rows), dtype=torch.long)
        if data.y_val is None or len(rows) != len(y):
            raise DdflowError("paired draw: carved data needs its validation labels and one train_rows entry per "
                              "training image")
        size = len(rows) + len(data.y_val)
        held = torch.ones(size, dtype=torch.bool)
        held[rows] = False
        full = torch.empty(size, dtype=torch.long)
        full[rows], full[held] = y, data.y_val.detach().cpu().long()
        where = torch.full((size,), -1, dtype=torch.long)
        where[rows] = torch.arange(len(rows))
    out_rows, out_pos = [], []
    for c in range(data.info.classes):
        mapped = where[class_order(full, c, dataset, seed)]
        seen = mapped >= 0
        out_rows.append(mapped[seen])
        out_pos.append(torch.nonzero(seen).flatten())
    return InitOrder(dataset, int(seed), tuple(out_rows), tuple(out_pos))
