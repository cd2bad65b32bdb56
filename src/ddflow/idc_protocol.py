"""The `idc` evaluation protocol (official IDC test.py / train.py; reference/methods.md section 5.4).

The distilled images are decoded by multi-formation (factor from the record, 1 when absent), normalised when they
are stored in pixels (`space: "pixels"`), and K fresh ConvNets train on them together (ddflow.train.train_stack):
SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 64, `epochs` epochs, lr x0.2 after 2/3 and 5/6 of the epochs
(MultiStepLR), per-sample IDC DiffAug (`strategy`, cutout removed when CutMix is on) and CutMix (beta, p) unless
`mixup` is 'vanilla'. Test accuracy after the final epoch (IDC and DREAM report the best of periodic evaluations).

CutMix over K stacked models: each model draws its own DiffAug, its own CutMix coin, Beta draw, permutation and box
from its own generator, per minibatch, after its data order; `_StackAugment.augment_many` records the K CutMix
draws and the loss hook mixes each model's labels with its own draw, so K models trained together follow exactly
the random streams they would follow one by one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import RealData
from .errors import DdflowError
from .evaluate import protocol
from .idc_ops import IDCAugment, cutmix_apply, decode, maybe_cutmix
from .nets import build_net
from .train import NetStack, TrainSettings, accuracy, train_stack


class _StackAugment:
    """Per-model DiffAug then (maybe) CutMix; remembers the K CutMix draws of the current minibatch."""

    def __init__(self, aug: IDCAugment | None, cutmix: bool, p: float, beta: float):
        self.aug, self.cutmix, self.p, self.beta = aug, cutmix, p, beta
        self.draws: list[dict | None] = []

    def augment_many(self, x: torch.Tensor, sizes, generators) -> torch.Tensor:
        out, start, self.draws = [], 0, []
        for s, g in zip(sizes, generators):
            xb = x[start:start + s]
            start += s
            if self.aug is not None:
                xb = self.aug(xb, g)
            mix = maybe_cutmix(s, xb.shape[2], xb.shape[3], g, self.p, self.beta) if self.cutmix else None
            if mix is not None:
                xb = cutmix_apply(xb, mix)
            self.draws.append(mix)
            out.append(xb)
        return torch.cat(out)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(K, B, C), (K, B) -> (K,): each model's CE, CutMix-weighted by its own draw."""
        out = []
        for k in range(logits.shape[0]):
            mix = self.draws[k] if self.draws else None
            ce = F.cross_entropy(logits[k], y[k])
            if mix is not None:
                ce = mix["keep"] * ce + (1 - mix["keep"]) * F.cross_entropy(logits[k], y[k][mix["perm"].to(y.device)])
            out.append(ce)
        return torch.stack(out)


def prepare(images: torch.Tensor, labels: torch.Tensor, distilled: dict,
            data: RealData) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded, normalised training set of a distilled record."""
    factor = int(distilled.get("factor", 1))
    space = distilled.get("space", "normalized")
    if space not in ("pixels", "normalized"):
        raise DdflowError(f"protocol 'idc' trains on pixel or normalised images, not space {space!r}")
    if labels.dim() != 1:
        raise DdflowError("protocol 'idc' trains on hard labels; this distilled set has soft labels")
    info = data.info
    if space == "normalized" and factor > 1:  # decode in pixels (the padding value 0.5 is a pixel value)
        mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        std = torch.tensor(info.std).view(1, -1, 1, 1)
        images, space = images * std + mean, "pixels"
    x, y = decode(images.float(), labels, factor)
    if space == "pixels":
        x = (x - torch.tensor(info.mean).view(1, -1, 1, 1)) / torch.tensor(info.std).view(1, -1, 1, 1)
    return x, y


@protocol("idc")
def evaluate_idc(images: torch.Tensor, labels: torch.Tensor, data: RealData, settings: dict, generators,
                 device: torch.device, desc: str = "eval", lr: float | None = None, distilled: dict | None = None,
                 **_) -> list[float]:
    x, y = prepare(images, labels, distilled or {}, data)
    info = data.info
    template = build_net(settings["net"], info.channels, info.classes, info.size)
    stack = NetStack(template, generators, device, settings.get("batching", "auto"))
    epochs = int(settings["epochs"])
    # MultiStepLR(milestones=[2E//3, 5E//6], gamma 0.2) stepped per epoch: decay after epochs m - 1
    decay = tuple(sorted({m - 1 for m in (2 * epochs // 3, 5 * epochs // 6) if m >= 1}))
    ts = TrainSettings(epochs=epochs, lr=settings["lr"], momentum=settings["momentum"],
                       weight_decay=settings["weight_decay"], batch=settings["batch"], decay_epochs=decay,
                       decay_factor=settings["decay_factor"], reset_momentum_on_decay=False)
    strategy = settings.get("strategy", "none")
    aug = IDCAugment(strategy) if strategy not in ("none", "") else None
    mixup = settings.get("mixup", "cut")
    if mixup not in ("cut", "vanilla"):
        raise DdflowError(f"protocol 'idc': mixup {mixup!r} not in (cut, vanilla)")
    stack_aug = _StackAugment(aug, mixup == "cut", float(settings["cutmix_p"]), float(settings["cutmix_beta"]))
    train_stack(stack.train(True), x.to(device), y.to(device), generators, ts, stack_aug, loss_fn=stack_aug.loss,
                desc=desc)
    return accuracy(stack.train(False), data.x_test.to(device), data.y_test.to(device))
