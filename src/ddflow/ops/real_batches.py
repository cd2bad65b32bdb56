"""Which real images a matching step uses, per class: a fresh random batch (DC/DSA/DM), or DREAM's
representative batch: the images nearest to the k-means centroids (k = real batch size) of the current network's
embed() features of the class, re-clustered every `every` matching steps (DREAM, ICCV 2023). `count: network`
(DREAM's condense.py: `if ot % args.interval == 0` inside the loop over one network's inner steps) restarts the
step count with each new network, so every network's first matching step clusters on that network; `count: global`
counts matching steps across networks."""
from __future__ import annotations

import torch
from torch import nn

from ..data import RealData
from ..errors import DdflowError
from ..nets import embed_chunked, has_batchnorm
from ..runtime import to_device
from .kmeans import representative_indices, representative_indices_batched

COUNTS = ("network", "global")


class RandomSampler:
    #: whether the step count passed to indices() restarts with each new network (DREAM's cadence, below)
    per_network = False

    def __init__(self, data: RealData, batch: int, generator: torch.Generator):
        self.data, self.generator = data, generator
        self.batch = min(batch, min(len(i) for i in data.indices_per_class()))

    def indices(self, net: nn.Module | None, step: int) -> torch.Tensor:
        """(classes, batch) training indices: a fresh random draw per class."""
        return torch.stack([idx[to_device(torch.randperm(len(idx), generator=self.generator)[:self.batch], idx.device)]
                            for idx in self.data.indices_per_class()])

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class RepresentativeSampler(RandomSampler):
    """DREAM: per class, the `batch` images nearest to k-means centroids of embed() features, k = batch."""

    def __init__(self, data: RealData, batch: int, generator: torch.Generator, every: int = 10,
                 pool: int | None = None, kmeans_iters: int = 100, count: str = "network"):
        super().__init__(data, batch, generator)
        if count not in COUNTS:
            raise DdflowError(f"representative.count {count!r} not in {COUNTS}")
        self.every, self.pool, self.kmeans_iters = every, pool, kmeans_iters
        self.per_network = count == "network"
        self.current: torch.Tensor | None = None

    @torch.no_grad()
    def recluster(self, net: nn.Module) -> torch.Tensor:
        # every module's own flag: DC's loop freezes the BatchNorm layers of a training net (main.py, "freeze the
        # running mu and sigma"); a net-wide train(True) afterwards would un-freeze them
        modes = [(m, m.training) for m in net.modules()]
        if has_batchnorm(net):  # features from the frozen statistics, without updating them
            net.eval()
        idxs = list(self.data.indices_per_class())  # a copy: the pooled path replaces entries
        if self.pool is None:  # all classes in one Lloyd loop: the same draws as class by class (kmeans_batched)
            feats = [embed_chunked(net, self.data.x_train, idx, 500) for idx in idxs]
            chosen = representative_indices_batched(feats, self.batch, [self.generator] * len(idxs),
                                                    self.kmeans_iters)
        else:  # quick preset: cluster a random subset; each class's subset is drawn before its k-means draws,
            chosen = []  # so class by class keeps the stream
            for i, idx in enumerate(idxs):
                if self.pool < len(idx):
                    idxs[i] = idx = idx[torch.randperm(len(idx), generator=self.generator)[:self.pool].to(idx.device)]
                feats = embed_chunked(net, self.data.x_train, idx, 500)
                chosen.append(representative_indices(feats, self.batch, self.generator, self.kmeans_iters))
        picks = [idx[c.to(idx.device)] for idx, c in zip(idxs, chosen)]
        for m, mode in modes:
            m.training = mode
        return torch.stack(picks)

    def indices(self, net: nn.Module | None, step: int) -> torch.Tensor:
        if self.current is None or step % self.every == 0:
            self.current = self.recluster(net)
        return self.current

    def state_dict(self) -> dict:
        return {"current": self.current.cpu() if self.current is not None else None}

    def load_state_dict(self, state: dict) -> None:
        cur = state.get("current")
        self.current = cur.to(self.data.y_train.device) if cur is not None else None


def make_sampler(hp: dict, data: RealData, generator: torch.Generator) -> RandomSampler:
    rep = hp.get("representative")
    if not rep:
        return RandomSampler(data, hp["batch_real"], generator)
    return RepresentativeSampler(data, hp["batch_real"], generator, every=rep.get("every", 10),
                                 pool=rep.get("pool"), kmeans_iters=rep.get("kmeans_iters", 100),
                                 count=rep.get("count", "network"))
