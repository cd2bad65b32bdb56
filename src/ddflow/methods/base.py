"""The method interface: every distillation method is one file with one subclass of Method.

The runner (ddflow.distill) owns everything around the algorithm: data loading, seeding, the iteration loop,
progress, resume files and the output format. A method only states its state, its step and its result.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..data import RealData


class Method:
    #: evaluation protocols that fit this method's output (the first is its default)
    protocols: ClassVar[tuple[str, ...]] = ("dc",)
    #: named extra inputs the workflow must produce first, e.g. ("feature_net",)
    requires: ClassVar[tuple[str, ...]] = ()
    #: a variant that should share its base method's random numbers (same initial set, same evaluation models),
    #: so that "with vs without" comparisons differ only by the variant itself: the base method id
    paired_with: ClassVar[str | None] = None
    method_id: ClassVar[str]

    @classmethod
    def seed_id(cls) -> str:
        """The name random streams are seeded from (ddflow.seeding)."""
        return cls.paired_with or cls.method_id

    def __init__(self, hp: dict[str, Any], data: RealData, ipc: int, generator: torch.Generator,
                 device: torch.device, inputs: dict[str, str] | None = None):
        self.hp, self.data, self.ipc, self.generator, self.device = hp, data, ipc, generator, device
        self.inputs = inputs or {}
        self.classes = data.info.classes

    @property
    def iterations(self) -> int:
        """Number of step() calls; 0 for selection methods that finish in init()."""
        return int(self.hp.get("iterations", 0))

    def init(self) -> None:
        raise NotImplementedError

    def step(self, it: int) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything step() changes, so a resumed run continues exactly (the runner adds the generator)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def result(self) -> dict[str, Any]:
        """images (N, C, H, W) float32 in the data's normalised space, labels (N,) int64 or (N, classes) soft,
        plus any method extras (e.g. a learned lr). A method that distils elsewhere says so with 'space'
        ('zca' with the 'zca' state dict, or 'pixels' for [0, 1]); see ddflow.prep."""
        raise NotImplementedError

    # shared helpers -------------------------------------------------------------------------------------------
    def class_labels(self) -> torch.Tensor:
        return torch.arange(self.classes).repeat_interleave(self.ipc)

    def initial_images(self) -> torch.Tensor:
        """The starting synthetic set per hp['init']: 'real' = IPC random real images per class, 'noise' = N(0, 1)
        in the normalised space (the official torch.randn init). Returned as a leaf tensor on the device."""
        info = self.data.info
        if self.hp["init"] == "real":
            images = self.data.x_train[self.random_real_indices(self.ipc)]
        else:
            images = torch.randn((self.classes * self.ipc, info.channels, info.size, info.size),
                                 generator=self.generator)
        return images.detach().clone().to(self.device).requires_grad_(True)

    def dsa_strategy(self) -> str:
        """hp['dsa_strategy'], with 'auto' meaning the dataset's DSA strategy."""
        strategy = self.hp["dsa_strategy"]
        return self.data.info.dsa_strategy if strategy == "auto" else strategy

    def random_real_indices(self, n: int) -> torch.Tensor:
        """n distinct random training indices per class, class after class: (classes * n,)."""
        picks = []
        for idx in self.data.indices_per_class():
            picks.append(idx[torch.randperm(len(idx), generator=self.generator)[:n]])
        return torch.cat(picks)


class RealSelection(Method):
    """A coreset baseline: init() picks `self.indices` (IPC real training images per class, class after class);
    nothing is optimised."""

    def result(self) -> dict[str, Any]:
        return {"images": self.data.x_train[self.indices].cpu(), "labels": self.class_labels(),
                "train_indices": self.indices.cpu()}
