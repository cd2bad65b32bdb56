"""The `idc` evaluation protocol (snu-mllab/Efficient-Dataset-Condensation test.py / train.py).

The distilled images are decoded by multi-formation and normalised (DistilledSet.decoded()), and K fresh ConvNets
train on them together (ddflow.train.train_stack): SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 64,
`epochs` epochs, lr x0.2 at epochs 2E//3 and 5E//6 (MultiStepLR: both decays when the two coincide), per-sample
IDC DiffAug (`strategy`, without cutout when `mixup` is 'cut': argument.py lines 451-452) and CutMix (beta, p) unless
`mixup` is 'vanilla'. Test accuracy after the final epoch (IDC and DREAM report the best of periodic evaluations).

CutMix over K stacked models: each model draws its own DiffAug, its own CutMix coin, Beta draw, permutation and box
from its own generator, per minibatch, after its data order; `_StackAugment.augment_many` records the K CutMix
draws and the loss hook mixes each model's labels with its own draw, so K models trained together follow exactly
the random streams they would follow one by one.
"""
from __future__ import annotations

import torch

from ..augment import IDCAugment
from ..augment.cutmix import cutmix_apply, maybe_cutmix
from ..data import RealData
from ..errors import DdflowError
from ..nets import build_net
from ..ops.losses import cutmix_loss
from ..records import DistilledSet
from ..train import NetStack, TrainSettings, accuracy, train_stack
from .registry import desc, protocol, scored


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
            out.append(cutmix_loss(logits[k], y[k], mix))
        return torch.stack(out)


def eval_strategy(strategy: str, mixup: str) -> str:
    """The DiffAug strategy of the evaluation: snu-mllab/Efficient-Dataset-Condensation argument.py lines 451-452
    (commit ceac95a) remove cutout from dsa_strategy when mixup is 'cut' (remove_aug: split on '_')."""
    if mixup != "cut":
        return strategy
    return "_".join(t for t in strategy.split("_") if t != "cutout") or "none"


def decay_epochs(epochs: int) -> tuple[int, ...]:
    """MultiStepLR(milestones=[2E//3, 5E//6], gamma) (train.py lines 109-110) stepped after every epoch (line 164):
    the lr falls
    after epoch index m - 1 for each milestone m >= 1 (a milestone 0 never fires), once per occurrence, so equal
    milestones decay twice (MultiStepLR counts them)."""
    return tuple(sorted(m - 1 for m in (2 * epochs // 3, 5 * epochs // 6) if m >= 1))


@protocol("idc")
def evaluate_idc(record: DistilledSet, data: RealData, settings: dict, generators,
                 device: torch.device) -> list[float]:
    if record.soft_labels:
        raise DdflowError("protocol 'idc' trains on hard labels; this distilled set has soft labels")
    x, y = record.decoded()
    info = data.info
    template = build_net(settings["net"], info.channels, info.classes, info.size)
    stack = NetStack(template, generators, device, settings.get("batching", "auto"))
    epochs = int(settings["epochs"])
    ts = TrainSettings(epochs=epochs, lr=settings["lr"], momentum=settings["momentum"],
                       weight_decay=settings["weight_decay"], batch=settings["batch"],
                       decay_epochs=decay_epochs(epochs), decay_factor=settings["decay_factor"],
                       reset_momentum_on_decay=False)
    mixup = settings.get("mixup", "cut")
    if mixup not in ("cut", "vanilla"):
        raise DdflowError(f"protocol 'idc': mixup {mixup!r} not in (cut, vanilla)")
    strategy = eval_strategy(settings.get("strategy", "none"), mixup)
    aug = IDCAugment(strategy) if strategy not in ("none", "") else None
    stack_aug = _StackAugment(aug, mixup == "cut", float(settings["cutmix_p"]), float(settings["cutmix_beta"]))
    train_stack(stack.train(True), x.to(device), y.to(device), generators, ts, stack_aug, loss_fn=stack_aug.loss,
                desc=desc("idc", record))
    stack.train(False)
    return scored(lambda x, y: accuracy(stack, x.to(device), y.to(device)), data)
