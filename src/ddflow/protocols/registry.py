"""The protocol registry. A protocol is `fn(record, data, settings, generators, device) -> list[float]`: it trains
len(generators) fresh networks on a distilled set (ddflow.records.DistilledSet) and returns each one's test accuracy
in percent. `data` is already in the record's space (DistilledSet.real_in_space); `settings` are the resolved
protocol settings (ddflow.protocols.cell.protocol_settings); model k draws everything from generators[k].

When `data` carries the validation split (x_val / y_val: ddflow.data.validation), a protocol returns `Scores`: the
same list of test accuracies, with `.val` = each same trained model's accuracy on the validation split (a forward
pass more, no training), which the tables' validation rule chooses on (ddflow.report.valrule)."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..data import RealData
from ..errors import DdflowError
from ..records import DistilledSet

Protocol = Callable[[DistilledSet, RealData, dict, list[torch.Generator], torch.device], list[float]]
PROTOCOLS: dict[str, Protocol] = {}
#: protocols that choose something (a step count, an early stop) on the validation split (ddflow.data.validation):
#: the workflow makes the split their input, and `data` reaches them carved (data.x_val / data.y_val)
VALIDATION: set[str] = set()
#: the variants a protocol admits (ddflow.protocols.regimes): `hard` (the set's images with their class index),
#: `teacher` (a teacher network's labels), `aug` / `noaug` (its training with / without augmentation)
VARIANTS: dict[str, tuple[str, ...]] = {}


def protocol(name: str, validation: bool = False, variants: tuple[str, ...] = ()) -> Callable[[Protocol], Protocol]:
    def deco(fn: Protocol) -> Protocol:
        if name in PROTOCOLS:
            raise ValueError(f"protocol {name!r} registered twice")
        PROTOCOLS[name] = fn
        if validation:
            VALIDATION.add(name)
        if variants:
            VARIANTS[name] = tuple(variants)
        return fn
    return deco


class Scores(list):
    """Each model's test accuracy (percent; the list every protocol returns) and `val`: each same model's accuracy
    on the validation split, or None when the data carry none."""

    def __init__(self, test: Iterable[float], val: Iterable[float] | None = None):
        super().__init__(float(a) for a in test)
        self.val = None if val is None else [float(a) for a in val]
        if self.val is not None and len(self.val) != len(self):
            raise DdflowError(f"{len(self)} test accuracies but {len(self.val)} validation accuracies")


def scored(acc: Callable[[Any, torch.Tensor], list[float]], data: RealData) -> Scores:
    """The scores of trained models from `acc(x, y)` (one accuracy per model on images x with labels y): on the
    test split, and on the validation split when `data` carries one."""
    test = acc(data.x_test, data.y_test)
    return Scores(test, None if data.x_val is None else acc(data.x_val, data.y_val))


def joined(per_model: list[Scores]) -> Scores:
    """One Scores of models scored one at a time (a protocol that trains its models in a loop)."""
    vals = [s.val for s in per_model]
    val = None if any(v is None for v in vals) else [a for v in vals for a in v]
    return Scores([a for s in per_model for a in s], val)


def needs_validation(name: str) -> bool:
    return name in VALIDATION


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise DdflowError(f"unknown evaluation protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def desc(name: str, record: DistilledSet) -> str:
    """The progress-line label of one evaluation."""
    return f"eval {name} {record.cell}"
