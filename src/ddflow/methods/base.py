"""The method interface: every distillation method is one file with one subclass of Method.

The runner (ddflow.stages.distill) owns everything around the algorithm: data loading and preprocessing, seeding, the
iteration loop, progress, resume files and the output record (ddflow.records). A method states what it needs
(`protocols`, `requires`, its `preprocessing` and the space of its result), the names of its mutable state
(`state`), its step and its result.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch

from ..data import DatasetInfo, RealData
from ..data.paired import InitOrder
from ..data.spaces import Prep
from ..errors import DdflowError
from ..hparams import check_values


class Method:
    #: evaluation protocols that fit this method's output (the first is its default)
    protocols: ClassVar[tuple[str, ...]] = ("dc",)
    #: whether its sets store learned labels ((N, classes)): the robust scores then ask for a `{protocol}-hard` cell
    #: (ddflow.protocols.regimes); what a record holds is read from the record itself
    learned_labels: ClassVar[bool] = False
    #: named extra inputs the workflow must produce first, e.g. ("feature_net",)
    requires: ClassVar[tuple[str, ...]] = ()
    #: a variant that should share its base method's random numbers in the distillation loop (networks, real
    #: batches, augmentation; the initial set and the evaluation models are shared by every method already),
    #: so that "with vs without" comparisons differ only by the variant itself: the base method id
    paired_with: ClassVar[str | None] = None
    method_id: ClassVar[str]
    #: attributes that step() changes, saved into and restored from the resume file generically: tensors (copied
    #: in place), objects with state_dict() (optimisers, modules, samplers), lists of those, generators, and plain
    #: values (deep-copied)
    state: ClassVar[tuple[str, ...]] = ()
    #: the space of result()['images'] when the method distils in the normalised data: 'normalized', or 'pixels'
    #: for [0, 1] images (IDC); a method whose preprocessing is a ZCA distils in 'zca' (set by the runner)
    result_space: ClassVar[str] = "normalized"
    #: the values its hparams' `init` may take (config.check and the runner refuse any other before work starts)
    inits: ClassVar[tuple[str, ...]] = ("real", "noise")
    #: how its initial set relates to Random's (ddflow.data.paired), per init: "same" (Random's images for the seed
    #: and IPC), "nested" (more or fewer images of the same paired order: one set contains the other), "own" (not
    #: drawn from the paired order: noise, k-means, learned bases); an init not named is "own"
    pairing: ClassVar[dict[str, str]] = {"real": "same"}

    @classmethod
    def check_hparams(cls, hp: dict[str, Any], where: str, snapshots: bool = True) -> None:
        """The method's resolved hyperparameters checked before any job: by ddflow.config.check for every
        configured cell (parse time) and by ddflow.settings.distill_settings for a tool's run. Default: the ranges
        every setting keeps (hparams.check_values; `snapshots` within the run unless False) and `init` one of the
        method's `inits`; a method with options of its own extends it (super() first). Errors start with `where`."""
        check_values(hp, where, cls.inits, snapshots=snapshots)

    @classmethod
    def init_pairing(cls, hp: dict[str, Any], ipc: int) -> str:
        """'same', 'nested' or 'own' (see `pairing`) for these hyperparameters and IPC; recorded with the set and
        printed beside the paired difference to Random in the tables."""
        return cls.pairing.get(str(hp.get("init", "real")), "own")

    @classmethod
    def seed_id(cls) -> str:
        """The name random streams are seeded from (ddflow.seeding)."""
        return cls.paired_with or cls.method_id

    def __init__(self, hp: dict[str, Any], data: RealData, ipc: int, generator: torch.Generator,
                 device: torch.device, inputs: dict[str, str] | None = None, init_order: InitOrder | None = None):
        """`init_order`: the paired order of `data`'s training images for the cell's dataset and seed (the runner
        gives it; ddflow.data.paired); without it (a method built outside the runner) the initial real images come
        from `generator`, as every other draw."""
        self.hp, self.data, self.ipc, self.generator, self.device = hp, data, ipc, generator, device
        self.inputs = inputs or {}
        self.init_order = init_order
        self.classes = data.info.classes

    @property
    def iterations(self) -> int:
        """Number of step() calls; 0 for selection methods that finish in init()."""
        return int(self.hp.get("iterations", 0))

    @classmethod
    def preprocessing(cls, hp: dict[str, Any], info: DatasetInfo) -> Prep:
        """The data space the method distils in; the runner applies it before init() and records it. Default: the
        hparams' `prep` (raw when absent) with its `zca_eps`."""
        return Prep(hp.get("prep", "raw"), hp.get("zca_eps"))

    def init(self) -> None:
        raise NotImplementedError

    def step(self, it: int) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything step() changes (the attributes named in `state`), so a resumed run continues exactly (the
        runner adds the generator)."""
        return {name: _save(getattr(self, name)) for name in self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.state:
            setattr(self, name, _restore(getattr(self, name, None), state[name]))

    def result(self) -> dict[str, Any]:
        """images (N, C, H, W) float32 in the method's space (`result_space`, or the ZCA of its preprocessing),
        labels (N,) int64 or (N, classes) learned / soft, optionally `lr` (a learned evaluation lr) and `factor`
        (multi-formation), plus any method extras; the runner turns it into a ddflow.records.DistilledSet."""
        raise NotImplementedError

    # shared helpers -------------------------------------------------------------------------------------------
    def class_labels(self) -> torch.Tensor:
        return torch.arange(self.classes).repeat_interleave(self.ipc)

    def initial_images(self) -> torch.Tensor:
        """The starting synthetic set per hp['init']: 'real' = IPC real images per class, Random's for the seed
        (paired_real_indices), 'noise' = N(0, 1) in the normalised space (the official torch.randn init). Returned
        as a leaf tensor on the device."""
        info = self.data.info
        if self.hp["init"] not in ("real", "noise"):
            raise DdflowError(f"{self.method_id}: init {self.hp['init']!r} unknown; allowed: real, noise")
        if self.hp["init"] == "real":
            images = self.data.x_train[self.paired_real_indices(self.ipc)]
        else:
            images = torch.randn((self.classes * self.ipc, info.channels, info.size, info.size),
                                 generator=self.generator)
        return images.detach().clone().to(self.device).requires_grad_(True)

    def dsa_strategy(self) -> str:
        """hp['dsa_strategy'], with 'auto' meaning the dataset's DSA strategy."""
        return self.data.info.strategy(self.hp["dsa_strategy"])

    def paired_real_indices(self, n: int) -> torch.Tensor:
        """The initial real images: the first n of every class's paired order (Random's n images for this seed),
        class after class: (classes * n,) indices into x_train. Only for the initial set; draws made later in the
        method's loop take random_real_indices."""
        if self.init_order is None:
            return self.random_real_indices(n)
        return self.init_order.first(n).to(self.data.y_train.device)

    def random_real_indices(self, n: int) -> torch.Tensor:
        """n distinct random training indices per class, class after class, from the method's own generator:
        (classes * n,)."""
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


def _save(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, torch.Generator):
        return value.get_state()
    if hasattr(value, "state_dict"):
        return value.state_dict()
    if isinstance(value, list) and value and all(hasattr(v, "state_dict") for v in value):
        return [v.state_dict() for v in value]
    if isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
        return [v.clone() for v in value]
    return copy.deepcopy(value)


def _restore(current: Any, saved: Any) -> Any:
    """The restored value of one state attribute; tensors and stateful objects are restored in place."""
    if isinstance(current, torch.Tensor):
        with torch.no_grad():
            current.copy_(saved.to(current.device))
        return current
    if isinstance(current, torch.Generator):
        current.set_state(saved)
        return current
    if hasattr(current, "load_state_dict"):
        current.load_state_dict(saved)
        return current
    if isinstance(current, list) and current and all(hasattr(v, "load_state_dict") for v in current):
        for obj, st in zip(current, saved):
            obj.load_state_dict(st)
        return current
    return copy.deepcopy(saved) if not isinstance(saved, list) else list(saved)
