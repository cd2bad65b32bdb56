"""`python -m ddflow cost`: what one table (or several) costs before it runs: its jobs by rule, GPU-hours, the longest
job and disk, summed from the per-cell estimates in workflow/costs.yaml. The jobs are those of the workflow's DAG
for `results/tables/<table>.md` (the table rule's inputs and what they need: the same functions as
workflow/rules/common.smk; tests/test_cost.py compares the counts with a Snakemake dry run)."""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from ..errors import DdflowError

GB = 1e9


def _checkout() -> Path:
    return Path(__file__).resolve().parents[3]


def load_config(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """A workflow config file with `KEY=VALUE` overrides (VALUE read as YAML, as `snakemake --config` does)."""
    from ..config import coerce_cli_types
    path = Path(path)
    if not path.exists():
        raise DdflowError(f"--configfile {path}: no such file")
    config = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise DdflowError(f"--config {item!r}: expected KEY=VALUE")
        config[key] = yaml.safe_load(value)
    return coerce_cli_types(config)


def table_jobs(config: dict[str, Any], tables: list[str], hp_dir: Path, papers: Path) -> list[tuple[str, tuple]]:
    """(rule, wildcards) of every job the targets results/tables/<t>.md need, each once."""
    from .. import config as ddconfig
    from ..hparams import paper_rule, resolve
    from ..methods import get_method
    from ..records.experts import blocks
    from ..records.trajectories import manifest_path
    from ..settings import rule_iterations
    from .tables import load_spec
    from .xarch import load_xarch_spec, xarch_cells

    config = {**config, "tables": tables}
    grid = ddconfig.check(config, hparams_dir=hp_dir, papers_dir=papers)
    preset = config["preset"]
    jobs: dict[tuple[str, tuple], None] = {}

    def distill(m, d, i, s):
        jobs[("data", (d,))] = None
        jobs[("distill", (m, d, i, s))] = None
        hp = resolve(m, d, int(i), preset, hp_dir)
        needs = get_method(m).requires
        if "validation" in needs:
            jobs[("validation_split", (d,))] = None
        if "feature_net" in needs:
            jobs[("featnet", (d, hp["feature_net"]))] = None
        if "trajectories" in needs:
            path = manifest_path(d, hp)
            _, _, prep, net, sampler = path.rsplit("/", 4)
            sampler = sampler.rsplit(".", 1)[0]
            jobs[("mtt_windows" if sampler.startswith("mtt") else "ead_pool", (d, prep, net, sampler))] = None
            ex = resolve("experts", d, 0, preset, hp_dir)
            for b in range(len(blocks(int(ex["experts"]), int(ex["block"])))):
                jobs[("experts", (d, prep, net, b))] = None

    def evaluate(p, m, d, i, s):
        distill(m, d, i, s)
        # every evaluation scores its models on the validation split (kip-nn, ld, rfad-nn also choose on it)
        jobs[("validation_split", (d,))] = None
        jobs[("evaluate", (p, m, d, i, s))] = None

    for t in tables:
        spec = load_spec(papers / f"{t}.yaml")
        jobs[("table", (t,))] = None
        rows = [(r["method"], r.get("protocol", "dc")) for r in spec["rows"] if r.get("method") in grid["methods"]]
        if spec["kind"] == "xarch":
            for p, m, d, i in xarch_cells(load_xarch_spec(papers / f"{t}.yaml"), grid["methods"]):
                for s in grid["seeds"]:
                    evaluate(p, m, d, i, s)
            continue
        for m, p in rows:
            for d in grid["datasets"]:
                for i in ddconfig.method_ipcs(grid, m):
                    cadence = paper_rule(m, d, int(i), preset, hp_dir) if ddconfig.paper_rule_on(config) else None
                    for s in grid["seeds"]:
                        if spec["kind"] == "timing":
                            distill(m, d, i, s)
                            continue
                        evaluate(p, m, d, i, s)
                        for n in rule_iterations(int(resolve(m, d, int(i), preset, hp_dir).get("iterations", 0)),
                                                 cadence) if cadence and spec["kind"] == "cells" else []:
                            jobs[("evaluate_paper_rule", (p, m, d, i, s, n))] = None
        if preset == "paper" and spec["kind"] == "cells" and any(r.get("method") == ddconfig.WHOLE
                                                                 for r in spec["rows"]):
            for d in grid["datasets"]:
                jobs[("data", (d,))] = None
                jobs[("whole_dataset_cell", (d,))] = None
    return list(jobs)


def _entry(section: dict[str, Any], key: str) -> dict[str, Any]:
    return section.get(key) or section["default"]


def job_cost(rule: str, wc: tuple, costs: dict[str, Any], preset: str, hp_dir: Path) -> tuple[float, float, str]:
    """(GPU seconds, disk bytes, basis) of one job: `wc` are its wildcards in table_jobs' order. The workflow's
    distill rule asks SLURM for a runtime from this (workflow/rules/common.smk, job_runtime)."""
    from ..data import get_info
    from ..hparams import resolve
    from ..protocols import protocol_settings
    from ..settings import snapshot_iterations, whole_settings

    ref = get_info(costs["reference"]["dataset"])
    ref_px = ref.channels * ref.size ** 2
    s, disk, basis = 0.0, 0.0, ""
    if rule == "data":
        info = get_info(wc[0])
        disk = sum(_sizes(costs, wc[0])) * info.channels * info.size ** 2
    elif rule == "distill":
        m, d, i, _ = wc
        info, hp, c = get_info(d), resolve(m, d, int(i), preset, hp_dir), _entry(costs["distill"], m)
        scale = info.classes * info.channels * info.size ** 2 / (ref.classes * ref_px)
        scale *= (int(i) / int(costs["reference"]["ipc"])) ** c.get("ipc_power", 0)
        its = int(hp.get("iterations", 0))
        if "iterations" not in hp and "epochs" in hp and "batch" in hp:   # epoch-based (DD, LD): batches per epoch
            its = int(hp["epochs"]) * math.ceil(_sizes(costs, d)[0] / int(hp["batch"]))
        s = float(c["s_per_it"]) * its * scale
        disk = info.classes * int(i) * info.channels * info.size ** 2 * 4 * (1 + len(snapshot_iterations(hp)))
        basis = c["basis"]
    elif rule in ("evaluate", "evaluate_paper_rule"):
        p, m, d, i = wc[:4]
        info = get_info(d)
        settings = protocol_settings(m, d, int(i), preset, p, hp_dir)
        c = _entry(costs["evaluate"], p.split("-")[0])
        steps = math.ceil(info.classes * int(i) / int(settings.get("batch", 256) or 256))
        epochs = int(settings["epochs"]) / int(c["epochs"]) if c.get("epochs") and "epochs" in settings else 1
        s = float(c["s_per_model"]) * int(settings.get("models", 1)) * epochs * steps * (
            info.channels * info.size ** 2 / ref_px)
        basis = c["basis"]
    elif rule in ("experts", "featnet", "whole_dataset_cell"):
        d = wc[0]
        info = get_info(d)
        scale = _sizes(costs, d)[0] * info.channels * info.size ** 2 / (_sizes(costs, ref.name)[0] * ref_px)
        if rule == "experts":
            ex = resolve("experts", d, 0, preset, hp_dir)
            n = min(int(ex["block"]), int(ex["experts"]) - int(ex["block"]) * int(wc[3]))
            s = float(costs["experts"]["s_per_epoch"]) * int(ex["epochs"]) * n * scale
            disk = n * _expert_bytes(wc[2], info) * (int(ex["epochs"]) + 1)
        elif rule == "featnet":
            s = float(costs["featnet"]["s_per_epoch"]) * int(resolve("featnet", d, 0, preset, hp_dir)["epochs"]) * scale
        else:
            w = whole_settings(d, preset, hp_dir)
            s = float(costs["whole"]["s_per_epoch"]) * int(w["epochs"]) * int(w.get("models", 1)) * scale
    return s, disk, basis


def estimate(jobs: list[tuple[str, tuple]], costs: dict[str, Any], preset: str, hp_dir: Path) -> dict[str, Any]:
    """GPU seconds and disk bytes of the jobs, summed by rule, with the longest job and the bases used."""
    seconds: Counter = Counter()
    disk: Counter = Counter()
    bases: Counter = Counter()
    longest = (0.0, "")
    for rule, wc in jobs:
        s, b, basis = job_cost(rule, wc, costs, preset, hp_dir)
        seconds[rule] += s
        disk[rule] += b
        if basis:
            bases[basis.split(":")[0]] += 1
        longest = max(longest, (s, f"{rule} {' '.join(map(str, wc))}"))
    return {"jobs": Counter(r for r, _ in jobs), "gpu_hours": {r: v / 3600 for r, v in seconds.items()},
            "disk_gb": {r: v / GB for r, v in disk.items()}, "longest": (longest[0] / 3600, longest[1]),
            "bases": dict(bases)}


def load_costs(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path or Path.cwd() / "workflow" / "costs.yaml")
    if not path.exists():
        raise DdflowError(f"{path}: no such cost estimates file")
    return yaml.safe_load(path.read_text())


def _sizes(costs: dict[str, Any], dataset: str) -> tuple[int, int]:
    if dataset not in costs["datasets"]:
        raise DdflowError(f"workflow/costs.yaml: no datasets.{dataset} entry (train and test images)")
    train, test = costs["datasets"][dataset]
    return int(train), int(test)


def _expert_bytes(net: str, info) -> int:
    """float32 bytes of one expert checkpoint (its parameters once)."""
    from ..nets import build_net
    return 4 * sum(p.numel() for p in build_net(net, info.channels, info.classes, info.size).parameters())


def render(est: dict[str, Any], tables: list[str], preset: str) -> str:
    lines = [f"Cost of {', '.join(tables)} at the {preset} preset (estimates: workflow/costs.yaml)", "",
             "| rule | jobs | GPU-hours | disk (GB) |", "|---|---:|---:|---:|"]
    for rule, n in sorted(est["jobs"].items()):
        lines.append(f"| {rule} | {n} | {est['gpu_hours'].get(rule, 0):.1f} | {est['disk_gb'].get(rule, 0):.2f} |")
    total_h, total_gb = sum(est["gpu_hours"].values()), sum(est["disk_gb"].values())
    lines.append(f"| total | {sum(est['jobs'].values())} | {total_h:.1f} | {total_gb:.2f} |")
    hours, job = est["longest"]
    lines += ["", f"Longest job: {hours:.1f} h ({job}); a SLURM time limit below it needs the job to resume "
                  f"(retries) or a longer runtime for its rule.",
              "Cells by basis of their estimate: " + ", ".join(f"{k} {v}" for k, v in sorted(est["bases"].items()))]
    return "\n".join(lines)


def cmd_cost(a) -> None:
    root = Path.cwd() if (Path.cwd() / "workflow" / "costs.yaml").exists() else _checkout()
    config = load_config(a.configfile or root / "config.yaml", (a.config or []) + [f"preset={a.preset}"])
    hp_dir = Path(config.get("hparams_dir") or root / "workflow" / "hparams")
    papers = root / "workflow" / "papers"
    costs = load_costs(a.costs or root / "workflow" / "costs.yaml")
    for t in a.table:
        if not re.fullmatch(r"[a-z0-9_-]+", t) or not (papers / f"{t}.yaml").exists():
            raise DdflowError(f"--table {t!r}: no spec workflow/papers/{t}.yaml")
    est = estimate(table_jobs(config, a.table, hp_dir, papers), costs, config["preset"], hp_dir)
    print(render(est, a.table, config["preset"]))


def add_parser(sub) -> None:
    p = sub.add_parser("cost", help="jobs, GPU-hours, longest job and disk of a table, from workflow/costs.yaml")
    p.add_argument("--table", nargs="+", required=True, help="table spec names (workflow/papers/<name>.yaml)")
    p.add_argument("--preset", default="paper", help="quick | paper (default paper)")
    p.add_argument("--configfile", default=None, help="the workflow config (default: the checkout's config.yaml)")
    p.add_argument("--config", nargs="*", default=None, help="KEY=VALUE overrides, as snakemake --config")
    p.add_argument("--costs", default=None, help="the estimates (default workflow/costs.yaml)")
    p.set_defaults(fn=cmd_cost)
