"""The distillation runner: one cell = method x dataset x IPC x seed -> results/distilled/.../s{seed}.pt.

Owns data loading and the method's preprocessing (its space and ZCA go into the record), seeding, the iteration
loop with progress, the resume file (saved every `save_every` iterations, not a declared output, deleted on
success) and the atomic output (a ddflow.records.DistilledSet). A rerun of an interrupted job resumes from the resume
file and gives the same result as an uninterrupted run on the CPU.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from . import hparams as hparams_mod
from .data import check_ipc, get_info, load_real, normalized_as
from .data.spaces import preprocess
from .data.validation import carve, load_split
from .errors import DdflowError
from .io import atomic_path, load_resume, save_pt
from .methods import get_method
from .progress import Progress, as_number
from .records import DistilledSet, load_distilled
from .runtime import peak_memory_mb, provenance, reset_peak
from .seeding import generator

log = logging.getLogger(__name__)


def snapshot_iterations(hp: dict[str, Any], rule: dict[str, Any] | None = None) -> list[int]:
    """The hparams' snapshot iterations that a run of hp['iterations'] iterations reaches, sorted; with a paper
    rule (hparams.paper_rule), its evaluation iterations too."""
    total = int(hp.get("iterations", 0))
    extra = rule_iterations(total, rule) if rule else []
    return sorted({int(n) for n in hp.get("snapshots") or [] if 0 <= int(n) <= total} | set(extra))


def rule_iterations(total: int, rule: dict[str, Any]) -> list[int]:
    """The iterations before the last at which the paper evaluates its set during distillation: every N from 0
    (MTT, DREAM, FRePo, ISA) or the given fractions of the run, floored (IDC's n_iter // 10, // 5, // 2); the
    last iteration is the final set, evaluated by its own cell."""
    if rule.get("every") is not None:
        return list(range(0, total, int(rule["every"])))
    return sorted({int(total * f) for f in rule["fractions"] if int(total * f) < total})


def run(method_id: str, dataset: str, ipc: int, seed: int, preset: str, device: torch.device,
        data_path: str | Path, out: str | Path, resume: str | Path | None = None,
        inputs: dict[str, str] | None = None, hp_dir: str | Path | None = None, save_every: int = 100,
        stop_after: int | None = None, snapshot_dir: str | Path | None = None, budget_s: float | None = None,
        overrides: dict[str, Any] | None = None, paper_rule: bool = False) -> DistilledSet | None:
    """Run (or resume) one distillation. `stop_after` ends the loop early without an output, leaving only
    the resume file: it is how tests simulate a killed job. With `snapshot_dir`, the synthetic set after each
    iteration listed in the hparams' `snapshots` is written there as it{N}.pt (same format as the output);
    snapshots are staged beside the resume file, so a resumed job still delivers the early ones; they are copied
    into snapshot_dir before the output is written and the staging folder is removed after it (deliver_snapshots).
    `overrides` are merged into the resolved hyperparameters (and recorded with them). `budget_s` bounds this
    call's wall time: once it is spent (checked after every iteration) the loop stops and the output is written as
    a finished run of the iterations done, marked `truncated` with the `planned_iterations` in its extras; the
    snapshots it reached are delivered. `paper_rule` adds the iterations of the method's hparams `paper_rule` (the
    paper's periodic test evaluations) to the snapshots."""
    t_call = time.time()
    cls = get_method(method_id)
    hp = hparams_mod.resolve(method_id, dataset, ipc, preset, hp_dir)
    if overrides:
        hp = hparams_mod.deep_merge(hp, overrides)
    # snapshots beyond the run are refused by the config check (the hparams files); a caller's overrides (tests,
    # the smoke command) may shorten a run, which keeps the snapshots it reaches
    hparams_mod.check_values(hp, f"{method_id} hparams resolved for {dataset}, IPC {ipc}, preset {preset}", cls.inits,
                             snapshots=False)
    info = normalized_as(get_info(dataset), hp.get("normalize_as"))
    data = load_real(data_path, info, device)
    check_ipc(data.y_train.cpu().numpy(), info.classes, ipc, where=f"{dataset} ({data_path})")
    missing = [r for r in cls.requires if r not in (inputs or {})]
    if missing:
        raise DdflowError(f"method {method_id} needs inputs {missing}")
    seen = "the training split"
    if "validation" in cls.requires:   # the method chooses on the validation split: it distils from the rest
        val_idx = load_split(inputs["validation"], dataset, len(data.y_train))
        data = carve(data, val_idx)
        seen = f"the training split minus its validation split ({inputs['validation']}, {len(val_idx)} images)"
    identity = {"method": method_id, "dataset": dataset, "ipc": ipc, "seed": seed, "preset": preset, "hparams": hp}
    prep = cls.preprocessing(hp, info)
    data, zca = preprocess(data, prep)
    gen = generator("distill", cls.seed_id(), dataset, ipc, seed)
    method = cls(hp, data, ipc, gen, device, inputs)
    reset_peak(device)

    start, elapsed = 0, 0.0
    resume = Path(resume) if resume else None
    state = load_resume(resume) if resume is not None else None
    if state is not None:
        if state.get("identity") != identity:
            log.warning("%s belongs to another configuration; starting afresh", resume)
        else:
            method.init()
            method.load_state_dict(state["method"])
            gen.set_state(state["generator"])
            start, elapsed = state["iteration"], state["seconds"]
            log.info("resuming %s from iteration %d (%s)", method_id, start, resume)
    if start == 0:
        method.init()

    t0 = time.time() - elapsed
    total = method.iterations
    rule = hparams_mod.paper_rule(method_id, dataset, ipc, preset, hp_dir) if paper_rule else None
    wanted = snapshot_iterations(hp, rule) if snapshot_dir else []
    staging = None
    if wanted:
        staging = (resume.parent / f"{resume.name}.snapshots") if resume is not None else Path(snapshot_dir)
    def record(iterations: int, **extra) -> DistilledSet:
        res = dict(method.result())
        images, labels = res.pop("images"), res.pop("labels")
        lr, factor = res.pop("lr", None), int(res.pop("factor", 1))
        extra = {**res, "prep": prep.kind, "seen": seen, "provenance": provenance(device), **extra}
        return DistilledSet(images=images, labels=labels, method=method_id, dataset=dataset, ipc=ipc, seed=seed,
                            mean=info.mean, std=info.std, preset=preset,
                            space="zca" if zca is not None else cls.result_space,
                            zca=zca.state_dict() if zca is not None else None, lr=lr, factor=factor, hparams=hp,
                            iterations=iterations, seconds=time.time() - t0, extra=extra)

    def snapshot(n: int) -> None:
        if n in wanted:
            record(n).save(staging / f"it{n}.pt")

    if start == 0:
        snapshot(0)
    progress = Progress(total, f"distill {method_id}/{dataset}/ipc{ipc}/s{seed}", start=start)
    stats: dict[str, Any] = {}
    done = start
    for it in range(start, total):
        stats = method.step(it)  # values may be device tensors: read only by progress lines and the record
        done = it + 1
        progress.update(done, **stats)
        snapshot(done)
        if resume is not None and done < total and done % save_every == 0:
            save_pt({"identity": identity, "iteration": done, "seconds": time.time() - t0,
                     "generator": gen.get_state(), "method": method.state_dict()}, resume)
        if getattr(method, "stopped", False):  # the method's own stopping rule (RFAD's early stopping)
            break
        if stop_after is not None and done >= stop_after:
            progress.close()
            return None
        if budget_s is not None and done < total and time.time() - t_call >= budget_s:
            log.warning("%s: time budget of %.3g s spent after %d of %d iterations; stopping (truncated)",
                        method_id, budget_s, done, total)
            break
    progress.close()

    cut = {"truncated": True, "planned_iterations": total} if done < total and not getattr(method, "stopped", False) \
        else {}
    result = record(done, final_stats={k: as_number(v) for k, v in stats.items()}, **cut, **peak_memory_mb(device))
    if snapshot_dir is not None:
        deliver_snapshots([n for n in wanted if n <= done], staging, Path(snapshot_dir), identity)
    result.save(out)
    if resume is not None and resume.exists():
        resume.unlink()
    if staging is not None and staging.exists() and staging != Path(snapshot_dir):
        shutil.rmtree(staging)
    log.info("wrote %s (%d images, %.1f s)", out, len(result.images), result.seconds)
    return result


def _same_cell(path: Path, identity: dict[str, Any]) -> bool:
    """Whether a delivered snapshot belongs to this cell (method, dataset, IPC, seed, preset, hyperparameters)."""
    try:
        d = load_distilled(path)
    except DdflowError:
        return False
    return {"method": d.method, "dataset": d.dataset, "ipc": d.ipc, "seed": d.seed, "preset": d.preset,
            "hparams": d.hparams} == identity


def deliver_snapshots(wanted: list[int], staging: Path | None, snapshot_dir: Path, identity: dict[str, Any]) -> None:
    """Copy each staged it{N}.pt into snapshot_dir (atomically), before the output is written. Idempotent: the
    staged copies stay until the output exists (a rerun after a kill in between, or after Snakemake removed the
    incomplete snapshot folder, delivers them again), and a snapshot already in snapshot_dir for this cell counts as
    delivered (a folder left by a job killed after an earlier version moved its snapshots there)."""
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    for n in wanted:
        src, dst = staging / f"it{n}.pt", snapshot_dir / f"it{n}.pt"
        if src.exists():
            if src != dst:
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
        elif not (dst.exists() and _same_cell(dst, identity)):
            raise DdflowError(f"{src}: snapshot of iteration {n} missing and not delivered to {snapshot_dir} "
                              "(resume files deleted by hand?)")
