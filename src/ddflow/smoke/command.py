"""`python -m ddflow smoke`: ten minutes on one GPU, against the official code's numbers.

Steps (each time-boxed by its budget; a step that runs out stops its loop, reports what it reached and still
evaluates it, marked truncated; an evaluation or an expert epoch is never cut):
  dc    DC, MNIST, IPC 1, paper preset (1000 iterations), protocol `dc` with 10 models: accuracy.
  dm    DM, CIFAR-10, IPC 10, paper preset with 4000 iterations, protocol `dc` with 5 models on the snapshot at 2000
        and on the final set: accuracy; and DM's seconds per iteration (the run's own time / its iterations).
  dsa   DSA, CIFAR-10, IPC 10, paper preset: seconds per iteration (ddflow.smoke.speed.time_method).
  mtt   two ConvNet experts trained for two epochs by the experts runner (seconds per expert-epoch), then MTT,
        CIFAR-10, IPC 10, syn_steps 30 on them: seconds per iteration.
  eval  protocol `dc` on DM's final set (100 images, 1000 epochs, DSA) with K = 1 and K = 20 models batched.
The distillations run through ddflow.stages.distill.run, the evaluations through ddflow.protocols.evaluate_cell with
protocol_settings, so every number is the pipeline's. It imports only torch, numpy and pyyaml (tqdm if present;
no Snakemake, no network): datasets are local npz files (uint8 NHWC x_train, y_train, x_test, y_test),
hyperparameters come from workflow/hparams (the checkout's, or the copy shipped with the package; or --hparams-dir).
`tiny=True` runs every step at toy size (ConvNetW32 nets, a few iterations and epochs, a 200-image slice of the
embedded mnist5k and random 32x32 images for CIFAR-10, one CPU thread unless --threads says otherwise) so the command
can be tested on a CPU: about 20 s of CPU time, its rows "not comparable" (no pass or fail, no speed ratios).
Output: smoke.json and smoke.md in the output folder (ddflow.smoke.report writes the Markdown). The official
reference numbers are data: workflow/smoke.yaml (ddflow.smoke.references).
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import hparams as hparams_mod
from ..data import RealData, get_info, load_arrays, load_real, prepare
from ..errors import DdflowError
from ..io import atomic_path, read_json, save_npz, write_json
from ..protocols import evaluate_cell, protocol_settings
from ..protocols.cell import model_stream
from ..records import DistilledSet, load_distilled
from ..records.trajectories import sampler_id
from ..runtime import provenance
from ..settings import distill_cell
from ..stages.experts import run as train_experts
from ..stages.sampling import write_mtt_manifest
from . import references
from .report import CRITERION, markdown, verdict
from .speed import time_method

log = logging.getLogger(__name__)
SEED = 0
LIMIT_S = 600  # at most 10 minutes on one GPU, data preparation and evaluation included
STEPS = ("dc", "dm", "dsa", "mtt", "eval")
STEP_DATASET = {"dc": "mnist", "dm": "cifar10", "dsa": "cifar10", "mtt": "cifar10", "eval": "cifar10"}
# Per-step budgets (seconds; --budget replaces them all). Sized from the official H100 figures below: DM 4000 x
# 0.068 s = 272 s, DSA a warm-up and 3 iterations x 2.85 s, MTT 10 x 0.41 s after two 2-epoch experts, K = 1 then
# K = 20 evaluations; together 465 s, leaving about 135 s of the 10 minutes for the unboxed parts (data loading,
# the dc/dm evaluations of 10 and 2 x 5 models, expert training).
DEFAULT_BUDGETS_S = {"dc": 75.0, "dm": 270.0, "dsa": 30.0, "mtt": 30.0, "eval": 60.0}

# the official code's figures (workflow/smoke.yaml, via ddflow.smoke.references): accuracy per check, seconds per
# speed row, and the device kind the speeds were measured on
_REFS = references.load()
OFFICIAL_RUNS, OFFICIAL_DEVICE = _REFS["official_runs"], _REFS["official_device"]
REFERENCES, OFFICIAL_SPEED = _REFS["accuracy"], _REFS["speed"]
W32 = "ConvNetW32"  # tiny runs: the width-32 ConvNet everywhere


@dataclass(frozen=True)
class Scale:
    """The sizes of a smoke run. distill: hparams overrides per method on the paper preset; evaluate: protocol
    overrides per accuracy step; timed: timed iterations per speed step; experts: expert settings overrides."""
    name: str
    distill: dict[str, dict[str, Any]]
    evaluate: dict[str, dict[str, Any]]
    timed: dict[str, int]
    experts: dict[str, Any]
    n_experts: int
    eval_speed: dict[str, Any]
    ks: tuple[int, ...] = (1, 20)


FULL = Scale(
    name="full",
    distill={"dc": {},  # dc.yaml paper: 1000 iterations
             "dm": {"iterations": 4000, "snapshots": [2000]},  # 4000 of the paper's 20,000
             "dsa": {},
             # two 2-epoch experts: windows [0, 2] (max_start_epoch 1); raw data: the ZCA (kornia) does not change
             # the cost of an iteration and would cost a fit (as benchmarks/bench.py)
             "mtt": {"prep": "raw", "max_start_epoch": 1}},
    evaluate={"dc": {"models": 10}, "dm": {"models": 5}},  # the official runs' model counts
    timed={"dsa": 3, "mtt": 10}, experts={"epochs": 2}, n_experts=2, eval_speed={})
TINY = Scale(
    name="tiny",
    distill={"dc": {"iterations": 3, "batch_real": 8, "net": W32},
             "dm": {"iterations": 4, "snapshots": [2], "batch_real": 8, "net": W32},
             "dsa": {"loops": {10: [2, 1]}, "batch_real": 8, "net": W32},
             "mtt": {"prep": "raw", "max_start_epoch": 1, "syn_steps": 3, "net": W32}},
    evaluate={"dc": {"models": 2, "epochs": 3, "net": W32}, "dm": {"models": 2, "epochs": 3, "net": W32}},
    timed={"dsa": 2, "mtt": 2}, experts={"epochs": 2, "batch": 64}, n_experts=2,
    eval_speed={"epochs": 1, "net": W32})


@dataclass
class Context:
    device: torch.device
    hp_dir: Path
    out: Path
    scale: Scale
    budgets: dict[str, float]
    paths: dict[str, Path]
    _data: dict[str, RealData] = field(default_factory=dict)

    def data(self, dataset: str) -> RealData:
        """The dataset on the device, loaded once."""
        if dataset not in self._data:
            self._data[dataset] = load_real(self.paths[dataset], get_info(dataset), self.device)
        return self._data[dataset]

    def work(self, step: str) -> Path:
        return self.out / "work" / step


# ---- the steps -------------------------------------------------------------------------------------------------
def _distill(ctx: Context, method: str, dataset: str, ipc: int, snapshots: bool = False) -> DistilledSet:
    work = ctx.work(method)
    return distill_cell(method, dataset, ipc, SEED, "paper", ctx.device, ctx.paths[dataset], work / "final.pt",
                        hp_dir=ctx.hp_dir, snapshot_dir=work if snapshots else None, budget_s=ctx.budgets[method],
                        overrides=ctx.scale.distill[method])


def _evaluate(ctx: Context, record: DistilledSet, overrides: dict[str, Any]) -> dict[str, Any]:
    settings = protocol_settings(record.method, record.dataset, record.ipc, "paper", "dc", ctx.hp_dir)
    return evaluate_cell(record, "dc", hparams_mod.deep_merge(settings, overrides), ctx.data(record.dataset),
                         ctx.device, model_stream("dc", record))


def _accuracy_row(key: str, record: DistilledSet, cell: dict[str, Any], planned: int) -> dict[str, Any]:
    ref = REFERENCES[key]
    return {"name": key, "label": ref["label"], "method": record.method, "dataset": record.dataset,
            "ipc": record.ipc, "iterations": record.iterations, "planned_iterations": planned,
            "truncated": bool(record.extra.get("truncated")), "reached": True, "models": cell["n_models"],
            "accuracies": cell["accuracies"], "mean": cell["mean"], "std": cell["std"],
            "eval_seconds": cell["seconds"], "distill_seconds": record.seconds, "official": ref["official"],
            "paper": ref.get("paper"), **verdict(cell["mean"], cell["std"], ref["official"]["mean"],
                                                 ref["official"]["std"])}


def _speed_row(key: str, label: str, ours: float | None, note: str = "", truncated: bool = False) -> dict[str, Any]:
    official, source = OFFICIAL_SPEED[key]
    return {"name": key, "label": label, "ours": ours, "official": official, "source": source,
            "ratio": official / ours if ours else None, "note": note, "truncated": truncated}


def same_device_kind(device_name: str) -> bool:
    """Whether a device (its provenance name, e.g. 'NVIDIA H100 80GB HBM3') is of the kind the official speed figures
    were measured on: a ratio against another kind (a CPU, an A100) says nothing about ddflow."""
    return OFFICIAL_DEVICE.lower() in device_name.lower()


def step_dc(ctx: Context) -> tuple[list, list]:
    rec = _distill(ctx, "dc", "mnist", 1)
    cell = _evaluate(ctx, rec, ctx.scale.evaluate["dc"])
    return [_accuracy_row("dc_mnist_ipc1", rec, cell, rec.extra.get("planned_iterations", rec.iterations))], []


def step_dm(ctx: Context) -> tuple[list, list]:
    rec = _distill(ctx, "dm", "cifar10", 10, snapshots=True)
    planned = int(rec.extra.get("planned_iterations", rec.iterations))
    at = max(int(n) for n in ctx.scale.distill["dm"]["snapshots"])
    snap = ctx.work("dm") / f"it{at}.pt"
    rows = []
    if snap.exists() and rec.iterations >= at:
        s = load_distilled(snap)
        rows.append(_accuracy_row("dm_cifar10_ipc10_snapshot", s, _evaluate(ctx, s, ctx.scale.evaluate["dm"]), at))
    else:
        ref = REFERENCES["dm_cifar10_ipc10_snapshot"]
        rows.append({"name": "dm_cifar10_ipc10_snapshot", "label": ref["label"], "reached": False, "iterations":
                     rec.iterations, "planned_iterations": at, "official": ref["official"], "pass": None})
    rows.append(_accuracy_row("dm_cifar10_ipc10_final", rec, _evaluate(ctx, rec, ctx.scale.evaluate["dm"]), planned))
    speed = _speed_row("dm_s_per_iteration", "DM, CIFAR-10, IPC 10: s / iteration", rec.seconds / rec.iterations,
                       f"the run above: its time / {rec.iterations} iterations", truncated=rows[-1]["truncated"])
    return rows, [speed]


def _hp(ctx: Context, method: str) -> dict[str, Any]:
    """The paper preset of `method` on CIFAR-10 at IPC 10 with this scale's overrides."""
    return hparams_mod.deep_merge(hparams_mod.resolve(method, "cifar10", 10, "paper", ctx.hp_dir),
                                  ctx.scale.distill[method])


def _time(ctx: Context, method: str, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    return time_method(ctx.data("cifar10"), ctx.device, method, 10, ctx.scale.timed[method], "paper",
                       hp=_hp(ctx, method), inputs=inputs, budget_s=ctx.budgets[method])


def step_dsa(ctx: Context) -> tuple[list, list]:
    r = _time(ctx, "dsa")
    return [], [_speed_row("dsa_s_per_iteration", "DSA, CIFAR-10, IPC 10: s / iteration", r["seconds_per_iteration"],
                           f"{r['iterations']} iterations timed after a warm-up", truncated=r["truncated"])]


def step_mtt(ctx: Context) -> tuple[list, list]:
    hp = _hp(ctx, "mtt")
    settings = hparams_mod.deep_merge(hparams_mod.resolve("experts", "cifar10", 0, "paper", ctx.hp_dir),
                                      ctx.scale.experts)
    work, k, epochs = ctx.work("mtt"), ctx.scale.n_experts, int(settings["epochs"])
    outs = [work / f"e{i}.pt" for i in range(k)]
    train_experts("cifar10", hp["prep"], hp["net"], list(range(k)), settings, ctx.paths["cifar10"], outs, ctx.device,
                  receipt=work / "block0.json")
    seconds = float(read_json(work / "block0.json", "expert block receipt")["seconds"])
    experts = _speed_row("expert_s_per_epoch", "expert training: s / epoch / expert", seconds / (epochs * k),
                         f"{k} experts x {epochs} epochs trained together in {seconds:.1f} s")
    sampler = sampler_id(hp)
    manifest = work / f"{sampler}.json"
    write_mtt_manifest(sampler, "cifar10", hp["prep"], hp["net"], [str(o) for o in outs], manifest)
    r = _time(ctx, "mtt", inputs={"trajectories": str(manifest)})
    mtt = _speed_row("mtt_s_per_iteration", f"MTT, CIFAR-10, IPC 10, syn_steps {hp['syn_steps']}: s / iteration",
                     r["seconds_per_iteration"], f"{r['iterations']} iterations timed after a warm-up",
                     truncated=r["truncated"])
    return [], [experts, mtt]


def step_eval(ctx: Context) -> tuple[list, list]:
    path = ctx.work("dm") / "final.pt"
    if not path.exists():
        raise DdflowError(f"step eval times the evaluation of DM's set {path}: run the dm step first (same --out)")
    rec, t0, rows = load_distilled(path), time.time(), []
    for k in ctx.scale.ks:
        key, label = f"eval_k{k}_s", f"`dc` evaluation, {len(rec.images)} images, K = {k}: s"
        if k != ctx.scale.ks[0] and time.time() - t0 >= ctx.budgets["eval"]:
            rows.append(_speed_row(key, label, None, "not run: the step's time budget was spent", truncated=True))
            continue
        cell = _evaluate(ctx, rec, {"models": k, **ctx.scale.eval_speed})
        rows.append(_speed_row(key, label, cell["seconds"], f"{cell['seconds'] / k:.3g} s per model, "
                               f"{cell['settings']['epochs']} epochs, mean acc {cell['mean']:.2f}"))
    return [], rows


STEP_FUNCTIONS: dict[str, Callable[[Context], tuple[list, list]]] = {
    "dc": step_dc, "dm": step_dm, "dsa": step_dsa, "mtt": step_mtt, "eval": step_eval}


# ---- inputs, environment, the whole run --------------------------------------------------------------------------
def tiny_datasets(folder: Path) -> dict[str, Path]:
    """Toy inputs, no network: 20 digits per class (200) and 200 test digits of the embedded mnist5k as 'mnist', and
    random 32x32x3 images (20 per class, 100 test) as 'cifar10'."""
    folder.mkdir(parents=True, exist_ok=True)
    a = load_arrays(prepare("mnist5k", folder / "mnist5k.npz"))
    train = np.concatenate([np.flatnonzero(a["y_train"] == c)[:20] for c in range(10)])
    save_npz(folder / "mnist.npz", x_train=a["x_train"][train], y_train=a["y_train"][train],
             x_test=a["x_test"][:200], y_test=a["y_test"][:200])
    rng = np.random.default_rng(SEED)
    save_npz(folder / "cifar10.npz", x_train=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(200) % 10, x_test=rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(100) % 10)
    return {"mnist": folder / "mnist.npz", "cifar10": folder / "cifar10.npz"}


def dataset_paths(steps: list[str], given: dict[str, str | None], tiny: bool, out: Path) -> dict[str, Path]:
    """The npz of every dataset the steps need, from --mnist / --cifar10 (tiny runs make the missing ones)."""
    need = sorted({STEP_DATASET[s] for s in steps})
    missing = [d for d in need if not given.get(d)]
    made = tiny_datasets(out / "data") if tiny and missing else {}
    paths = {}
    for d in need:
        if not given.get(d) and d not in made:
            users = [s for s in steps if STEP_DATASET[s] == d]
            raise DdflowError(f"--{d} PATH.npz is needed by step(s) {', '.join(users)} (or run with --tiny)")
        path = Path(given[d]) if given.get(d) else made[d]
        if not path.is_file():
            raise DdflowError(f"--{d} {path}: no such file")
        paths[d] = path
    return paths


def budgets_for(budget: float | None) -> dict[str, float]:
    if budget is not None and budget <= 0:
        raise DdflowError(f"--budget {budget}: must be a positive number of seconds")
    return {s: budget for s in STEPS} if budget is not None else dict(DEFAULT_BUDGETS_S)


def run_smoke(out: str | Path, device: torch.device, mnist: str | None = None, cifar10: str | None = None,
              hp_dir: str | Path | None = None, tiny: bool = False, budget: float | None = None,
              steps: list[str] | None = None) -> dict[str, Any]:
    """Run the smoke steps, write smoke.json and smoke.md into `out` and return the report."""
    t0 = time.time()
    steps = list(steps or STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise DdflowError(f"--steps {' '.join(unknown)}: unknown; known: {', '.join(STEPS)}")
    out = Path(out)
    ctx = Context(device, hparams_mod.hparams_dir(hp_dir), out, TINY if tiny else FULL, budgets_for(budget),
                  dataset_paths(steps, {"mnist": mnist, "cifar10": cifar10}, tiny, out))
    accuracy, speed, done = [], [], {}
    for name in steps:
        log.info("smoke: step %s (budget %s s)", name, ctx.budgets[name])
        ts = time.time()
        try:
            acc, spd = STEP_FUNCTIONS[name](ctx)
            accuracy += acc
            speed += spd
            cut = any(r.get("truncated") for r in acc + spd) or any(r.get("reached") is False for r in acc)
            done[name] = {"seconds": time.time() - ts, "truncated": cut}
        except Exception as e:  # one failing step (e.g. out of memory) must not hide the others' numbers
            log.error("smoke: step %s failed:\n%s", name, traceback.format_exc())
            done[name] = {"seconds": time.time() - ts, "error": f"{type(e).__name__}: {e}"}
    env = provenance(device)
    # accuracy is compared at the official scale on any device; a speed ratio only against a reference measured on
    # the same kind of device, at the official scale
    speed_comparable = not tiny and same_device_kind(str(env["device"]))
    for r in accuracy if tiny else []:
        r["pass"] = None
    for r in speed:
        r["ratio"] = r["ratio"] if speed_comparable else None
    report = {"format": "ddflow.smoke/1", "mode": ctx.scale.name, "comparable": not tiny,
              "speed_comparable": speed_comparable, "official": OFFICIAL_RUNS, "official_device": OFFICIAL_DEVICE,
              "environment": env, "criterion": CRITERION, "budgets_s": ctx.budgets, "steps": done,
              "accuracy": accuracy, "speed": speed, "wall_s": time.time() - t0, "limit_s": LIMIT_S}
    write_json(report, out / "smoke.json")
    with atomic_path(out / "smoke.md") as tmp:
        tmp.write_text(markdown(report))
    return report
