"""Stage 3: checkpoint sampling for the trajectory methods, manifests that reference (expert, epoch) checkpoints,
never copies of an expert:
- MTT windows (`mtt-m{M}-t{T}.json`): the experts and the window starts 0..T-1 with length M; the distillation
  draws (expert, start) per iteration. Checked here: every expert holds epochs up to T - 1 + M.
- EAD pool (`ead-p{P}.pt`): P checkpoints theta^t (t = 0..epochs-1) drawn without replacement with probability
  proportional to the lr of the step taken from them, stored as one compact stacked tensor file, plus the final
  parameters of expert 0 (EAD initialises its soft labels from the final expert's predictions).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .errors import DdflowError
from .experts import experts_prep, load_expert
from .io import load_pt, read_json, save_pt, write_json
from .runtime import provenance
from .seeding import generator

MANIFEST_FORMAT = "ddflow.trajectory-manifest/1"

POOL_FORMAT = "ddflow.trajectory-pool/1"

_MTT_SAMPLER = re.compile(r"^mtt-m(\d+)-t(\d+)$")

_EAD_SAMPLER = re.compile(r"^ead-p(\d+)$")


def sampler_id(hp: dict[str, Any]) -> str:
    """The sampler a method's hparams ask for: 'mtt-m{expert_epochs}-t{max_start_epoch}' or 'ead-p{pool}'."""
    kind = hp["sampler"]
    if kind == "mtt":
        return f"mtt-m{int(hp['expert_epochs'])}-t{int(hp['max_start_epoch'])}"
    if kind == "ead":
        return f"ead-p{int(hp['pool'])}"
    raise DdflowError(f"unknown checkpoint sampler {kind!r}; known: mtt, ead")


def manifest_path(dataset: str, hp: dict[str, Any]) -> str:
    """The manifest a trajectory method reads (hp: net, prep and expert_standardize (ddflow.experts.experts_prep),
    sampler and its numbers)."""
    sid = sampler_id(hp)
    ext = "json" if sid.startswith("mtt") else "pt"
    return f"results/trajectories/{dataset}/{experts_prep(hp)}/{hp['net']}/{sid}.{ext}"


def _check_experts(expert_paths: list[str], dataset: str, prep: str, net: str, need_epochs: int) -> list[dict]:
    """The experts, memory-mapped: their tensors are paged in only where read (the MTT manifest reads none, the EAD
    pool only its drawn checkpoints), so the host holds no whole trajectory whatever the experts' size."""
    if not expert_paths:
        raise DdflowError("checkpoint sampling: no experts given")
    experts = []
    for p in expert_paths:
        e = load_expert(p, dataset, prep, net, mmap=True)
        if e["epochs"] < need_epochs:
            raise DdflowError(f"{p}: expert trained for {e['epochs']} epochs, the sampler needs epoch {need_epochs}")
        experts.append(e)
    stats = {(tuple(e.get("mean") or ()), tuple(e.get("std") or ())) for e in experts}
    if len(stats) > 1:
        raise DdflowError(f"checkpoint sampling: the experts were trained on differently normalised data {stats}")
    return experts


def normalization(experts: list[dict]) -> dict[str, list[float]]:
    """The mean/std the experts' data was normalised with (files of older versions carry none: {})."""
    e = experts[0]
    return {"mean": list(e["mean"]), "std": list(e["std"])} if "mean" in e else {}


def check_normalization(source: dict, info, where: str) -> None:
    """A trajectory method must see the data normalised as its experts did (hparams normalize_as on both)."""
    if "mean" in source and (tuple(source["mean"]) != tuple(info.mean) or tuple(source["std"]) != tuple(info.std)):
        raise DdflowError(f"{where}: experts trained on data normalised with mean {source['mean']} / std "
                          f"{source['std']}, this distillation normalises with {list(info.mean)} / {list(info.std)}: "
                          "set the same normalize_as in workflow/hparams/stages/experts.yaml and the method's hparams")


def write_mtt_manifest(sampler: str, dataset: str, prep: str, net: str, expert_paths: list[str],
                       out: str | Path) -> dict[str, Any]:
    """MTT windows [start, start + M] for start in 0..T-1 over every expert (the official randint(0, T))."""
    m = _MTT_SAMPLER.match(sampler)
    if not m:
        raise DdflowError(f"not an MTT sampler id: {sampler!r} (expected mtt-m<M>-t<T>)")
    length, max_start = int(m.group(1)), int(m.group(2))
    if length < 1 or max_start < 1:
        raise DdflowError(f"{sampler}: expert_epochs and max_start_epoch must be >= 1")
    experts = _check_experts(expert_paths, dataset, prep, net, max_start - 1 + length)
    manifest = {"format": MANIFEST_FORMAT, "sampler": sampler, "dataset": dataset, "prep": prep, "net": net,
                "expert_epochs": length, "max_start_epoch": max_start,
                "experts": [str(p) for p in expert_paths], "epochs": [e["epochs"] for e in experts],
                "lr": [e["lr"] for e in experts], **normalization(experts), "provenance": provenance()}
    write_json(manifest, out)
    return manifest


def load_manifest(path: str | Path, dataset: str, prep: str, net: str) -> dict[str, Any]:
    man = read_json(path, "trajectory manifest")
    if man.get("format") != MANIFEST_FORMAT:
        raise DdflowError(f"{path}: not a ddflow trajectory manifest ({MANIFEST_FORMAT})")
    for key, want in (("dataset", dataset), ("prep", prep), ("net", net)):
        if man[key] != want:
            raise DdflowError(f"{path}: manifest for {key} {man[key]!r}, this distillation needs {want!r}")
    return man


def pool_weights(lrs: list[list[float]]) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Every candidate checkpoint (expert k, epoch t) for t = 0..epochs-1 and its weight: the lr of the step
    taken from theta^t (so uniform for constant-lr experts), normalised to sum 1."""
    refs, w = [], []
    for k, lr in enumerate(lrs):
        for t, v in enumerate(lr):
            refs.append((k, t))
            w.append(float(v))
    weights = torch.tensor(w, dtype=torch.float64)
    if not len(refs) or weights.sum() <= 0:
        raise DdflowError("checkpoint pool: no candidate checkpoints with a positive lr")
    return refs, weights / weights.sum()


def write_ead_pool(sampler: str, dataset: str, prep: str, net: str, expert_paths: list[str],
                   out: str | Path) -> dict[str, Any]:
    """EAD's pool of P checkpoints drawn without replacement, probability proportional to the lr of their step."""
    m = _EAD_SAMPLER.match(sampler)
    if not m:
        raise DdflowError(f"not an EAD sampler id: {sampler!r} (expected ead-p<P>)")
    size = int(m.group(1))
    experts = _check_experts(expert_paths, dataset, prep, net, 1)
    refs, weights = pool_weights([e["lr"] for e in experts])
    if size < 1 or size > len(refs):
        raise DdflowError(f"{sampler}: pool of {size} checkpoints, but the experts hold {len(refs)} candidates")
    g = generator("ead-pool", dataset, prep, net, sampler)
    picks = torch.multinomial(weights, size, replacement=False, generator=g).sort().values.tolist()
    chosen = [refs[i] for i in picks]
    names = list(experts[0]["params"])
    params = {n: torch.stack([experts[k]["params"][n][t] for k, t in chosen]) for n in names}
    final = {n: experts[0]["params"][n][-1].clone() for n in names}
    pool = {"format": POOL_FORMAT, "sampler": sampler, "dataset": dataset, "prep": prep, "net": net,
            "experts": [str(p) for p in expert_paths], "refs": torch.tensor(chosen, dtype=torch.int64),
            "weights": weights[picks].float(), "params": params, "final": final, **normalization(experts),
            "provenance": provenance()}
    save_pt(pool, out)
    return pool


def load_pool(path: str | Path, dataset: str, prep: str, net: str) -> dict[str, Any]:
    pool = load_pt(path, "checkpoint pool")
    if not isinstance(pool, dict) or pool.get("format") != POOL_FORMAT:
        raise DdflowError(f"{path}: not a ddflow checkpoint pool ({POOL_FORMAT})")
    for key, want in (("dataset", dataset), ("prep", prep), ("net", net)):
        if pool[key] != want:
            raise DdflowError(f"{path}: checkpoint pool for {key} {pool[key]!r}, this distillation needs {want!r}")
    return pool


def write_manifest(sampler: str, dataset: str, prep: str, net: str, expert_paths: list[str], out) -> None:
    if sampler.startswith("mtt"):
        write_mtt_manifest(sampler, dataset, prep, net, expert_paths, out)
    elif sampler.startswith("ead"):
        write_ead_pool(sampler, dataset, prep, net, expert_paths, out)
    else:
        raise DdflowError(f"unknown checkpoint sampler {sampler!r}")
