"""Label regimes and augmentation variants of the evaluation protocols (docs/fair.md "Label regimes").

A variant protocol `{base}-{variant}` is the base protocol run on the same set with one thing changed; a base
declares the variants it admits (`@protocol(..., variants=...)`, registry.VARIANTS), and every admitted variant is
a protocol of its own, so its cells are results/eval/{base}-{variant}/... beside the base's:

- `hard`: the set's images with their class index (the argmax of its learned labels, DistilledSet.hard_labels()),
  the protocol's training otherwise unchanged. The `soft` protocol trains on (N, C) targets: it gets the index's
  one-hot rows (its soft-target cross-entropy is then the cross-entropy). The MSE / KRR protocols (frepo, krr, rcig,
  krr-inf, kip-nn, rfad-nn) and `ld` turn class indices into their own one-hot targets as for any hard-label set,
  with the same loss. Admitted by the protocols that evaluate learned labels (mtt, soft, frepo, krr, rcig, krr-inf,
  kip-nn, rfad-nn, ld).
- `teacher`: labels from a teacher network (the feature net: a ConvNet trained on the full training split, rule
  featnet): p = softmax(teacher(x) / T) per image, computed once and stored in the cell (`labels_used`), and the
  student trains with KL(p || softmax(student(x) / T)), batch mean, no T^2 factor (SRe2L validate/train_KD.py lines
  200, 215-216, 222). With `per_batch: true` the teacher labels every augmented batch instead (SRe2L line 213, as
  RDED). Admitted by DC's loop (dc, mtt, soft); a multi-formation set is decoded first.
- `aug` / `noaug`: the base's training with / without augmentation (a boolean `augment` becomes true / false; a
  named one the stage file's `augmentation` / none). Admitted by dc, mtt, soft, haba, frepo, krr.

The plain protocol name evaluates the set's own labels: `learned` for a set that stores learned labels, `hard` for
the others (label_regime). Settings: the base's resolved settings, `labels` naming the regime, and those of the stage
file workflow/hparams/stages/regimes.yaml (variant_settings).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import hparams as hparams_mod
from ..data import RealData
from ..errors import DdflowError
from ..records import DistilledSet
from . import bilevel, haba, idc, kernel, kip, rcig, rfad, rtp  # noqa: F401  (the bases register before their variants)
from .dc import train_and_test_dc
from .registry import PROTOCOLS, VALIDATION, VARIANTS, protocol

REGIMES = ("hard", "teacher", "aug", "noaug")
STAGE = "regimes"
SETTING_KEYS = ("teacher", "augmentation", "cell_settings")
TEACHER_KEYS = ("net", "temperature", "per_batch")


def variant_id(base: str, variant: str) -> str:
    return f"{base}-{variant}"


def _build() -> dict[str, tuple[str, str]]:
    out = {}
    for base, variants in VARIANTS.items():
        for v in variants:
            if v not in REGIMES:
                raise ValueError(f"protocol {base!r} declares unknown variant {v!r}; known: {', '.join(REGIMES)}")
            out[variant_id(base, v)] = (base, v)
    return out


def label_regime(protocol_name: str, learned: bool) -> str:
    """The labels a cell of `protocol_name` trained on: hard / teacher for those variants, else the set's own
    (learned when it stores learned labels, hard otherwise)."""
    v = VARIANT_IDS.get(protocol_name, (None, None))[1]
    if v in ("hard", "teacher"):
        return v
    return "learned" if learned else "hard"


def display(protocol_name: str, learned: bool) -> str:
    """A protocol name with its label regime, as the tables print it: `dc · hard`, `frepo · learned`."""
    return f"{protocol_name} · {label_regime(protocol_name, learned)}"


# ---- settings ------------------------------------------------------------------------------------------------
def load_settings(dataset: str, ipc: int, preset: str, hp_dir=None) -> dict[str, Any]:
    """workflow/hparams/stages/regimes.yaml resolved, checked: its keys, the teacher's, a positive temperature."""
    s = hparams_mod.resolve(STAGE, dataset, int(ipc), preset, hp_dir)
    where = f"{hparams_mod.hparams_file(STAGE, hp_dir)} resolved for {dataset}, IPC {ipc}, preset {preset}"
    unknown = sorted(set(s) - set(SETTING_KEYS))
    if unknown:
        raise DdflowError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(SETTING_KEYS)}")
    teacher = s.get("teacher") or {}
    bad = sorted(set(teacher) ^ set(TEACHER_KEYS))
    if bad:
        raise DdflowError(f"{where}: teacher needs exactly the keys {', '.join(TEACHER_KEYS)} (wrong: {bad})")
    t = teacher["temperature"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise DdflowError(f"{where}: teacher.temperature = {t!r}; a number > 0 expected")
    if not isinstance(teacher["per_batch"], bool):
        raise DdflowError(f"{where}: teacher.per_batch = {teacher['per_batch']!r}; true or false expected")
    for key in ("augmentation", "cell_settings"):
        if not isinstance(s.get(key) or {}, dict):
            raise DdflowError(f"{where}: {key} must be a mapping")
    hparams_mod.check_values(s.get("cell_settings") or {}, f"{where}: cell_settings")
    return s


def variant_settings(base: dict[str, Any], variant: str, regimes: dict[str, Any]) -> dict[str, Any]:
    """The settings of `{base protocol}-{variant}` from the base's resolved settings and the checked stage file:
    `cell_settings` replace the keys the base has (the quick preset's models, epochs); then the variant's change."""
    s = {**base, **{k: v for k, v in (regimes.get("cell_settings") or {}).items() if k in base}}
    if variant in ("hard", "teacher"):
        s["labels"] = variant
        if variant == "teacher":
            s["teacher"] = dict(regimes["teacher"])
    elif isinstance(base.get("augment"), bool):
        s["augment"] = variant == "aug"
    elif variant == "aug":
        s.update(regimes.get("augmentation") or {})
    else:
        s["augment"] = "none"
    return s


# ---- labels --------------------------------------------------------------------------------------------------
def class_index(record: DistilledSet) -> torch.Tensor:
    """The class of each image of a set: its label, or the argmax of its learned labels."""
    return record.hard_labels().long()


def trained_form(record: DistilledSet) -> DistilledSet:
    """The set as DC's loop trains on it: a multi-formation set decoded (normalised, factor 1), else itself."""
    if int(record.factor) == 1:
        return record
    x, y = record.decoded()
    return dataclasses.replace(record, images=x, labels=y, factor=1, space="normalized", zca=None)


@torch.no_grad()
def teacher_probabilities(teacher: torch.nn.Module, x: torch.Tensor, temperature: float,
                          chunk: int = 500) -> torch.Tensor:
    """softmax(teacher(x) / T) per image, in eval mode, `chunk` images per pass: (N, C)."""
    teacher.eval()
    dev = next(teacher.parameters()).device
    out = [F.softmax(teacher(x[i:i + chunk].to(dev)).float() / temperature, -1) for i in range(0, len(x), chunk)]
    return torch.cat(out).to(x.device)


def kl_loss(temperature: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """KL(p || softmax(logits / T)) summed over classes, averaged over the batch: (K, B, C) -> (K,) per model
    (nn.KLDivLoss(reduction='batchmean') on log_softmax(output / T), SRe2L train_KD.py lines 200, 215-219)."""
    def loss(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return (torch.xlogy(p, p) - p * F.log_softmax(logits / temperature, -1)).sum(-1).mean(-1)
    return loss


# ---- evaluation ----------------------------------------------------------------------------------------------
def evaluate(name: str, record: DistilledSet, data: RealData, settings: dict, generators, device: torch.device,
             teacher: torch.nn.Module | None = None) -> tuple[list[float], dict[str, Any]]:
    """The accuracies of a variant cell and what its labels were (`labels_used` of the cell)."""
    base, variant = VARIANT_IDS[name]
    if variant in ("aug", "noaug"):
        return PROTOCOLS[base](record, data, settings, generators, device), {
            "regime": label_regime(name, record.soft_labels)}
    if variant == "hard":
        y = class_index(record)
        labels = F.one_hot(y, data.info.classes).float() if base == "soft" else y
        accs = PROTOCOLS[base](dataclasses.replace(record, labels=labels), data, settings, generators, device)
        return accs, {"regime": "hard", "classes": y.tolist()}
    if teacher is None:
        raise DdflowError(f"protocol {name!r} labels the set with a teacher network: give the evaluation its "
                          f"teacher (evaluate --teacher, the feature net results/nets/{record.dataset}/"
                          f"{settings['teacher']['net']}-full.pt)")
    if base == "mtt" and record.lr is None:
        raise DdflowError("protocol 'mtt-teacher' trains with the distillation's learned lr; this set has none")
    t = settings["teacher"]
    temperature = float(t["temperature"])
    rec = trained_form(record)
    probs = teacher_probabilities(teacher, rec.to_normalized(), temperature)
    targets = None
    if t["per_batch"]:
        def targets(xb: torch.Tensor) -> torch.Tensor:   # (K, b, ...) augmented batches -> (K, b, C)
            return teacher_probabilities(teacher, rec.normalize(xb.flatten(0, 1)), temperature).view(*xb.shape[:2], -1)
    lr = float(record.lr) if base == "mtt" else None
    accs = train_and_test_dc(dataclasses.replace(rec, labels=probs), data, settings, generators, device, name, lr=lr,
                             loss_fn=kl_loss(temperature), labels=probs, targets=targets)
    used = {"regime": "teacher", "temperature": temperature, "per_batch": bool(t["per_batch"]),
            "labels": [[round(float(v), 6) for v in row] for row in probs.cpu()]}
    return accs, used


def _registered(name: str):
    def run(record: DistilledSet, data: RealData, settings: dict, generators, device: torch.device) -> list[float]:
        return evaluate(name, record, data, settings, generators, device)[0]
    run.__name__ = f"evaluate_{name.replace('-', '_')}"
    return run


VARIANT_IDS: dict[str, tuple[str, str]] = _build()
for _name, (_base, _variant) in VARIANT_IDS.items():
    protocol(_name, validation=_base in VALIDATION)(_registered(_name))
