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


def protocol(name: str) -> Callable[[Protocol], Protocol]:
    def deco(fn: Protocol) -> Protocol:
        if name in PROTOCOLS:
            raise ValueError(f"protocol {name!r} registered twice")
        PROTOCOLS[name] = fn
        return fn
    return deco


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise DdflowError(f"unknown evaluation protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def desc(name: str, record: DistilledSet) -> str:
    """The progress-line label of one evaluation."""
    return f"eval {name} {record.cell}"
