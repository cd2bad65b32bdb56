"""The bilevel family's own evaluations (docs/protocols.md):

- `dd`: DD's test (ssnl/dataset-distillation main.py lines 129-134 and basics.py evaluate_steps / train_steps_inplace,
  lines 57-83 and 223-302): every model is a fresh random initialisation of the paper's network (LeNet / AlexCifarNet,
  the distillation's init), trained by replaying the stored steps in order (images, labels, learned lrs), nothing
  else; accuracy on the whole test split (test_all) after the last step.
- `ld`: LD's test (ondrejbohdal/label-distillation label_distillation_or2.py test, lines 744-809, repeated 20 times at
  lines 469-477): a fresh network (PyTorch's default init) trained with Adam (PyTorch defaults, lr 1e-3) on random
  minibatches of `inner_batch_size` base examples with their learned labels (soft cross-entropy) for the step count
  the distillation chose on the validation split; then the test split. A set without a learned step count (hard
  labels: LD's baseline, lines 315-331) gets it from LD's search on the validation split (find_best_num_steps, lines
  812-889), which is why this protocol takes the validation split. A set of the ridge-regression variant
  (label_distillation_rr.py test, lines 783-876) trains the same way with LD's RR model (ddflow.ops.ldrr: the feature
  extractor and the calibration by Adam, the global ridge-regression classifier moved by the pseudo-gradient) and
  scores with the plain classifier; the variant is the record's (`ld.variant`), for a set without one the setting's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import RealData
from ..errors import DdflowError
from ..nets.bilevel import build
from ..ops.bilevel import accuracy, baseline_checkpoints, dd_replay, params_of
from ..ops.ldrr import VARIANTS, base_learner
from ..progress import Progress
from ..records import DistilledSet
from .registry import desc, joined, protocol, scored


def _net_name(settings: dict, record_net: str | None, channels: int) -> str:
    net = settings.get("net") or "auto"
    if net == "auto":
        return record_net or ("LeNet" if channels == 1 else "AlexCifarNet")
    return net


def dd_steps(record: DistilledSet, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The stored step sequence of a DD record: (images of the step's batch, its labels, its learned lr)."""
    info = record.extra.get("dd")
    if not isinstance(info, dict) or "step_lrs" not in info:
        raise DdflowError(f"protocol 'dd' replays DD's stored steps; {record.cell} has none (extra 'dd.step_lrs')")
    order, lrs = list(info["order"]), [float(v) for v in info["step_lrs"]]
    if len(order) != len(lrs):
        raise DdflowError(f"{record.cell}: {len(order)} steps but {len(lrs)} step lrs")
    batches = record.images.to(device).split(len(record.images) // int(info["distill_steps"]))
    labels = record.labels.to(device).split(len(record.labels) // int(info["distill_steps"]))
    return [(batches[s], labels[s], torch.tensor(lr, device=device)) for s, lr in zip(order, lrs)]


@protocol("dd")
def evaluate_dd(record: DistilledSet, data: RealData, settings: dict, generators, device: torch.device) -> list[float]:
    info = data.info
    steps = dd_steps(record, device)
    extra = record.extra["dd"]
    name = _net_name(settings, extra.get("net"), info.channels)
    accs = []
    progress = Progress(len(generators), desc("dd", record))
    for g in generators:   # test_nets_type unknown_init: each model a fresh initialisation
        net = build(name, info.channels, info.classes, info.size, g, settings.get("init", extra.get("init", "xavier")),
                    float(extra.get("init_gain", 1.0)), device)
        final = dd_replay(net, params_of(net), steps)
        accs.append(scored(lambda x, y: [accuracy(net, final, x, y, device)], data))
        progress.update(len(accs), acc=accs[-1][0])
    progress.close()
    return joined(accs)


def search_steps(learner, x: torch.Tensor, labels: torch.Tensor, batch: int, generator: torch.Generator, x_val,
                 y_val: torch.Tensor, device: torch.device) -> int:
    """LD's find_best_num_steps (or2 lines 812-889, rr lines 879-970): train one fresh model, validating at LD's
    checkpoints; the step count (i + 1) of the lowest validation error, the first on ties."""
    limit, checks = baseline_checkpoints(len(x))
    best = {"steps": 0, "err": 100.0}

    def check(i: int) -> None:
        if i in checks:
            err = 100.0 - learner.accuracy(x_val, y_val, device)
            if err < best["err"]:
                best.update(steps=i + 1, err=err)

    learner.train(x, labels, limit, batch, generator, check)
    return int(best["steps"])


def ld_variant(settings: dict, extra: dict, cell: str) -> str:
    """The record's variant (what its labels were learned for), or the setting's for a set without one; `auto` in
    the setting defers to the record, then or2."""
    setting = str(settings.get("variant", "auto"))
    if setting not in ("auto",) + VARIANTS:
        raise DdflowError(f"protocol 'ld': variant {setting!r}; allowed: auto, {', '.join(VARIANTS)} "
                          "(workflow/hparams/stages/protocols.yaml)")
    variant = extra.get("variant") or (setting if setting != "auto" else "or2")
    if setting != "auto" and variant != setting:
        raise DdflowError(f"protocol 'ld': {cell} holds labels learned by variant {variant!r}, the setting asks for "
                          f"{setting!r}")
    return variant


@protocol("ld", validation=True, variants=("hard",))
def evaluate_ld(record: DistilledSet, data: RealData, settings: dict, generators, device: torch.device) -> list[float]:
    info = data.info
    extra = record.extra.get("ld") if isinstance(record.extra.get("ld"), dict) else {}
    variant = ld_variant(settings, extra, record.cell)
    rr = {**(settings.get("rr") or {}), **(extra.get("rr") or {})} if variant == "rr" else None
    labels = record.labels.to(device).float()
    if labels.dim() == 1:   # hard labels: LD's baseline one-hot labels (line 322)
        labels = F.one_hot(labels.long(), info.classes).float()
    x = record.images.to(device)
    batch = int(extra.get("inner_batch_size") or settings["inner_batch_size"])
    name = _net_name(settings, extra.get("net"), info.channels)
    lr = float(settings["lr"])

    def fresh(g: torch.Generator):
        net = build(name, info.channels, info.classes, info.size, g, "default", device=device)
        return base_learner(variant, net, info.classes, lr, rr)

    steps = extra.get("num_steps")
    if steps is None:
        if data.x_val is None:
            raise DdflowError(f"protocol 'ld': {record.cell} has no learned step count and no validation split")
        g = torch.Generator().manual_seed(int(settings.get("search_seed", 0)))
        steps = search_steps(fresh(g), x, labels, batch, g, data.x_val, data.y_val, device)
    accs = []
    progress = Progress(len(generators), desc("ld", record))
    for g in generators:
        learner = fresh(g)
        learner.train(x, labels, int(steps), batch, g)
        accs.append(scored(lambda xe, ye: [learner.accuracy(xe, ye, device)], data))
        progress.update(len(accs), acc=accs[-1][0])
    progress.close()
    return joined(accs)
