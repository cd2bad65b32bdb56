"""DC and DSA: dataset condensation by gradient matching (Zhao, Mopuri & Bilen, ICLR 2021) and with
differentiable Siamese augmentation (Zhao & Bilen, ICML 2021). Official VICO-UoE/DatasetCondensation main.py.

Each iteration draws a fresh randomly initialised ConvNet. For outer_loop rounds: for every class c the
gradients of the CE loss on a real batch of class c and on the synthetic images of class c are matched,
    loss = sum_c D(grad L(real_c), grad L(syn_c)),  D = official distance_wb summed over parameter tensors,
one SGD step (momentum 0.5) on the synthetic images follows, and unless it is the last round the network trains
`inner_loop` epochs on the (detached) synthetic set. DSA applies one Siamese augmentation draw per class to the
real and the synthetic batch, and per-sample DSA while training the network; DC uses no augmentation.
The per-class gradients come from ddflow.ops.gradient_distance.class_grads: one vmapped computation for all classes on
CUDA, a loop over classes (as the official code) on the CPU; the loss is the same.
The `-dream` variants take the real batch from DREAM's representative sampler (ddflow.ops.real_batches).
"""
from __future__ import annotations

from typing import ClassVar

import torch

from ..augment import DSA
from ..nets import build_net, has_batchnorm
from ..ops.gradient_distance import class_grads, loops_for, match_distance
from ..ops.real_batches import make_sampler
from ..train import synthetic_epoch
from .base import Method
from .registry import register

BN_IMAGES_PER_CLASS = 16  # official main.py BNSizePC


class GradientMatching(Method):
    state = ("images", "opt", "matching_steps", "sampler")
    use_dsa: ClassVar[bool] = False

    def init(self) -> None:
        hp = self.hp
        self.images = self.initial_images()
        self.opt = torch.optim.SGD([self.images], lr=hp["lr_img"], momentum=hp["momentum_img"])
        self.outer, self.inner = loops_for(self.ipc, hp["loops"])
        self.dsa = DSA(self.dsa_strategy()) if self.use_dsa else None
        self.sampler = make_sampler(hp, self.data, self.generator)
        self.matching_steps = 0
        self.labels = self.class_labels().to(self.device)

    def _fix_batchnorm_stats(self, net: torch.nn.Module) -> None:
        """Official BN handling: running statistics from 16 real images per class, then BN layers frozen."""
        idx = self.random_real_indices(BN_IMAGES_PER_CLASS)
        net.train()
        with torch.no_grad():
            net(self.data.x_train[idx].to(self.device))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()

    def _augment_pairs(self, real: torch.Tensor, syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dsa is None:
            return real, syn
        r, s = self.dsa.siamese_per_class(real, syn, self.generator)  # one draw per class (official per-class seed)
        return torch.stack(r), torch.stack(s)

    def _train_net(self, net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        """inner_loop epochs on the detached synthetic set: batch_train, shuffled; per-sample DSA for DSA."""
        net.train()
        for _ in range(self.inner):
            synthetic_epoch(net, opt, self.images.detach(), self.labels, self.hp["batch_train"], self.generator,
                            self.device, self.dsa)

    def step(self, it: int) -> dict[str, float]:
        info, hp = self.data.info, self.hp
        net = build_net(hp["net"], info.channels, info.classes, info.size, self.generator, self.device)
        net.train()
        opt_net = torch.optim.SGD(net.parameters(), lr=hp["lr_net"])  # official: no momentum, no weight decay
        bn = has_batchnorm(net)
        y_syn = self.labels.view(self.classes, self.ipc)
        total = torch.zeros((), dtype=torch.float64, device=self.device)  # no host sync per round
        for ol in range(self.outer):
            if bn:
                self._fix_batchnorm_stats(net)
            idx = self.sampler.indices(net, ol if self.sampler.per_network else self.matching_steps)
            self.matching_steps += 1
            real = self.data.x_train[idx].to(self.device)
            syn = self.images.view(self.classes, self.ipc, *self.images.shape[1:])
            real, syn = self._augment_pairs(real, syn)
            y_real = self.data.y_train[idx].to(self.device)
            params = {n: p.detach() for n, p in net.named_parameters()}
            buffers = dict(net.named_buffers())
            with torch.no_grad():
                g_real = class_grads(net, params, buffers, real, y_real)
            g_syn = class_grads(net, params, buffers, syn, y_syn)
            loss = sum(match_distance(g_syn[c], g_real[c], hp["match_distance"]) for c in range(self.classes))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.detach().double()
            if ol == self.outer - 1:
                break
            self._train_net(net, opt_net)
        return {"loss": total / self.outer}

    def result(self) -> dict:
        return {"images": self.images.detach().cpu(), "labels": self.labels.cpu()}


@register("dc")
class DC(GradientMatching):
    use_dsa = False


@register("dsa")
class DSAMatching(GradientMatching):
    use_dsa = True


@register("dc-dream")
class DCDream(DC):
    """DC with DREAM's representative real batches (hparams: representative)."""
    paired_with = "dc"


@register("dsa-dream")
class DSADream(DSAMatching):
    """DSA with DREAM's representative real batches (hparams: representative)."""
    paired_with = "dsa"
