"""IDM: improved distribution matching (Zhao, Li, Qin & Yu, CVPR 2023; official uitrbn/IDM IDM_cifar10.py, the
same loop in IDM_cifar100.py and IDM_tiny.py except the initialisation (below), with dc_utils.py number_sign_augment /
downscale).

DM (methods/dm.py: its loss, Siamese DSA, random real batches) with three changes:
  1. partitioning and expansion (`--aug`): every stored image holds factor x factor patches; for matching and
     for evaluation each patch is upsampled (bilinear) to a full image with the stored image's label
     (ddflow.ops.multiformation.decode; the record keeps `factor`, so the `dc` protocol trains on the decoded
     set). Initialisation (`init`): `real` puts factor^2 independent draws of real images, bilinearly downscaled,
     into the patches (IDM_cifar10.py lines 138-145 and IDM_cifar100.py lines 136-143 with --aug); `real_whole`
     stores one full real image per synthetic image, so its expanded views are the upsampled patches of that image
     (IDM_tiny.py line 136 tests `if args.aug:` where the CIFAR scripts test `if not args.aug:`, so every Tiny
     command, all with --aug, takes this branch; the paper preset's TinyImageNet rows use it).
  2. class-aware regularisation (`--syn_ce`): per class, the loss adds
         ce_weight * acc * CE(net(DSA(decoded syn_c)), c)
     where acc is the sampled network's training accuracy in percent (a torchnet ClassErrorMeter over its
     training batches since the last reset; 0 before its first training step).
  3. model sampling (`--net_train_real`): a queue of networks trained on the real data. It starts with
     `queue_init` random networks; at every iteration with it % net_generate_interval == 0 a fresh random network
     is appended (the oldest dropped when `net_num` are held). Each iteration samples `train_net_num` networks of
     the queue uniformly for matching (one image-optimiser step per class per sampled network); afterwards
     `fetch_net_num` networks drawn from the queue each take `model_train_steps` SGD steps (lr_net, momentum 0.9,
     wd 5e-4: `--net_decay`) on random real batches of `trained_bs` images without augmentation. The accuracy
     meters are reset every `acc_reset_every` iterations (the official code resets them at its evaluation points,
     eval_interval). The queue (weights, optimisers, meters) is part of the saved state, so resume is exact.
Not implemented: the branches the published commands never take (IPC 1 without --aug: top-k real selection and
the CE only on misclassified images; BatchNorm models).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DdflowError
from ..nets import build_net
from ..ops.multiformation import decode
from .dm import DM
from .registry import register

INITS = ("real", "real_whole")


class NetQueue:
    """IDM's networks trained on real data: each entry a network, its SGD optimiser and its accuracy meter."""

    def __init__(self, build, lr: float, momentum: float, weight_decay: float, size: int):
        self.build, self.size = build, int(size)
        self.opt_args = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        self.nets: list[torch.nn.Module] = []
        self.opts: list[torch.optim.Optimizer] = []
        self.correct: list[float] = []
        self.seen: list[float] = []

    def __len__(self) -> int:
        return len(self.nets)

    def _append(self, net: torch.nn.Module) -> None:
        self.nets.append(net)
        self.opts.append(torch.optim.SGD(net.parameters(), **self.opt_args))
        self.correct.append(0.0)
        self.seen.append(0.0)

    def push(self, generator: torch.Generator | None) -> None:
        """A fresh random network at the end; the oldest leaves first when the queue is full."""
        if len(self) == self.size:
            for lst in (self.nets, self.opts, self.correct, self.seen):
                lst.pop(0)
        self._append(self.build(generator))

    def sample(self, k: int, generator: torch.Generator) -> list[int]:
        """k distinct queue positions, uniformly (official: random.shuffle of the indices, the first k)."""
        return torch.randperm(len(self), generator=generator)[:k].tolist()

    def accuracy(self, i: int) -> float:
        """Training accuracy (%) of network i since its meter's last reset; 0 if it has not trained since."""
        return 100.0 * self.correct[i] / self.seen[i] if self.seen[i] else 0.0

    def reset_meters(self) -> None:
        self.correct = [0.0] * len(self)
        self.seen = [0.0] * len(self)

    def train(self, i: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """One SGD step of network i on a real batch (cross-entropy), counted by its meter."""
        net, opt = self.nets[i], self.opts[i]
        net.train()
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        self.correct[i] += float((logits.detach().argmax(1) == y).sum())
        self.seen[i] += len(y)

    def state_dict(self) -> dict:
        return {"nets": [n.state_dict() for n in self.nets], "opts": [o.state_dict() for o in self.opts],
                "correct": list(self.correct), "seen": list(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.nets, self.opts, self.correct, self.seen = [], [], [], []
        for net_state, opt_state in zip(state["nets"], state["opts"]):
            net = self.build(None)
            net.load_state_dict(net_state)
            self._append(net)
            self.opts[-1].load_state_dict(opt_state)
        self.correct, self.seen = list(state["correct"]), list(state["seen"])


def expand(images: torch.Tensor, labels: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Partition each image into factor x factor patches and upsample each to full size (official
    number_sign_augment for factor 2: bilinear x2, align_corners False); the labels repeat with them."""
    if images.shape[-1] % factor or images.shape[-2] % factor:
        raise DdflowError(f"idm: image size {tuple(images.shape[-2:])} is not divisible by factor {factor}")
    return decode(images, labels, factor)


@register("idm")
class IDM(DM):
    inits = ("real",)
    state = ("images", "opt", "sampler", "queue")

    @classmethod
    def init_pairing(cls, hp: dict, ipc: int) -> str:
        """`real_whole` (and `real` at factor 1) stores Random's images; `real` at factor > 1 overwrites every
        patch with factor^2 independent draws of the method's own, as the official scripts do."""
        return "same" if hp.get("init") == "real_whole" or int(hp.get("factor", 1)) == 1 else "own"

    def init(self) -> None:
        hp, info = self.hp, self.data.info
        self.factor = int(hp["factor"])
        if hp["init"] not in INITS:
            raise DdflowError(f"idm: init {hp['init']!r} unknown; allowed: {', '.join(INITS)}")
        super().init()  # DM's image optimiser (SGD, momentum), Siamese DSA, real-batch sampler; BatchNorm check
        if hp["init"] == "real":
            with torch.no_grad():
                self.images.copy_(self._patched_real())

        def build(generator: torch.Generator | None) -> torch.nn.Module:
            return build_net(hp["net"], info.channels, info.classes, info.size, generator, self.device)
        self.queue = NetQueue(build, hp["lr_net"], hp["momentum_net"], hp["weight_decay_net"], hp["net_num"])
        for _ in range(int(hp["queue_init"])):
            self.queue.push(self.generator)

    def initial_images(self) -> torch.Tensor:
        """IPC random real images per class, whole (both inits start so; `real` then fills the patches)."""
        images = self.data.x_train[self.paired_real_indices(self.ipc)]
        return images.detach().clone().to(self.device).requires_grad_(True)

    def _patched_real(self) -> torch.Tensor:
        """Official init 'real' with --aug: patch (i, j) of every stored image is a separate random real image of
        its class, downscaled bilinearly by 1/factor; patches filled column by column (a=(0,0), b=(1,0), ...)."""
        f, n = self.factor, self.classes * self.ipc
        if f == 1:
            return self.images.detach()
        c, h, w = self.images.shape[1:]
        ph, pw = h // f, w // f
        out = self.images.detach().clone()
        for j in range(f):
            for i in range(f):
                real = self.data.x_train[self.random_real_indices(self.ipc)].to(self.device)
                small = F.interpolate(real, size=(ph, pw), mode="bilinear", align_corners=False)
                out[:n, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] = small
        return out

    def class_aware_loss(self, net: torch.nn.Module, real: torch.Tensor, syn: torch.Tensor, c: int,
                   acc: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, ce) for class c: DM's squared mean-embedding distance between the (augmented) real and expanded
        synthetic batches, plus ce_weight * acc * CE(net(syn), c)."""
        match = self.loss(net, [real], [syn])
        ce = F.cross_entropy(net(syn), torch.full((len(syn),), c, dtype=torch.long, device=syn.device))
        return match + float(self.hp["ce_weight"]) * acc * ce, ce.detach()

    def step(self, it: int) -> dict[str, float]:
        hp = self.hp
        every = int(hp["acc_reset_every"])
        if it > 0 and it % every == 0:  # official: the meters reset at each evaluation point (eval_interval)
            self.queue.reset_meters()
        if it % int(hp["net_generate_interval"]) == 0:
            self.queue.push(self.generator)
        picked = self.queue.sample(int(hp["train_net_num"]), self.generator)
        total = torch.zeros((), device=self.device)
        labels = self.class_labels().to(self.device)
        for i in picked:
            net, acc = self.queue.nets[i], self.queue.accuracy(i)
            net.eval()  # official net.eval() (instance norm: no effect)
            for p in net.parameters():
                p.requires_grad_(False)
            real_idx = self.sampler.indices(net, it)
            for c in range(self.classes):
                sl = slice(c * self.ipc, (c + 1) * self.ipc)
                syn, _ = expand(self.images[sl], labels[sl], self.factor)
                real, syn = self.dsa.siamese_pair(self.data.x_train[real_idx[c]].to(self.device), syn, self.generator)
                loss, _ = self.class_aware_loss(net, real, syn, c, acc)
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                total += loss.detach()
            for p in net.parameters():
                p.requires_grad_(True)
        self._train_queue()
        return {"loss": total / (self.classes * max(len(picked), 1))}

    def _train_queue(self) -> None:
        """fetch_net_num networks of the queue, each model_train_steps steps on random real batches."""
        hp = self.hp
        n = len(self.data.y_train)
        for i in self.queue.sample(int(hp["fetch_net_num"]), self.generator):
            for _ in range(int(hp["model_train_steps"])):
                idx = torch.randperm(n, generator=self.generator)[:int(hp["trained_bs"])].to(self.data.y_train.device)
                self.queue.train(i, self.data.x_train[idx].to(self.device), self.data.y_train[idx].to(self.device))

    def result(self) -> dict:
        return {"images": self.images.detach().cpu(), "labels": self.class_labels(), "factor": self.factor}
