"""The distillation runner: one cell = method x dataset x IPC x seed -> results/distilled/.../s{seed}.pt.

It runs with the settings its rule resolved (ddflow.settings.distill_settings: the method's hyperparameters and the
snapshot iterations) and resolves nothing itself. Owns data loading and the method's preprocessing (its space and
ZCA go into the record), seeding, the iteration loop with progress, the resume file (ddflow.stages.resume: saved
every `save_every` iterations, deleted on success) and the atomic output (a ddflow.records.DistilledSet). A rerun of
an interrupted job resumes from the resume file and gives the same result as an uninterrupted run on the CPU.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..data import RealData, check_ipc, get_info, load_real, normalized_as
from ..data.paired import InitOrder, init_order
from ..data.spaces import Prep, preprocess
from ..data.validation import carve, load_split
from ..data.zca import ZCA
from ..errors import DdflowError
from ..io import atomic_path
from ..methods import Method, get_method
from ..progress import Progress, as_number
from ..records import DistilledSet, load_distilled
from ..runtime import peak_memory_mb, provenance, reset_peak
from ..seeding import generator
from .resume import ResumeFile

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Built:
    """A method set up for one cell: the instance, the data in its space, the preprocessing and its fitted ZCA."""
    method: Method
    data: RealData
    prep: Prep
    zca: ZCA | None


def build_method(method_id: str, hp: dict[str, Any], data: RealData, ipc: int, gen: torch.Generator,
                 device: torch.device, inputs: dict[str, str] | None = None, order: InitOrder | None = None) -> Built:
    """The method's preprocessing applied to `data` (before init(), as the paper's code does), then the method
    constructed on it: what the runner and the speed measurements (ddflow.speed.time_method) both build. `order`:
    the paired initial draw of `data` (ddflow.data.paired; preprocessing keeps the rows in place)."""
    cls = get_method(method_id)
    prep = cls.preprocessing(hp, data.info)
    data, zca = preprocess(data, prep)
    return Built(cls(hp, data, ipc, gen, device, inputs, init_order=order), data, prep, zca)


def run(method_id: str, dataset: str, ipc: int, seed: int, preset: str, settings: dict[str, Any],
        device: torch.device, data_path: str | Path, out: str | Path, resume: str | Path | None = None,
        inputs: dict[str, str] | None = None, save_every: int = 100, stop_after: int | None = None,
        snapshot_dir: str | Path | None = None, budget_s: float | None = None) -> DistilledSet | None:
    """Run (or resume) one distillation with `settings` = {hparams, snapshots}. `stop_after` ends the loop early
    without an output, leaving only the resume file: it is how tests simulate a killed job. With `snapshot_dir`, the
    synthetic set after each iteration of settings['snapshots'] is written there as it{N}.pt (same format as the
    output); snapshots are staged beside the resume file, so a resumed job still delivers the early ones; they are
    copied into snapshot_dir before the output is written and the staging folder is removed after it
    (deliver_snapshots). `budget_s` bounds this call's wall time: once it is spent (checked after every iteration)
    the loop stops and the output is written as a finished run of the iterations done, marked `truncated` with the
    `planned_iterations` in its extras; the snapshots it reached are delivered."""
    t_call = time.time()
    hp = settings["hparams"]
    data, info, seen = load_cell_data(method_id, dataset, ipc, hp, data_path, device, inputs)
    gen = generator("distill", get_method(method_id).seed_id(), dataset, ipc, seed)
    order = init_order(data, dataset, seed)  # the initial real images are Random's for this seed (data.paired)
    built = build_method(method_id, hp, data, ipc, gen, device, inputs, order)
    reset_peak(device)
    identity = {"method": method_id, "dataset": dataset, "ipc": ipc, "seed": seed, "preset": preset, "hparams": hp}
    resume_file = ResumeFile(resume, identity)
    start, elapsed = start_or_resume(built.method, gen, resume_file)
    wanted = [int(n) for n in settings.get("snapshots") or []] if snapshot_dir else []
    cell = _Cell(identity, built, info, seen, device, time.time() - elapsed, paired_init(method_id, hp, ipc, order))
    staging = staging_dir(resume, snapshot_dir) if wanted else None
    if start == 0 and 0 in wanted:
        cell.record(0).save(staging / "it0.pt")
    done, stats = iterate(cell, start, resume_file, gen, wanted, staging, save_every, stop_after, budget_s, t_call)
    if done is None:
        return None
    total = built.method.iterations
    stopped = getattr(built.method, "stopped", False)   # its own stopping rule ended it: a finished run
    cut = {"truncated": True, "planned_iterations": total} if done < total and not stopped else {}
    result = cell.record(done, final_stats={k: as_number(v) for k, v in stats.items()}, **cut, **peak_memory_mb(device))
    if snapshot_dir is not None:
        deliver_snapshots([n for n in wanted if n <= done], staging, Path(snapshot_dir), identity)
    result.save(out)
    resume_file.remove()
    if staging is not None and staging.exists() and staging != Path(snapshot_dir):
        shutil.rmtree(staging)
    log.info("wrote %s (%d images, %.1f s)", out, len(result.images), result.seconds)
    return result


def load_cell_data(method_id: str, dataset: str, ipc: int, hp: dict[str, Any], data_path: str | Path,
                   device: torch.device, inputs: dict[str, str] | None) -> tuple[RealData, Any, str]:
    """(the real data the method distils from, its dataset info, what the record says the method saw): the
    training split, minus the validation split for a method that chooses on it."""
    cls = get_method(method_id)
    info = normalized_as(get_info(dataset), hp.get("normalize_as"))
    data = load_real(data_path, info, device)
    check_ipc(data.y_train.cpu().numpy(), info.classes, ipc, where=f"{dataset} ({data_path})")
    missing = [r for r in cls.requires if r not in (inputs or {})]
    if missing:
        raise DdflowError(f"method {method_id} needs inputs {missing}")
    seen = "the training split"
    if "validation" in cls.requires:  # the method chooses on the validation split: it distils from the rest
        val_idx = load_split(inputs["validation"], dataset, len(data.y_train))
        data = carve(data, val_idx)
        seen = f"the training split minus its validation split ({inputs['validation']}, {len(val_idx)} images)"
    return data, info, seen


def paired_init(method_id: str, hp: dict[str, Any], ipc: int, order: InitOrder) -> dict[str, Any]:
    """What the record says of its initial set against Random's (ddflow.data.paired): `paired_init` = same / nested /
    own (Method.init_pairing); with `same`, `init_replaced` = how many of Random's images the method could not see
    (validation images held out) and took the next ones of the order instead."""
    pairing = get_method(method_id).init_pairing(hp, ipc)
    return {"paired_init": pairing, **({"init_replaced": order.replaced(ipc)} if pairing == "same" else {})}


def start_or_resume(method: Method, gen: torch.Generator, resume_file: ResumeFile) -> tuple[int, float]:
    """(first iteration, seconds already spent): the resume file's state when it is this configuration's."""
    method.init()
    state = resume_file.load()
    if state is None:
        return 0, 0.0
    method.load_state_dict(state["method"])
    gen.set_state(state["generator"])
    log.info("resuming %s from iteration %d (%s)", method.method_id, state["iteration"], resume_file.path)
    return state["iteration"], state["seconds"]


def staging_dir(resume: str | Path | None, snapshot_dir: str | Path) -> Path:
    """Where snapshots wait until the output is written: beside the resume file (a resumed job still has them)."""
    return Path(f"{resume}.snapshots") if resume else Path(snapshot_dir)


class _Cell:
    """What a record of this run is made of: records of the current synthetic set at any iteration."""

    def __init__(self, identity: dict[str, Any], built: Built, info, seen: str, device: torch.device, t0: float,
                 pairing: dict[str, Any]):
        self.identity, self.built, self.info, self.seen, self.device, self.t0 = identity, built, info, seen, device, t0
        self.pairing = pairing

    def record(self, iterations: int, **extra) -> DistilledSet:
        b, i = self.built, self.identity
        res = dict(b.method.result())
        images, labels = res.pop("images"), res.pop("labels")
        lr, factor = res.pop("lr", None), int(res.pop("factor", 1))
        extra = {**res, "prep": b.prep.kind, "seen": self.seen, **self.pairing, "provenance": provenance(self.device),
                 **extra}
        return DistilledSet(images=images, labels=labels, method=i["method"], dataset=i["dataset"], ipc=i["ipc"],
                            seed=i["seed"], mean=self.info.mean, std=self.info.std, preset=i["preset"],
                            space="zca" if b.zca is not None else type(b.method).result_space,
                            zca=b.zca.state_dict() if b.zca is not None else None, lr=lr, factor=factor,
                            hparams=i["hparams"], iterations=iterations, seconds=time.time() - self.t0, extra=extra)


def iterate(cell: _Cell, start: int, resume_file: ResumeFile, gen: torch.Generator, wanted: list[int],
            staging: Path | None, save_every: int, stop_after: int | None, budget_s: float | None,
            t_call: float) -> tuple[int | None, dict[str, Any]]:
    """The iteration loop: (iterations done, the last step's statistics); (None, ...) when stopped by
    `stop_after` (a simulated kill: only the resume file is left)."""
    method, i = cell.built.method, cell.identity
    total = method.iterations
    progress = Progress(total, f"distill {i['method']}/{i['dataset']}/ipc{i['ipc']}/s{i['seed']}", start=start)
    stats: dict[str, Any] = {}
    done = start
    for it in range(start, total):
        stats = method.step(it)  # values may be device tensors: read only by progress lines and the record
        done = it + 1
        progress.update(done, **stats)
        if done in wanted:
            cell.record(done).save(staging / f"it{done}.pt")
        if done < total and done % save_every == 0:
            resume_file.save(iteration=done, seconds=time.time() - cell.t0, generator=gen.get_state(),
                             method=method.state_dict())
        if getattr(method, "stopped", False):  # the method's own stopping rule (RFAD's early stopping)
            break
        if stop_after is not None and done >= stop_after:
            progress.close()
            return None, stats
        if budget_s is not None and done < total and time.time() - t_call >= budget_s:
            log.warning("%s: time budget of %.3g s spent after %d of %d iterations; stopping (truncated)",
                        i["method"], budget_s, done, total)
            break
    progress.close()
    return done, stats


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
