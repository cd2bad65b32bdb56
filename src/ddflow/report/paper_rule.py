"""The papers' selection rule beside ours (config `paper_rule`, off by default).

MTT, IDC, DREAM, FRePo and ISA evaluate their synthetic set periodically during distillation and report the best of
those test evaluations; ddflow reports the final set. With config `paper_rule: true` the workflow also evaluates the
snapshots at the paper's cadence (hparams `paper_rule`), as results/eval/{protocol}/{method}/{dataset}/ipc{ipc}/
s{seed}/paper_rule/it{N}.json, and the table gets a row "ours (paper's rule)" under each such method: per
distillation seed, the best mean accuracy over those evaluations and the final cell, chosen on the test split as the
paper did (ties: the earliest iteration, as a strict `>` over the evaluation order keeps it); then the mean (± the
population std) over seeds. A test-set selection, printed to show how much of a paper's number it explains, not a
fair estimate.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from ..errors import DdflowError
from ..io import read_json

RULE_CELL = re.compile(r"/s(\d+)/paper_rule/it(\d+)\.json$")
LABEL = "ours (paper's rule)"
NOTE = (f"{LABEL}: best of periodic evaluations chosen on the test split, as the paper did — test-set selection, "
        f"not a fair estimate (per seed the best mean over the paper's evaluation iterations and the final set; "
        f"\"it\" = the chosen iteration(s); ± = std over seeds). Rows without it: ours (final), the final set only.")


def split_cells(cell_paths: list[str | Path]) -> tuple[list[str | Path], list[str | Path]]:
    """(final cells, paper-rule snapshot cells) by path: .../s{seed}/paper_rule/it{N}.json are the latter."""
    finals = [p for p in cell_paths if not RULE_CELL.search(str(p).replace("\\", "/"))]
    rule = [p for p in cell_paths if RULE_CELL.search(str(p).replace("\\", "/"))]
    return finals, rule


def _key(c: dict[str, Any], where: Any) -> tuple[str, str, str, int]:
    for k in ("protocol", "method", "dataset", "ipc", "seed", "accuracies"):
        if k not in c:
            raise DdflowError(f"{where}: evaluation cell lacks {k!r}")
    if not c["accuracies"]:
        raise DdflowError(f"{where}: evaluation cell has no accuracies")
    return c["protocol"], c["method"], c["dataset"], int(c["ipc"])


def _mean(accs: list[float]) -> float:
    return sum(accs) / len(accs)


def choose_per_seed(finals: dict[int, tuple[int, tuple[float, float]]],
                    snapshots: dict[int, dict[int, tuple[float, float]]], where: str,
                    rule: str = "the paper's rule") -> dict[int, tuple[int, float]]:
    """seed -> (chosen iteration, its reported mean). Each candidate is (criterion, reported): the one with the
    largest criterion over the seed's snapshots and its final cell, the earliest iteration on a tie. finals: seed ->
    (final iteration, candidate); snapshots: seed -> {iteration: candidate}. Every seed needs both (a seed with
    snapshots but no final cell, or the reverse, is an error naming `rule`)."""
    if set(finals) != set(snapshots):
        raise DdflowError(f"{where}: {rule} needs every seed's final cell and snapshot cells; final cells for seeds "
                          f"{sorted(finals)}, snapshot cells for seeds {sorted(snapshots)}")
    out = {}
    for seed, (final_it, final) in finals.items():
        candidates = sorted({final_it: final, **snapshots[seed]}.items())  # iteration order
        best_it, (best, reported) = candidates[0]
        for it, (criterion, test) in candidates[1:]:
            if criterion > best:  # strict: an equal later evaluation does not replace the earlier one
                best_it, best, reported = it, criterion, test
        out[seed] = (best_it, reported)
    return out


def best_per_seed(finals: dict[int, tuple[int, float]], snapshots: dict[int, dict[int, float]],
                  where: str) -> dict[int, tuple[int, float]]:
    """The paper's rule: seed -> (chosen iteration, its mean), the maximum of the test means (choose_per_seed with
    the test mean as criterion and report). finals: seed -> (final iteration, mean); snapshots: seed -> {iteration:
    mean}."""
    return choose_per_seed({s: (it, (m, m)) for s, (it, m) in finals.items()},
                           {s: {it: (m, m) for it, m in snaps.items()} for s, snaps in snapshots.items()}, where)


def _test_candidate(c: dict[str, Any], where: Any) -> tuple[float, float]:
    """The paper's rule's candidate: chosen on the test mean, which it reports."""
    return _mean(c["accuracies"]), _mean(c["accuracies"])


def select(final_paths: list[str | Path], rule_paths: list[str | Path],
           candidate: Callable[[dict[str, Any], Any], tuple[float, float]] = _test_candidate,
           rule: str = "the paper's rule") -> dict[tuple, dict[str, Any]]:
    """(protocol, method, dataset, ipc) -> {mean, std (over seeds), iterations (seed -> chosen), n_seeds} for every
    group that has paper-rule cells. `candidate(cell, path)` = (criterion, reported mean) of one cell: the test mean
    twice for the paper's rule (ddflow.report.valrule passes the validation mean as criterion)."""
    snaps: dict[tuple, dict[int, dict[int, tuple[float, float]]]] = defaultdict(lambda: defaultdict(dict))
    for p in rule_paths:
        c = read_json(p, "evaluation cell")
        m = RULE_CELL.search(str(p).replace("\\", "/"))
        it = int(m.group(2)) if m else int(c.get("iterations", -1))
        key = _key(c, p)
        snaps[key][int(c["seed"])][it] = candidate(c, p)
    finals: dict[tuple, dict[int, tuple[int, tuple[float, float]]]] = defaultdict(dict)
    for p in final_paths:
        c = read_json(p, "evaluation cell")
        key = _key(c, p)
        if key in snaps:
            finals[key][int(c["seed"])] = (int(c.get("iterations", 0)), candidate(c, p))
    out = {}
    for key, per_seed in snaps.items():
        best = choose_per_seed(finals.get(key, {}), per_seed, "/".join(map(str, key)), rule)
        means = [b for _, b in best.values()]
        mean = sum(means) / len(means)
        out[key] = {"mean": mean, "std": math.sqrt(sum((b - mean) ** 2 for b in means) / len(means)),
                    "iterations": {s: it for s, (it, _) in sorted(best.items())}, "n_seeds": len(best)}
    return out


def add_columns(table: dict[str, Any], final_paths: list[str | Path], rule_paths: list[str | Path]) -> dict:
    """The table with the paper-rule columns in its long CSV (paper_rule_mean, paper_rule_std,
    paper_rule_iterations) and `paper_rule` set, which wide() and notes() read."""
    selection_columns(table["df"], select(final_paths, rule_paths), "paper_rule")
    table["paper_rule"] = True
    return table


def selection_columns(df, chosen: dict[tuple, dict[str, Any]], prefix: str) -> list[dict[str, Any] | None]:
    """Write a rule's selection (select's output) into the long table `df` as {prefix}_mean, {prefix}_std and
    {prefix}_iterations ("s<seed>:it<iteration>" per seed); returns each row's selection (None where it has none)."""
    rows = [chosen.get((r.protocol, r.method, r.dataset, r.ipc)) for r in df.itertuples()]
    df[f"{prefix}_mean"] = [c["mean"] if c else None for c in rows]
    df[f"{prefix}_std"] = [c["std"] if c else None for c in rows]
    df[f"{prefix}_iterations"] = [" ".join(f"s{s}:it{it}" for s, it in c["iterations"].items()) if c else ""
                                  for c in rows]
    return rows


def cell_text(r, dash: str) -> str:
    """One wide-table cell of the paper-rule row: "mean ± std (it N)", or the dash where it was not run."""
    if r.paper_rule_mean is None or (isinstance(r.paper_rule_mean, float) and math.isnan(r.paper_rule_mean)):
        return dash
    words = str(r.paper_rule_iterations).split()
    its = "/".join(map(str, sorted({int(w.split(":it")[1]) for w in words})))
    if len(words) == 1:  # one seed: no spread over seeds to print
        return f"{r.paper_rule_mean:.1f} (it {its})"
    return f"{r.paper_rule_mean:.1f} ± {r.paper_rule_std:.1f} (it {its})"
