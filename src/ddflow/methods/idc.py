"""IDC: dataset condensation via efficient synthetic-data parameterization (Kim et al., ICML 2022; official
snu-mllab/Efficient-Dataset-Condensation condense.py) and DREAM: representative matching on top of it (Liu et al.,
ICCV 2023; lyq312318224/DREAM condense.py). docs/methods.md.

The synthetic images live in pixel space [0, 1] (clamped at every outer iteration); each decodes by
multi-formation into factor^2 training images (ddflow.ops.multiformation.decode). One outer iteration (= one step()):
a fresh ConvNet (instance norm) and its SGD optimiser; then `inner_loops` times:
  1. for every class c: real batch of class c (random, or DREAM's centroid-nearest images), the decoded synthetic
     images of class c (at most batch_syn_max, a random subset beyond), both normalised and put through ONE shared
     IDC DiffAug draw; loss = distance (mse = sum of squares / l1) between the CE gradients of the conv weights on
     the real and on the synthetic batch; one SGD step (momentum 0.5) of the image optimiser per class;
  2. the network trains on n_data random real images (batches of batch_real, as the official loader_real;
     per-sample DiffAug, CutMix with probability cutmix_p unless mixup_net is 'vanilla').
DREAM re-clusters every `representative.every` inner loops (counted within the outer iteration, as the official
`ot % interval`), with the current network's embed() features, and initialises by k-means.
Timing (seconds per inner loop of clustering, image update and the whole loop) is kept for DREAM's Table 2.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..augment import IDCAugment
from ..augment.cutmix import cutmix_apply, maybe_cutmix
from ..data import denormalize
from ..data.real import mean_std
from ..errors import DdflowError
from ..nets import build_net, embed_chunked
from ..ops.gradient_distance import conv_grad_distance, conv_weights
from ..ops.kmeans import representative_indices_batched
from ..ops.losses import cutmix_loss
from ..ops.multiformation import decode, tile
from ..ops.real_batches import RepresentativeSampler, make_sampler
from .base import Method
from .registry import register

TIMERS = ("clustering", "update_images", "inner_loop")


def lr_img(base: float, ipc: int, size: int, base_size: int) -> float:
    """Official tune_lr_img: base x (ipc / 10) x (size / base_size)^2 (base_size 28 for MNIST, 32 otherwise)."""
    return base * (ipc / 10) * (size / base_size) ** 2


@register("idc")
class IDC(Method):
    protocols = ("idc",)
    state = ("images", "opt", "sampler", "timing", "loops_done")
    result_space = "pixels"
    inits = ("random", "mix", "kmeans")
    #: 'mix' tiles the first IPC x factor^2 images of the paired order (Random's IPC images are among them);
    #: 'kmeans' (DREAM) picks images near k-means centres of a network's features: not a random draw
    pairing = {"random": "same", "mix": "nested"}

    def init(self) -> None:
        hp, info = self.hp, self.data.info
        self.factor = int(hp["factor"])
        self._next_net: torch.nn.Module | None = None
        self.mean, self.std = mean_std(info.mean, info.std, torch.empty(0, device=self.device))
        self.images = self._initial_pixels().to(self.device).requires_grad_(True)
        self.labels = self.class_labels().to(self.device)
        self.lr_img = lr_img(hp["lr_img_base"], self.ipc, info.size, hp["lr_img_base_size"])
        self.opt = torch.optim.SGD([self.images], lr=self.lr_img, momentum=hp["momentum_img"])
        self.aug_match = IDCAugment(hp["aug_match"])
        self.aug_net = IDCAugment(hp["aug_net"])
        self.sampler = make_sampler(hp, self.data, self.generator)
        self.timing = {k: 0.0 for k in TIMERS}
        self.loops_done = 0

    # ---- initialisation ------------------------------------------------------------------------------------
    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        return denormalize(x, self.data.info).clamp(0, 1)

    def _initial_pixels(self) -> torch.Tensor:
        """'random': ipc real images per class; 'mix' (factor > 1): ipc * factor^2 real images per class tiled
        into factor x factor patches; 'kmeans' (DREAM): those images are the ones nearest to k-means centroids
        of the embed() features of the whole class, by
        the network of the first outer iteration (official DREAM)."""
        init, f = self.hp["init"], self.factor
        per = self.ipc * (f * f if init in ("mix", "kmeans") else 1)
        if init == "kmeans":
            idx = self._kmeans_indices(per)
        elif init in ("random", "mix"):
            idx = self.paired_real_indices(per)
        else:
            raise DdflowError(f"idc init {init!r} unknown; allowed: random, mix, kmeans")
        real = self._pixels(self.data.x_train[idx].to(self.device))
        if per == self.ipc:
            return real.detach().clone()
        parts = real.view(self.classes, per, *real.shape[1:])
        return torch.cat([tile(parts[c], f) for c in range(self.classes)]).detach().clone()

    @torch.no_grad()
    def _kmeans_indices(self, per: int) -> torch.Tensor:
        info = self.data.info
        net = build_net(self.hp["net"], info.channels, info.classes, info.size, self.generator, self.device)
        self._next_net = net  # official DREAM: the initialisation's network is also the first outer iteration's
        idxs = self.data.indices_per_class()
        feats = [embed_chunked(net, self.data.x_train, idx, 500, self.device) for idx in idxs]
        # all classes in one Lloyd loop; the generator's draws are the same as class by class (kmeans_batched)
        chosen = representative_indices_batched(feats, per, [self.generator] * len(idxs),
                                                (self.hp.get("representative") or {}).get("kmeans_iters", 100))
        return torch.cat([idx[c.to(idx.device)] for idx, c in zip(idxs, chosen)])

    # ---- one outer iteration -------------------------------------------------------------------------------
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def _syn_class(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[c * self.ipc:(c + 1) * self.ipc]
        y = self.labels[c * self.ipc:(c + 1) * self.ipc]
        x, y = decode(x, y, self.factor)
        cap = int(self.hp["batch_syn_max"])
        if len(x) > cap:  # official synset.subsample: a random subset
            keep = torch.randperm(len(x), generator=self.generator)[:cap].to(self.device)
            x, y = x[keep], y[keep]
        return x, y

    def _match_class(self, net: torch.nn.Module, c: int, real_idx: torch.Tensor) -> torch.Tensor:
        real = self.data.x_train[real_idx].to(self.device)
        y_real = self.data.y_train[real_idx].to(self.device)
        syn, y_syn = self._syn_class(c)
        n = len(real)
        both = self.aug_match(torch.cat([real, self._normalize(syn)]), self.generator, shared=True)
        weights = conv_weights(net)
        g_real = torch.autograd.grad(F.cross_entropy(net(both[:n]), y_real), weights)
        g_real = [g.detach() for g in g_real]
        g_syn = torch.autograd.grad(F.cross_entropy(net(both[n:]), y_syn), weights, create_graph=True)
        return conv_grad_distance(g_syn, g_real, self.hp["match_metric"])

    def _train_net(self, net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        hp = self.hp
        b = int(hp["batch_real"])  # official: train_epoch(loader_real), whose batches hold batch_real images
        n = -(-int(hp["n_data"]) // b) * b  # official: whole batches until at least n_data images were seen
        order = torch.randperm(len(self.data.y_train), generator=self.generator)[:n].to(self.data.y_train.device)
        cut = hp["mixup_net"] == "cut"
        for s in range(0, len(order), b):
            idx = order[s:s + b]
            x = self.data.x_train[idx].to(self.device)
            y = self.data.y_train[idx].to(self.device)
            with torch.no_grad():
                x = self.aug_net(x, self.generator)
                mix = maybe_cutmix(len(x), x.shape[2], x.shape[3], self.generator, hp["cutmix_p"],
                                   hp["cutmix_beta"]) if cut else None
                if mix is not None:
                    x = cutmix_apply(x, mix)
            loss = cutmix_loss(net(x), y, mix)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def step(self, it: int) -> dict[str, float]:
        hp, info = self.hp, self.data.info
        net, self._next_net = self._next_net, None
        if net is None:
            net = build_net(hp["net"], info.channels, info.classes, info.size, self.generator, self.device)
        net.train()
        opt_net = torch.optim.SGD(net.parameters(), lr=hp["lr_net"], momentum=hp["momentum_net"],
                                  weight_decay=hp["weight_decay_net"])
        with torch.no_grad():
            self.images.clamp_(0, 1)
        total = torch.zeros((), dtype=torch.float64, device=self.device)  # summed on the device: no sync per class
        rep = isinstance(self.sampler, RepresentativeSampler)
        for ot in range(int(hp["inner_loops"])):
            t0 = self._sync()
            idx = self.sampler.indices(net, ot)  # DREAM: re-clusters when ot % every == 0
            t1 = self._sync()
            for c in range(self.classes):
                loss = self._match_class(net, c, idx[c])
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                total += loss.detach().double()
            t2 = self._sync()
            self._train_net(net, opt_net)
            t3 = self._sync()
            if rep:
                self.timing["clustering"] += t1 - t0
            self.timing["update_images"] += t2 - t1
            self.timing["inner_loop"] += t3 - t0
            self.loops_done += 1
        return {"loss": total / (int(hp["inner_loops"]) * self.classes)}

    # ---- state and result ----------------------------------------------------------------------------------
    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._next_net = None  # a resumed run builds its next network from the restored generator

    def result(self) -> dict:
        n = max(self.loops_done, 1)
        timing = {f"{k}_s": (self.timing[k] / n) for k in TIMERS}
        if not isinstance(self.sampler, RepresentativeSampler):
            timing["clustering_s"] = None
        timing["inner_loops"] = self.loops_done
        timing["device"] = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"images": self.images.detach().clamp(0, 1).cpu(), "labels": self.labels.cpu(),
                "factor": self.factor, "lr_img": self.lr_img, "timing": timing}


@register("dream")
class DREAM(IDC):
    """IDC with representative matching (hparams: representative, init kmeans); shares IDC's random streams."""
    paired_with = "idc"
