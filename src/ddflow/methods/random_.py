"""Random: IPC real training images drawn uniformly per class (DC, ICLR 2021, Table 1 baseline)."""
from __future__ import annotations

from . import register
from .base import Method


@register("random")
class RandomSelection(Method):
    def init(self) -> None:
        self.indices = self.random_real_indices(self.ipc)

    def result(self) -> dict:
        return {"images": self.data.x_train[self.indices].cpu(), "labels": self.class_labels(),
                "train_indices": self.indices}
