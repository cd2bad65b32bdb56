"""Choose quick-preset settings on a held-out part of the training split, never on the test split.

The prepared dataset's train split is cut, per class, into a fit part and a held-out part; the held-out part is
written as the test split of a new npz, and the workflow runs on it (config `data: {<dataset>: {npz: ...}}`) once
per candidate: each candidate is a set of deep-merged changes to files of workflow/hparams, e.g.

    # candidates.yaml
    base: {}
    experts10: {experts: {quick: {epochs: 10}}}
    t05: {ead: {quick: {label_temperature: 0.5}}}
    e100: {reuse: base, changes: {dc: {quick: {eval: {dc: {epochs: 100}}}}}}

A candidate written as {reuse: <earlier candidate>, changes: {...}} changes only evaluation settings: it hard-links
that candidate's data, experts, trajectories, feature net and distilled sets (everything under results/ but the
evaluations, tables, figures and logs) and evaluates them again with its own settings.

    python benchmarks/holdout_search.py --candidates candidates.yaml --methods random ead --ipcs 1 10 \
        --work /tmp/holdout

Each candidate runs in its own directory under --work (Snakemake, the repository's Snakefile and config.yaml, a
copy of workflow/hparams with the changes); a finished candidate is not rerun, and candidates with the same
expert settings share one set of experts (hard links). The printed table (also written as
--work/results.md) gives the held-out accuracy, mean ± std over the evaluation models, per method x IPC; the
protocol of each method is its first (as in the default run) unless given as method:protocol.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ddflow.data import prepare  # noqa: E402
from ddflow.data.npzmap import read_npz  # noqa: E402
from ddflow.hparams import deep_merge, hparams_file  # noqa: E402
from ddflow.io import atomic_path, read_json, save_npz  # noqa: E402
from ddflow.methods import get_method  # noqa: E402


def holdout_npz(dataset: str, out: Path, fraction: float, seed: int) -> Path:
    """Write `out`: train = the fit part of the dataset's train split, test = its held-out part (per class)."""
    if out.exists():
        return out
    prepared = out.with_name(f"{dataset}-prepared.npz")
    if not prepared.exists():
        prepare(dataset, prepared)
    d = read_npz(prepared, False)
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for c in np.unique(d["y_train"]):
        idx = rng.permutation(np.flatnonzero(d["y_train"] == c))
        k = int(round(len(idx) * fraction))
        held.append(idx[:k])
        fit.append(idx[k:])
    fit, held = np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))
    save_npz(out, x_train=d["x_train"][fit], y_train=d["y_train"][fit], x_test=d["x_train"][held],
             y_test=d["y_train"][held])
    print(f"held-out split: {len(fit)} fit / {len(held)} held-out images of {dataset}'s train split -> {out}",
          flush=True)
    return out


def write_hparams(dest: Path, changes: dict) -> None:
    shutil.copytree(ROOT / "workflow" / "hparams", dest, dirs_exist_ok=True)
    for name, change in changes.items():
        path = hparams_file(name, dest)
        if not path.exists():
            raise SystemExit(f"candidate changes {name!r}: no file {path.relative_to(dest)} in workflow/hparams")
        path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(path.read_text()), change), sort_keys=False))


def reuse_experts(src: Path, work: Path) -> None:
    """Hard-link the data, experts and trajectory files of a candidate with the same expert settings."""
    for sub in ("data", "experts", "trajectories"):
        if (src / "results" / sub).exists() and not (work / "results" / sub).exists():
            shutil.copytree(src / "results" / sub, work / "results" / sub, copy_function=os.link)


def reuse_candidate(src: Path, work: Path) -> None:
    """Hard-link everything under src/results but its evaluations, tables, figures and logs (an evaluation-only
    candidate evaluates the same distilled sets)."""
    if not (src / "results").is_dir():
        raise SystemExit(f"{src}: no results to reuse (run that candidate first)")
    for sub in sorted((src / "results").iterdir()):
        if sub.is_dir() and sub.name not in ("eval", "tables", "figures", "logs") \
                and not (work / "results" / sub.name).exists():
            shutil.copytree(sub, work / "results" / sub.name, copy_function=os.link)


def run_candidate(name: str, changes: dict, args, npz: Path) -> dict:
    work = args.work / name
    hp = work / "hparams"
    if "reuse" in changes:
        reuse_candidate(args.work / changes["reuse"], work)   # a name under --work, or an absolute path
        changes = changes.get("changes") or {}
    key = json.dumps(changes.get("experts") or {}, sort_keys=True)
    # experts of a finished candidate (this run, an earlier one or a parallel one) with the same expert settings
    same = [d.parent for d in sorted(args.work.glob("*/experts.json"))
            if d.read_text() == key and (d.parent / "results" / "experts").exists()]
    if same:
        reuse_experts(same[0], work)
    write_hparams(hp, changes)
    targets = {}  # "method ipcN" -> its evaluation record
    for spec in args.methods:
        m, _, protocol = spec.partition(":")
        protocol = protocol or get_method(m).protocols[0]
        for i in args.ipcs:
            targets[f"{spec} ipc{i}"] = f"results/eval/{protocol}/{m}/{args.dataset}/ipc{i}/s0.json"
    methods = sorted({spec.partition(":")[0] for spec in args.methods})
    cmd = ["snakemake", *targets.values(), "-s", str(ROOT / "Snakefile"), "-d", str(work),
           "--configfile", str(ROOT / "config.yaml"), "--cores", str(args.cores), "-q", "--rerun-triggers", "mtime",
           "--config", f"hparams_dir={hp}", f"datasets=[{args.dataset}]", f"methods=[{','.join(methods)}]",
           f"ipcs=[{','.join(map(str, args.ipcs))}]", "seeds=[0]", "tables=[]",
           f"data={{{args.dataset}: {{npz: {npz}}}}}"]
    print(f"candidate {name}: {changes}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    (work / "experts.json").write_text(key)
    records = {cell: read_json(work / target) for cell, target in targets.items()}
    return {cell: (r["mean"], r["std"]) for cell, r in records.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--candidates", type=Path, required=True)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--methods", nargs="+", default=["random", "ead"],
                   help="method names, each optionally with :protocol (default: the method's first protocol)")
    p.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    p.add_argument("--work", type=Path, default=Path("results/holdout"))
    p.add_argument("--fraction", type=float, default=0.25, help="held-out share of each class (default 0.25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--only", nargs="*", help="run only these candidates")
    args = p.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    candidates = yaml.safe_load(args.candidates.read_text()) or {}
    npz = holdout_npz(args.dataset, args.work / f"{args.dataset}-holdout.npz", args.fraction, args.seed)
    rows = {}
    for name, changes in candidates.items():
        if args.only and name not in args.only:
            continue
        rows[name] = run_candidate(name, changes or {}, args, npz)
    cols = sorted({c for r in rows.values() for c in r})
    lines = ["| candidate | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c][0]:.1f} ± {r[c][1]:.1f}" if c in r else "" for c in cols)
                     + " |")
    table = "\n".join(lines)
    with atomic_path(args.work / "results.md") as tmp:
        tmp.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
