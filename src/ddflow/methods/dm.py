"""DM: distribution matching (Zhao & Bilen, WACV 2023; official main_DM.py).

Each iteration draws a fresh randomly initialised ConvNet (frozen), and for every class c minimises
    || mean embed(DSA_c(real_c)) - mean embed(DSA_c(syn_c)) ||^2
with one Siamese DSA draw per class shared by the real and the synthetic batch. One SGD step (momentum 0.5) on
the synthetic images per iteration; no network training. The instance-norm ConvNet treats every image
independently, so on a GPU all classes go through one batched forward instead of the official per-class loop (same
loss); on the CPU the loop is kept: its activations, a tenth of the size, are faster there (benchmarks/README.md).
`dm-dream` takes the real batch from DREAM's representative sampler, clustered on the iteration's network: at every
iteration with `count: network` (DREAM's cadence, each network's first step clusters), every 10 with `global`.
"""
from __future__ import annotations

import torch

from ..augment import DSA
from ..errors import DdflowError
from ..nets import build_net, has_batchnorm
from ..ops.real_batches import make_sampler
from .base import Method
from .registry import register


@register("dm")
class DM(Method):
    state = ("images", "opt", "sampler")
    per_class_forward: bool | None = None  # None: class by class on the CPU, one batched forward elsewhere (loss())

    def init(self) -> None:
        hp, info = self.hp, self.data.info
        self.images = self.initial_images()
        self.opt = torch.optim.SGD([self.images], lr=hp["lr_img"], momentum=hp["momentum"])
        self.dsa = DSA(self.dsa_strategy())
        self.sampler = make_sampler(hp, self.data, self.generator)
        if has_batchnorm(build_net(hp["net"], info.channels, info.classes, info.size)):
            raise DdflowError(f"dm: net {hp['net']!r} has BatchNorm; DM's BatchNorm branch is not implemented")

    def loss(self, net: torch.nn.Module, real: list[torch.Tensor], syn: list[torch.Tensor]) -> torch.Tensor:
        """Sum over classes of the squared distance between mean embeddings of real and synthetic images.
        `real[c]`, `syn[c]` are class c's (already augmented) batches. On a GPU all classes go through one batched
        forward; on the CPU class by class, as the official loop: the instance-norm ConvNet treats every image on
        its own, so the loss is the same; a class's activations are a tenth of all classes', faster on the CPU."""
        per_class = self.per_class_forward
        if per_class if per_class is not None else self.device.type == "cpu":
            loss = None
            for r, s in zip(real, syn):
                with torch.no_grad():
                    er = net.embed(r)
                term = self.class_loss(er, net.embed(s))
                loss = term if loss is None else loss + term
            return loss
        with torch.no_grad():
            emb_real = net.embed(torch.cat(real))
        emb_syn = net.embed(torch.cat(syn))
        n_real = [len(r) for r in real]
        n_syn = [len(s) for s in syn]
        loss = emb_syn.new_zeros(())
        for er, es in zip(emb_real.split(n_real), emb_syn.split(n_syn)):
            loss = loss + self.class_loss(er, es)
        return loss

    def class_loss(self, emb_real: torch.Tensor, emb_syn: torch.Tensor) -> torch.Tensor:
        """One class's term: the squared distance between the mean embeddings (dm-isa replaces it)."""
        return ((emb_real.mean(0) - emb_syn.mean(0)) ** 2).sum()

    def step(self, it: int) -> dict[str, float]:
        info = self.data.info
        net = build_net(self.hp["net"], info.channels, info.classes, info.size, self.generator, self.device)
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        # DREAM variant: a fresh network every iteration, so count 'network' re-clusters at every iteration
        real_idx = self.sampler.indices(net, 0 if self.sampler.per_network else it)
        syn = self.images.view(self.classes, self.ipc, *self.images.shape[1:])
        reals = (self.data.x_train[real_idx[c]].to(self.device) for c in range(self.classes))
        real_aug, syn_aug = self.dsa.siamese_per_class(reals, syn, self.generator)
        loss = self.loss(net, real_aug, syn_aug)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}  # read by the progress line when one is due

    def result(self) -> dict:
        return {"images": self.images.detach().cpu(), "labels": self.class_labels()}


@register("dm-dream")
class DMDream(DM):
    """DM with DREAM's representative real batches (hparams: representative)."""
    paired_with = "dm"
