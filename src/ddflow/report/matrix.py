"""The results matrix: every (table, method, dataset, IPC) cell that was run, at any preset, ours beside the paper's
value, so a reader sees at a glance which cells have been run, at which scale and on what hardware.

`python -m ddflow results-matrix` (and `snakemake results_matrix`) writes results/RESULTS.md: every preset, each row
marked with its preset; a quick-preset row is not at the paper's scale, so it gets no "within" verdict. docs/RESULTS.md
is the checkout's record of cells really run at paper scale: written only with `--presets paper` (anything else
into a docs/ folder is refused), every row with its device and date.

A cell is listed when at least one evaluation cell file (results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/
s{seed}.json, snapshots excluded; or the whole-dataset bound's results/eval/whole/{dataset}.json, IPC "all") of a
table row's (protocol, method) at that dataset and IPC exists at a listed preset; cells of different presets are
separate rows. Ours = mean ± population std over every model of every seed of that preset (as the tables pool them).
Δ = ours - paper. "Within" (paper preset only) = |Δ| <= max(1 point, 2σ), σ = the paper's printed std where it prints
one, else ours. Device = the cells' provenance; date = the newest cell's `date` (UTC, written by
ddflow.protocols.cell.evaluate_cell), or its file's modification time for older cells.
"""
from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import DdflowError
from ..io import atomic_path, read_json
from .tables import DASH, load_spec, parse_paper_value

PRESET = "paper"
TOLERANCE_POINTS = 1.0
TOLERANCE_SIGMAS = 2.0


def _date(cell: dict[str, Any], path: Path) -> str:
    if cell.get("date"):
        return str(cell["date"])[:10]
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).date().isoformat()


def pooled_cells(results: str | Path, presets: list[str] | None = None) -> dict[tuple[str, str, str, str, int], dict]:
    """Evaluation cells under `results`/eval at `presets` (None: every preset), pooled per (preset, protocol, method,
    dataset, ipc)."""
    groups: dict[tuple, list[tuple[dict, Path]]] = defaultdict(list)
    evals = Path(results, "eval")
    paths = sorted(evals.glob("*/*/*/ipc*/s*.json")) + sorted(evals.glob("whole/*.json"))
    for path in paths:
        cell = read_json(path, "evaluation cell")
        if not isinstance(cell, dict):
            raise DdflowError(f"{path}: an evaluation cell is a JSON object")
        preset = str(cell.get("preset") or "unknown")
        if presets is not None and preset not in presets:
            continue
        for key in ("protocol", "method", "dataset", "ipc", "accuracies"):
            if key not in cell:
                raise DdflowError(f"{path}: evaluation cell lacks {key!r}")
        groups[(preset, cell["protocol"], cell["method"], cell["dataset"], int(cell["ipc"]))].append((cell, path))
    pooled = {}
    for key, found in groups.items():
        accs = [float(a) for c, _ in found for a in c["accuracies"]]
        mean = sum(accs) / len(accs)
        pooled[key] = {
            "mean": mean, "std": math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs)),
            "n_models": len(accs), "n_seeds": len(found),
            "devices": sorted({str((c.get("provenance") or {}).get("device", "unknown")) for c, _ in found}),
            "date": max(_date(c, p) for c, p in found),
        }
    return pooled


def matrix_rows(results: str | Path, papers: str | Path, presets: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per (table, row, dataset, IPC, preset) with cells at `presets` (None: any), in table-file and row
    order, the paper preset first."""
    pooled = pooled_cells(results, presets)
    out = []
    for spec_path in sorted(Path(papers).glob("*.yaml")):
        spec = load_spec(spec_path)
        if spec["kind"] != "cells":
            continue
        compare_as = spec.get("compare_as", {})
        for row in spec["rows"]:
            if not row.get("method"):
                continue
            protocol = row.get("protocol", "dc")
            for (preset, p, m, ds, ipc), ours in sorted(pooled.items(),
                                                         key=lambda kv: (kv[0][3], kv[0][4], kv[0][0] != PRESET)):
                if (p, m) != (protocol, row["method"]):
                    continue
                paper_ds = compare_as.get(ds, ds)
                values = (row.get("paper") or {}).get(paper_ds) or {}
                # the whole-dataset bound (IPC 0) prints one value per dataset, repeated in every IPC column
                p_mean, p_std = parse_paper_value(values.get(ipc) if ipc else next(iter(values.values()), None))
                delta = ours["mean"] - p_mean if p_mean is not None else None
                sigma = p_std if p_std is not None else ours["std"]
                tol = max(TOLERANCE_POINTS, TOLERANCE_SIGMAS * sigma)
                out.append({"table": spec["name"], "row": row["label"], "method": m, "protocol": p, "dataset": ds,
                            "paper_dataset": paper_ds, "ipc": ipc, "preset": preset, **ours, "paper_mean": p_mean,
                            "paper_std": p_std, "delta": delta, "tolerance": tol,
                            "within": None if delta is None or preset != PRESET else abs(delta) <= tol})
    return out


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return DASH
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def _preset(preset: str) -> str:
    return preset if preset == PRESET else f"**{preset}** (not paper scale)"


def render(rows: list[dict[str, Any]], presets: list[str] | None = None) -> str:
    paper_only = presets == [PRESET]
    scope = ("Only cells run at the paper preset are listed." if paper_only else
             f"Cells of {'every preset' if presets is None else 'the presets ' + ', '.join(presets)} are listed, each "
             f"marked with its preset; only {PRESET}-preset cells are at the paper's scale and get a verdict.")
    command = "python -m ddflow results-matrix" + (" --presets paper --out docs/RESULTS.md" if paper_only else "")
    lines = [f"# Results matrix: {'paper-preset cells' if paper_only else 'evaluated cells'} against the papers", "",
             f"Generated by `{command}`" + ("" if paper_only else " (or `snakemake results_matrix`)") +
             f" from the evaluation cells of a results folder; do not edit by hand. {scope}", "",
             f"Within = |Δ| <= max({TOLERANCE_POINTS:g} point, {TOLERANCE_SIGMAS:g}σ), σ = the paper's std where "
             "printed, else ours. Ours = final-epoch test accuracy (%), mean ± std over all models of all seeds.", ""]
    if not rows:
        return "\n".join(lines + [f"No {'paper-preset ' if paper_only else ''}cells yet.", ""])
    heads = ("Table", "Method", "Dataset", "IPC", "Preset", "Ours", "Models (seeds)", "Paper", "Δ", "Within", "Device",
             "Date")
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        ds = r["dataset"] if r["paper_dataset"] == r["dataset"] else f"{r['dataset']} (paper: {r['paper_dataset']})"
        within = DASH if r["within"] is None else ("yes" if r["within"] else "no")
        delta = DASH if r["delta"] is None else f"{r['delta']:+.1f}"
        lines.append(f"| {r['table']} | {r['row']} | {ds} | {r['ipc'] or 'all'} | {_preset(r['preset'])} | "
                     f"{_pm(r['mean'], r['std'])} | {r['n_models']} ({r['n_seeds']}) | "
                     f"{_pm(r['paper_mean'], r['paper_std'])} | {delta} | {within} | {', '.join(r['devices'])} | "
                     f"{r['date']} |")
    done = [r for r in rows if r["within"] is not None]
    lines += ["", f"{sum(r['within'] for r in done)} of {len(done)} paper-preset cells with a paper value are within "
              "tolerance."]
    return "\n".join(lines) + "\n"


def write_matrix(results: str | Path, papers: str | Path, out: str | Path,
                 presets: list[str] | None = None) -> list[dict[str, Any]]:
    """The matrix of `results` at `presets` (None: every preset) written to `out` (atomically); the rows it lists.
    A docs/ folder (the checkout's docs/RESULTS.md) takes only paper-preset cells."""
    if not Path(papers).is_dir():
        raise DdflowError(f"{papers}: no such folder of table specs")
    if Path(out).resolve().parent.name == "docs" and presets != [PRESET]:
        raise DdflowError(f"{out}: the docs/ results matrix lists only cells run at paper scale; add --presets paper "
                          "(or write elsewhere: the default is results/RESULTS.md)")
    rows = matrix_rows(results, papers, presets)
    with atomic_path(out) as tmp:
        tmp.write_text(render(rows, presets))
    return rows
