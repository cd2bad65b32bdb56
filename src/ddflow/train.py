"""Training K networks of one architecture together: stacked parameters, torch.func.functional_call + vmap.

Each model k has its own torch.Generator, from which it draws, in this order, its initialisation, then per epoch
its data order and per minibatch its augmentation. The K models trained together therefore follow exactly the
random streams they would follow trained one by one (tests pin this), and the cost of K models is one batched
computation instead of K Python loops.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from .nets import has_batchnorm, init_params_
from .progress import Progress
from .runtime import to_device

log = logging.getLogger(__name__)


class NetStack:
    """K copies of `template` with independent, stacked parameters, run by vmap or by a loop over models."""

    def __init__(self, template: nn.Module, generators: list[torch.Generator], device: torch.device | str,
                 batching: str = "auto"):
        nets = []
        for g in generators:
            net = copy.deepcopy(template)
            init_params_(net, g)
            nets.append(net.to(device))
        # 'vmap': one batched computation (the GPU path: K models cost little more than one). 'loop': the same
        # stacked parameters and optimiser, one functional_call per model; faster on a CPU, where vmap's grouped
        # convolutions are slower than K plain ones, and needed for BatchNorm, whose in-place running
        # statistics vmap cannot batch. 'auto' picks vmap on CUDA unless the net has BatchNorm.
        if batching == "auto":
            batching = "vmap" if torch.device(device).type == "cuda" and not has_batchnorm(template) else "loop"
        if batching not in ("vmap", "loop"):
            raise ValueError(f"batching {batching!r} not in ('auto', 'vmap', 'loop')")
        if batching == "vmap" and has_batchnorm(template):
            raise ValueError("vmap batching cannot train BatchNorm nets (in-place running statistics); use 'loop'")
        self.batching = batching
        self.template = nets[0]
        params, buffers = stack_module_state(nets)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.k = len(nets)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> "NetStack":
        self.template.train(mode)
        return self

    def _one(self, p, b, x, embed: bool):
        return functional_call(self.template, (p, b), (x,), {"embed": embed})

    def forward(self, x: torch.Tensor, embed: bool = False) -> torch.Tensor:
        """x: (K, B, ...) -> (K, B, classes), or the features before the classifier with embed=True."""
        if self.batching == "loop":
            return torch.stack([self._one({n: v[i] for n, v in self.params.items()},
                                          {n: v[i] for n, v in self.buffers.items()}, x[i], embed)
                                for i in range(self.k)])
        return torch.vmap(lambda p, b, xx: self._one(p, b, xx, embed), randomness="different")(
            self.params, self.buffers, x)


class StackedSGD:
    """torch.optim.SGD's update (momentum, weight decay, no dampening, no Nesterov) on stacked tensors."""

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params, self.lr, self.momentum, self.weight_decay = params, lr, momentum, weight_decay
        self.buf: list[torch.Tensor | None] = [None] * len(params)

    @torch.no_grad()
    def step(self) -> None:
        """One update of every tensor with multi-tensor (_foreach) ops: a handful of kernel launches per step on a
        GPU instead of a few per parameter tensor; on the CPU they apply the same per-tensor ops (same values)."""
        grads = [p.grad for p in self.params]
        d = torch._foreach_add(grads, self.params, alpha=self.weight_decay) if self.weight_decay else grads
        if self.momentum:
            if any(b is None for b in self.buf):
                self.buf = [t.clone() for t in d]
            else:
                torch._foreach_mul_(self.buf, self.momentum)
                torch._foreach_add_(self.buf, d)
            d = self.buf
        torch._foreach_add_(self.params, d, alpha=-self.lr)  # p - lr * d (ATen's sub is add with -alpha)
        for p in self.params:
            p.grad = None

    def reset_momentum(self) -> None:
        self.buf = [None] * len(self.params)


def hard_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per model: logits (K, B, C), y (K, B) -> (K,)."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


@dataclass
class TrainSettings:
    epochs: int
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch: int = 256
    decay_epochs: tuple[int, ...] = ()   # after these epoch indices the lr is multiplied by decay_factor, once per
                                         # occurrence (a repeated index decays twice, as MultiStepLR's milestones)
    decay_factor: float = 0.1
    reset_momentum_on_decay: bool = True  # DC's evaluate_synset recreates the optimiser at the decay


def synthetic_epoch(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch: int,
                    generator: torch.Generator, device: torch.device, augment: Callable | None = None) -> None:
    """One pass of `net` over a (detached) synthetic set in shuffled mini-batches of `batch`, hard-label cross-entropy,
    an optional per-batch augmentation `augment(x, generator)`: the inner network update of DC/DSA and CAFE (the
    official utils.py epoch('train'))."""
    perm = to_device(torch.randperm(len(x), generator=generator), device)
    for s in range(0, len(x), batch):
        xb = x[perm[s:s + batch]]
        if augment is not None:
            xb = augment(xb, generator)
        loss = F.cross_entropy(net(xb), y[perm[s:s + batch]])
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_stack(stack: NetStack, x: torch.Tensor, y: torch.Tensor, generators: list[torch.Generator],
                settings: TrainSettings, augment=None,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = hard_ce,
                desc: str = "train", prepare: Callable | None = None,
                targets: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[float]:
    """Train every model of `stack` on (x, y) (shared by all models; y may be hard (N,) or soft (N, C)).
    Per epoch each model draws its own permutation; per minibatch its own augmentation. `prepare(xb, k,
    generators)`, when given, maps the gathered rows of the K models' batches (K * b, ...; model after model) to
    the images they train on, before the augmentation (HaBa: hallucinate and standardise each batch). `targets(xb)`,
    when given, labels each augmented batch (K, b, ...) in place of y (a teacher network per batch). Returns the
    mean training loss of the last epoch per model."""
    n, k = len(x), stack.k
    opt = StackedSGD(stack.parameters(), settings.lr, settings.momentum, settings.weight_decay)
    progress = Progress(settings.epochs, desc)
    total = None
    for ep in range(settings.epochs):
        perms = to_device(torch.stack([torch.randperm(n, generator=g) for g in generators]), x.device)
        total = torch.zeros(k, device=x.device)  # stays on the device: no host sync per epoch
        for start in range(0, n, settings.batch):
            idx = perms[:, start:start + settings.batch]
            b = idx.shape[1]
            xb = x[idx.flatten()]
            if prepare is not None:
                xb = prepare(xb, k, generators)
            if augment is not None:
                xb = augment.augment_many(xb, [b] * k, generators)
            xb = xb.view(k, b, *xb.shape[1:])
            yb = y[idx] if targets is None else targets(xb)
            losses = loss_fn(stack.forward(xb), yb)
            losses.sum().backward()
            opt.step()
            total += losses.detach() * b
        decays = settings.decay_epochs.count(ep)
        if decays:
            opt.lr *= settings.decay_factor ** decays
            if settings.reset_momentum_on_decay:
                opt.reset_momentum()
        progress.update(ep + 1, loss=(total / n).mean())  # read only when a progress line is due
    progress.close()
    return (total / n).cpu().tolist() if total is not None else [0.0] * k


# Test images per forward and model on the CPU: a ConvNet-128's activations of 16 28x28 images stay in the caches,
# where those of a whole 1,000-image test split do not (one core, 1,000 MNIST images: 2.8 s at once, 1.85 s in
# chunks of 64, 1.4 s in chunks of 16 or 24, the same for ConvNetBN; ConvNetW32 0.19-0.21 s from 16 to 64). The
# logits are the same bits whatever the chunk (tests/test_train.py). On a GPU one large batch is fastest.
CPU_TEST_CHUNK = 16


@torch.no_grad()
def accuracy(stack: NetStack, x: torch.Tensor, y: torch.Tensor, images_per_pass: int = 4000) -> list[float]:
    """Test accuracy (percent) of each model on (x, y); about `images_per_pass` model-images per forward on a GPU,
    CPU_TEST_CHUNK images per model on the CPU (the count changes the speed, not the logits)."""
    chunk = CPU_TEST_CHUNK if x.device.type == "cpu" else max(1, images_per_pass // stack.k)
    correct = torch.zeros(stack.k, device=x.device)
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        logits = stack.forward(xb.unsqueeze(0).expand(stack.k, *xb.shape))
        correct += (logits.argmax(-1) == y[start:start + chunk]).sum(1)
    return (100.0 * correct.double() / len(x)).cpu().tolist()
