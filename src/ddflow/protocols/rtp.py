"""RTP's evaluation (princetonvisualai/RememberThePast-DatasetDistillation tools/evaluator.py lines 38-70 and 86-110,
tools/trainer.py lines 124-177): `models` fresh ConvNet-3 (width 128, instancenorm, average pooling:
utils/model_utils.py get_default_convnet_setting) each trained `epochs` epochs on the decoded images (the whole
coefficient table through the bases, bilinear upsampling; trainer.py get_dataloader) in shuffled batches of 640,
hard-label cross-entropy, SGD (lr 0.01, momentum 0.9, no weight decay: configs backbone_optim and
utils/optimizer_utils.py) with no learning-rate schedule (train_test(no_scheduler=True)); test accuracy after the last
epoch. The official run evaluates every 200 iterations on the test split and its README tunes on it (validation
ratio 0); ddflow evaluates the final set once and chooses nothing on the test split.
"""
from __future__ import annotations

import torch

from ..data import RealData
from ..errors import DdflowError
from ..nets import build_net
from ..ops.rtp import interventions
from ..records import DistilledSet
from ..train import NetStack, TrainSettings, accuracy, train_stack
from .registry import desc, protocol, scored


@protocol("rtp")
def evaluate_rtp(record: DistilledSet, data: RealData, settings: dict, generators, device: torch.device) -> list[float]:
    if record.soft_labels:
        raise DdflowError("protocol 'rtp' trains on hard labels (RTP learns none); this distilled set has soft labels")
    info = data.info
    template = build_net(settings["net"], info.channels, info.classes, info.size)
    stack = NetStack(template, generators, device, settings.get("batching", "auto"))
    ts = TrainSettings(epochs=int(settings["epochs"]), lr=float(settings["lr"]), momentum=float(settings["momentum"]),
                       weight_decay=float(settings["weight_decay"]), batch=int(settings["batch"]), decay_epochs=())
    x, y = record.images, record.labels
    augment = interventions(rtp_interventions(settings, record))
    train_stack(stack.train(True), x.to(device), y.to(device), generators, ts, augment, desc=desc("rtp", record))
    stack.train(False)
    return scored(lambda x, y: accuracy(stack, x.to(device), y.to(device)), data)


def rtp_interventions(settings: dict, record: DistilledSet) -> str:
    """The interventions protocol rtp trains with: the setting's, or with `auto` the distillation's (the record's
    rtp.interventions; none for a set without one). The official evaluation applies the training intervention to
    every training batch (tools/trainer.py lines 52-55, prob 1.0): one transform per batch, per-image parameters
    (pair_aug in its test phase), which is DSA's draw per batch."""
    setting = str(settings.get("interventions", "auto"))
    if setting != "auto":
        return setting
    extra = record.extra.get("rtp") if isinstance(record.extra.get("rtp"), dict) else {}
    return str(extra.get("interventions", "none"))
