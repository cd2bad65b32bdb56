"""The protocol registry. A protocol is `fn(record, data, settings, generators, device) -> list[float]`: it trains
len(generators) fresh networks on a distilled set (ddflow.records.DistilledSet) and returns each one's test accuracy
in percent. `data` is already in the record's space (DistilledSet.real_in_space); `settings` are the resolved
protocol settings (ddflow.protocols.cell.protocol_settings); model k draws everything from generators[k]."""
from __future__ import annotations

from typing import Callable

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


def needs_validation(name: str) -> bool:
    return name in VALIDATION


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise DdflowError(f"unknown evaluation protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def desc(name: str, record: DistilledSet) -> str:
    """The progress-line label of one evaluation."""
    return f"eval {name} {record.cell}"
