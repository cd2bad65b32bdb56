"""Expert trajectories (stage 2) and checkpoint sampling (stage 3) for the trajectory methods (MTT, EAD).

Experts: `results/experts/{dataset}/{prep}/{net}/e{i}.pt`, one file per expert: the parameters after every epoch
(epoch 0 = the initialisation) stacked per parameter name as (epochs + 1, ...), and the lr of each epoch. Expert i
draws everything (initialisation, data order, DSA) from generator("expert", dataset, prep, net, i), so it is the
same file whatever block it is trained in; a block of K experts is one ddflow.train.NetStack (vmap on CUDA, a loop
over models on the CPU). MTT's buffer.py settings: SGD lr 0.01, no momentum, no weight decay, batch 256, DSA per
image (one family per batch, parameters per image), epoch 0 = init. A block resumes from its last finished epoch.

Checkpoint sampling writes manifests that reference (expert, epoch) checkpoints, never copies of an expert:
- MTT windows (`mtt-m{M}-t{T}.json`): the experts and the window starts 0..T-1 with length M; the distillation
  draws (expert, start) per iteration. Checked here: every expert holds epochs up to T - 1 + M.
- EAD pool (`ead-p{P}.pt`): P checkpoints theta^t (t = 0..epochs-1) drawn without replacement with probability
  proportional to the lr of the step taken from them, stored as one compact stacked tensor file, plus the final
  parameters of expert 0 (EAD initialises its soft labels from the final expert's predictions).
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import torch

from .augment import make_augment
from .data import RealData, get_info, load_real
from .errors import DdflowError
from .io import load_pt, save_pt, write_json, read_json
from .nets import build_net
from .prep import preprocess
from .progress import Progress
from .runtime import peak_memory_mb
from .seeding import generator
from .train import NetStack, TrainSettings, accuracy, train_stack

log = logging.getLogger(__name__)
EXPERT_FORMAT = "ddflow.expert/1"
MANIFEST_FORMAT = "ddflow.trajectory-manifest/1"
POOL_FORMAT = "ddflow.trajectory-pool/1"
_MTT_SAMPLER = re.compile(r"^mtt-m(\d+)-t(\d+)$")
_EAD_SAMPLER = re.compile(r"^ead-p(\d+)$")


# ---- paths and names -----------------------------------------------------------------------------------------
def expert_path(dataset: str, prep: str, net: str, i: int) -> str:
    return f"results/experts/{dataset}/{prep}/{net}/e{i}.pt"


def sampler_id(hp: dict[str, Any]) -> str:
    """The sampler a method's hparams ask for: 'mtt-m{expert_epochs}-t{max_start_epoch}' or 'ead-p{pool}'."""
    kind = hp["sampler"]
    if kind == "mtt":
        return f"mtt-m{int(hp['expert_epochs'])}-t{int(hp['max_start_epoch'])}"
    if kind == "ead":
        return f"ead-p{int(hp['pool'])}"
    raise DdflowError(f"unknown checkpoint sampler {kind!r}; known: mtt, ead")


def manifest_path(dataset: str, hp: dict[str, Any]) -> str:
    """The manifest a trajectory method reads (hp: net, prep, sampler and its numbers)."""
    sid = sampler_id(hp)
    ext = "json" if sid.startswith("mtt") else "pt"
    return f"results/trajectories/{dataset}/{hp['prep']}/{hp['net']}/{sid}.{ext}"


def blocks(n_experts: int, block: int) -> list[list[int]]:
    """Expert indices grouped into training blocks of `block` (the last may be shorter)."""
    if n_experts < 1 or block < 1:
        raise DdflowError(f"experts: need experts >= 1 and block >= 1, got {n_experts}, {block}")
    return [list(range(s, min(s + block, n_experts))) for s in range(0, n_experts, block)]


# ---- experts -------------------------------------------------------------------------------------------------
def expert_data(data: RealData, prep: str, eps: float | None = None):
    """(data in the prep's space, ZCA or None); 'kornia' is MTT's ZCA (eps 0.1 absolute)."""
    return preprocess(data, prep, eps)


def train_experts(dataset: str, prep: str, net: str, indices: list[int], settings: dict[str, Any],
                  data_path: str | Path, outs: list[str | Path], device: torch.device,
                  resume: str | Path | None = None, stop_after_epoch: int | None = None) -> None:
    """Train experts `indices` together (one NetStack) and write one file per expert to `outs`.
    settings: epochs, lr, momentum, weight_decay, batch, augment ('dsa'/'none'), strategy, zca_eps.
    `stop_after_epoch` leaves only the resume file (tests simulate a killed job with it)."""
    if len(indices) != len(outs):
        raise DdflowError("train_experts: one output per expert index")
    info = get_info(dataset)
    raw = load_real(data_path, info, device)
    data, _ = expert_data(raw, prep, settings.get("zca_eps"))
    gens = [generator("expert", dataset, prep, net, i) for i in indices]
    template = build_net(net, info.channels, info.classes, info.size)
    stack = NetStack(template, gens, device, settings.get("batching", "auto"))
    epochs = int(settings["epochs"])
    lrs = [float(settings["lr"])] * epochs  # constant lr (MTT's --decay is off by default)
    strategy = settings.get("strategy", "auto")
    augment = make_augment(settings.get("augment", "dsa"), info.dsa_strategy if strategy == "auto" else strategy)
    identity = {"dataset": dataset, "prep": prep, "net": net, "indices": list(indices), "settings": settings}
    names = list(stack.params)
    traj = {n: [v.detach().cpu().clone()] for n, v in stack.params.items()}  # per name: list over epochs of (K,...)
    start, seconds = 0, 0.0
    resume = Path(resume) if resume else None
    if resume is not None and resume.exists():
        state = load_pt(resume, "expert resume file")
        if state.get("identity") == identity:
            start, seconds = state["epoch"], state["seconds"]
            traj = {n: list(state["traj"][n].unbind(0)) for n in names}
            with torch.no_grad():
                for n in names:
                    stack.params[n].copy_(traj[n][-1].to(device))
            for g, s in zip(gens, state["generators"]):
                g.set_state(s)
            log.info("experts %s: resuming from epoch %d (%s)", indices, start, resume)
        else:
            log.warning("%s belongs to another configuration; starting afresh", resume)
    t0 = time.time() - seconds
    progress = Progress(epochs, f"experts {dataset}/{prep}/{net} {indices[0]}..{indices[-1]}", start=start)
    for ep in range(start, epochs):
        ts = TrainSettings(epochs=1, lr=lrs[ep], momentum=float(settings.get("momentum", 0.0)),
                           weight_decay=float(settings.get("weight_decay", 0.0)), batch=int(settings["batch"]))
        loss = train_stack(stack.train(True), data.x_train, data.y_train, gens, ts, augment, desc="expert epoch")
        for n in names:
            traj[n].append(stack.params[n].detach().cpu().clone())
        progress.update(ep + 1, loss=sum(loss) / len(loss))
        if resume is not None and ep + 1 < epochs:
            save_pt({"identity": identity, "epoch": ep + 1, "seconds": time.time() - t0,
                     "generators": [g.get_state() for g in gens],
                     "traj": {n: torch.stack(traj[n]) for n in names}}, resume)
        if stop_after_epoch is not None and ep + 1 >= stop_after_epoch:
            progress.close()
            return
    progress.close()
    accs = accuracy(stack.train(False), data.x_test, data.y_test)
    seconds = time.time() - t0
    for k, (i, out) in enumerate(zip(indices, outs)):
        save_pt({"format": EXPERT_FORMAT, "dataset": dataset, "prep": prep, "net": net, "index": i,
                 "epochs": epochs, "lr": lrs, "settings": settings,
                 "params": {n: torch.stack([t[k] for t in traj[n]]) for n in names},
                 "test_accuracy": accs[k], "seconds": seconds, **peak_memory_mb(device)}, out)
    log.info("experts %s: test accuracy %s (%.1f s)", indices, [round(a, 2) for a in accs], seconds)
    if resume is not None and resume.exists():
        resume.unlink()


def load_expert(path: str | Path, dataset: str | None = None, prep: str | None = None,
                net: str | None = None, mmap: bool = False) -> dict[str, Any]:
    """An expert file, checked against the dataset / prep / net the reader expects. With mmap, the tensors are
    memory-mapped: a reader of two epochs (MTT's window) pages in only those, not the whole trajectory."""
    if mmap and Path(path).exists():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # truncated or foreign file
            raise DdflowError(f"{path}: corrupt or not an expert trajectory ({type(e).__name__}: {e})") from None
    else:
        obj = load_pt(path, "expert trajectory")
    if not isinstance(obj, dict) or obj.get("format") != EXPERT_FORMAT:
        raise DdflowError(f"{path}: not a ddflow expert trajectory ({EXPERT_FORMAT})")
    for key, want in (("dataset", dataset), ("prep", prep), ("net", net)):
        if want is not None and obj[key] != want:
            raise DdflowError(f"{path}: expert trajectory of {key} {obj[key]!r}, expected {want!r}")
    return obj


# ---- checkpoint sampling -------------------------------------------------------------------------------------
def _check_experts(expert_paths: list[str], dataset: str, prep: str, net: str, need_epochs: int) -> list[dict]:
    if not expert_paths:
        raise DdflowError("checkpoint sampling: no experts given")
    experts = []
    for p in expert_paths:
        e = load_expert(p, dataset, prep, net)
        if e["epochs"] < need_epochs:
            raise DdflowError(f"{p}: expert trained for {e['epochs']} epochs, the sampler needs epoch {need_epochs}")
        experts.append(e)
    return experts


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
                "lr": [e["lr"] for e in experts]}
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
            "weights": weights[picks].float(), "params": params, "final": final}
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
