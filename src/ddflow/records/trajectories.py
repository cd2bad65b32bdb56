"""Checkpoint-sampling records (`results/trajectories/{dataset}/{experts prep}/{net}/...`, written by
ddflow.stages.sampling), which reference (expert, epoch) checkpoints, never copies of an expert:
- an MTT manifest (`mtt-m{M}-t{T}.json`): the experts, their epochs and lrs, the window length M and the number of
  window starts T;
- an EAD pool (`ead-p{P}.pt`): P drawn checkpoints stacked per parameter name, their (expert, epoch) references and
  weights, and the final parameters of expert 0.
Both carry the mean/std of the experts' data. The loaders check the file against what the reading method needs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DdflowError
from ..io import load_pt, read_json
from .experts import experts_prep

MANIFEST_FORMAT = "ddflow.trajectory-manifest/1"
POOL_FORMAT = "ddflow.trajectory-pool/1"
SAMPLERS = ("mtt", "ead")


def sampler_id(hp: dict[str, Any]) -> str:
    """The sampler a method's hparams ask for: 'mtt-m{expert_epochs}-t{max_start_epoch}' or 'ead-p{pool}'."""
    kind = hp["sampler"]
    if kind == "mtt":
        return f"mtt-m{int(hp['expert_epochs'])}-t{int(hp['max_start_epoch'])}"
    if kind == "ead":
        return f"ead-p{int(hp['pool'])}"
    raise DdflowError(f"unknown checkpoint sampler {kind!r}; known: {', '.join(SAMPLERS)}")


def manifest_path(dataset: str, hp: dict[str, Any]) -> str:
    """The manifest a trajectory method reads (hp: net, prep and expert_standardize (experts_prep), sampler and
    its numbers)."""
    sid = sampler_id(hp)
    ext = "json" if sid.startswith("mtt") else "pt"
    return f"results/trajectories/{dataset}/{experts_prep(hp)}/{hp['net']}/{sid}.{ext}"


def _check_identity(obj: dict[str, Any], path: str | Path, what: str, dataset: str, prep: str, net: str) -> None:
    for key, want in (("dataset", dataset), ("prep", prep), ("net", net)):
        if obj[key] != want:
            raise DdflowError(f"{path}: {what} for {key} {obj[key]!r}, this distillation needs {want!r}")


def load_manifest(path: str | Path, dataset: str, prep: str, net: str) -> dict[str, Any]:
    man = read_json(path, "trajectory manifest")
    if not isinstance(man, dict) or man.get("format") != MANIFEST_FORMAT:
        raise DdflowError(f"{path}: not a ddflow trajectory manifest ({MANIFEST_FORMAT})")
    _check_identity(man, path, "manifest", dataset, prep, net)
    return man


def load_pool(path: str | Path, dataset: str, prep: str, net: str) -> dict[str, Any]:
    pool = load_pt(path, "checkpoint pool")
    if not isinstance(pool, dict) or pool.get("format") != POOL_FORMAT:
        raise DdflowError(f"{path}: not a ddflow checkpoint pool ({POOL_FORMAT})")
    _check_identity(pool, path, "checkpoint pool", dataset, prep, net)
    return pool


def check_normalization(source: dict, info, where: str) -> None:
    """A trajectory method must see the data normalised as its experts did (hparams normalize_as on both)."""
    if "mean" in source and (tuple(source["mean"]) != tuple(info.mean) or tuple(source["std"]) != tuple(info.std)):
        raise DdflowError(f"{where}: experts trained on data normalised with mean {source['mean']} / std "
                          f"{source['std']}, this distillation normalises with {list(info.mean)} / {list(info.std)}: "
                          "set the same normalize_as in workflow/hparams/stages/experts.yaml and the method's hparams")


def check_manifest(man: dict[str, Any], hp: dict[str, Any], where: str) -> None:
    """An MTT manifest matches the method's hparams: the same expert_epochs and max_start_epoch, and every expert
    holds the last window's target epoch max_start_epoch - 1 + expert_epochs."""
    for key in ("expert_epochs", "max_start_epoch"):
        if int(man[key]) != int(hp[key]):
            raise DdflowError(f"{where}: manifest {key} {man[key]} != hparams {hp[key]}")
    need = int(hp["max_start_epoch"]) - 1 + int(hp["expert_epochs"])
    short = [p for p, e in zip(man["experts"], man["epochs"]) if e < need]
    if short:
        raise DdflowError(f"mtt: expert window up to epoch {need} beyond the trained epochs of {short[:3]}")
