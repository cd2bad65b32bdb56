"""CAFE: condensing a dataset by aligning features (Wang et al., CVPR 2022; official kaiwang960112/CAFE distill.py).

Each iteration draws a fresh randomly initialised ConvNet and runs the official dynamic bi-level loop on it:

outer step (images): a real batch of `batch_real` images per class and the synthetic set go through the network;
    loss = sum_l w_l * D(f_l(real), f_l(syn))                     layer-wise alignment (distill.py line 278)
         + embed_weight * D(e(real), e(syn))                       the embedding again (line 289, first term)
         + inner_weight * sum_i CE(e(real_i) . centres^T / T, y_i)  discrimination (lines 283-289)
  where f_l is the output of block l's activation (before pooling) for l = 1..depth and the pooled output of the
  last block (networks.py ConvNet.forward: f1..f4), e the flattened embedding, D(a, b) the sum of squared
  differences between per-class means (distill.py criterion_middle), centres[c] the mean embedding of class c's
  synthetic images, T a temperature (the official code has none: T = 1), and the CE summed over the real batch.
  One SGD step (momentum 0.5) on the images. Then the network's accuracy on `test_per_class` random real images
  per class is folded into a running value acc <- (acc + sum_c acc_c) / classes (the official accumulation,
  distill.py lines 300-305); once the last `window` values span less than lambda_1 the network is done (the
  iteration ends);
inner loop (network), otherwise: epochs of SGD (lr_net) on the synthetic set, batch_train, shuffled, until the
  last `window` running accuracies (the same rule, reset for each inner loop) span more than lambda_2.
The official forward also adds the CE of the network on the real batch to the loss; it has no gradient with respect
to the images and the network's gradients are cleared before its next step, so it is left out. `max_outer` and
`max_inner` (null = unbounded, as the official while loops) bound the loops for the quick preset.
`cafe-dream` takes the real batch from DREAM's representative sampler, clustered on the current network (as the
`-dream` variants of DC/DSA, whose networks also train between matching steps): every `every` outer steps of one
network (`count: network`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import DSA
from ..errors import DdflowError
from ..nets import build_net, has_batchnorm
from ..ops.real_batches import RandomSampler, make_sampler
from ..train import synthetic_epoch
from .base import Method
from .registry import register

ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.SiLU, nn.LeakyReLU)


def block_outputs(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The official CAFE ConvNet's feature list f1..f_{depth+1}: the output of each block's activation (before its
    pooling), then the output of the whole trunk (networks.py ConvNet.forward, depth 3: f1, f2, f3, f4)."""
    feats = []
    for m in net.features:
        x = m(x)
        if isinstance(m, ACTIVATIONS):
            feats.append(x)
    feats.append(x)
    return feats


def class_mean_distance(real: torch.Tensor, syn: torch.Tensor, classes: int) -> torch.Tensor:
    """distill.py criterion_middle: the per-class means of both batches (ordered class by class, equal counts per
    class), then the sum of squared differences over classes and feature entries."""
    r = real.reshape(classes, -1, *real.shape[1:]).mean(1)
    s = syn.reshape(classes, -1, *syn.shape[1:]).mean(1)
    return (r - s).square().sum()


def cafe_terms(real_feats: list[torch.Tensor], syn_feats: list[torch.Tensor], classes: int,
               layer_weights: list[float], embed_weight: float, inner_weight: float,
               temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """CAFE's three loss terms from block_outputs of the real and the synthetic batch (both class by class):
    'layers' (weighted layer-wise alignment), 'embed' (alignment of the embeddings' class means) and
    'discrimination' (real embeddings classified by the synthetic class centres, CE summed over the real batch)."""
    if len(layer_weights) != len(real_feats):
        raise DdflowError(f"cafe: layer_weights has {len(layer_weights)} entries for {len(real_feats)} feature "
                          "levels (one per block, then the trunk's output)")
    layers = sum(w * class_mean_distance(r, s, classes) for w, r, s in zip(layer_weights, real_feats, syn_feats))
    emb_real, emb_syn = real_feats[-1].flatten(1), syn_feats[-1].flatten(1)
    centres = emb_syn.reshape(classes, -1, emb_syn.shape[1]).mean(1)
    logits = emb_real @ centres.T / temperature
    labels = torch.arange(classes, device=logits.device).repeat_interleave(len(emb_real) // classes)
    return {"layers": layers,
            "embed": embed_weight * class_mean_distance(emb_real, emb_syn, classes),
            "discrimination": inner_weight * F.cross_entropy(logits, labels, reduction="sum")}


class AccuracyWatcher:
    """The official stopping rule of one loop: a running accuracy acc <- (acc + sum_c acc_c) / classes after each
    step, and the span (max - min) of its last `window` values."""

    def __init__(self, window: int):
        self.window, self.acc, self.values = window, 0.0, []

    def add(self, per_class: torch.Tensor) -> float | None:
        """Fold in one test (per-class accuracies); the span of the last `window` values once there are that many."""
        self.acc = (self.acc + float(per_class.sum())) / len(per_class)
        self.values.append(self.acc)
        if len(self.values) < self.window:
            return None
        span = max(self.values) - min(self.values)
        self.values.pop(0)
        return span


@register("cafe")
class CAFE(Method):
    state = ("images", "opt", "sampler", "matching_steps")

    def init(self) -> None:
        hp, info = self.hp, self.data.info
        self.matching_steps = 0
        self.images = self.initial_images()
        self.opt = torch.optim.SGD([self.images], lr=hp["lr_img"], momentum=hp["momentum_img"])
        self.labels = self.class_labels().to(self.device)
        self.dsa = DSA(self.dsa_strategy()) if hp["dsa"] else None
        self.sampler = make_sampler(hp, self.data, self.generator)
        self.tester = RandomSampler(self.data, hp["test_per_class"], self.generator)
        net = build_net(hp["net"], info.channels, info.classes, info.size)
        if has_batchnorm(net):
            raise DdflowError(f"cafe: net {hp['net']!r} has BatchNorm; the official code uses instance norm")
        if len(hp["layer_weights"]) != net.spec.depth + 1:
            raise DdflowError(f"cafe: layer_weights needs {net.spec.depth + 1} entries for {hp['net']} (one per "
                              f"block, then the trunk's output); got {hp['layer_weights']}")

    def img_lr(self, it: int) -> float:
        """distill.py adjust_learning_rate: lr_img times img_lr_decay per milestone reached."""
        return self.hp["lr_img"] * self.hp["img_lr_decay"] ** sum(it >= m for m in self.hp["img_lr_milestones"])

    @torch.no_grad()
    def real_accuracy(self, net: nn.Module) -> torch.Tensor:
        """Per-class accuracy of `net` on test_per_class random real training images of each class."""
        idx = self.tester.indices(None, 0)
        pred = net(self.data.x_train[idx.flatten()].to(self.device)).argmax(1)
        return (pred == self.data.y_train[idx.flatten()].to(self.device)).float().view(self.classes, -1).mean(1)

    def outer_step(self, net: nn.Module, step: int) -> torch.Tensor:
        """One update of the images on `net` (its `step`-th outer step); returns the loss."""
        hp = self.hp
        idx = self.sampler.indices(net, step if self.sampler.per_network else self.matching_steps)
        self.matching_steps += 1
        real = self.data.x_train[idx.flatten()].to(self.device)
        syn = self.images
        if self.dsa is not None:  # distill.py: one Siamese DiffAugment seed per class
            r, s = self.dsa.siamese_per_class(real.view(self.classes, -1, *real.shape[1:]),
                                              syn.view(self.classes, self.ipc, *syn.shape[1:]), self.generator)
            real, syn = torch.cat(r), torch.cat(s)
        with torch.no_grad():  # the network is not updated by this loss (see the module docstring)
            real_feats = block_outputs(net, real)
        terms = cafe_terms(real_feats, block_outputs(net, syn), self.classes, hp["layer_weights"],
                           hp["embed_weight"], hp["inner_weight"], hp["temperature"])
        loss = terms["layers"] + terms["embed"] + terms["discrimination"]
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach()

    def train_epoch(self, net: nn.Module, opt: torch.optim.Optimizer) -> None:
        """utils.py epoch('train'): one pass over the detached synthetic set, batch_train, shuffled; per-sample DSA
        when dsa is on."""
        synthetic_epoch(net, opt, self.images.detach(), self.labels, self.hp["batch_train"], self.generator,
                        self.device, self.dsa)

    def step(self, it: int) -> dict[str, float]:
        hp, info = self.hp, self.data.info
        for group in self.opt.param_groups:
            group["lr"] = self.img_lr(it)
        net = build_net(hp["net"], info.channels, info.classes, info.size, self.generator, self.device)
        net.train()
        opt_net = torch.optim.SGD(net.parameters(), lr=hp["lr_net"])  # distill.py: no momentum, no weight decay
        outer_watch = AccuracyWatcher(hp["window"])
        outer = inner = 0
        total = torch.zeros((), device=self.device)
        while True:
            total += self.outer_step(net, outer)
            outer += 1
            span = outer_watch.add(self.real_accuracy(net))
            if (span is not None and span < hp["lambda_1"]) or outer == hp["max_outer"]:
                break
            inner_watch, epochs = AccuracyWatcher(hp["window"]), 0
            while True:
                self.train_epoch(net, opt_net)
                epochs += 1
                span = inner_watch.add(self.real_accuracy(net))
                if (span is not None and span > hp["lambda_2"]) or epochs == hp["max_inner"]:
                    break
            inner += epochs
        return {"loss": total / outer, "outer": outer, "inner": inner}

    def result(self) -> dict:
        return {"images": self.images.detach().cpu(), "labels": self.labels.cpu()}


@register("cafe-dream")
class CAFEDream(CAFE):
    """CAFE with DREAM's representative real batches (hparams: representative)."""
    paired_with = "cafe"
